// Small models for fast tests: a TorchScript "encoder" that averages each colour channel (3-d
// features, defined in C++, no Python needed) and tiny decoders/bundles built around it.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "decoder/bundle/model_bundle.h"
#include "tests/test_util.h"

namespace captioner::test {

// Writes <dir>/mean_rgb.pt (+ .json sidecar, 3-d features, 32x32 stretch input); returns its path.
std::filesystem::path make_tiny_encoder(const std::filesystem::path& dir, const std::string& name = "mean_rgb");

// Writes <encoder_file>.classifier.pt beside a make_tiny_encoder file: one class per label, class i
// scoring 5 x feature i (so a red photo is class 0, green 1, blue 2); labels as ImageNet's lines.
void make_tiny_classifier(const std::filesystem::path& encoder_file, const std::vector<std::string>& labels);

// A vocabulary over the given words (min count 1).
Vocabulary make_vocab(const std::vector<std::string>& words);

// A small decoder configuration: every size given, dropout off (the same pass in train and eval).
DecoderConfig tiny_decoder_config(int64_t vocab_size, int64_t feature_dim, const std::string& cell = "lstm", int64_t embed = 16,
                                  int64_t hidden = 32, int64_t image_dim = 8);

// A randomly initialised decoder in eval mode (embedding 16, image projection 8, no dropout),
// its weights drawn after torch::manual_seed(seed).
CaptionDecoder make_decoder(int64_t vocab_size, int64_t feature_dim, const std::string& cell = "lstm", uint64_t seed = 1,
                            int64_t hidden = 32);

// A bundle with one decoder from make_decoder.
ModelBundle make_bundle(const std::filesystem::path& encoder_file, const Vocabulary& vocab, const std::string& cell = "lstm",
                        uint64_t seed = 1, int64_t hidden = 32);

// The fixture of the tests that drive the CLI: a scratch folder with a tiny model in tmp/model
// (the mean-colour encoder in tmp/encoders, seven words), and `caption` run on it quietly.
// `caption` and `train_one_photo` run under `timeout`, so a hang is exit 124, not a stuck suite.
struct TinyModelFixture {
  TempDir tmp;
  std::filesystem::path encoder, model;
  TinyModelFixture();
  CommandResult caption(const std::string& args) const;
  // A one-photo caption file in tmp/data (written on first use), for `train`.
  std::filesystem::path one_photo_captions() const;
  // `captioner train` on that file into `out`; `prefix` runs first in the same shell (limits).
  CommandResult train_one_photo(const std::filesystem::path& out, const std::string& extra, int epochs,
                                const std::string& prefix = "") const;
};

// A JPEG / PNG of one colour (BGR), as the bytes of a file.
std::string solid_jpeg(int b = 30, int g = 60, int r = 200, int width = 12, int height = 10);
std::string solid_png(int b = 30, int g = 60, int r = 200, int width = 12, int height = 10);

}  // namespace captioner::test
