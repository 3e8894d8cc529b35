// `captioner eval` of a results file.
// Tiny model: no ../shared needed.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "datasets/file_io.h"
#include "tests/model_fixtures.h"
#include "tests/test_util.h"

using namespace captioner;
using namespace captioner::test;
namespace fs = std::filesystem;

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
