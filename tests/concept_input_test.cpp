// Concept scores as decoder input (decoder/concept_input.h): the sums, the class -> word mapping
// through WordNet on a tiny classifier, the decoder's wider image input, the bundle round trip,
// and `captioner train --concept-input` through the CLI.
#include "decoder/concept_input.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "decoder/model_bundle.h"
#include "tests/model_fixtures.h"
#include "tests/test_util.h"

using namespace captioner;
using namespace captioner::test;
namespace fs = std::filesystem;

namespace {

bool have_wordnet() { return fs::exists(fs::path(WordNet::kDefaultDir) / "data.noun"); }
#define REQUIRE_WORDNET() \
  if (!have_wordnet()) GTEST_SKIP() << WordNet::kDefaultDir << " missing: apt-get install wordnet-base (scripts/setup.sh does)"

// ImageNet's lines for a horse, a cat and an eagle: classes 0, 1, 2 of make_tiny_classifier.
const std::vector<std::string> kLabels = {"sorrel", "tabby, tabby cat", "bald eagle, American eagle, Haliaeetus leucocephalus"};

// A photo's features under make_tiny_encoder (channel means, normalised by 0.5 / 0.25): red is
// (2, -2, -2), which the tiny classifier calls class 0.
torch::Tensor colour_features(int channel) {
  auto f = torch::full({1, 3}, -2.0f);
  f[0][channel] = 2.0f;
  return f;
}

Vocabulary animal_vocab() { return make_vocab({"a", "horse", "cat", "bird", "eagle", "animal", "dog", "runs", "sits", "flies"}); }

int64_t column(const ConceptInput& in, const std::string& word) {
  auto it = std::find(in.words().begin(), in.words().end(), word);
  return it == in.words().end() ? -1 : static_cast<int64_t>(it - in.words().begin());
}

}  // namespace

TEST(ConceptInput, SumsEachWordsClassProbabilities) {
  auto probs = torch::tensor({0.7f, 0.2f, 0.1f, 0.0f, 0.5f, 0.5f}).view({2, 3});
  // "x": classes 0 and 1; "y": 0 and 2; "z": every class.
  auto class_to_word = torch::tensor({1.0f, 1.0f, 1.0f, 1.0f, 0.0f, 1.0f, 0.0f, 1.0f, 1.0f}).view({3, 3});
  ConceptInput in([&](const torch::Tensor&) { return probs; }, class_to_word, {"x", "y", "z"});
  auto features = torch::randn({2, 4}, torch::requires_grad());
  auto s = in.scores(features);
  EXPECT_TRUE(torch::allclose(s, torch::tensor({0.9f, 0.8f, 1.0f, 0.5f, 0.5f, 1.0f}).view({2, 3})));
  EXPECT_FALSE(s.requires_grad()) << "concept scores are an input, not something to learn through";
  EXPECT_LE(s.max().item<float>(), 1.0f);
  EXPECT_EQ(in.scores(features.to(torch::kDouble)).scalar_type(), torch::kDouble);
  EXPECT_THROW(in.scores(torch::zeros({3, 4})), std::runtime_error);  // the classifier answers 2 rows
  EXPECT_THROW(ConceptInput([](const torch::Tensor& f) { return f; }, torch::zeros({3, 2}), {"x", "y", "z"}),
               std::invalid_argument);
}

