// Trains for real on a small real subset of Flickr8k through the CLI, then captions a folder and
// scores the model with it. Needs ../shared and the default encoder (scripts/setup.sh).
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>

#include "decoder/kernels/bf16_matmul.h"
#include "tests/test_util.h"

using namespace captioner::test;
using nlohmann::json;
namespace fs = std::filesystem;

TEST(EndToEnd, TrainsOnRealPhotosThenCaptionsAFolder) {
  REQUIRE_SHARED();
  fs::path encoder = fs::path(CAPTIONER_SOURCE_DIR) / "models/encoders/mobilenet_v2.pt";
  if (!fs::exists(encoder)) GTEST_SKIP() << encoder << " not built: run scripts/setup.sh";
  TempDir tmp;
  fs::path f8k = shared_dir() / "datasets/flickr8k";
  // 1,000 training photos (5,000 captions), scored on 200 dev photos.
  auto train =
      run_cli("train --train-captions " + (f8k / "captions_train.json").string() + " --val-captions " +
              (f8k / "captions_val.json").string() + " --train-images " + (f8k / "images").string() +
              " --max-train-images 1000 --max-val-images 200 --epochs 8 --batch-captions 32 --lr 1e-3 --lr-decay 0.9"
              " --hidden 256 --embed 256 --image-dim 256 --seed 3 --threads 2 --bf16-products auto --quiet --output-dir " +
              (tmp / "model").string() + " --cache-dir " + (tmp / "cache").string());
  ASSERT_EQ(train.exit_code, 0) << train.err;

  std::vector<json> epochs;
  std::vector<double> losses;
  std::ifstream log(tmp / "model/metrics.jsonl");
  for (std::string line; std::getline(log, line);) {
    auto j = json::parse(line);
    if (j["type"] == "epoch") epochs.push_back(j);
    if (j["type"] == "batch") losses.push_back(j["loss"]);
  }
  ASSERT_EQ(epochs.size(), 8u) << train.err;
  EXPECT_LT(epochs.back()["train_loss"].get<double>(), epochs.front()["train_loss"].get<double>() - 0.8)
      << "training loss did not fall";
  EXPECT_LT(losses.back(), losses.front());
  double best = 0;
  for (const auto& e : epochs) best = std::max(best, e["bleu4"].get<double>());
  EXPECT_GT(best, epochs.front()["bleu4"].get<double>()) << "validation BLEU-4 never improved on epoch 1";
  // --bf16-products auto: where the CPU multiplies bf16 natively this run trained with bf16 products.
  std::ifstream config_file(tmp / "model/config.json");
  EXPECT_EQ(json::parse(config_file)["training"]["options"]["bf16_products"].get<bool>(), captioner::bf16_products_native());

  // Scores of the kept model through `captioner eval`. A constant caption ("a man in a red shirt
  // is standing on the street") scores BLEU-4 0.076 / CIDEr-D 0.09 on these photos.
  auto eval = run_cli("eval --model " + (tmp / "model").string() + " --annotations " + (f8k / "captions_val.json").string() +
                      " --images " + (f8k / "images").string() + " --max-images 200 --json --quiet --threads 2");
  ASSERT_EQ(eval.exit_code, 0) << eval.err;
  auto scores = json::parse(eval.out);
  EXPECT_GT(scores["BLEU-1"].get<double>(), 0.50) << eval.out;
  EXPECT_GT(scores["BLEU-4"].get<double>(), 0.09) << eval.out;
  EXPECT_GT(scores["CIDEr-D"].get<double>(), 0.15) << eval.out;

  // Caption a folder of 12 dev photos (plus a non-image and a broken JPEG) through the CLI.
  fs::create_directories(tmp / "photos");
  std::ifstream dev(f8k / "Flickr_8k.devImages.txt");
  std::string name;
  for (int i = 0; i < 12 && std::getline(dev, name); ++i) fs::copy_file(f8k / "images" / name, tmp / "photos" / name);
  write_text(tmp / "photos/notes.txt", "not a photo");
  write_text(tmp / "photos/broken.jpg", "\xFF\xD8\xFF\xE0 cut");
  auto cap = run_cli("caption " + (tmp / "photos").string() + " --model " + (tmp / "model").string() +
                     " --format json --quiet --threads 2");
  EXPECT_EQ(cap.exit_code, 1) << "a broken image must show in the exit code";
  EXPECT_NE(cap.err.find("broken.jpg"), std::string::npos) << cap.err;
  auto results = json::parse(cap.out);
  ASSERT_EQ(results.size(), 12u);
  std::set<std::string> distinct;
  for (const auto& r : results) {
    auto caption = r["caption"].get<std::string>();
    EXPECT_GE(std::count(caption.begin(), caption.end(), ' '), 2) << caption;
    EXPECT_EQ(caption.find("<unk>"), std::string::npos);
    EXPECT_TRUE(r.contains("log_prob") && r["log_prob"].get<double>() < 0);
    distinct.insert(caption);
  }
  EXPECT_GE(distinct.size(), 4u) << "captions do not depend on the photo";
}

TEST(EndToEnd, FineTuningUsesItsModelsEncoderUnlessToldOtherwise) {
  REQUIRE_SHARED();
  const fs::path model = fs::path(CAPTIONER_SOURCE_DIR) / "models/default";
  if (!fs::exists(fs::path(CAPTIONER_SOURCE_DIR) / "models/encoders/mobilenet_v2_int8.pt")) {
    GTEST_SKIP() << "the default encoder is not built: run scripts/setup.sh";
  }
  TempDir tmp;
  const fs::path f8k = shared_dir() / "datasets/flickr8k";
  // The installation's default encoder (float) is not the one models/default was trained on
  // (int8): without --encoder, --init-from must bring its own rather than fail the identity check.
  auto train = run_cli("train --train-captions " + (f8k / "captions_train.json").string() + " --val-captions " +
                       (f8k / "captions_val.json").string() + " --train-images " + (f8k / "images").string() +
                       " --max-train-images 16 --max-val-images 8 --epochs 1 --lr 5e-5 --init-from " + model.string() +
                       " --quiet --output-dir " + (tmp / "tuned").string() + " --cache-dir " + (tmp / "cache").string());
  ASSERT_EQ(train.exit_code, 0) << train.err;
  std::ifstream in(tmp / "tuned/config.json");
  const json config = json::parse(in);
  EXPECT_EQ(config["encoder"]["precision"], "int8") << config["encoder"].dump();
  EXPECT_EQ(config["training"]["options"]["init_from"], model.string());
}
