// `captioner ensemble` end to end (issue 28: the command had no test): members and views as
// written, captions through the CLI equal to the library's, flip TTA, and the refusals.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "datasets/file_io.h"
#include "datasets/json_util.h"
#include "tests/model_fixtures.h"
#include "tests/test_util.h"

using namespace captioner;
using namespace captioner::test;
namespace fs = std::filesystem;

namespace {
const std::vector<std::string> kWords = {"a", "dog", "cat", "red", "blue", "runs", "on", "the", "grass"};

void write_photos(const fs::path& dir) {
  fs::create_directories(dir);
  const cv::Scalar colours[] = {{0, 0, 255}, {255, 0, 0}, {0, 255, 0}, {40, 90, 200}, {200, 200, 30}};
  for (int i = 0; i < 5; ++i) cv::imwrite((dir / (std::to_string(i) + ".png")).string(), cv::Mat(12, 16, CV_8UC3, colours[i]));
}

std::string captions(const fs::path& photos, const fs::path& model) {
  auto r = run_cli("caption " + photos.string() + " --model " + model.string() + " --format jsonl -q");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out;
}
}  // namespace

TEST(EnsembleCli, WritesEveryMemberAndViewAndCaptionsAsTheirAverage) {
  TempDir tmp;
  const fs::path enc = make_tiny_encoder(tmp / "enc");
  const Vocabulary vocab = make_vocab(kWords);
  make_bundle(enc, vocab, "lstm", 1).save(tmp / "a");
  make_bundle(enc, vocab, "lstm", 2).save(tmp / "b");
  write_photos(tmp / "photos");

  auto r = run_cli("ensemble " + (tmp / "a").string() + " " + (tmp / "b").string() + " --output-dir " + (tmp / "ab").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("2 scorers over 1 view(s)"), std::string::npos) << r.err;
  const auto config = load_json_file(tmp / "ab" / "config.json");
  EXPECT_EQ(config["members"].size(), 2u);
  EXPECT_EQ(config["training"]["ensemble"]["models"].size(), 2u);
  // Its captions are the average's, whatever the order of the members, not the first member's.
  const std::string ab = captions(tmp / "photos", tmp / "ab");
  EXPECT_EQ(lines(ab).size(), 5u) << ab;
  const std::string a = captions(tmp / "photos", tmp / "a"), b = captions(tmp / "photos", tmp / "b");
  ASSERT_NE(a, b) << "the two members must disagree for this test to mean anything";
  ASSERT_EQ(run_cli("ensemble " + (tmp / "b").string() + " " + (tmp / "a").string() + " --output-dir " + (tmp / "ba").string())
                .exit_code,
            0);
  EXPECT_EQ(captions(tmp / "photos", tmp / "ba"), ab);

  // An ensemble of a model with itself is that model: same captions, same log-probabilities.
  r = run_cli("ensemble " + (tmp / "a").string() + " " + (tmp / "a").string() + " --output-dir " + (tmp / "aa").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(captions(tmp / "photos", tmp / "aa"), a);

  // --flip-tta adds the mirrored photo as a second view; the tiny encoder averages pixels, so the
  // mirror has the same features and the captions must stay those of the model alone.
  r = run_cli("ensemble " + (tmp / "a").string() + " --flip-tta --output-dir " + (tmp / "a-tta").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("2 scorers over 2 view(s)"), std::string::npos) << r.err;
  EXPECT_EQ(captions(tmp / "photos", tmp / "a-tta"), a);

  // Models that cannot be averaged are refused in one line.
  make_bundle(enc, make_vocab({"a", "horse"}), "lstm", 3).save(tmp / "other-words");
  r = run_cli("ensemble " + (tmp / "a").string() + " " + (tmp / "other-words").string() + " --output-dir " +
              (tmp / "bad").string());
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;
  EXPECT_NE(r.err.find("vocabular"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp / "bad" / "config.json"));
}
