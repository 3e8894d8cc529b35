#include "decoder/kernels/dropout_mask.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <mutex>
#include <stdexcept>

namespace captioner {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

uint64_t draw_seed() {
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  return at::check_generator<at::CPUGeneratorImpl>(generator)->random64();
}

}  // namespace

torch::Tensor dropout_mask(at::IntArrayRef shape, double p) {
  if (!(p >= 0 && p <= 1)) throw std::invalid_argument("dropout probability must be in [0, 1], got " + std::to_string(p));
  if (p == 1) return torch::zeros(shape, torch::kFloat);
  auto mask = torch::empty(shape, torch::kFloat);
  const uint64_t seed = draw_seed();
  // Each 64-bit draw decides two elements by its two 32-bit halves (24 bits of each compared).
  const auto threshold = static_cast<uint32_t>(std::llround((1 - p) * 16777216.0));
  const float keep = static_cast<float>(1 / (1 - p));
  float* m = mask.data_ptr<float>();
  const int64_t n = mask.numel();
  for (int64_t i = 0; i < n; i += 2) {
    const uint64_t r = splitmix64(seed + static_cast<uint64_t>(i / 2) * 0xD1B54A32D192ED03ULL);
    m[i] = (static_cast<uint32_t>(r) >> 8) < threshold ? keep : 0.0f;
    if (i + 1 < n) m[i + 1] = static_cast<uint32_t>(r >> 40) < threshold ? keep : 0.0f;
  }
  return mask;
}

}  // namespace captioner
