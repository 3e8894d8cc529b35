#include "decoder/kernels/output_cross_entropy.h"

#include <limits>
#include <stdexcept>

#include "decoder/kernels/output_cross_entropy_kernel.h"

namespace captioner {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct OutputCrossEntropyFunction : public torch::autograd::Function<OutputCrossEntropyFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& hidden, const torch::Tensor& weight,
                               const torch::Tensor& bias, const torch::Tensor& targets, int64_t ignore_index) {
    const int64_t N = hidden.size(0), V = weight.size(0);
    // Only the rows that predict a word: padding costs no product.
    const auto keep = (targets != ignore_index).nonzero().squeeze(1);
    const bool all_rows = keep.size(0) == N;
    const auto x = all_rows ? hidden.contiguous() : hidden.index_select(0, keep);
    const auto t = (all_rows ? targets : targets.index_select(0, keep)).contiguous();
    const int64_t M = x.size(0);
    auto z = torch::mm(x, weight.t());  // (M, V); the bias joins in the row pass
    auto row_max = torch::empty({M}, z.options()), log_sum = torch::empty({M}, z.options());
    const bool has_bias = bias.numel() > 0;
    const auto b = bias.contiguous();
    const double loss_sum =
        softmax_rows_forward_avx2(z.data_ptr<float>(), has_bias ? b.data_ptr<float>() : nullptr, t.data_ptr<int64_t>(), M, V,
                                  row_max.data_ptr<float>(), log_sum.data_ptr<float>());
    ctx->save_for_backward({x, weight, z, row_max, log_sum, t, keep});
    ctx->saved_data["rows"] = N;
    ctx->saved_data["bias"] = has_bias;
    ctx->saved_data["used"] = false;
    // Mean over the predicted words; none at all gives NaN, as LibTorch's mean over no targets.
    const double loss = M > 0 ? loss_sum / static_cast<double>(M) : std::numeric_limits<double>::quiet_NaN();
    return torch::tensor(static_cast<float>(loss), z.options());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    // The row pass turns the saved logits into their gradient in place: a second backward would
    // read gradients as logits.
    if (ctx->saved_data["used"].toBool()) throw std::logic_error("output_cross_entropy: backward may run only once");
    ctx->saved_data["used"] = true;
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &weight = saved[1], &row_max = saved[3], &log_sum = saved[4], &t = saved[5], &keep = saved[6];
    auto z = saved[2];
    const int64_t N = ctx->saved_data["rows"].toInt(), M = x.size(0), V = weight.size(0);
    const bool has_bias = ctx->saved_data["bias"].toBool();
    const float scale = M > 0 ? grad_outputs[0].item<float>() / static_cast<float>(M) : 0.0f;
    auto grad_bias = has_bias ? torch::zeros({V}, z.options()) : torch::Tensor();
    softmax_rows_backward_avx2(z.data_ptr<float>(), row_max.data_ptr<float>(), log_sum.data_ptr<float>(), t.data_ptr<int64_t>(),
                               scale, M, V, has_bias ? grad_bias.data_ptr<float>() : nullptr);
    const auto grad_weight = z.t().mm(x);  // (V, H)
    auto grad_x = z.mm(weight);            // (M, H)
    if (M != N) grad_x = torch::zeros({N, x.size(1)}, x.options()).index_copy_(0, keep, grad_x);
    return {grad_x, grad_weight, grad_bias, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

bool output_cross_entropy_supports(const torch::Tensor& hidden) {
  return hidden.device().is_cpu() && hidden.scalar_type() == torch::kFloat && __builtin_cpu_supports("avx2");
}

torch::Tensor output_cross_entropy(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& bias,
                                   const torch::Tensor& targets, int64_t ignore_index) {
  if (!output_cross_entropy_supports(hidden) || hidden.dim() != 2 || weight.dim() != 2 || weight.size(1) != hidden.size(1) ||
      weight.scalar_type() != torch::kFloat || !weight.device().is_cpu() ||
      (bias.defined() &&
       (bias.dim() != 1 || bias.size(0) != weight.size(0) || bias.scalar_type() != torch::kFloat || !bias.device().is_cpu())) ||
      targets.dim() != 1 || targets.size(0) != hidden.size(0) || targets.scalar_type() != torch::kLong ||
      !targets.device().is_cpu()) {
    throw std::invalid_argument(
        "output_cross_entropy: expects CPU float32 hidden (N, H), weight (V, H), bias (V) or none, int64 "
        "targets (N) on an AVX2 CPU; got " +
        c10::str(hidden.sizes(), ", ", weight.sizes(), ", ", bias.defined() ? bias.sizes() : at::IntArrayRef{}, ", ",
                 targets.sizes()));
  }
  const auto t = targets.contiguous();
  const auto outside = (t != ignore_index) & ((t < 0) | (t >= weight.size(0)));
  if (outside.any().item<bool>()) throw std::invalid_argument("output_cross_entropy: a target is outside the vocabulary");
  // A custom autograd function takes no undefined tensor: no bias is an empty one.
  return OutputCrossEntropyFunction::apply(hidden, weight, bias.defined() ? bias : torch::empty({0}, weight.options()), t,
                                           ignore_index);
}

}  // namespace captioner
