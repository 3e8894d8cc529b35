// The command line as a user meets it: output formats named by the file, one exit-code
// convention, mistakes answered with the word and its nearest spelling, old spellings that still
// work with one warning, a progress bar that never wraps, and results scored by file name.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <regex>

#include "datasets/file_io.h"
#include "tests/model_fixtures.h"
#include "tests/test_util.h"

using namespace captioner;
using namespace captioner::test;
using nlohmann::json;
namespace fs = std::filesystem;

TEST(CommandLine, TheOutputNameChoosesTheFormatOrIsRefused) {
  TinyModelFixture f;
  write_text(f.tmp / "a.jpg", solid_jpeg());
  write_text(f.tmp / "b.png", solid_png(200, 30, 30));
  const std::string photos = (f.tmp / "a.jpg").string() + " " + (f.tmp / "b.png").string();

  ASSERT_EQ(f.caption(photos + " -o " + (f.tmp / "x.tsv").string()).exit_code, 0);
  auto tsv = lines(read_file(f.tmp / "x.tsv"));
  ASSERT_EQ(tsv.size(), 3u);
  EXPECT_EQ(tsv[0], "file_name\timage_id\tcaption\tlog_prob");
  EXPECT_EQ(std::count(tsv[1].begin(), tsv[1].end(), '\t'), 3) << tsv[1];

  // The extension in any case: X.JSONL is JSON lines.
  ASSERT_EQ(f.caption(photos + " -o " + (f.tmp / "X.JSONL").string()).exit_code, 0);
  for (const auto& line : lines(read_file(f.tmp / "X.JSONL"))) EXPECT_TRUE(json::parse(line).contains("caption")) << line;

  // A name that says no format is refused before anything is read, and nothing is written.
  for (const std::string name : {"out", "captions.out", "c.jsn"}) {
    auto r = f.caption(photos + " -o " + (f.tmp / name).string());
    expect_one_line_error(r, 2, {name, ".json, .jsonl, .csv, .tsv or .txt"});
    EXPECT_FALSE(fs::exists(f.tmp / name)) << name;
  }
  // --format says it where the name does not.
  EXPECT_EQ(f.caption(photos + " -o " + (f.tmp / "out").string() + " --format tsv").exit_code, 0);
  EXPECT_EQ(lines(read_file(f.tmp / "out")).front(), tsv[0]);
  // merge follows the same rule.
  auto r = run_cli("merge " + (f.tmp / "x.tsv").string() + " -o " + (f.tmp / "merged").string());
  EXPECT_EQ(r.exit_code, 2) << r.err;
}

TEST(CommandLine, MistakesNameTheWordTheNearestSpellingAndExitTwo) {
  auto r = run_cli("");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("no command given"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("commands: caption, train, eval"), std::string::npos) << r.err;

  r = run_cli("capton x.jpg");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown command 'capton'; did you mean 'caption'?"), std::string::npos) << r.err;

  r = run_cli("caption x.jpg --beams 5");
  expect_one_line_error(r, 2, {"captioner caption has no option --beams; did you mean --beam?"});
  r = run_cli("train --lerning-rate 1");
  expect_one_line_error(r, 2, {"captioner train has no option --lerning-rate"});
  r = run_cli("caption x.jpg --beam 0");
  expect_one_line_error(r, 2, {"--beam", "captioner caption --help"});

  // --help still exits 0, and lists the exit codes.
  r = run_cli("--help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("Exit codes: 0 everything done; 1 some inputs failed"), std::string::npos) << r.out;
}

TEST(CommandLine, ExitCodesAreOneConventionInEveryCommand) {
  TinyModelFixture f;
  write_text(f.tmp / "a.jpg", solid_jpeg());
  write_text(f.tmp / "broken.jpg", "\xFF\xD8\xFF\xE0 cut");
  EXPECT_EQ(f.caption((f.tmp / "a.jpg").string()).exit_code, 0);
  // Some inputs failed, the rest done: 1.
  EXPECT_EQ(f.caption((f.tmp / "a.jpg").string() + " " + (f.tmp / "broken.jpg").string()).exit_code, 1);
  // Stopped by an error: 3 (a model that is not there, annotations that are not JSON).
  expect_one_line_error(run_cli("caption " + (f.tmp / "a.jpg").string() + " --model " + (f.tmp / "nope").string()), 3, {"nope"});
  write_text(f.tmp / "refs.json", "{");
  write_text(f.tmp / "r.json", "[]");
  expect_one_line_error(
      run_cli("eval --results " + (f.tmp / "r.json").string() + " --annotations " + (f.tmp / "refs.json").string()), 3,
      {"refs.json"});
  // A wrong command line: 2, in train too.
  EXPECT_EQ(run_cli("train --epochs x").exit_code, 2);
}

TEST(CommandLine, OldSpellingsStillWorkWithOneWarningNamingTheNewOne) {
  TinyModelFixture f;
  make_tiny_classifier(f.encoder, {"n02084071 dog", "n02121808 cat", "n12102133 grass"});
  write_text(f.tmp / "a.jpg", solid_jpeg());
  auto r = f.caption((f.tmp / "a.jpg").string() + " --tags 0.9");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "warning: --tags is now --tag-confidence (the old spelling will be removed)\n");
  // The renamed options mean one thing each; the old names are not listed in --help.
  r = run_cli("train --help");
  for (const char* name : {"--output-dir", "--batch-captions", "--max-train-words", "--no-image-dropout "}) {
    EXPECT_NE(r.out.find(name), std::string::npos) << name;
  }
  EXPECT_EQ(r.out.find("{false}"), std::string::npos) << "flags show no CLI11 defaults syntax";
  EXPECT_EQ(std::regex_search(r.out, std::regex("--output[^-]")), false) << r.out;
  EXPECT_EQ(std::regex_search(r.out, std::regex("--batch[^-]")), false) << r.out;
  r = run_cli("eval --help");
  for (const char* name : {"--val-split", "--encoder-batch", "-o,--output"}) {
    EXPECT_NE(r.out.find(name), std::string::npos) << name;
  }
}

