// Adversarial inputs that once hung, ate memory or lost work (issue 14): symbolic-link loops, pipes
// and devices given as photos, a full output device, an output path that is a folder, and a
// training run pointed at a folder that already holds a model. Tiny model: no ../shared needed.
#include <gtest/gtest.h>
#include <torch/script.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <tuple>

#include "datasets/caption_writer.h"
#include "datasets/file_io.h"
#include "decoder/bundle/install_paths.h"
#include "tests/model_fixtures.h"
#include "tests/test_util.h"

using namespace captioner;
using namespace captioner::test;
namespace fs = std::filesystem;

namespace {
std::string jpeg() { return solid_jpeg(0, 0, 255); }

// The shared tiny model, and `train` on a one-photo caption file.
struct Fixture : TinyModelFixture {
  // A one-photo caption file in tmp/data, for `train` (written on first use).
  fs::path one_photo_captions() {
    fs::path data = tmp / "data";
    if (!fs::exists(data / "captions.json")) {
      fs::create_directories(data);
      write_text(data / "1.jpg", jpeg());
      write_text(data / "captions.json",
                 R"({"images":[{"id":1,"file_name":"1.jpg"}],"annotations":[{"image_id":1,"id":1,"caption":"a dog runs"}]})");
    }
    return data / "captions.json";
  }
  // `captioner train` on that file into `out`; `prefix` runs first in the same shell (limits).
  CommandResult train(const fs::path& out, const std::string& extra, int epochs, const std::string& prefix = "") {
    const fs::path captions = one_photo_captions();
    return run_shell(prefix + "timeout 300 " + std::string(CAPTIONER_BINARY) + " train --train-captions " + captions.string() +
                     " --val-captions " + captions.string() + " --train-images " + captions.parent_path().string() +
                     " --encoder " + encoder.string() + " --min-word-count 1 --epochs " + std::to_string(epochs) +
                     " -q --cache-dir " + (tmp / "cache").string() + " --output-dir " + out.string() + extra);
  }
  // `timeout` turns a hang into exit 124 instead of a stuck suite.
  CommandResult caption(const std::string& args) {
    return run_shell("timeout 60 " + std::string(CAPTIONER_BINARY) + " caption " + args + " --model " + model.string() + " -q");
  }
};

size_t count_lines(const std::string& s) {  // non-empty ones
  auto all = lines(s);
  return static_cast<size_t>(std::count_if(all.begin(), all.end(), [](const std::string& l) { return !l.empty(); }));
}
}  // namespace

TEST(Reliability, SymlinkLoopsUnderRecursiveVisitEachFolderOnce) {
  Fixture f;
  fs::path root = f.tmp / "loop";
  fs::create_directories(root / "sub");
  write_text(root / "sub/a.jpg", jpeg());
  fs::create_directory_symlink("..", root / "sub/up1");
  fs::create_directory_symlink("..", root / "sub/up2");
  fs::create_directory_symlink("../sub", root / "sub/self");
  auto r = f.caption(root.string() + " --recursive");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count_lines(r.out), 1u) << "the photo was listed more than once:\n" << r.out;
  EXPECT_EQ(r.err.find("broken symbolic link"), std::string::npos) << r.err;
}

