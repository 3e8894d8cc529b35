// Caption files as outputs: a write error fails the run, --resume matches photos however their
// names are spelled, ids stay distinct, temporaries of killed writers are cleaned up.
// Tiny model: no ../shared needed.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <set>

#include "datasets/caption_writer.h"
#include "datasets/file_io.h"
#include "tests/model_fixtures.h"
#include "tests/test_util.h"

using namespace captioner;
using namespace captioner::test;
namespace fs = std::filesystem;

TEST(Reliability, CaptionsThatCannotBeWrittenFailTheRun) {
  TinyModelFixture f;
  write_text(f.tmp / "good.jpg", solid_jpeg(0, 0, 255));
  if (fs::exists("/dev/full")) {
    // Grouped, so the suite's own capture of stdout does not replace the redirect.
    auto r = run_shell("{ " + std::string(CAPTIONER_BINARY) + " caption " + (f.tmp / "good.jpg").string() + " --model " +
                       f.model.string() + " -q > /dev/full; }");
    EXPECT_NE(r.exit_code, 0) << "captions lost with exit 0";
    EXPECT_NE(r.err.find("cannot write captions to standard output"), std::string::npos) << r.err;
  }
  // An output path that is a folder: a one-line error that says so (not "rename failed: Success").
  fs::create_directories(f.tmp / "out.json");
  auto r = f.caption((f.tmp / "good.jpg").string() + " --output " + (f.tmp / "out.json").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("it is a folder"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("Success"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::is_directory(f.tmp / "out.json"));
}

TEST(Reliability, ResumeMatchesPhotosHoweverTheFolderIsSpelledAndHonoursFormat) {
  TinyModelFixture f;
  fs::path dir = f.tmp / "P";
  fs::create_directories(dir);
  for (const char* n : {"a.jpg", "b.jpg", "c.jpg"}) write_text(dir / n, solid_jpeg(0, 0, 255));
  const fs::path out = f.tmp / "c.json";
  ASSERT_EQ(f.caption(dir.string() + " --output " + out.string()).exit_code, 0);
  const std::string spelled = (f.tmp / "." / "P").string() + "//";
  auto r = f.caption(spelled + " --output " + out.string() + " --resume");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(read_file(out)).size(), 3u) << "photos captioned again under another spelling";
  // --format wins over the extension when resuming, as it does when writing.
  const fs::path csv = f.tmp / "c.txt";
  ASSERT_EQ(f.caption(dir.string() + " --output " + csv.string() + " --format csv").exit_code, 0);
  r = f.caption(dir.string() + " --output " + csv.string() + " --format csv --resume");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count_lines(read_file(csv)), 4u) << read_file(csv);  // header + 3 rows, none dropped or doubled
}

