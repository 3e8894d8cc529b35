// Image bytes through header probing, decoding and preprocessing.
#include <vector>

#include "encoder/image_loader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  captioner::PreprocessSpec spec;
  spec.input_height = spec.input_width = 32;
  captioner::ImageLoaderOptions o;
  o.max_pixels = 4'000'000;  // keeps each input cheap; the limit itself is under test too
  static const captioner::ImageLoader loader(spec, o);
  try {
    cv::Mat rgb = loader.decode_bytes(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
    if (rgb.type() != CV_8UC3 || rgb.empty()) __builtin_trap();
    std::vector<float> chw(static_cast<size_t>(loader.values_per_image()));
    loader.preprocess(rgb, chw.data(), size % 2 == 1);
  } catch (const captioner::ImageError&) {
  }
  return 0;
}
