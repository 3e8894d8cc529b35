// The CLI facing a real, messy folder: every bad file gets one clear line naming it, the rest is
// captioned, and the exit code says that something failed. Uses a tiny model (fast, no ../shared).
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <sstream>

#include "datasets/json_util.h"
#include "tests/model_fixtures.h"
#include "tests/test_util.h"

using namespace captioner;
using namespace captioner::test;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {
std::string png(cv::Scalar color, int w = 12, int h = 10, int type = CV_8UC3) {
  std::vector<uchar> buf;
  cv::imencode(".png", cv::Mat(h, w, type, color), buf);
  return std::string(buf.begin(), buf.end());
}
std::string jpeg(cv::Scalar color) {
  std::vector<uchar> buf;
  cv::imencode(".jpg", cv::Mat(10, 12, CV_8UC3, color), buf);
  return std::string(buf.begin(), buf.end());
}

using Fixture = TinyModelFixture;

}  // namespace

TEST(BadInput, MessyFolderIsCaptionedAndEveryBadFileNamedOnce) {
  Fixture f;
  fs::path dir = f.tmp / "photos";
  fs::create_directories(dir / "nested/deeper");
  write_text(dir / "good.jpg", jpeg({0, 0, 255}));
  write_text(dir / "gray.png", png({90}, 12, 10, CV_8UC1));
  write_text(dir / "rgba.png", png({0, 255, 0, 128}, 12, 10, CV_8UC4));
  write_text(dir / "deep16.png", png({30000, 1000, 50000}, 12, 10, CV_16UC3));
  write_text(dir / "tiny.png", png({1, 2, 3}, 1, 1));
  write_text(dir / "png_named.jpg", png({5, 5, 5}));
  write_text(dir / "caf\xC3\xA9 with space.png", png({7, 8, 9}));
  fs::copy_file(fs::path(CAPTIONER_SOURCE_DIR) / "tests/data/cmyk_red_blue.jpg", dir / "cmyk.jpg");
  fs::create_symlink(dir / "good.jpg", dir / "link_to_good.jpg");
  write_text(dir / "nested/inner.jpg", jpeg({10, 200, 10}));
  write_text(dir / "nested/deeper/innermost.png", png({200, 10, 10}));
  // The bad ones.
  write_text(dir / "empty.jpg", "");
  std::string j = jpeg({1, 2, 3});
  write_text(dir / "half.jpg", j.substr(0, j.size() / 2));
  write_text(dir / "notes.txt", "a text file");  // not an image: skipped silently in a folder scan
  write_text(dir / "text_named.png", "hello, not a png");
  write_text(dir / "paper.pdf.jpg", "%PDF-1.5 fake document");
  std::string big = png({0});
  for (int i = 0; i < 4; ++i) big[16 + i] = "\x00\x00\x4e\x20"[i];  // width 20000
  for (int i = 0; i < 4; ++i) big[20 + i] = "\x00\x00\x4e\x20"[i];  // height 20000
  write_text(dir / "huge.png", big);
  fs::create_symlink(dir / "gone.jpg", dir / "broken_link.jpg");

  auto r = f.caption(dir.string() + " --recursive --format jsonl");
  EXPECT_EQ(r.exit_code, 1) << "failures must show in the exit code\n" << r.err;
  std::set<std::string> captioned;
  for (const auto& l : lines(r.out))
    captioned.insert(fs::path(json::parse(l)["file_name"].get<std::string>()).filename().string());
  for (const char* good : {"good.jpg", "gray.png", "rgba.png", "deep16.png", "tiny.png", "png_named.jpg",
                           "caf\xC3\xA9 with space.png", "cmyk.jpg", "link_to_good.jpg", "inner.jpg", "innermost.png"}) {
    EXPECT_TRUE(captioned.count(good)) << good << " was not captioned\n" << r.err;
  }
  EXPECT_EQ(captioned.size(), 11u);
  auto err = lines(r.err);
  auto mentioned = [&](const std::string& name, const std::string& problem) {
    int n = 0;
    for (const auto& l : err) n += l.find(name) != std::string::npos && l.find(problem) != std::string::npos;
    EXPECT_EQ(n, 1) << name << " should be reported once with \"" << problem << "\"\n" << r.err;
  };
  mentioned("empty.jpg", "empty file");
  mentioned("half.jpg", "truncated");
  mentioned("text_named.png", "not an image");
  mentioned("paper.pdf.jpg", "PDF");
  mentioned("huge.png", "20000x20000");
  mentioned("broken_link.jpg", "broken symbolic link");
  EXPECT_EQ(r.err.find("notes.txt"), std::string::npos);

  // Without --recursive the nested images are left alone.
  auto flat = f.caption(dir.string() + " --format jsonl");
  EXPECT_EQ(lines(flat.out).size(), 9u);
}

