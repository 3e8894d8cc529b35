// datasets/file_io: every file captioner creates is created without following a planted link, and
// nothing it did not create is truncated (issue 27 A). The CLI-level cases are in reliability_test.
#include "datasets/file_io.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <csignal>
#include <unistd.h>

#include "tests/test_util.h"

using namespace captioner;
using namespace captioner::test;
namespace fs = std::filesystem;

namespace {}  // namespace

TEST(OutputLock, APlantedSymbolicLinkIsRefusedAndItsTargetUntouched) {
  TempDir tmp;
  write_text(tmp / "victim.txt", "DATA\n");
  fs::create_symlink(tmp / "victim.txt", tmp / ".out.json.lock");
  expect_error_message([&] { OutputLock lock(tmp / "out.json"); }, {"out.json.lock", "symbolic link"});
  EXPECT_EQ(read_file(tmp / "victim.txt"), "DATA\n");
  // A dangling link must not make captioner create its target either.
  fs::create_symlink(tmp / "created-by-link", tmp / ".run.lock");
  expect_error_message([&] { OutputLock lock(tmp / "run/"); }, {"symbolic link"});
  EXPECT_FALSE(fs::exists(tmp / "created-by-link"));
}

TEST(OutputLock, AFifoUnderTheLockNameIsRefusedWithoutHanging) {
  TempDir tmp;
  ASSERT_EQ(mkfifo((tmp / ".out.json.lock").c_str(), 0644), 0);
  expect_error_message([&] { OutputLock lock(tmp / "out.json"); }, {"not a regular file"});
}

TEST(OutputLock, AStaleLockFileIsReplacedNeverTruncated) {
  TempDir tmp;
  // A lock file left by a killed run, or put there by someone else: a second name for the same
  // file (a hard link) shows whether its contents were touched.
  write_text(tmp / "other-file", "DATA\n");
  fs::create_hard_link(tmp / "other-file", tmp / ".out.json.lock");
  {
    OutputLock lock(tmp / "out.json");
    EXPECT_EQ(read_file(tmp / "other-file"), "DATA\n");
    EXPECT_EQ(read_file(tmp / ".out.json.lock"), std::to_string(getpid()) + "\n") << "the lock is a file of its own";
    expect_error_message([&] { OutputLock again(tmp / "out.json"); }, {"in use by another captioner run"});
  }
  EXPECT_FALSE(fs::exists(tmp / ".out.json.lock")) << "released locks are removed";
  EXPECT_EQ(read_file(tmp / "other-file"), "DATA\n");
}

TEST(OutputLock, TextInAForeignLockFileIsNotQuotedAsAPid) {
  TempDir tmp;
  write_text(tmp / ".out.json.lock", "rm -rf /\n");
  // Someone holds the foreign file locked (flock locks conflict between two opens, even in one process).
  const int fd = open((tmp / ".out.json.lock").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(flock(fd, LOCK_EX), 0);
  try {
    OutputLock lock(tmp / "out.json");
    ADD_FAILURE() << "a held lock was taken";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("in use by another captioner run"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("rm -rf"), std::string::npos) << msg;  // no advice to delete what is in use
  }
  close(fd);
  EXPECT_EQ(read_file(tmp / ".out.json.lock"), "rm -rf /\n");
}

// A link at the output (planted, or /dev/stdout) is neither written through nor replaced; a device
// or FIFO is not turned into a plain file. Each is refused with one line naming it.
TEST(AtomicFileWriter, APlantedLinkOrADeviceAtTheOutputIsRefusedAndLeftAsItIs) {
  TempDir tmp;
  write_text(tmp / "victim.txt", "DATA\n");
  fs::create_symlink(tmp / "victim.txt", tmp / "out.json");
  expect_error_message([&] { write_file_atomic(tmp / "out.json", "[]\n"); }, {"out.json", "symbolic link"});
  EXPECT_TRUE(fs::is_symlink(tmp / "out.json"));
  EXPECT_EQ(read_file(tmp / "victim.txt"), "DATA\n");
  fs::create_symlink("/proc/self/fd/1", tmp / "stdout");
  expect_error_message([&] { write_file_atomic(tmp / "stdout", "[]\n"); }, {"stdout", "symbolic link"});
  EXPECT_TRUE(fs::is_symlink(tmp / "stdout"));
  ASSERT_EQ(::mkfifo((tmp / "fifo.json").c_str(), 0600), 0);
  expect_error_message([&] { write_file_atomic(tmp / "fifo.json", "[]\n"); }, {"fifo.json", "not a regular file"});
  EXPECT_TRUE(fs::is_fifo(tmp / "fifo.json"));
  for (const auto& e : fs::directory_iterator(tmp.path())) {
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << "leftover " << e.path();
  }
}

TEST(AtomicFileWriter, AWriteThatFailsFailsTheCommitAndPublishesNothing) {
  TempDir tmp;
  write_text(tmp / "out.json", "old\n");
  // In a child: a file-size limit makes write(2) fail with EFBIG part way, as a full disk would.
  pid_t child = fork();
  if (child == 0) {
    signal(SIGXFSZ, SIG_IGN);
    rlimit limit{4096, 4096};
    setrlimit(RLIMIT_FSIZE, &limit);
    try {
      AtomicFileWriter w(tmp / "out.json");
      w.stream() << std::string(200000, 'x');
      w.commit();
    } catch (const std::runtime_error& e) {
      _exit(std::string(e.what()).find("cannot write") != std::string::npos ? 0 : 2);
    }
    _exit(1);
  }
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: the commit did not fail; 2: its message did not say 'cannot write'";
  EXPECT_EQ(read_file(tmp / "out.json"), "old\n") << "the old file must survive";
  size_t temps = 0;
  for (const auto& e : fs::directory_iterator(tmp.path()))
    temps += e.path().filename().string().find(".tmp-") != std::string::npos;
  EXPECT_EQ(temps, 0u);
}

TEST(AppendLine, NeverWritesThroughALinkNorIntoAFifo) {
  TempDir tmp;
  write_text(tmp / "victim.txt", "DATA\n");
  fs::create_symlink(tmp / "victim.txt", tmp / "log.jsonl");
  expect_error_message([&] { append_line(tmp / "log.jsonl", "{}"); }, {"log.jsonl", "symbolic link"});
  EXPECT_EQ(read_file(tmp / "victim.txt"), "DATA\n");
  ASSERT_EQ(mkfifo((tmp / "fifo.jsonl").c_str(), 0644), 0);
  expect_error_message([&] { append_line(tmp / "fifo.jsonl", "{}"); }, {"fifo.jsonl"});
  append_line(tmp / "real.jsonl", "{\"a\":1}");
  append_line(tmp / "real.jsonl", "{\"a\":2}");
  EXPECT_EQ(read_file(tmp / "real.jsonl"), "{\"a\":1}\n{\"a\":2}\n");
}
