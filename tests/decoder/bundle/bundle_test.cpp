#include "decoder/bundle/model_bundle.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "datasets/file_io.h"
#include "datasets/json_util.h"
#include "tests/model_fixtures.h"
#include "tests/test_util.h"

using namespace captioner;
using captioner::test::expect_error_message;
using captioner::test::TempDir;
using captioner::test::write_text;
using nlohmann::json;

namespace {
const std::vector<std::string> kWords = {"a", "dog", "cat", "runs", "on", "the", "grass", "sits"};

std::vector<Caption> captions_of(const ModelBundle& b) {
  torch::manual_seed(3);
  FeatureViews f{torch::randn({6, 3})};
  auto scorer = b.make_scorer();
  SearchOptions o;
  o.beam_size = 3;
  return search_captions(*scorer, f, o);
}

void edit_config(const std::filesystem::path& dir, const std::function<void(json&)>& edit) {
  json j = load_json_file(dir / "config.json");
  edit(j);
  write_file_atomic(dir / "config.json", j.dump(1));
}
}  // namespace

TEST(ModelBundle, SaveLoadRoundTripGivesIdenticalCaptions) {
  TempDir tmp;
  auto enc = test::make_tiny_encoder(tmp / "enc");
  for (const char* cell : {"lstm", "gru", "rnn"}) {
    auto b = test::make_bundle(enc, test::make_vocab(kWords), cell);
    b.search.beam_size = 4;
    b.search.length_penalty = 0.7;
    b.training = {{"note", "unit test"}};
    b.save(tmp / cell);
    auto loaded = ModelBundle::load(tmp / cell);
    EXPECT_EQ(loaded.decoder_precision, "float32");
    EXPECT_EQ(loaded.search.beam_size, 4);
    EXPECT_DOUBLE_EQ(loaded.search.length_penalty, 0.7);
    EXPECT_EQ(loaded.training["note"], "unit test");
    EXPECT_EQ(loaded.members[0].decoder->config().cell, cell);
    auto a = captions_of(b), c = captions_of(loaded);
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].tokens, c[i].tokens);
      EXPECT_DOUBLE_EQ(a[i].log_prob, c[i].log_prob);
    }
  }
}

TEST(ModelBundle, Float16StorageHalvesTheFileAndKeepsCaptions) {
  TempDir tmp;
  auto enc = test::make_tiny_encoder(tmp / "enc");
  auto b = test::make_bundle(enc, test::make_vocab(kWords), "lstm", 1, 256);
  b.save(tmp / "f32");
  b.save(tmp / "f16", /*fp16=*/true);
  EXPECT_LT(std::filesystem::file_size(tmp / "f16/decoder.pt"), std::filesystem::file_size(tmp / "f32/decoder.pt") * 6 / 10);
  auto a = captions_of(b), c = captions_of(ModelBundle::load(tmp / "f16"));
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i].log_prob, c[i].log_prob, 0.05);
}

TEST(ModelBundle, StoresItsDecoderPrecision) {
  TempDir tmp;
  auto enc = test::make_tiny_encoder(tmp / "enc");
  auto b = test::make_bundle(enc, test::make_vocab(kWords), "lstm", 1, 64);
  b.decoder_precision = "int8";
  b.save(tmp / "q");
  auto loaded = ModelBundle::load(tmp / "q");
  EXPECT_EQ(loaded.decoder_precision, "int8");
  // Its captions are int8's: close to float32's by log-probability.
  b.decoder_precision = "float32";
  auto q = captions_of(loaded), f = captions_of(b);
  for (size_t i = 0; i < q.size(); ++i) {
    if (q[i].tokens == f[i].tokens) {
      EXPECT_NEAR(q[i].log_prob, f[i].log_prob, 0.05);
    }
  }
  edit_config(tmp / "q", [](json& j) { j["decoder_precision"] = "int4"; });
  expect_error_message([&] { ModelBundle::load(tmp / "q"); }, {"must be \"float32\" or \"int8\""});
}

TEST(ModelBundle, EncoderPathIsRelativeWhenNearby) {
  TempDir tmp;
  auto enc = test::make_tiny_encoder(tmp / "encoders");
  test::make_bundle(enc, test::make_vocab(kWords)).save(tmp / "models/m");
  EXPECT_EQ(load_json_file(tmp / "models/m/config.json")["encoder"]["file"], "../../encoders/mean_rgb.pt");
  // The pair still loads after the whole tree moves.
  std::filesystem::rename(tmp.path(), tmp.path().string() + "-moved");
  auto moved = std::filesystem::path(tmp.path().string() + "-moved");
  EXPECT_NO_THROW(ModelBundle::load(moved / "models/m"));
  std::filesystem::rename(moved, tmp.path());
}