TEST(Reliability, PipesAndDevicesAreRefusedNotReadForever) {
  Fixture f;
  fs::path fifo = f.tmp / "pipe.jpg";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  write_text(f.tmp / "good.jpg", jpeg());
  auto r = f.caption(fifo.string() + " /dev/zero " + (f.tmp / "good.jpg").string());
  EXPECT_EQ(r.exit_code, 1) << r.err;  // the good photo is captioned, the rest named
  EXPECT_EQ(count_lines(r.out), 1u) << r.out;
  EXPECT_NE(r.err.find(fifo.string() + ": not a regular file"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("/dev/zero: not a regular file"), std::string::npos) << r.err;
  // A FIFO inside a listed folder is skipped like any other non-photo, without blocking.
  fs::create_directories(f.tmp / "dir");
  ASSERT_EQ(mkfifo((f.tmp / "dir/p.jpg").c_str(), 0600), 0);
  write_text(f.tmp / "dir/ok.jpg", jpeg());
  r = f.caption((f.tmp / "dir").string());
  EXPECT_NE(r.exit_code, 124) << "hung on the FIFO";
  EXPECT_EQ(count_lines(r.out), 1u) << r.out;
}

TEST(Reliability, CaptionsThatCannotBeWrittenFailTheRun) {
  Fixture f;
  write_text(f.tmp / "good.jpg", jpeg());
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

TEST(Reliability, TrainingNeverReplacesAModelUnlessAsked) {
  Fixture f;
  const std::string before = read_file(f.model / "config.json");
  auto r = f.train(f.model, "", 1);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("already holds a model or run"), std::string::npos) << r.err;
  EXPECT_EQ(read_file(f.model / "config.json"), before) << "the model was replaced";
  r = f.train(f.model, " --overwrite", 1);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(read_file(f.model / "config.json"), before);
}

TEST(Reliability, TrainingOnAFullDiskFailsCleanlyAndResumesLater) {
  Fixture f;
  ASSERT_EQ(f.train(f.tmp / "full_size", "", 2).exit_code, 0);
  const auto checkpoint_kb = fs::file_size(f.tmp / "full_size/checkpoint.pt") / 1024;
  ASSERT_GT(checkpoint_kb, 2u);
  // A file-size limit below the checkpoint's size makes its write fail as a full disk does
  // (EFBIG instead of ENOSPC; SIGXFSZ ignored, as a full disk sends no signal).
  const fs::path out = f.tmp / "run";
  auto r = f.train(out, "", 2, "ulimit -f " + std::to_string(checkpoint_kb / 2) + "; trap '' XFSZ; ");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.exit_code, 134) << "aborted:\n" << r.err;
  EXPECT_EQ(r.err.find("terminate called"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("cannot write"), std::string::npos) << r.err;
  EXPECT_LE(count_lines(r.err), 2u) << "not a one-line error:\n" << r.err;
  for (const auto& e : fs::directory_iterator(out)) {
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << "leftover " << e.path();
  }
  // Space is back: the same run continues.
  r = f.train(out, " --resume", 2);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(out / "config.json"));
  // A finished run continues when asked for more epochs, instead of "nothing to resume".
  r = f.train(out, " --resume --patience 5", 3);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::ifstream metrics(out / "metrics.jsonl");
  int epochs = 0;
  for (std::string line; std::getline(metrics, line);) epochs += line.find("\"type\":\"epoch\"") != std::string::npos;
  EXPECT_EQ(epochs, 3) << r.err;
}

TEST(Reliability, HandEditedModelSettingsOutOfRangeAreOneLineErrors) {
  Fixture f;
  write_text(f.tmp / "good.jpg", jpeg());
  const std::string config = read_file(f.model / "config.json");
  auto edited = [&](const std::string& from, const std::string& to) {
    auto at = config.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    std::string c = config;
    if (at != std::string::npos) c.replace(at, from.size(), to);
    write_text(f.model / "config.json", c);
    return f.caption((f.tmp / "good.jpg").string());
  };
  const std::string beam = "\"beam_size\": " + std::to_string(nlohmann::json::parse(config)["search"]["beam_size"].get<int>());
  for (const auto& [from, to, word] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {beam, "\"beam_size\": 100000", "beam_size"},
           {"\"hidden_dim\": ", "\"hidden_dim\": 1099511627776, \"x\": ", "hidden_dim"}}) {
    auto r = edited(from, to);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_LT(r.exit_code, 128) << "crashed:\n" << r.err;
    EXPECT_NE(r.err.find(word), std::string::npos) << r.err;
    EXPECT_LE(count_lines(r.err), 1u) << r.err;
  }
  write_text(f.model / "config.json", config);
  auto r = f.caption((f.tmp / "good.jpg").string() + " --sample --temperature 1e-45");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_LT(r.exit_code, 128) << r.err;
  EXPECT_NE(r.err.find("temperature"), std::string::npos) << r.err;
}