TEST(BadInput, UnreadableFileIsReported) {
  Fixture f;
  fs::path dir = f.tmp / "photos";
  write_text(dir / "ok.png", png({1, 2, 3}));
  write_text(dir / "secret.png", png({1, 2, 3}));
  fs::permissions(dir / "secret.png", fs::perms::none);
  // root reads anything; run the CLI as nobody then (setpriv, util-linux).
  std::string prefix;
  if (::geteuid() == 0) {
    fs::permissions(f.tmp.path(), fs::perms::all, fs::perm_options::add);
    for (auto& e : fs::recursive_directory_iterator(f.tmp.path())) {
      if (e.path().filename() != "secret.png") fs::permissions(e.path(), fs::perms::all, fs::perm_options::add);
    }
    prefix = "setpriv --reuid=65534 --regid=65534 --clear-groups ";
  }
  auto r = run_shell(prefix + "'" + std::string(CAPTIONER_BINARY) + "' caption " + dir.string() + " --model " + f.model.string() +
                     " -q");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.out.find("ok.png"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("secret.png: cannot open: Permission denied"), std::string::npos) << r.err;
}

TEST(BadInput, EmptyFolderAndMissingPathsAreClearErrors) {
  Fixture f;
  fs::create_directories(f.tmp / "empty");
  auto r = f.caption((f.tmp / "empty").string());
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("error: no images found in " + (f.tmp / "empty").string()), std::string::npos) << r.err;
  EXPECT_EQ(lines(r.err).size(), 1u) << r.err;
  r = f.caption((f.tmp / "nope").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("nope: no such file or folder"), std::string::npos) << r.err;
  // A named file that is not an image is reported, not silently skipped.
  write_text(f.tmp / "list.txt", "x");
  write_text(f.tmp / "ok.png", png({1, 2, 3}));
  r = f.caption((f.tmp / "list.txt").string() + " " + (f.tmp / "ok.png").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("list.txt: not an image"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("ok.png"), std::string::npos);
}

TEST(BadInput, BrokenModelsAndCaptionFilesGiveOneLineErrors) {
  Fixture f;
  write_text(f.tmp / "ok.png", png({1, 2, 3}));
  auto one_line_error = [](const CommandResult& r, const std::string& fragment) {
    expect_one_line_error(r, 3, {"error: ", fragment});
  };
  fs::copy(f.model, f.tmp / "truncated", fs::copy_options::recursive);
  auto w = (f.tmp / "truncated/decoder.pt").string();
  fs::resize_file(w, fs::file_size(w) / 3);
  one_line_error(run_cli("caption " + (f.tmp / "ok.png").string() + " --model " + (f.tmp / "truncated").string()),
                 "truncated/decoder.pt");
  fs::copy(f.model, f.tmp / "future", fs::copy_options::recursive);
  {
    std::ifstream in(f.tmp / "future/config.json");
    json c = json::parse(in);
    c["version"] = 42;
    std::ofstream(f.tmp / "future/config.json") << c.dump();
  }
  one_line_error(run_cli("caption " + (f.tmp / "ok.png").string() + " --model " + (f.tmp / "future").string()), "newer");
  one_line_error(run_cli("caption " + (f.tmp / "ok.png").string() + " --model " + (f.tmp / "nomodel").string()), "not found");

  // eval with broken caption files.
  write_text(
      f.tmp / "bad.json",
      "{\"images\": [{\"id\": 1, \"file_name\": \"a.jpg\"}], \"annotations\": [{\"image_id\": \"1\", \"caption\": \"x\"}]}");
  write_text(f.tmp / "r.json", "[{\"image_id\": 1, \"caption\": \"a dog\"}]");
  one_line_error(run_cli("eval --results " + (f.tmp / "r.json").string() + " --annotations " + (f.tmp / "bad.json").string()),
                 "annotations[0].image_id: expected an integer, found string");
  write_text(f.tmp / "latin1.json", "{\"images\": [{\"id\": 1, \"file_name\": \"caf\xE9.jpg\"}], \"annotations\": []}");
  one_line_error(run_cli("eval --results " + (f.tmp / "r.json").string() + " --annotations " + (f.tmp / "latin1.json").string()),
                 "latin1.json:1:");
}