TEST(CommandLine, VersionNamesTheRevisionLibTorchAndTheCpuFeaturesCaptionsDependOn) {
  auto r = run_cli("--version");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(std::regex_search(r.out, std::regex("^captioner [0-9]+\\.[0-9]+\\.[0-9]+ \\(git [^)]+\\)\n"))) << r.out;
  EXPECT_NE(r.out.find("LibTorch 1."), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("AVX512-VNNI"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("AVX512-BF16"), std::string::npos) << r.out;
}

TEST(CommandLine, CountsReadAsEnglish) {
  TinyModelFixture f;
  write_text(f.tmp / "a.jpg", solid_jpeg());
  auto r =
      run_cli("caption " + (f.tmp / "a.jpg").string() + " --model " + f.model.string() + " -o " + (f.tmp / "c.json").string());
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.err.find("captioned 1 photo in "), std::string::npos) << r.err;
}

// A progress bar wider than the terminal wraps at every redraw and leaves debris: each redraw must
// fit, in a 70-column terminal and in a 30-column one (a pseudo-terminal made by script(1)).
TEST(CommandLine, TheProgressBarFitsTheTerminal) {
  if (!fs::exists("/usr/bin/script")) GTEST_SKIP() << "script(1) (util-linux) not installed";
  TinyModelFixture f;
  fs::create_directories(f.tmp / "photos");
  for (int i = 0; i < 40; ++i) write_text(f.tmp / "photos" / (std::to_string(i) + ".jpg"), solid_jpeg(i * 5, 60, 200));
  for (int columns : {70, 30}) {
    const std::string command = "stty cols " + std::to_string(columns) + "; '" + std::string(CAPTIONER_BINARY) + "' caption " +
                                (f.tmp / "photos").string() + " --model " + f.model.string() + " --batch 1 --threads 1 -o " +
                                (f.tmp / "c.json").string();
    auto r = run_shell("script -qec \"" + command + "\" /dev/null");
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    size_t bars = 0;
    // Each redraw is "\r\033[K<line>"; the closing summary ends with a newline.
    const std::regex separator("\r\033\\[K|\r?\n");
    const std::vector<std::string> pieces(std::sregex_token_iterator(r.out.begin(), r.out.end(), separator, -1),
                                          std::sregex_token_iterator());
    for (const std::string& piece : pieces) {
      if (piece.rfind("captioning", 0) != 0) continue;  // the closing summary is a line of its own
      EXPECT_LT(piece.size(), static_cast<size_t>(columns)) << columns << " columns: \"" << piece << "\"";
      ++bars;
    }
    EXPECT_GT(bars, 0u) << "no progress bar drawn:\n" << r.out;
  }
}

TEST(CommandLine, EvalScoresCaptionOutputByFileNameAndRefusesAFolderWithNoneOfThePhotos) {
  TinyModelFixture f;
  fs::create_directories(f.tmp / "photos");
  json coco{{"images", json::array()}, {"annotations", json::array()}};
  for (int i = 0; i < 3; ++i) {
    const std::string name = "photo-" + std::string(1, char('a' + i)) + ".jpg";  // no number in the name
    write_text(f.tmp / "photos" / name, solid_jpeg(i * 80, 60, 200));
    coco["images"].push_back({{"id", 100 + i}, {"file_name", name}});
    coco["annotations"].push_back({{"id", i + 1}, {"image_id", 100 + i}, {"caption", "a dog runs on the grass"}});
  }
  write_text(f.tmp / "refs.json", coco.dump());
  for (const char* ext : {".json", ".jsonl", ".tsv", ".csv"}) {
    const fs::path out = f.tmp / (std::string("c") + ext);
    ASSERT_EQ(f.caption((f.tmp / "photos").string() + " -o " + out.string()).exit_code, 0);
    auto r = run_cli("eval --annotations " + (f.tmp / "refs.json").string() + " --results " + out.string() + " --json");
    ASSERT_EQ(r.exit_code, 0) << ext << ": " << r.err;
    EXPECT_EQ(json::parse(r.out)["images"], 3) << r.out;
  }
  // Annotations whose photos are in another folder: one line, no table of zeros.
  fs::create_directories(f.tmp / "elsewhere");
  auto r = run_cli("eval --annotations " + (f.tmp / "refs.json").string() + " --images " + (f.tmp / "elsewhere").string() +
                   " --model " + f.model.string());
  expect_one_line_error(r, 3, {"none of the 3 images of", "refs.json", "photo-a.jpg"});
  EXPECT_EQ(r.out, "");
}
