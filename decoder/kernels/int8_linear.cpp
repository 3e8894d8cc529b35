#include "decoder/kernels/int8_linear.h"

#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <stdexcept>

namespace captioner {

namespace {

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

Int8Linear::Int8Linear(const torch::Tensor& weight, const torch::Tensor& bias) {
  if (weight.dim() != 2 || weight.size(1) < 1) throw std::invalid_argument("Int8Linear needs a weight of shape (N, K)");
  if (!weight.device().is_cpu()) throw std::invalid_argument("int8 decoding runs on the CPU only");
  use_onednn();
  torch::NoGradGuard no_grad;
  in_features_ = weight.size(1);
  // Two or more zero columns past K carry the +1 and -1 that pin the input range (see forward),
  // up to a multiple of 16 columns.
  padded_features_ = (in_features_ + 2 + 15) / 16 * 16;
  auto w = torch::zeros({weight.size(0), padded_features_}, torch::kFloat);
  w.narrow(1, 0, in_features_).copy_(weight.detach());
  // Symmetric per output row: oneDNN wants zero points of 0 for weights.
  auto scales = (w.abs().amax(1) / 127.0).clamp_min(1e-12).to(torch::kDouble);
  auto zero_points = torch::zeros({w.size(0)}, torch::kLong);
  // Rounded by tensor ops (as quantize_per_channel rounds: w * (1 / scale), half to even) and
  // wrapped as a quantized tensor: quantize_per_channel goes one element at a time in this
  // LibTorch (no FBGEMM).
  auto q = (w * scales.to(torch::kFloat).reciprocal().unsqueeze(1)).round_().clamp_(-127, 127).to(torch::kChar);
  auto qweight = at::_make_per_channel_quantized_tensor(q, scales, zero_points, 0);
  c10::optional<at::Tensor> b;
  if (bias.defined()) b = bias.detach().to(torch::kFloat).contiguous();
  packed_ = call_op(linear_prepack(), {qweight, b}).at(0);
}

torch::Tensor Int8Linear::forward(const torch::Tensor& x) const {
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
