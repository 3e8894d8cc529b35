// How an encoder wants its pixels: size, resize mode, value scaling and channel order. It travels
// with the encoder in a JSON sidecar (<model>.pt.json), so no image is ever preprocessed for one
// network the way another expects.
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace captioner {

struct PreprocessSpec {
  enum class Resize { kStretch, kShorterSideCrop };
  int64_t input_height = 224;
  int64_t input_width = 224;
  Resize resize = Resize::kStretch;                   // stretch to the input size, or shorter side + centre crop
  int64_t resize_size = 256;                          // shorter side before the crop (kShorterSideCrop only)
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};  // applied to values in [0, 1], RGB order
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
  bool bgr = false;  // feed channels as BGR (Caffe-style networks)

  // `images` (3, H, W) 8-bit planes already in the network's channel order -> (x / 255 - mean) / std
  // as float32 into `out`. Photos wait for the encoder as 8-bit planes, a quarter of the memory.
  void normalise(const uint8_t* planes, float* out, int64_t images) const;

  nlohmann::json to_json() const;
  // Reads the spec fields of an encoder sidecar; errors name `origin`.
  static PreprocessSpec from_json(const nlohmann::json& j, const std::string& origin);
  bool operator==(const PreprocessSpec& o) const;
  bool operator!=(const PreprocessSpec& o) const { return !(*this == o); }
};

}  // namespace captioner
