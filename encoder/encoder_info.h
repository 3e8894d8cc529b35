// Everything known about an encoder file, kept in its JSON sidecar (<model>.pt.json): the network,
// its feature width, its preprocessing and precision, and the one rule for "the same encoder".
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <string>

#include "encoder/preprocess_spec.h"

namespace captioner {

// Everything known about an encoder file: its sidecar.
struct EncoderInfo {
  std::string name;
  std::string arch;
  int64_t feature_dim = 0;
  PreprocessSpec spec;
  std::string source_sha256;  // of the weights it was made from, when known
  // "float" or "int8" (quantized; LibTorch runs it on the oneDNN engine). Part of the identity:
  // int8 and float features of the same network are not interchangeable.
  std::string precision = "float";
  // Hash of the loaded network's parameters and buffers (set by Encoder::load; recorded in model
  // bundles and feature caches). Two encoder files with the same sidecar but other weights (a
  // re-export, random vs. pretrained) differ here. Empty: unknown (bundles from before it).
  std::string weights_hash;
  std::filesystem::path model_file;

  // Identifies the encoder's output: same fingerprint, same features for the same image.
  std::string fingerprint() const;
  nlohmann::json to_json() const;  // the sidecar
  static EncoderInfo from_json(const nlohmann::json& j, const std::string& origin);
  // Reads <model_file>.json; a clear error when it is missing or malformed.
  static EncoderInfo load_sidecar(const std::filesystem::path& model_file);
};

// The one identity rule for encoders: the same sidecar fingerprint (architecture, width,
// preprocessing) and, where both are known, the same weights.
bool same_encoder(const EncoderInfo& a, const EncoderInfo& b);
// Throws, naming both, when `actual` is not the same_encoder() a model was trained with.
void check_same_encoder(const EncoderInfo& trained_with, const EncoderInfo& actual, const std::string& model_name);

}  // namespace captioner