TEST(Reliability, ABadNumberInACsvToResumeNamesTheFileAndRow) {
  TinyModelFixture f;
  write_text(f.tmp / "a.jpg", solid_jpeg(0, 0, 255));
  const fs::path csv = f.tmp / "c.csv";
  write_text(csv, "file_name,image_id,caption,log_prob\nx.jpg,12,a dog,-1.5\ny.jpg,twelve,a dog,-1.5\n");
  auto r = f.caption((f.tmp / "a.jpg").string() + " --output " + csv.string() + " --resume");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_LT(r.exit_code, 128);
  EXPECT_NE(r.err.find(csv.string() + ": CSV row 3"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("stoll"), std::string::npos) << r.err;
}

TEST(Reliability, TempFilesOfKilledWritersAreRemovedThoseOfLiveOnesKept) {
  TempDir tmp;
  // A pid that is certainly gone: a child that already exited and was reaped.
  pid_t dead = fork();
  if (dead == 0) _exit(0);
  int status = 0;
  waitpid(dead, &status, 0);
  const fs::path orphan = tmp / (".out.json.tmp-" + std::to_string(dead) + "-deadbeef");
  const fs::path live = tmp / (".out.json.tmp-" + std::to_string(getpid()) + "-cafef00d");
  const fs::path other = tmp / (".other.json.tmp-" + std::to_string(dead) + "-deadbeef");
  for (const auto& p : {orphan, live, other}) write_text(p, "partial");
  AtomicFileWriter w(tmp / "out.json");
  w.stream() << "[]";
  w.commit();
  EXPECT_FALSE(fs::exists(orphan)) << "a killed writer's temp file stays";
  EXPECT_TRUE(fs::exists(live)) << "a live writer's temp file was removed";
  EXPECT_TRUE(fs::exists(other)) << "another file's temp was touched";
  EXPECT_EQ(read_file(tmp / "out.json"), "[]");
}

// 123.jpg and 0123.jpg both carried image_id 123; a name's number is kept only where it is unique.

TEST(Reliability, PhotosWhoseNamesCarryTheSameNumberGetDistinctIds) {
  const std::vector<fs::path> files{"p/0123.jpg", "p/123.jpg", "p/000000493652.jpg", "p/cat.jpg", "p/7.png"};
  const std::vector<int64_t> ids = image_ids_for(files);
  ASSERT_EQ(ids.size(), files.size());
  EXPECT_EQ(ids[2], 493652);
  EXPECT_EQ(ids[4], 7);
  EXPECT_NE(ids[0], 123);
  EXPECT_NE(ids[1], 123);
  EXPECT_EQ(std::set<int64_t>(ids.begin(), ids.end()).size(), ids.size()) << "two photos share an id";
  // The same through the CLI: the JSON output holds distinct ids.
  TinyModelFixture f;
  fs::create_directories(f.tmp / "P");
  for (const char* n : {"0123.jpg", "123.jpg", "cat.jpg"}) write_text(f.tmp / "P" / n, solid_jpeg(0, 0, 255));
  auto r = f.caption((f.tmp / "P").string() + " --format json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::set<int64_t> seen;
  for (const auto& row : nlohmann::json::parse(r.out)) seen.insert(row.at("image_id").get<int64_t>());
  EXPECT_EQ(seen.size(), 3u) << r.out;
}

// `eval --results r.json --max-images N` called the results for images past N "not in" the
// annotations; it now scores the first N images and leaves the other results out.

TEST(Reliability, ResumeMatchesNamesThatAreNotUtf8OrHoldTabsAndNewlines) {
  TinyModelFixture f;
  const fs::path dir = f.tmp / "P";
  fs::create_directories(dir);
  for (const std::string n : {"plain.jpg", "bad\xff.jpg", "bad\xfe.jpg", "tab\there.jpg", "new\nline.jpg", "back\\slash.jpg"}) {
    write_text(dir / n, solid_jpeg(0, 0, 255));
  }
  for (const char* format : {"json", "jsonl", "csv", "tsv", "text"}) {
    const fs::path out = f.tmp / (std::string("c.") + format);
    ASSERT_EQ(f.caption(dir.string() + " --output " + out.string() + " --format " + format).exit_code, 0) << format;
    const std::string first = read_file(out);
    auto r = f.caption(dir.string() + " --output " + out.string() + " --format " + format + " --resume");
    EXPECT_EQ(r.exit_code, 0) << format << ": " << r.err;
    EXPECT_NE(r.err.find("6 photos already in"), std::string::npos) << format << ": " << r.err;
    EXPECT_EQ(read_file(out), first) << format << ": rows were added on resume";
  }
  // Text rows read back as the names they were written from.
  auto rows = read_caption_file(f.tmp / "c.text", CaptionFormat::kText);
  std::set<std::string> names;
  for (const auto& row : rows) names.insert(fs::path(row.file_name).filename().string());
  EXPECT_TRUE(names.count("tab\there.jpg"));
  EXPECT_TRUE(names.count("new\nline.jpg"));
  EXPECT_TRUE(names.count("back\\slash.jpg"));
}

// Two runs writing one output each replaced the other's rows (both exit 0); two trainings into
// one folder collided on a temp file. Now the second is refused and names the first.

TEST(Reliability, TheReportOfAResumedRunShowsEveryCaption) {
  TinyModelFixture f;
  const fs::path dir = f.tmp / "P";
  fs::create_directories(dir);
  for (const char* n : {"a.jpg", "b.jpg"}) write_text(dir / n, solid_jpeg(0, 0, 255));
  const fs::path out = f.tmp / "c.json", html = f.tmp / "r.html";
  ASSERT_EQ(f.caption(dir.string() + " --output " + out.string()).exit_code, 0);
  write_text(dir / "c.jpg", solid_jpeg(0, 0, 255));
  auto r = f.caption(dir.string() + " --output " + out.string() + " --resume --html " + html.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string page = read_file(html);
  for (const char* n : {"a.jpg", "b.jpg", "c.jpg"}) EXPECT_NE(page.find(n), std::string::npos) << n << " is not on the page";
  size_t pictures = 0;
  for (size_t p = page.find("data:image/jpeg;base64,"); p != std::string::npos; p = page.find("data:image/jpeg;base64,", p + 1))
    ++pictures;
  EXPECT_EQ(pictures, 3u);
}

// A model folder copied elsewhere lost its encoder: the config names it relative to the folder.