TEST(Reliability, ResumeMatchesPhotosHoweverTheFolderIsSpelledAndHonoursFormat) {
  Fixture f;
  fs::path dir = f.tmp / "P";
  fs::create_directories(dir);
  for (const char* n : {"a.jpg", "b.jpg", "c.jpg"}) write_text(dir / n, jpeg());
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
  Fixture f;
  write_text(f.tmp / "a.jpg", jpeg());
  const fs::path csv = f.tmp / "c.csv";
  write_text(csv, "file_name,image_id,caption,log_prob\nx.jpg,12,a dog,-1.5\ny.jpg,twelve,a dog,-1.5\n");
  auto r = f.caption((f.tmp / "a.jpg").string() + " --output " + csv.string() + " --resume");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_LT(r.exit_code, 128);
  EXPECT_NE(r.err.find(csv.string() + ": CSV row 3"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("stoll"), std::string::npos) << r.err;
}

TEST(Reliability, NetpbmPhotosAreImages) {
  Fixture f;
  cv::imwrite((f.tmp / "gray.pgm").string(), cv::Mat(10, 12, CV_8UC1, cv::Scalar(90)));
  cv::imwrite((f.tmp / "color.ppm").string(), cv::Mat(10, 12, CV_8UC3, cv::Scalar(1, 2, 3)));
  std::vector<uchar> ppm;
  cv::imencode(".ppm", cv::Mat(10, 12, CV_8UC3, cv::Scalar(4, 5, 6)), ppm);
  write_text(f.tmp / "no_extension", std::string(ppm.begin(), ppm.end()));  // found by its bytes
  auto r = f.caption(f.tmp.path().string());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count_lines(r.out), 3u) << r.out << r.err;
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
  Fixture f;
  fs::create_directories(f.tmp / "P");
  for (const char* n : {"0123.jpg", "123.jpg", "cat.jpg"}) write_text(f.tmp / "P" / n, jpeg());
  auto r = f.caption((f.tmp / "P").string() + " --format json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::set<int64_t> seen;
  for (const auto& row : nlohmann::json::parse(r.out)) seen.insert(row.at("image_id").get<int64_t>());
  EXPECT_EQ(seen.size(), 3u) << r.out;
}

// `eval --results r.json --max-images N` called the results for images past N "not in" the
// annotations; it now scores the first N images and leaves the other results out.
TEST(Reliability, EvalOfAResultsFileWithMaxImagesScoresTheFirstImages) {
  TempDir tmp;
  nlohmann::json coco{{"images", nlohmann::json::array()}, {"annotations", nlohmann::json::array()}};
  nlohmann::json results = nlohmann::json::array();
  for (int i = 1; i <= 5; ++i) {
    coco["images"].push_back({{"id", i}, {"file_name", std::to_string(i) + ".jpg"}});
    coco["annotations"].push_back({{"id", i}, {"image_id", i}, {"caption", "a dog runs on the grass"}});
    results.push_back({{"image_id", i}, {"caption", "a dog runs on grass"}});
  }
  write_text(tmp / "refs.json", coco.dump());
  write_text(tmp / "results.json", results.dump());
  auto r = run_cli("eval --annotations " + (tmp / "refs.json").string() + " --results " + (tmp / "results.json").string() +
                   " --max-images 2 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.find("not in"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("first 2 images"), std::string::npos) << r.err;
  auto scores = nlohmann::json::parse(r.out);
  EXPECT_GT(scores.at("BLEU-1").get<double>(), 0.5) << r.out;
  EXPECT_EQ(scores.at("images").get<int64_t>(), 2) << r.out;
}

// Names that are not UTF-8, or hold a tab or a newline, were captioned again on every --resume
// (JSON stores U+FFFD for bad bytes; the text format split rows at the tab).
TEST(Reliability, ResumeMatchesNamesThatAreNotUtf8OrHoldTabsAndNewlines) {
  Fixture f;
  const fs::path dir = f.tmp / "P";
  fs::create_directories(dir);
  for (const std::string n : {"plain.jpg", "bad\xff.jpg", "bad\xfe.jpg", "tab\there.jpg", "new\nline.jpg", "back\\slash.jpg"}) {
    write_text(dir / n, jpeg());
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
TEST(Reliability, TwoRunsNeverWriteOneOutputOrRunFolderAtOnce) {
  Fixture f;
  write_text(f.tmp / "a.jpg", jpeg());
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
    auto r = f.train(f.tmp / "run", "", 1);
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
TEST(Reliability, TheReportOfAResumedRunShowsEveryCaption) {
  Fixture f;
  const fs::path dir = f.tmp / "P";
  fs::create_directories(dir);
  for (const char* n : {"a.jpg", "b.jpg"}) write_text(dir / n, jpeg());
  const fs::path out = f.tmp / "c.json", html = f.tmp / "r.html";
  ASSERT_EQ(f.caption(dir.string() + " --output " + out.string()).exit_code, 0);
  write_text(dir / "c.jpg", jpeg());
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
TEST(Reliability, ACopiedModelFolderStillFindsItsEncoder) {
  const fs::path source = fs::path(CAPTIONER_SOURCE_DIR) / "models";
  if (!fs::exists(source / "encoders/mobilenet_v2_int8.pt"))
    GTEST_SKIP() << "the default encoder is not built: run scripts/setup.sh";
  TempDir tmp;
  fs::copy(source / "default", tmp / "copied", fs::copy_options::recursive);
  write_text(tmp / "a.jpg", jpeg());
  auto r = run_shell("timeout 120 " + std::string(CAPTIONER_BINARY) + " caption " + (tmp / "a.jpg").string() + " --model " +
                     (tmp / "copied").string() + " -q");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count_lines(r.out), 1u) << r.out;
}

// A 16-bit RGBA PNG inside --max-pixels took 5.5 GB: converted and composited at full size in
// float. It is now shrunk in its own depth first; the whole process stays under 1.5 GB.
TEST(Reliability, ALarge16BitPngIsCaptionedInBoundedMemory) {
  Fixture f;
  const fs::path png = f.tmp / "big.png";
  {
    cv::Mat big(8000, 8000, CV_16UC4, cv::Scalar(20000, 40000, 60000, 50000));
    cv::rectangle(big, {1000, 1000}, {3000, 5000}, cv::Scalar(65535, 0, 0, 65535), cv::FILLED);
    ASSERT_TRUE(cv::imwrite(png.string(), big, {cv::IMWRITE_PNG_COMPRESSION, 1}));
  }
  pid_t child = fork();
  if (child == 0) {
    const std::string model = f.model.string(), file = png.string();
    int devnull = ::open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    execl(CAPTIONER_BINARY, CAPTIONER_BINARY, "caption", file.c_str(), "--model", model.c_str(), "-q",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  struct rusage usage {};
  ASSERT_EQ(wait4(child, &status, 0, &usage), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  const double peak_mib = usage.ru_maxrss / 1024.0;
  EXPECT_LT(peak_mib, 1536) << "captioning one 8000x8000 16-bit PNG peaked at " << peak_mib << " MiB";
}

// `-o same.jpg` with same.jpg among the photos replaced the photo with JSON, exit 0.
TEST(Reliability, AnOutputThatIsOneOfThePhotosIsRefused) {
  Fixture f;
  write_text(f.tmp / "same.jpg", jpeg());
  // A .jpg name says no caption format, so it is refused for that first; with --format it is
  // refused for being a photo.
  auto r = f.caption((f.tmp / "same.jpg").string() + " --output " + (f.tmp / "." / "same.jpg").string());
  EXPECT_EQ(r.exit_code, 2);
  r = f.caption((f.tmp / "same.jpg").string() + " --format json --output " + (f.tmp / "." / "same.jpg").string());
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("is one of the photos to caption"), std::string::npos) << r.err;
  EXPECT_EQ(read_file(f.tmp / "same.jpg"), jpeg()) << "the photo was overwritten";
}

// An encoder that fails inside TorchScript printed the interpreter's two-part traceback (20+
// lines). The error is now one line naming the encoder; --verbose keeps the rest available.
TEST(Reliability, AnEncoderThatFailsMidRunIsOneLineNotATrace) {
  TempDir tmp;
  torch::jit::Module m("fails_on_pairs");
  m.define(R"(
    def forward(self, x):
        if x.size(0) == 2:
            x = x.view(-1, 7)
        return x.mean(dim=[2, 3])
  )");
  const fs::path encoder = tmp / "encoders" / "fails_on_pairs.pt";
  fs::create_directories(encoder.parent_path());
  m.save(encoder.string());
  fs::copy_file(make_tiny_encoder(tmp / "tiny").string() + ".json", encoder.string() + ".json");
  make_bundle(encoder, make_vocab({"a", "dog"})).save(tmp / "model");
  for (const char* n : {"a.jpg", "b.jpg"}) write_text(tmp / n, jpeg());
  auto r = run_cli("caption " + (tmp / "a.jpg").string() + " " + (tmp / "b.jpg").string() + " --model " +
                   (tmp / "model").string() + " -q");
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("encoder " + encoder.string() + " failed on a batch of 2"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

// A cache is only an optimisation: with a cache folder that cannot be made (read-only HOME, a file
// in the way) eval encoded everything and then failed. It now warns and scores.
TEST(Reliability, ACacheThatCannotBeWrittenOnlyCostsTheCache) {
  Fixture f;
  const fs::path captions = f.one_photo_captions();
  write_text(f.tmp / "in_the_way", "a file where the cache folder would go");
  auto r = run_shell("timeout 120 " + std::string(CAPTIONER_BINARY) + " eval --annotations " + captions.string() + " --images " +
                     captions.parent_path().string() + " --model " + f.model.string() + " --cache-dir " +
                     (f.tmp / "in_the_way" / "cache").string() + " -q --json");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: features not cached"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("BLEU-4"), std::string::npos) << r.out;
}

// With HOME unset the cache must not go to a fixed /tmp folder another local user could have
// created first and filled with planted features.
TEST(Reliability, WithoutHomeTheCacheIsThisUsersOwn) {
  std::optional<std::string> home, xdg;
  if (const char* h = std::getenv("HOME")) home = h;
  if (const char* x = std::getenv("XDG_CACHE_HOME")) xdg = x;
  unsetenv("HOME");
  unsetenv("XDG_CACHE_HOME");
  const fs::path dir = default_cache_dir();
  if (home) setenv("HOME", home->c_str(), 1);
  if (xdg) setenv("XDG_CACHE_HOME", xdg->c_str(), 1);
  EXPECT_EQ(dir.filename().string(), "captioner-cache-" + std::to_string(getuid())) << dir;
  EXPECT_EQ(dir.parent_path(), fs::temp_directory_path()) << dir;
}

// Issue 27 A: in a shared folder another user plants `.<output>.lock` -> a file of root's; root's
// next run must refuse the link, not truncate the file: caption -o, merge -o and train --output-dir.
TEST(Reliability, PlantedLockLinksAreRefusedAndTheirTargetsUntouched) {
  Fixture f;
  write_text(f.tmp / "a.jpg", jpeg());
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
  r = f.train(f.tmp / "run", "", 1);
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
  r = f.train(f.tmp / "run2", "", 1);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("metrics.jsonl"), std::string::npos) << r.err;
  EXPECT_EQ(read_file(f.tmp / "victim.txt"), "DATA\n");
}

// Issue 27 C: a caption file's entries name photos inside --train-images; one that leaves it (an
// absolute path, a climbing "..") is refused with a line naming the entry. Links placed inside
// the folder by the user stay allowed.
TEST(Reliability, TrainingReadsNoPhotoOutsideItsImageFolder) {
  Fixture f;
  fs::create_directories(f.tmp / "outside");
  write_text(f.tmp / "outside" / "eagle.jpg", jpeg());
  fs::create_directories(f.tmp / "data" / "sub");
  write_text(f.tmp / "data" / "1.jpg", jpeg());
  const std::string bad_names[] = {"../outside/eagle.jpg", "sub/../../outside/eagle.jpg",
                                   (f.tmp / "outside" / "eagle.jpg").string()};
  for (const auto& name : bad_names) {
    write_text(
        f.tmp / "data" / "escape.json",
        R"({"images":[{"id":1,"file_name":"1.jpg"},{"id":2,"file_name":")" + name +
            R"("}],"annotations":[{"image_id":1,"id":1,"caption":"a dog runs"},{"image_id":2,"id":2,"caption":"an eagle flies"}]})");
    auto r = run_shell(
        "timeout 120 " + std::string(CAPTIONER_BINARY) + " train --train-captions " + (f.tmp / "data" / "escape.json").string() +
        " --val-captions " + (f.tmp / "data" / "escape.json").string() + " --train-images " + (f.tmp / "data").string() +
        " --encoder " + f.encoder.string() + " --min-word-count 1 --epochs 1 -q --output-dir " + (f.tmp / "run-escape").string());
    EXPECT_EQ(r.exit_code, 3) << name << ": " << r.err;
    EXPECT_NE(r.err.find("escape.json"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("images[1].file_name"), std::string::npos) << r.err;
    EXPECT_TRUE(r.err.find("outside the image folder") != std::string::npos || r.err.find("climbs out") != std::string::npos)
        << r.err;
    EXPECT_FALSE(fs::exists(f.tmp / "run-escape" / "vocab.json"));
  }
  // A link the user put inside the folder is the user's choice.
  fs::create_symlink(f.tmp / "outside" / "eagle.jpg", f.tmp / "data" / "linked.jpg");
  write_text(f.tmp / "data" / "linked.json",
             R"({"images":[{"id":1,"file_name":"1.jpg"},{"id":2,"file_name":"sub/../linked.jpg"}],)"
             R"("annotations":[{"image_id":1,"id":1,"caption":"a dog runs"},{"image_id":2,"id":2,"caption":"a dog runs"}]})");
  auto r = run_shell("timeout 300 " + std::string(CAPTIONER_BINARY) + " train --train-captions " +
                     (f.tmp / "data" / "linked.json").string() + " --val-captions " + (f.tmp / "data" / "linked.json").string() +
                     " --train-images " + (f.tmp / "data").string() + " --encoder " + f.encoder.string() +
                     " --min-word-count 1 --epochs 1 -q --output-dir " + (f.tmp / "run-linked").string());
  EXPECT_EQ(r.exit_code, 0) << r.err;
}
