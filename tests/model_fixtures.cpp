#include "tests/model_fixtures.h"

#include <torch/script.h>

#include <opencv2/imgcodecs.hpp>

#include <fstream>

namespace captioner::test {

std::filesystem::path make_tiny_encoder(const std::filesystem::path& dir, const std::string& name) {
  std::filesystem::create_directories(dir);
  torch::jit::Module m(name);
  m.define(R"(
    def forward(self, x):
        return x.mean(dim=[2, 3])
  )");
  auto file = dir / (name + ".pt");
  m.save(file.string());
  std::ofstream(file.string() + ".json") << R"({"format": "captioner-encoder", "version": 1, "name": ")" << name
                                         << R"(", "arch": "mean_rgb", "feature_dim": 3, "input_size": [32, 32],
    "resize": "stretch", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "channel_order": "RGB"})";
  return file;
}

void make_tiny_classifier(const std::filesystem::path& encoder_file, const std::vector<std::string>& labels) {
  torch::jit::Module m("tiny_classifier");
  c10::List<std::string> names;
  for (const auto& l : labels) names.push_back(l);
  m.register_attribute("labels", c10::ListType::create(c10::StringType::get()), names);
  auto weight = torch::zeros({3, static_cast<int64_t>(labels.size())});
  for (int64_t i = 0; i < std::min<int64_t>(3, weight.size(1)); ++i) weight[i][i] = 5;
  m.register_parameter("weight", weight, false);
  m.define(R"(
    def forward(self, x):
        return x.matmul(self.weight)
  )");
  m.save(encoder_file.string() + ".classifier.pt");
}

Vocabulary make_vocab(const std::vector<std::string>& words) { return Vocabulary::build({words}, 1); }

DecoderConfig tiny_decoder_config(int64_t vocab_size, int64_t feature_dim, const std::string& cell, int64_t embed, int64_t hidden,
                                  int64_t image_dim) {
  DecoderConfig c;
  c.vocab_size = vocab_size;
  c.feature_dim = feature_dim;
  c.embed_dim = embed;
  c.hidden_dim = hidden;
  c.image_dim = image_dim;
  c.cell = cell;
  c.dropout = 0.0;
  return c;
}

CaptionDecoder make_decoder(int64_t vocab_size, int64_t feature_dim, const std::string& cell, uint64_t seed, int64_t hidden) {
  torch::manual_seed(seed);
  CaptionDecoder decoder(tiny_decoder_config(vocab_size, feature_dim, cell, 16, hidden, 8));
  decoder->eval();
  return decoder;
}

ModelBundle make_bundle(const std::filesystem::path& encoder_file, const Vocabulary& vocab, const std::string& cell,
                        uint64_t seed, int64_t hidden) {
  ModelBundle b;
  b.vocab = vocab;
  b.encoder = EncoderInfo::load_sidecar(encoder_file);
  b.encoder_file = encoder_file;
  BundleMember m;
  m.decoder = make_decoder(static_cast<int64_t>(vocab.size()), b.encoder.feature_dim, cell, seed, hidden);
  b.members.push_back(m);
  return b;
}

TinyModelFixture::TinyModelFixture() {
  encoder = make_tiny_encoder(tmp / "encoders");
  make_bundle(encoder, make_vocab({"a", "dog", "cat", "runs", "on", "the", "grass"})).save(tmp / "model");
  model = tmp / "model";
}

CommandResult TinyModelFixture::caption(const std::string& args) const {
  return run_shell("timeout 60 " + std::string(CAPTIONER_BINARY) + " caption " + args + " --model " + model.string() + " -q");
}

std::filesystem::path TinyModelFixture::one_photo_captions() const {
  const std::filesystem::path data = tmp / "data";
  if (!std::filesystem::exists(data / "captions.json")) {
    std::filesystem::create_directories(data);
    write_text(data / "1.jpg", solid_jpeg(0, 0, 255));
    write_text(data / "captions.json",
               R"({"images":[{"id":1,"file_name":"1.jpg"}],"annotations":[{"image_id":1,"id":1,"caption":"a dog runs"}]})");
  }
  return data / "captions.json";
}

CommandResult TinyModelFixture::train_one_photo(const std::filesystem::path& out, const std::string& extra, int epochs,
                                                const std::string& prefix) const {
  const std::filesystem::path captions = one_photo_captions();
  return run_shell(prefix + "timeout 300 " + std::string(CAPTIONER_BINARY) + " train --train-captions " + captions.string() +
                   " --val-captions " + captions.string() + " --train-images " + captions.parent_path().string() + " --encoder " +
                   encoder.string() + " --min-word-count 1 --epochs " + std::to_string(epochs) + " -q --cache-dir " +
                   (tmp / "cache").string() + " --output-dir " + out.string() + extra);
}

namespace {
std::string encoded(const std::string& ext, int b, int g, int r, int width, int height) {
  std::vector<uchar> buf;
  cv::imencode(ext, cv::Mat(height, width, CV_8UC3, cv::Scalar(b, g, r)), buf);
  return std::string(buf.begin(), buf.end());
}
}  // namespace

std::string solid_jpeg(int b, int g, int r, int width, int height) { return encoded(".jpg", b, g, r, width, height); }
std::string solid_png(int b, int g, int r, int width, int height) { return encoded(".png", b, g, r, width, height); }

}  // namespace captioner::test