TEST(ConceptInput, MapsAClassifiersClassesToCaptionWordsThroughWordNet) {
  REQUIRE_WORDNET();
  TempDir tmp;
  const auto encoder = make_tiny_encoder(tmp / "enc");
  make_tiny_classifier(encoder, kLabels);
  auto in = ConceptInput::load(encoder, 3, animal_vocab());
  for (const char* w : {"horse", "cat", "bird", "eagle", "animal"}) EXPECT_GE(column(*in, w), 0) << w;
  EXPECT_EQ(column(*in, "dog"), -1) << "no class is a dog";
  EXPECT_EQ(column(*in, "runs"), -1);

  auto red = in->scores(colour_features(0)), blue = in->scores(colour_features(2));
  EXPECT_GT(red[0][column(*in, "horse")].item<float>(), 0.99f);
  EXPECT_GT(red[0][column(*in, "animal")].item<float>(), 0.99f);
  EXPECT_LT(red[0][column(*in, "bird")].item<float>(), 0.01f);
  EXPECT_GT(blue[0][column(*in, "bird")].item<float>(), 0.99f);  // bald eagle -> eagle -> bird
  EXPECT_GT(blue[0][column(*in, "eagle")].item<float>(), 0.99f);
  EXPECT_GT(blue[0][column(*in, "animal")].item<float>(), 0.99f);

  // A saved model's words, in its order; a word no class reaches is refused, naming it.
  auto two = ConceptInput::load(encoder, 3, animal_vocab(), {"bird", "horse"});
  EXPECT_EQ(two->words(), (std::vector<std::string>{"bird", "horse"}));
  EXPECT_TRUE(torch::allclose(two->scores(colour_features(0)),
                              red.index({torch::indexing::Slice(), torch::tensor({column(*in, "bird"), column(*in, "horse")})})));
  try {
    ConceptInput::load(encoder, 3, animal_vocab(), {"bird", "dog"});
    FAIL() << "a concept word no class reaches was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("\"dog\""), std::string::npos) << e.what();
  }
  const auto bare = make_tiny_encoder(tmp / "bare");
  try {
    ConceptInput::load(bare, 3, animal_vocab());
    FAIL() << "an encoder without a classifier was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("classifier.pt"), std::string::npos) << e.what();
  }
}

TEST(ConceptInput, WidensTheDecodersImageAndRoundTripsThroughABundle) {
  REQUIRE_WORDNET();
  TempDir tmp;
  const auto encoder = make_tiny_encoder(tmp / "enc");
  make_tiny_classifier(encoder, kLabels);
  ModelBundle b = make_bundle(encoder, animal_vocab());
  EXPECT_FALSE(b.members[0].decoder->config().to_json().contains("concepts")) << "plain configs stay as they were";
  auto in = ConceptInput::load(encoder, 3, b.vocab);
  DecoderConfig c = b.members[0].decoder->config();
  c.image_dim = 0;  // the features and concept scores straight into the gates
  c.concepts = in->words();
  torch::manual_seed(7);
  CaptionDecoder decoder(c);
  decoder->eval();
  const int64_t K = static_cast<int64_t>(in->words().size());
  EXPECT_EQ(decoder->named_parameters()["layers.0.image_proj.weight"].size(1), 3 + K);

  const auto features = torch::cat({colour_features(0), colour_features(2)});
  EXPECT_THROW(decoder->start(features), std::logic_error) << "a decoder with concepts needs their input";
  auto wrong = ConceptInput::load(encoder, 3, b.vocab, {"bird"});
  EXPECT_THROW(decoder->set_concept_input(wrong), std::invalid_argument);
  decoder->set_concept_input(in);

  auto first_step = [&](CaptionDecoder& d) {
    torch::NoGradGuard no_grad;
    auto state = d->start(features);
    return d->step(torch::full({2}, Vocabulary::kStart, torch::kLong), state);
  };
  const auto logp = first_step(decoder);
  // The scores are read: the same decoder given no concept evidence says something else.
  auto silent = std::make_shared<ConceptInput>(
      [](const torch::Tensor& f) {
        return torch::zeros({f.size(0), 3});
      },
      torch::zeros({3, K}), in->words());
  decoder->set_concept_input(silent);
  EXPECT_FALSE(torch::allclose(first_step(decoder), logp));
  decoder->set_concept_input(in);

  b.members[0].decoder = decoder;
  b.save(tmp / "model");
  auto config = nlohmann::json::parse(std::ifstream(tmp / "model/config.json"));
  EXPECT_EQ(config["members"][0]["decoder"]["concepts"].get<std::vector<std::string>>(), in->words());
  auto loaded = ModelBundle::load(tmp / "model");
  EXPECT_EQ(loaded.members[0].decoder->config().concepts, in->words());
  EXPECT_TRUE(torch::allclose(first_step(loaded.members[0].decoder), logp, 1e-5, 1e-6));

  // Without its classifier the model cannot run: a one-line error naming the file.
  fs::remove(encoder.string() + ".classifier.pt");
  try {
    ModelBundle::load(tmp / "model");
    FAIL() << "loaded a concept model without its classifier";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("classifier.pt"), std::string::npos) << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
  }
}