TEST(ModelBundle, RefusesPartsThatDoNotBelongTogether) {
  TempDir tmp;
  auto enc = test::make_tiny_encoder(tmp / "enc");
  auto other_enc = test::make_tiny_encoder(tmp / "enc2", "other");
  auto fresh = [&](const std::string& name) {
    test::make_bundle(enc, test::make_vocab(kWords)).save(tmp / name);
    return tmp / name;
  };
  expect_error_message([&] { ModelBundle::load(tmp / "nowhere"); }, {"not found"});

  auto d = fresh("vocab");
  test::make_vocab({"x", "y"}).save(d / "vocab.json");
  expect_error_message([&] { ModelBundle::load(d); }, {"not the one this model was trained with"});

  d = fresh("version");
  edit_config(d, [](json& j) { j["version"] = 99; });
  expect_error_message([&] { ModelBundle::load(d); }, {"newer than this captioner"});

  d = fresh("featdim");
  edit_config(d, [](json& j) { j["members"][0]["decoder"]["feature_dim"] = 7; });
  expect_error_message([&] { ModelBundle::load(d); }, {"expects 7-d image features but the encoder gives 3"});

  d = fresh("vocabsize");
  edit_config(d, [](json& j) { j["members"][0]["decoder"]["vocab_size"] = 5; });
  expect_error_message([&] { ModelBundle::load(d); }, {"outputs but the vocabulary has"});

  d = fresh("truncated");
  auto bytes = read_file(d / "decoder.pt");
  write_file_atomic(d / "decoder.pt", bytes.substr(0, bytes.size() / 2));
  expect_error_message([&] { ModelBundle::load(d); }, {"cannot read decoder weights"});

  d = fresh("layout");
  edit_config(d, [](json& j) { j["members"][0]["decoder"]["hidden_dim"] = 40; });
  expect_error_message([&] { ModelBundle::load(d); }, {"has shape"});

  d = fresh("noencoder");
  edit_config(d, [](json& j) { j["encoder"]["file"] = "/nonexistent/enc.pt"; });
  expect_error_message([&] { ModelBundle::load(d); }, {"scripts/setup.sh"});

  d = fresh("otherencoder");
  edit_config(d, [&](json& j) { j["encoder"]["file"] = other_enc.string(); });
  expect_error_message([&] { ModelBundle::load(d); }, {"was trained on features of encoder"});

  d = fresh("garbage");
  write_file_atomic(d / "config.json", "{ not json");
  expect_error_message([&] { ModelBundle::load(d); }, {"invalid JSON"});

  // A removed feature (issue 28): a model that names concept inputs is refused in one line.
  d = fresh("concepts");
  edit_config(d, [](json& j) { j["members"][0]["decoder"]["concepts"] = {"dog", "cat"}; });
  expect_error_message([&] { ModelBundle::load(d); }, {"`train --concept-input`, which measured no gain and was removed"});
}

// A downloaded model's config.json cannot make captioner open files outside the model folder:
// its vocabulary, weights and image prior are plain names inside it (the encoder, shared between
// models, may sit elsewhere and is checked by its identity instead).
TEST(ModelBundle, ItsOwnFilesAreNamedInsideTheModelFolder) {
  TempDir tmp;
  auto enc = test::make_tiny_encoder(tmp / "enc");
  test::make_bundle(enc, test::make_vocab(kWords)).save(tmp / "m");
  write_text(tmp / "outside.json", "{}");
  for (const std::string name : {"/etc/hostname", "../outside.json", "sub/../../outside.json", ".."}) {
    edit_config(tmp / "m", [&](json& j) { j["vocabulary"]["file"] = name; });
    expect_error_message([&] { ModelBundle::load(tmp / "m"); }, {"config.json", "must name a file inside the model folder"});
    edit_config(tmp / "m", [&](json& j) {
      j["vocabulary"]["file"] = "vocab.json";
      j["members"][0]["weights"] = name;
    });
    expect_error_message([&] { ModelBundle::load(tmp / "m"); }, {"config.json", "must name a file inside the model folder"});
    edit_config(tmp / "m", [&](json& j) { j["members"][0]["weights"] = "decoder.pt"; });
  }
  EXPECT_NO_THROW(ModelBundle::load(tmp / "m"));
}

TEST(ModelBundle, StoresItsImagePriorForMutualInformationDecoding) {
  TempDir tmp;
  auto enc = test::make_tiny_encoder(tmp / "enc");
  auto b = test::make_bundle(enc, test::make_vocab(kWords));
  expect_error_message([&] { b.make_scorer(0.2); }, {"image prior"});
  b.save(tmp / "old");  // a model saved without a prior
  EXPECT_FALSE(std::filesystem::exists(tmp / "old" / "image_prior.pt"));
  EXPECT_FALSE(ModelBundle::load(tmp / "old").image_prior.defined());

  const auto train_features = torch::rand({10, 3});
  b.set_image_prior(train_features);
  EXPECT_TRUE(torch::allclose(b.image_prior, train_features.mean(0)));
  for (const char* dir : {"new", "new-fp32"}) {
    b.save(tmp / dir, /*fp16=*/std::string(dir) == "new");
    auto loaded = ModelBundle::load(tmp / dir);
    ASSERT_TRUE(loaded.image_prior.defined()) << dir;
    EXPECT_TRUE(torch::equal(loaded.image_prior, b.image_prior)) << dir;  // float32 even in an fp16 bundle
    EXPECT_EQ(loaded.image_prior_images, 10) << dir;
    torch::manual_seed(3);
    FeatureViews f{torch::randn({6, 3})};
    SearchOptions o;
    o.mi_weight = 0.4;
    auto scorer = loaded.make_scorer(o.mi_weight);
    EXPECT_EQ(search_captions(*scorer, f, o).size(), 6u);
  }

  // A prior of the wrong width, or mi_weight without a prior, is refused at load.
  {
    torch::serialize::OutputArchive archive;
    archive.write("mean_feature", torch::zeros({5}));
    save_archive_atomic(archive, tmp / "new" / "image_prior.pt");
  }
  expect_error_message([&] { ModelBundle::load(tmp / "new"); }, {"does not hold a 3-d mean feature"});
  edit_config(tmp / "new", [](json& j) {
    j.erase("image_prior");
    j["search"]["mi_weight"] = 0.1;
  });
  expect_error_message([&] { ModelBundle::load(tmp / "new"); }, {"mi_weight needs an \"image_prior\""});
}