TEST(MutualInformationCli, MiDecodingNeedsTheModelsPrior) {
  Fixture f;
  write_text(f.tmp / "photos/a.png", png({200, 30, 30}));
  write_text(f.tmp / "photos/b.png", png({30, 200, 30}));
  // A model saved without a prior: --mi-weight says how to get one, in one line.
  auto r = f.caption((f.tmp / "photos").string() + " --mi-weight 0.1");
  EXPECT_EQ(r.exit_code, 3) << r.err;
  ASSERT_EQ(lines(r.err).size(), 1u) << r.err;
  EXPECT_NE(r.err.find("train it again"), std::string::npos) << r.err;

  // With one (every trained model stores it), the same command works.
  auto model = make_bundle(make_tiny_encoder(f.tmp / "encoders"), make_vocab({"a", "dog", "cat", "runs", "on", "the", "grass"}));
  model.set_image_prior(torch::rand({2, 3}));
  model.save(f.model);
  EXPECT_EQ(load_json_file(f.model / "config.json")["image_prior"]["images"], 2);
  r = f.caption((f.tmp / "photos").string() + " --mi-weight 0.1");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines(r.out).size(), 2u) << r.out;
  EXPECT_NE(f.caption((f.tmp / "photos").string() + " --mi-weight 1.5").exit_code, 0);
}

