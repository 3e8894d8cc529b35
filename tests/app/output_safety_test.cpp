// Outputs that would destroy an input, and option values that cannot mean anything: refused on
// the command line (exit 2, one line) before anything is read or written (issue 27, own pass).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "datasets/file_io.h"
#include "tests/model_fixtures.h"
#include "tests/test_util.h"

using namespace captioner;
using namespace captioner::test;
namespace fs = std::filesystem;

TEST(Reliability, AnOutputThatIsAlsoAnInputIsRefusedAndTheInputKept) {
  TinyModelFixture f;
  write_text(f.tmp / "a.jpg", solid_jpeg());
  write_text(f.tmp / "list.txt", (f.tmp / "a.jpg").string() + "\n");
  const std::string coco = R"({"images":[{"id":1,"file_name":"a.jpg"}],"annotations":[{"image_id":1,"id":1,"caption":"a dog"}]})";
  write_text(f.tmp / "refs.json", coco);
  const std::string cli = std::string(CAPTIONER_BINARY) + " ";
  const std::string model = " --model " + f.model.string();
  auto refused = [&](const std::string& command, const std::string& kept, const std::string& fragment) {
    const std::string before = read_file(kept);
    expect_one_line_error(run_shell(cli + command), 2, {fragment});
    EXPECT_EQ(read_file(kept), before) << command;
  };
  const std::string list = (f.tmp / "list.txt").string(), refs = (f.tmp / "refs.json").string();
  refused("caption --files-from " + list + " -o " + list + " --format text" + model, list, "is also --files-from");
  refused("caption " + (f.tmp / "a.jpg").string() + " -o " + (f.tmp / "c.json").string() + " --html " + refs + " --annotations " +
              refs + model,
          refs, "is also --annotations");
  refused("eval --annotations " + refs + " --images " + f.tmp.path().string() + " -o " + refs + model, refs,
          "is also --annotations");
  // Two outputs on one file: named as such, not as "in use by another captioner run".
  expect_one_line_error(run_shell(cli + "caption " + (f.tmp / "a.jpg").string() + " -o " + (f.tmp / "same.json").string() +
                                  " --html " + (f.tmp / "same.json").string() + model),
                        2, {"--output and --html name the same file"});
  // A run's own files: plot draws only PNGs; ensemble never writes into one of its models.
  refused("plot " + f.model.string() + " -o " + (f.model / "decoder.pt").string(), (f.model / "decoder.pt").string(),
          "name a .png file");
  refused("ensemble " + f.model.string() + " --output-dir " + f.model.string(), (f.model / "config.json").string(),
          "is also one of the models");
}

TEST(Reliability, NumbersThatAreNotFiniteAndUnboundedThreadCountsAreUsageErrors) {
  TinyModelFixture f;
  write_text(f.tmp / "a.jpg", solid_jpeg());
  const std::string photo = (f.tmp / "a.jpg").string();
  expect_one_line_error(f.caption(photo + " --length-penalty nan"), 2, {"--length-penalty", "not a finite number"});
  expect_one_line_error(f.caption(photo + " --sample --temperature nan"), 2, {"--temperature", "not a finite number"});
  expect_one_line_error(f.caption(photo + " --threads 5000"), 2, {"--threads"});
  // Sampling options without --sample, a seed below zero (it wrapped to 2^64 - 1), a pixel limit
  // beyond what any photo has (it saturated, then OpenCV's assertion text came out).
  expect_one_line_error(f.caption(photo + " --top-k 3"), 2, {"--top-k", "--sample"});
  expect_one_line_error(f.caption(photo + " --sample --seed=-1"), 2, {"--seed"});
  expect_one_line_error(f.caption(photo + " --max-pixels 18446744073709551617"), 2, {"--max-pixels"});
  expect_one_line_error(f.caption(photo + " -o ''"), 2, {"--output", "an empty file name"});
  // Training refuses a NaN learning rate before it reads any data, not after (it was exit 3,
  // "internal error in LibTorch").
  expect_one_line_error(f.train_one_photo(f.tmp / "run", " --lr nan", 1), 2, {"--lr", "not a finite number"});
  EXPECT_FALSE(fs::exists(f.tmp / "run"));
}

// A file name holding a newline or terminal escape codes is printed escaped: one line per bad
// photo, nothing that can pose as another line or retitle the terminal.
TEST(Reliability, ControlCharactersInFileNamesArePrintedEscaped) {
  TinyModelFixture f;
  fs::create_directories(f.tmp / "photos");
  write_text(f.tmp / "photos" / "bad\nskipped fake.jpg", "garbage");
  write_text(f.tmp / "photos" / "esc\x1b[31mred.jpg", "garbage");
  auto r = f.caption((f.tmp / "photos").string());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(count_lines(r.err), 3u) << r.err;  // the two, and the summary
  EXPECT_NE(r.err.find("bad\\nskipped fake.jpg: not an image"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("esc\\x1b[31mred.jpg"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find('\x1b'), std::string::npos) << r.err;
}

// Values no run writes (1e308 from a hand-edited or corrupt log) are one line naming the file and
// line: the axes had looped forever or crashed.
TEST(Reliability, APlotOfOutOfRangeValuesIsOneLineNotACrash) {
  TempDir tmp;
  const std::string epoch =
      R"("type":"epoch","epoch":1,"step":4,"bleu1":0.1,"bleu2":0.1,"bleu3":0.1,"bleu4":0.1,"lr":0.001,"seconds":1,)"
      R"("captions_per_second":1,"improved":true,"best_epoch":1,"best_bleu4":0.1)";
  write_text(tmp / "metrics.jsonl", "{" + epoch + R"(,"train_loss":1e308})" + "\n{" + epoch + R"(,"train_loss":-1e308})" + "\n");
  expect_one_line_error(run_cli("plot " + tmp.path().string()), 3, {"metrics.jsonl:1", "out of range", "1e+308"});
  EXPECT_FALSE(fs::exists(tmp / "curves.png"));
}
