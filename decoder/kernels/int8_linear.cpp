#include "decoder/kernels/int8_linear.h"

#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "decoder/kernels/int8_linear_kernel.h"

namespace captioner {

// In int8_linear_avx2.cpp, compiled for AVX2.
void int8_linear_rows_avx2(const Int8Rows& m, const float* x, int64_t rows, uint8_t* xq, float* y);

bool int8_linear_rows_available() { return __builtin_cpu_supports("avx2"); }

void int8_linear_rows(const Int8Rows& weights, const float* x, int64_t rows, uint8_t* xq, float* y) {
  if (!int8_linear_rows_available()) throw std::logic_error("int8_linear_rows needs AVX2");
  if (weights.padded_in % 32 != 0 || weights.padded_in < weights.in_features) {
    throw std::invalid_argument("int8_linear_rows needs weight rows padded to a multiple of 32");
  }
  int8_linear_rows_avx2(weights, x, rows, xq, y);
}

namespace {

// Our own loop's row width: K rounded up to its 32-byte vectors (Int8Rows::padded_in).
int64_t own_row_width(int64_t in_features) { return (in_features + 31) / 32 * 32; }

// The quantized ops are reached through the dispatcher: LibTorch's C++ API has no wrapper for
// them, and their packed-weights class is not in the installed headers, so it travels boxed.
// Each op is looked up by name once, not at every decoding step.
torch::jit::Stack call_op(const c10::OperatorHandle& op, torch::jit::Stack stack) {
  op.callBoxed(&stack);
  return stack;
}

const c10::OperatorHandle& linear_prepack() {
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("quantized::linear_prepack", "");
  return op;
}

const c10::OperatorHandle& linear_dynamic() {
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("quantized::linear_dynamic", "");
  return op;
}

void use_onednn() {
  auto& context = at::globalContext();
  const auto& engines = context.supportedQEngines();
  if (std::find(engines.begin(), engines.end(), at::QEngine::ONEDNN) == engines.end()) {
    throw std::runtime_error(
        "int8 decoding needs LibTorch's oneDNN quantized engine, which this LibTorch lacks: use --decoder-precision float32");
  }
  if (context.qEngine() != at::QEngine::ONEDNN) context.setQEngine(at::QEngine::ONEDNN);
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> quantize_rows(const torch::Tensor& weight, int64_t columns) {
  if (weight.dim() != 2 || columns < weight.size(1)) throw std::invalid_argument("quantize_rows needs (N, K) and columns >= K");
  const int64_t N = weight.size(0), K = weight.size(1);
  const auto w = weight.detach().to(torch::kFloat).contiguous();
  auto scales = torch::empty({N}, torch::kDouble);
  auto q = torch::zeros({N, columns}, torch::kChar);
  const float* wp = w.data_ptr<float>();
  double* scale_p = scales.data_ptr<double>();
  int8_t* qp = q.data_ptr<int8_t>();
  // One pass per row, ~3x faster than the tensor ops (abs, amax, / 127, clamp_min, reciprocal, *,
  // round_, clamp_) whose float operations it makes: the decoder's tables are built at every start.
  for (int64_t n = 0; n < N; ++n) {
    const float* row = wp + n * K;
    float max_abs = 0.0f;
    for (int64_t k = 0; k < K; ++k) {
      if (!std::isfinite(row[k])) {
        throw std::invalid_argument("int8 weights: row " + std::to_string(n) + " holds a non-finite value");
      }
      max_abs = std::max(max_abs, std::fabs(row[k]));
    }
    const float scale = std::max(max_abs / 127.0f, 1e-12f);
    const float inverse = 1.0f / scale;
    scale_p[n] = scale;
    for (int64_t k = 0; k < K; ++k) {
      // Clamped, then rounded half to even by adding and removing 1.5 * 2^23 (exact below 2^22;
      // this file is built without contraction or fast math): the integer rounding first gives.
      const float x = std::clamp(row[k] * inverse, -127.0f, 127.0f);
      qp[n * columns + k] = static_cast<int8_t>((x + 12582912.0f) - 12582912.0f);
    }
  }
  return {q, scales};
}

Int8Linear::Int8Linear(const torch::Tensor& weight, const torch::Tensor& bias) {
  if (weight.dim() != 2 || weight.size(1) < 1) throw std::invalid_argument("Int8Linear needs a weight of shape (N, K)");
  if (!weight.device().is_cpu()) throw std::invalid_argument("int8 decoding runs on the CPU only");
  use_onednn();
  torch::NoGradGuard no_grad;
  in_features_ = weight.size(1);
  // Two or more zero columns past K carry the +1 and -1 that pin the input range (see forward),
  // up to a multiple of 16 columns.
  padded_features_ = (in_features_ + 2 + 15) / 16 * 16;
  const int64_t N = weight.size(0), K = in_features_, Kp = padded_features_;
  // Symmetric per output row: oneDNN wants zero points of 0 for weights. The pinning columns are
  // zeros. (quantize_per_channel goes one element at a time in this LibTorch, no FBGEMM.)
  auto [q, scales] = quantize_rows(weight, Kp);
  const int8_t* qp = q.data_ptr<int8_t>();
  const double* scale_p = scales.data_ptr<double>();
  auto zero_points = torch::zeros({N}, torch::kLong);
  auto qweight = at::_make_per_channel_quantized_tensor(q, scales, zero_points, 0);
  c10::optional<at::Tensor> b;
  if (bias.defined()) b = bias.detach().to(torch::kFloat).contiguous();
  packed_ = call_op(linear_prepack(), {qweight, b}).at(0);
  out_features_ = N;

  // Our own loop's copy: the same int8 weights, and the op's per-row factors formed as it forms
  // them (float 1 / scale, times the input's 63.5; the bias in accumulator units).
  if (!int8_linear_rows_available()) return;
  const int64_t Kw = own_row_width(K);
  row_weights_.assign(static_cast<size_t>(N * Kw), 0);
  row_sums_.assign(static_cast<size_t>(N), 0);
  row_bias_.assign(static_cast<size_t>(N), 0.0f);
  row_scale_.assign(static_cast<size_t>(N), 0.0f);
  const float* bp = b ? b->data_ptr<float>() : nullptr;
  for (int64_t n = 0; n < N; ++n) {
    int32_t sum = 0;
    for (int64_t k = 0; k < K; ++k) sum += (row_weights_[static_cast<size_t>(n * Kw + k)] = qp[n * Kp + k]);
    row_sums_[static_cast<size_t>(n)] = sum;
    const float bias_scale = 63.5f * static_cast<float>(1.0 / scale_p[n]);
    row_scale_[static_cast<size_t>(n)] = 1.0f / bias_scale;
    if (bp) row_bias_[static_cast<size_t>(n)] = bp[n] * bias_scale;
  }
  own_rows_ = own_rows_equal_onednn();
  // Where the op's result for a row depends on how many rows come with it, our loop takes every
  // input, so a photo's caption does not depend on its batch.
  own_rows_always_ = own_rows_ && !onednn_rows_independent_of_count();
  if (!own_rows_) {  // the op is used for every input; the copy is not needed
    row_weights_ = {};
    row_sums_ = {};
    row_bias_ = row_scale_ = {};
  }
}

torch::Tensor Int8Linear::probe_rows() const {
  // Every rounding boundary of the input's quantization, (j + 0.5) / 63.5, and the floats up to
  // 4 ulps either side of it (where a fused multiply-add or another rounding mode would differ),
  // cycled through six rows; then a row of +1s and a row of -1s.
  std::vector<float> sweep;
  for (int j = -64; j < 64; ++j) {
    float v = static_cast<float>((j + 0.5) / 63.5);
    for (int u = 0; u < 4; ++u) v = std::nextafter(v, -2.0f);
    for (int u = -4; u <= 4; ++u, v = std::nextafter(v, 2.0f)) sweep.push_back(std::clamp(v, -1.0f, 1.0f));
  }
  const int64_t K = in_features_;
  auto probe = torch::empty({8, K}, torch::kFloat);
  float* p = probe.data_ptr<float>();
  for (int64_t i = 0; i < 6 * K; ++i) p[i] = sweep[static_cast<size_t>(i) % sweep.size()];
  std::fill(p + 6 * K, p + 7 * K, 1.0f);
  std::fill(p + 7 * K, p + 8 * K, -1.0f);
  return probe;
}

bool Int8Linear::own_rows_equal_onednn() const {
  const int64_t K = in_features_, R = 8;
  const auto probe = probe_rows();
  const float* p = probe.data_ptr<float>();
  auto own = torch::empty({R, out_features_}, torch::kFloat);
  std::vector<uint8_t> scratch(static_cast<size_t>(R * own_row_width(K)));
  Int8Rows m{row_weights_.data(), row_sums_.data(), row_bias_.data(), row_scale_.data(), out_features_, K, own_row_width(K)};
  for (int64_t rows : {1, 2, 3, 8}) {  // each register blocking: 1, 2, 3 and 4 rows
    int8_linear_rows(m, p, rows, scratch.data(), own.data_ptr<float>());
    if (!torch::equal(own.narrow(0, 0, rows), forward_onednn(probe.narrow(0, 0, rows)))) return false;
  }
  return true;
}

bool Int8Linear::onednn_rows_independent_of_count() const {
  // The probe rows alone (padded to one block of 16) and among 96 (32 photos' beams at beam 3, a
  // shape decoding builds anyway): with VNNI, oneDNN rounds a row's output differently when the
  // call holds more blocks of rows.
  const auto probe = probe_rows();
  const auto many = forward_onednn(probe.repeat({12, 1}));
  for (int64_t r = 0; r < probe.size(0); ++r) {
    if (!torch::equal(forward_onednn(probe.narrow(0, r, 1)), many.narrow(0, r, 1))) return false;
  }
  return true;
}

torch::Tensor Int8Linear::forward(const torch::Tensor& x) const {
  if (!defined()) throw std::logic_error("Int8Linear used before it was built");
  if (x.dim() != 2 || x.size(1) != in_features_) {
    throw std::invalid_argument("Int8Linear expects (R, " + std::to_string(in_features_) + "), got " + c10::str(x.sizes()));
  }
  const int64_t R = x.size(0);
  if (!own_rows_ || R == 0 || (R >= kOwnRowsBelow && !own_rows_always_) || !x.device().is_cpu()) return forward_onednn(x);
  auto xf = x.to(torch::kFloat).contiguous();
  const float* xp = xf.data_ptr<float>();
  // Outside [-1, 1] (or NaN) the op measures its own range: it alone reproduces that.
  for (int64_t i = 0; i < R * in_features_; ++i) {
    if (!(xp[i] >= -1.0f && xp[i] <= 1.0f)) return forward_onednn(x);
  }
  const int64_t Kw = own_row_width(in_features_);
  Int8Rows m{row_weights_.data(), row_sums_.data(), row_bias_.data(), row_scale_.data(), out_features_, in_features_, Kw};
  std::vector<uint8_t> xq(static_cast<size_t>(R * Kw));
  auto y = torch::empty({R, out_features_}, torch::kFloat);
  int8_linear_rows(m, xp, R, xq.data(), y.data_ptr<float>());
  return y;
}

torch::Tensor Int8Linear::forward_onednn(const torch::Tensor& x) const {
  if (!defined()) throw std::logic_error("Int8Linear used before it was built");
  if (x.dim() != 2 || x.size(1) != in_features_) {
    throw std::invalid_argument("Int8Linear expects (R, " + std::to_string(in_features_) + "), got " + c10::str(x.sizes()));
  }
  // Columns K and K+1 hold +1 and -1 (their weights are zero): the range the op measures is then
  // [-1, 1] whatever the rows hold (see the header). Rows are padded (with zeros) to a multiple
  // of 16: oneDNN builds and caches a primitive per shape, and a beam search shrinking row by row
  // would otherwise make dozens (~20 MB and their JIT time).
  const int64_t rows = std::max<int64_t>(16, (x.size(0) + 15) / 16 * 16);  // row 0 exists even for R = 0
  auto pinned = torch::zeros({rows, padded_features_}, torch::kFloat);
  pinned.narrow(0, 0, x.size(0)).narrow(1, 0, in_features_).copy_(x);
  pinned.data_ptr<float>()[in_features_] = 1.0f;
  pinned.data_ptr<float>()[in_features_ + 1] = -1.0f;
  auto out = call_op(linear_dynamic(), {pinned, packed_, /*reduce_range=*/true}).at(0).toTensor();
  return out.narrow(0, 0, x.size(0));
}

}  // namespace captioner
