// Int8 matrix products for decoding: y = x W^T + b with W in int8 (one scale per output row) and
// x, a recurrent cell's hidden state in [-1, 1], in 7-bit on the fixed scale of that range.
//
// Why a fixed input range: LibTorch's dynamic int8 linear picks the input's scale from the
// min/max of the whole (R, K) matrix, which would make each photo's caption depend on the other
// photos of its batch. Pinning the range to [-1, 1] keeps every row's result a function of that
// row alone (integer sums are exact), so captions do not move with batch size, sharding or resume.
// The pin is a +1 and a -1 in two extra input columns whose weights are zero (not an extra row:
// at 32 photos x 3 beams that row would pad 96 rows to 112).
// Why 7-bit: without VNNI, oneDNN sums u8 x s8 products in saturating 16-bit pairs; 7-bit inputs
// never saturate, so the same products come out on every x86 CPU.
//
// Few rows (a beam or two: serving one photo) go to our own AVX2 loop instead
// (decoder/kernels/int8_linear_kernel.h), which the op pads to 16 rows and pays a fixed cost for;
// it is used only where it gave the op's results bit for bit on this CPU when the layer was built.
// With VNNI the op rounds a row's output differently in calls of 16 rows and of more, so there
// our loop takes every input: a row's result must not depend on its batch (+30% decoding time on
// a 2-core Xeon with AVX-512 VNNI: 2.2-2.4 against 1.8-1.9 ms per photo at beam 3).
//
// Shapes: x (R, K) float, W (N, K), b (N) -> y (R, N) float. CPU only (oneDNN quantized engine).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace captioner {

// Symmetric per-row int8 of `weight` (N, K) float: scale_n = max(max_k |w_nk| / 127, 1e-12) and
// q_nk = w_nk * (1 / scale_n) clamped to +-127 and rounded half to even, in the float operations
// LibTorch's tensor ops make for that recipe (the tests hold it to them). Returns q (N, columns)
// int8, zero past K, and the scales (N) double. Throws std::invalid_argument on non-finite weights.
std::pair<torch::Tensor, torch::Tensor> quantize_rows(const torch::Tensor& weight, int64_t columns);

class Int8Linear {
 public:
  Int8Linear() = default;
  // Quantizes `weight` (N, K) per output row (symmetric int8); `bias` (N) may be undefined.
  Int8Linear(const torch::Tensor& weight, const torch::Tensor& bias);
  bool defined() const { return !packed_.isNone(); }
  // x (R, K) with values in [-1, 1] -> (R, N). Values outside the range are still multiplied
  // correctly, but then share their scale with the batch's other rows.
  torch::Tensor forward(const torch::Tensor& x) const;
  // Always LibTorch's op (what forward() must equal; tests compare the two).
  torch::Tensor forward_onednn(const torch::Tensor& x) const;
  // Whether forward() takes inputs of fewer than kOwnRowsBelow rows to our own loop, and whether
  // it takes all of them (where the op's rows depend on their count: oneDNN with VNNI).
  bool own_rows() const { return own_rows_; }
  bool own_rows_always() const { return own_rows_always_; }
  static constexpr int64_t kOwnRowsBelow = 16;

 private:
  torch::Tensor probe_rows() const;               // (8, K): the quantizer's rounding boundaries, +-1
  bool own_rows_equal_onednn() const;             // the check at construction, on probe rows
  bool onednn_rows_independent_of_count() const;  // each probe row alone and among 96 agree

  c10::IValue packed_;           // LibTorch's packed-weights object for quantized::linear_dynamic
  int64_t in_features_ = 0;      // K
  int64_t out_features_ = 0;     // N
  int64_t padded_features_ = 0;  // K + the pinning columns, a multiple of 16
  // The same weights for our own loop (decoder/kernels/int8_linear_kernel.h's Int8Rows).
  std::vector<int8_t> row_weights_;  // (N, K rounded up to 32)
  std::vector<int32_t> row_sums_;
  std::vector<float> row_bias_, row_scale_;
  bool own_rows_ = false;
  bool own_rows_always_ = false;
};

}  // namespace captioner
