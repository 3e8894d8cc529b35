// Small models for fast tests: a TorchScript "encoder" that averages each colour channel (3-d
// features, defined in C++, no Python needed) and tiny decoders/bundles built around it.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "decoder/model_bundle.h"

namespace captioner::test {

// Writes <dir>/mean_rgb.pt (+ .json sidecar, 3-d features, 32x32 stretch input); returns its path.
std::filesystem::path make_tiny_encoder(const std::filesystem::path& dir, const std::string& name = "mean_rgb");

// A vocabulary over the given words (min count 1).
Vocabulary make_vocab(const std::vector<std::string>& words);

// A bundle with one randomly initialised decoder of the given cell.
ModelBundle make_bundle(const std::filesystem::path& encoder_file, const Vocabulary& vocab, const std::string& cell = "lstm",
                        uint64_t seed = 1, int64_t hidden = 32);

}  // namespace captioner::test
