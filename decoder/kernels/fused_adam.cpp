#include "decoder/kernels/fused_adam.h"

#include <cmath>

namespace captioner {

namespace {

bool fusable(const torch::optim::Adam& optimizer) {
  for (const auto& group : optimizer.param_groups()) {
    if (static_cast<const torch::optim::AdamOptions&>(group.options()).amsgrad()) return false;
    for (const auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      for (const auto* t : {&p, &p.grad()}) {
        if (!t->device().is_cpu() || t->scalar_type() != torch::kFloat || !t->is_contiguous() || t->is_sparse()) return false;
      }
    }
  }
  return true;
}

// m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  p -= step_size m / (sqrt(v) / sqrt(bc2) + eps)
// Vectorised: this file is compiled with -fno-math-errno (v >= 0, so sqrt never sets errno).
void update(float* p, const float* grad, float* m, float* v, int64_t n, float b1, float b2, float wd, float inv_sqrt_bc2,
            float eps, float step_size) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i] + wd * p[i];
    const float mi = m[i] * b1 + g * (1 - b1);
    const float vi = v[i] * b2 + g * g * (1 - b2);
    m[i] = mi;
    v[i] = vi;
    p[i] -= step_size * mi / (__builtin_sqrtf(vi) * inv_sqrt_bc2 + eps);
  }
}

}  // namespace

void fused_adam_step(torch::optim::Adam& optimizer) {
  if (!fusable(optimizer)) {
    optimizer.step();
    return;
  }
  torch::NoGradGuard no_grad;
  for (auto& group : optimizer.param_groups()) {
    const auto& options = static_cast<const torch::optim::AdamOptions&>(group.options());
    const double beta1 = std::get<0>(options.betas()), beta2 = std::get<1>(options.betas());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      // The state lives where Adam::step keeps it, keyed by the parameter's TensorImpl.
      auto& slot = optimizer.state()[c10::guts::to_string(p.unsafeGetTensorImpl())];
      if (!slot) {
        auto fresh = std::make_unique<torch::optim::AdamParamState>();
        fresh->step(0);
        fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        slot = std::move(fresh);
      }
      auto& state = static_cast<torch::optim::AdamParamState&>(*slot);
      if (!state.exp_avg().is_contiguous()) state.exp_avg(state.exp_avg().contiguous());
      if (!state.exp_avg_sq().is_contiguous()) state.exp_avg_sq(state.exp_avg_sq().contiguous());
      state.step(state.step() + 1);
      const double bias_correction1 = 1 - std::pow(beta1, static_cast<double>(state.step()));
      const double bias_correction2 = 1 - std::pow(beta2, static_cast<double>(state.step()));
      update(p.data_ptr<float>(), p.grad().data_ptr<float>(), state.exp_avg().data_ptr<float>(),
             state.exp_avg_sq().data_ptr<float>(), p.numel(), static_cast<float>(beta1), static_cast<float>(beta2),
             static_cast<float>(options.weight_decay()), static_cast<float>(1 / std::sqrt(bias_correction2)),
             static_cast<float>(options.eps()), static_cast<float>(options.lr() / bias_correction1));
      // Written through a raw pointer: say so, as an in-place op would, so that whatever is
      // keyed to these weights (the decoder's decoding tables, autograd's checks) sees the change.
      p.unsafeGetTensorImpl()->bump_version();
    }
  }
}

}  // namespace captioner
