#include "encoder/preprocess_spec.h"

#include <nlohmann/json.hpp>
#include <stdexcept>

#include "datasets/json_util.h"

namespace captioner {

using nlohmann::json;

void PreprocessSpec::normalise(const uint8_t* planes, float* out, int64_t images) const {
  const int64_t plane = input_height * input_width;
  float scale[3], shift[3];  // per plane; mean and std are in RGB order
  for (int p = 0; p < 3; ++p) {
    const int c = bgr ? 2 - p : p;
    scale[p] = 1.0f / (255.0f * std[c]);
    shift[p] = -mean[c] / std[c];
  }
  for (int64_t i = 0; i < images; ++i) {
    for (int p = 0; p < 3; ++p, planes += plane, out += plane) {
      for (int64_t k = 0; k < plane; ++k) out[k] = planes[k] * scale[p] + shift[p];
    }
  }
}

json PreprocessSpec::to_json() const {
  return json{{"input_size", {input_height, input_width}},
              {"resize", resize == Resize::kStretch ? "stretch" : "shorter_side_crop"},
              {"resize_size", resize_size},
              {"mean", mean},
              {"std", std},
              {"channel_order", bgr ? "BGR" : "RGB"}};
}

PreprocessSpec PreprocessSpec::from_json(const json& j, const std::string& origin) {
  JsonView root(j, origin, "");
  PreprocessSpec s;
  auto size = root.at("input_size");
  if (size.array_size() != 2) size.fail("expected [height, width]");
  s.input_height = size.at(size_t{0}).as_int();
  s.input_width = size.at(size_t{1}).as_int();
  if (s.input_height < 8 || s.input_width < 8 || s.input_height > 4096 || s.input_width > 4096) {
    size.fail("input size out of range");
  }
  std::string resize = root.at("resize").as_string();
  if (resize == "stretch") {
    s.resize = Resize::kStretch;
  } else if (resize == "shorter_side_crop") {
    s.resize = Resize::kShorterSideCrop;
  } else {
    root.at("resize").fail("expected \"stretch\" or \"shorter_side_crop\", found \"" + resize + "\"");
  }
  s.resize_size = root.has("resize_size") ? root.at("resize_size").as_int() : std::max(s.input_height, s.input_width);
  for (const char* key : {"mean", "std"}) {
    auto arr = root.at(key);
    if (arr.array_size() != 3) arr.fail("expected 3 values (R, G, B)");
    auto& dst = std::string(key) == "mean" ? s.mean : s.std;
    for (size_t c = 0; c < 3; ++c) dst[c] = static_cast<float>(arr.at(c).as_number());
  }
  for (float v : s.std) {
    if (!(v > 0)) root.at("std").fail("standard deviations must be positive");
  }
  std::string order = root.has("channel_order") ? root.at("channel_order").as_string() : "RGB";
  if (order != "RGB" && order != "BGR") root.at("channel_order").fail("expected \"RGB\" or \"BGR\"");
  s.bgr = order == "BGR";
  return s;
}

bool PreprocessSpec::operator==(const PreprocessSpec& o) const {
  return input_height == o.input_height && input_width == o.input_width && resize == o.resize &&
         (resize == Resize::kStretch || resize_size == o.resize_size) && mean == o.mean && std == o.std && bgr == o.bgr;
}

}  // namespace captioner