TEST(CaptionOutput, WrittenAtomicallyAndResumable) {
  Fixture f;
  fs::path dir = f.tmp / "photos";
  for (int i = 0; i < 6; ++i) write_text(dir / ("p" + std::to_string(i) + ".png"), png({i * 40.0, 20, 30}));
  auto out = f.tmp / "captions.json";
  auto r = f.caption(dir.string() + " --output " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream in(out);
  auto first = json::parse(in);
  ASSERT_EQ(first.size(), 6u);
  for (const auto& e : fs::directory_iterator(f.tmp.path())) {
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << "temporary file left: " << e.path();
  }
  // Two more photos; --resume keeps the six and captions only the new ones.
  write_text(dir / "p6.png", png({1, 200, 30}));
  write_text(dir / "p7.png", png({1, 20, 230}));
  r = run_cli("caption " + dir.string() + " --model " + f.model.string() + " --output " + out.string() + " --resume");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("6 photos already in"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("2 to caption"), std::string::npos) << r.err;
  std::ifstream in2(out);
  auto second = json::parse(in2);
  ASSERT_EQ(second.size(), 8u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(second[i], first[i]);
  // Every format reads back.
  for (const char* ext : {".jsonl", ".csv", ".tsv", ".txt"}) {
    auto o = f.tmp / (std::string("c") + ext);
    ASSERT_EQ(f.caption(dir.string() + " --output " + o.string()).exit_code, 0);
    auto again = run_cli("caption " + dir.string() + " --model " + f.model.string() + " --output " + o.string() + " --resume");
    EXPECT_NE(again.err.find("8 photos already in"), std::string::npos) << ext << ": " << again.err;
  }
}

// Issue 27 F: everything in a folder that is not captioned is named (a FIFO, HEIC/AVIF/JPEG 2000
// photos, an unreadable subfolder under -r, an unreadable folder given directly), and the exit
// code says so. Text files are only counted: they are not photos.
TEST(BadInput, NothingInAFolderIsSkippedInSilence) {
  Fixture f;
  const fs::path dir = f.tmp / "photos";
  fs::create_directories(dir / "locked");
  write_text(dir / "ok.png", png({1, 2, 3}));
  write_text(dir / "locked" / "hidden.png", png({1, 2, 3}));
  write_text(dir / "notes.txt", "not a photo");
  for (const char* name : {"phone.heic", "phone.avif", "scan.jp2"})
    write_text(dir / name,
               "\0\0\0\x18"
               "ftypheic");
  ASSERT_EQ(mkfifo((dir / "pipe.jpg").c_str(), 0644), 0);
  auto r = f.caption(dir.string());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.out.find("ok.png"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("phone.heic: HEIC/HEIF images are not supported"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("phone.avif: AVIF images are not supported"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("scan.jp2: JPEG 2000 images are not supported"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("pipe.jpg: not a regular file"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("notes.txt"), std::string::npos) << r.err;

  // Run as an ordinary user (root reads every folder): an unreadable subfolder under -r, and an
  // unreadable folder named directly, are each one line, not "no images found".
  fs::remove(dir / "pipe.jpg");
  for (const char* name : {"phone.heic", "phone.avif", "scan.jp2"}) fs::remove(dir / name);
  fs::permissions(f.tmp.path(), fs::perms::all);  // the ordinary user must reach the model and photos
  fs::permissions(dir / "locked", fs::perms::none);
  const std::string as_user = geteuid() == 0 ? "setpriv --reuid=65534 --regid=65534 --clear-groups " : "";
  if (as_user.empty() || fs::exists("/usr/bin/setpriv")) {
    r = run_shell(as_user + CAPTIONER_BINARY + " caption -r " + dir.string() + " --model " + f.model.string() + " -q");
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_NE(r.out.find("ok.png"), std::string::npos) << r.out;
    EXPECT_NE(r.err.find("locked: cannot list folder: Permission denied"), std::string::npos) << r.err;
    r = run_shell(as_user + CAPTIONER_BINARY + " caption " + (dir / "locked").string() + " --model " + f.model.string() + " -q");
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_NE(r.err.find("locked: cannot list folder: Permission denied"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("no images found"), std::string::npos) << r.err;
  } else {
    ADD_FAILURE() << "setpriv (util-linux) is needed to run as an ordinary user";
  }
  fs::permissions(dir / "locked", fs::perms::owner_all);

  // Without -r a subfolder is noted, and an empty-looking folder's hint names its subfolders.
  r = run_cli("caption " + dir.string() + " --model " + f.model.string());
  EXPECT_NE(r.err.find("note: 1 subfolder not entered (--recursive enters them)"), std::string::npos) << r.err;
  fs::remove(dir / "ok.png");
  r = f.caption(dir.string());
  EXPECT_NE(r.err.find("use --recursive to look in its 1 subfolder"), std::string::npos) << r.err;
  fs::remove_all(dir / "locked");
  r = f.caption(dir.string());
  EXPECT_EQ(r.err.find("--recursive"), std::string::npos) << r.err;
}

// Issue 29: other programs' inputs. `caption -` reads photo paths from standard input,
// `--files-from LIST` from a file (blank lines skipped, each path taken as named), and `-o -`
// streams JSON lines to standard output.
TEST(CaptionOutput, PathsFromStdinOrAListAndJsonLinesToStdout) {
  Fixture f;
  write_text(f.tmp / "a.png", png({200, 30, 30}));
  write_text(f.tmp / "b.png", png({30, 200, 30}));
  write_text(f.tmp / "list.txt", (f.tmp / "a.png").string() + "\n\n" + (f.tmp / "b.png").string() + "\r\n");
  auto r = run_shell("printf '%s\\n' '" + (f.tmp / "b.png").string() + "' | '" + CAPTIONER_BINARY + "' caption - --model " +
                     f.model.string() + " -o - -q");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto rows = lines(r.out);
  ASSERT_EQ(rows.size(), 1u) << r.out;
  EXPECT_EQ(json::parse(rows[0])["file_name"], (f.tmp / "b.png").string());
  r = f.caption("--files-from " + (f.tmp / "list.txt").string() + " -o -");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  rows = lines(r.out);
  ASSERT_EQ(rows.size(), 2u) << r.out;
  EXPECT_EQ(json::parse(rows[0])["file_name"], (f.tmp / "a.png").string());
  EXPECT_EQ(json::parse(rows[1])["file_name"], (f.tmp / "b.png").string());
  EXPECT_FALSE(json::parse(rows[1])["caption"].get<std::string>().empty());
  // A path in the list that is missing is named like any other, and the exit code says so.
  write_text(f.tmp / "list.txt", (f.tmp / "a.png").string() + "\n" + (f.tmp / "gone.png").string() + "\n");
  r = f.caption("--files-from " + (f.tmp / "list.txt").string() + " -o -");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("gone.png"), std::string::npos) << r.err;
  EXPECT_EQ(lines(r.out).size(), 1u) << r.out;
  // Nothing to caption at all is a usage error, not an empty success.
  r = run_shell("'" + std::string(CAPTIONER_BINARY) + "' caption --model " + f.model.string() + " -q");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--files-from"), std::string::npos) << r.err;
  r = f.caption((f.tmp / "a.png").string() + " -o - --resume");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("-o - streams to standard output"), std::string::npos) << r.err;
}