TEST(ConceptInputCli, TrainsWithConceptInputsThenCaptions) {
  REQUIRE_WORDNET();
  TempDir tmp;
  const auto encoder = make_tiny_encoder(tmp / "enc");
  make_tiny_classifier(encoder, kLabels);
  fs::create_directories(tmp / "photos");
  const std::vector<std::pair<std::string, std::string>> photos = {{"red.png", "a brown horse runs on the grass"},
                                                                   {"green.png", "a small cat sits on a bed"},
                                                                   {"blue.png", "a white bird flies over the water"}};
  nlohmann::json coco{{"images", nlohmann::json::array()}, {"annotations", nlohmann::json::array()}};
  for (size_t i = 0; i < photos.size(); ++i) {
    cv::Scalar bgr(i == 2 ? 255 : 0, i == 1 ? 255 : 0, i == 0 ? 255 : 0);
    cv::imwrite((tmp / "photos" / photos[i].first).string(), cv::Mat(8, 8, CV_8UC3, bgr));
    coco["images"].push_back({{"id", i + 1}, {"file_name", photos[i].first}});
    for (int k = 0; k < 3; ++k) {
      coco["annotations"].push_back({{"id", i * 3 + k + 1}, {"image_id", i + 1}, {"caption", photos[i].second}});
    }
  }
  write_text(tmp / "captions.json", coco.dump());
  const std::string data = " --train-captions " + (tmp / "captions.json").string() + " --val-captions " +
                           (tmp / "captions.json").string() + " --train-images " + (tmp / "photos").string() +
                           " --min-word-count 1 --embed 16 --hidden 32 --image-dim 0 --dropout 0 --epochs 60 --batch 3"
                           " --lr 0.02 --lr-decay 1 --seed 1 -q --threads 1 --concept-input --encoder ";
  auto train = run_cli("train" + data + encoder.string() + " --output " + (tmp / "model").string());
  ASSERT_EQ(train.exit_code, 0) << train.err;
  auto config = nlohmann::json::parse(std::ifstream(tmp / "model/config.json"));
  const auto words = config["members"][0]["decoder"]["concepts"].get<std::vector<std::string>>();
  for (const char* w : {"horse", "cat", "bird"}) {
    EXPECT_NE(std::find(words.begin(), words.end(), w), words.end()) << w;
  }
  // Greedy, as training validated it (its best epoch captions all three photos exactly).
  auto cap =
      run_cli("caption " + (tmp / "photos").string() + " --model " + (tmp / "model").string() + " --beam 1 --format json -q");
  ASSERT_EQ(cap.exit_code, 0) << cap.err;
  auto rows = nlohmann::json::parse(cap.out);
  ASSERT_EQ(rows.size(), photos.size());
  for (const auto& r : rows) {
    const auto file = fs::path(r["file_name"].get<std::string>()).filename().string();
    auto it = std::find_if(photos.begin(), photos.end(), [&](const auto& p) { return p.first == file; });
    ASSERT_NE(it, photos.end()) << file;
    EXPECT_EQ(r["caption"].get<std::string>(), it->second) << file;
  }

  // An encoder without its classifier: a one-line error naming the missing file.
  const auto bare = make_tiny_encoder(tmp / "bare");
  auto refused = run_cli("train" + data + bare.string() + " --output " + (tmp / "model2").string());
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("classifier.pt"), std::string::npos) << refused.err;
  EXPECT_EQ(lines(refused.err).size(), 1u) << refused.err;
  EXPECT_FALSE(fs::exists(tmp / "model2/config.json"));
}
