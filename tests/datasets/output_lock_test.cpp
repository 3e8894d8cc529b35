// One run per output: a second run on the same output or run folder is refused, and a lock file
// someone planted as a link is refused with its target untouched (issue 27 A).
// Tiny model: no ../shared needed.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "datasets/file_io.h"
#include "tests/model_fixtures.h"
#include "tests/test_util.h"

using namespace captioner;
using namespace captioner::test;
namespace fs = std::filesystem;

TEST(Reliability, TwoRunsNeverWriteOneOutputOrRunFolderAtOnce) {
  TinyModelFixture f;
  write_text(f.tmp / "a.jpg", solid_jpeg(0, 0, 255));
  const fs::path out = f.tmp / "c.json";
  {
    OutputLock held(out);  // this test process plays the first run
    auto r = f.caption((f.tmp / "a.jpg").string() + " --output " + out.string());
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("in use by another captioner run (pid " + std::to_string(getpid()) + ")"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(out));
    EXPECT_THROW(OutputLock again(out), std::runtime_error);
  }
  EXPECT_EQ(f.caption((f.tmp / "a.jpg").string() + " --output " + out.string()).exit_code, 0);
  {
    OutputLock held(f.tmp / "run");
    auto r = f.train_one_photo(f.tmp / "run", "", 1);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("in use by another captioner run"), std::string::npos) << r.err;
  }
  // A run killed while holding the lock leaves no stale lock behind.
  pid_t child = fork();
  if (child == 0) {
    new OutputLock(out);  // never released: the process dies holding it
    _exit(0);
  }
  int status = 0;
  waitpid(child, &status, 0);
  auto r = f.caption((f.tmp / "a.jpg").string() + " --output " + out.string());
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// `--html --resume` showed only the photos of the resumed run.

TEST(Reliability, PlantedLockLinksAreRefusedAndTheirTargetsUntouched) {
  TinyModelFixture f;
  write_text(f.tmp / "a.jpg", solid_jpeg(0, 0, 255));
  write_text(f.tmp / "victim.txt", "DATA\n");
  const fs::path out = f.tmp / "out.json";
  fs::create_symlink(f.tmp / "victim.txt", f.tmp / ".out.json.lock");
  auto r = f.caption((f.tmp / "a.jpg").string() + " -o " + out.string());
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find(".out.json.lock is a symbolic link"), std::string::npos) << r.err;
  EXPECT_EQ(count_lines(r.err), 1u) << r.err;
  EXPECT_FALSE(fs::exists(out));

  // merge: a real part to merge, then the same planted link.
  ASSERT_EQ(f.caption((f.tmp / "a.jpg").string() + " --shard 0/2 -o " + (f.tmp / "c.json").string()).exit_code, 0);
  ASSERT_EQ(f.caption((f.tmp / "a.jpg").string() + " --shard 1/2 -o " + (f.tmp / "c.json").string()).exit_code, 0);
  r = run_shell(std::string(CAPTIONER_BINARY) + " merge " + (f.tmp / "c.part-0-of-2.json").string() + " " +
                (f.tmp / "c.part-1-of-2.json").string() + " -o " + out.string());
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("symbolic link"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out));

  fs::create_symlink(f.tmp / "victim.txt", f.tmp / ".run.lock");
  r = f.train_one_photo(f.tmp / "run", "", 1);
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find(".run.lock is a symbolic link"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(f.tmp / "run" / "decoder.pt"));
  EXPECT_EQ(read_file(f.tmp / "victim.txt"), "DATA\n");

  // Without the links every command works, and a training log planted as a link is refused too.
  fs::remove(f.tmp / ".out.json.lock");
  fs::remove(f.tmp / ".run.lock");
  EXPECT_EQ(f.caption((f.tmp / "a.jpg").string() + " -o " + out.string()).exit_code, 0);
  fs::create_directories(f.tmp / "run2");
  fs::create_symlink(f.tmp / "victim.txt", f.tmp / "run2" / "metrics.jsonl");
  r = f.train_one_photo(f.tmp / "run2", "", 1);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("metrics.jsonl"), std::string::npos) << r.err;
  EXPECT_EQ(read_file(f.tmp / "victim.txt"), "DATA\n");
}

// Issue 27 C: a caption file's entries name photos inside --train-images; one that leaves it (an
// absolute path, a climbing "..") is refused with a line naming the entry. Links placed inside
// the folder by the user stay allowed.

TEST(Reliability, AnOutputThatIsOneOfThePhotosIsRefused) {
  TinyModelFixture f;
  write_text(f.tmp / "same.jpg", solid_jpeg(0, 0, 255));
  // A .jpg name says no caption format, so it is refused for that first; with --format it is
  // refused for being a photo.
  auto r = f.caption((f.tmp / "same.jpg").string() + " --output " + (f.tmp / "." / "same.jpg").string());
  EXPECT_EQ(r.exit_code, 2);
  r = f.caption((f.tmp / "same.jpg").string() + " --format json --output " + (f.tmp / "." / "same.jpg").string());
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("is one of the photos to caption"), std::string::npos) << r.err;
  EXPECT_EQ(read_file(f.tmp / "same.jpg"), solid_jpeg(0, 0, 255)) << "the photo was overwritten";
}

// An encoder that fails inside TorchScript printed the interpreter's two-part traceback (20+
// lines). The error is now one line naming the encoder; --verbose keeps the rest available.
