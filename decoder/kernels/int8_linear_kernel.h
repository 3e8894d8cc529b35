// Int8Linear's own few-row product (decoder/kernels/int8_linear.h): LibTorch's oneDNN
// quantized::linear_dynamic, reproduced bit for bit, without its 16-row padding and fixed cost per call.
// Shapes: x (R, K) float in [-1, 1], weights (N, Kw) int8 (Kw = K rounded up to 32, zeros past K) -> y (R, N).
#pragma once

#include <cstdint>

namespace captioner {

// The weights as the kernel reads them, owned by Int8Linear.
struct Int8Rows {
  const int8_t* weights = nullptr;       // (N, Kw) row-major, per-row symmetric int8
  const int32_t* weight_sums = nullptr;  // (N) sum over k of weights[n][k]: the zero point's share
  const float* bias_q = nullptr;         // (N) the bias in accumulator units: b * (63.5 / w_scale)
  const float* out_scale = nullptr;      // (N) 1 / (63.5 / w_scale)
  int64_t out_features = 0;              // N
  int64_t in_features = 0;               // K
  int64_t padded_in = 0;                 // Kw, a multiple of 32
};

// Whether this CPU can run int8_linear_rows (AVX2).
bool int8_linear_rows_available();

// y (R, N) = the op's result for x (R, K). xq: scratch of R * Kw bytes. Call only where
// int8_linear_rows_available().
void int8_linear_rows(const Int8Rows& weights, const float* x, int64_t rows, uint8_t* xq, float* y);

}  // namespace captioner
