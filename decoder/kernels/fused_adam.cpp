#include "decoder/kernels/fused_adam.h"

#include <algorithm>
#include <cmath>
#include <system_error>
#include <thread>

#include "encoder/threading.h"

namespace captioner {

namespace {

// Below this many weights per thread a second thread costs more than it saves.
constexpr int64_t kWeightsPerThread = 1 << 16;
// Memory-bound: past a few threads the bandwidth, not the arithmetic, is the limit.
constexpr int kMaxThreads = 4;

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

// One parameter's update: its arrays and the step's constants.
struct AdamUpdate {
  float* p;
  const float* grad;
  float *m, *v;
  int64_t n;
  float b1, b2, wd, inv_sqrt_bc2, eps, step_size, grad_scale;
};

// m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  p -= step_size m / (sqrt(v) / sqrt(bc2) + eps)
// for g = grad * grad_scale + wd * p, elements [begin, end). Vectorised: this file is compiled with
// -fno-math-errno (v >= 0, so sqrt never sets errno) and without FMA contraction, so every element
// rounds the same in the vector loop and its scalar tail, whichever thread runs it.
void update(const AdamUpdate& u, int64_t begin, int64_t end) {
  float* p = u.p;
  const float* grad = u.grad;
  float *m = u.m, *v = u.v;
  for (int64_t i = begin; i < end; ++i) {
    const float g = grad[i] * u.grad_scale + u.wd * p[i];
    const float mi = m[i] * u.b1 + g * (1 - u.b1);
    const float vi = v[i] * u.b2 + g * g * (1 - u.b2);
    m[i] = mi;
    v[i] = vi;
    p[i] -= u.step_size * mi / (__builtin_sqrtf(vi) * u.inv_sqrt_bc2 + u.eps);
  }
}

// Elements [begin, end) of all the updates laid end to end.
void update_range(const std::vector<AdamUpdate>& updates, int64_t begin, int64_t end) {
  int64_t offset = 0;
  for (const auto& u : updates) {
    const int64_t lo = std::max(begin, offset), hi = std::min(end, offset + u.n);
    if (lo < hi) update(u, lo - offset, hi - offset);
    offset += u.n;
  }
}

void run_updates(const std::vector<AdamUpdate>& updates) {
  int64_t total = 0;
  for (const auto& u : updates) total += u.n;
  const int threads =
      static_cast<int>(std::clamp<int64_t>(total / kWeightsPerThread, 1, std::min<int64_t>(kMaxThreads, usable_cores())));
  // Cut at multiples of 16 weights, so that no thread's share starts mid-vector.
  const auto cut = [&](int k) { return k == threads ? total : (total * k / threads) / 16 * 16; };
  std::vector<std::thread> helpers;
  try {
    for (int k = 1; k < threads; ++k) helpers.emplace_back(update_range, std::cref(updates), cut(k), cut(k + 1));
  } catch (const std::system_error&) {  // no more threads to be had: this one does the shares not started
    update_range(updates, 0, cut(1));
    update_range(updates, cut(static_cast<int>(helpers.size()) + 1), total);
    for (auto& t : helpers) t.join();
    return;
  }
  update_range(updates, 0, cut(1));
  for (auto& t : helpers) t.join();
}

}  // namespace

float gradient_clip_scale(const std::vector<torch::Tensor>& params, double max_norm) {
  // clip_grad_norm_'s own arithmetic (torch/nn/utils/clip_grad.h, norm type 2), without its
  // final pass over the gradients.
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> norms;
  for (const auto& p : params) {
    if (p.grad().defined()) norms.push_back(p.grad().norm(2));
  }
  if (norms.empty()) return 1.0f;
  const auto total = norms.size() == 1 ? norms[0] : torch::stack(norms).norm(2);
  return torch::clamp(max_norm / (total + 1e-6), c10::nullopt, 1.0).item<float>();
}

void fused_adam_step(torch::optim::Adam& optimizer, float grad_scale) {
  if (!fusable(optimizer)) {
    torch::NoGradGuard no_grad;
    if (grad_scale != 1.0f) {
      for (auto& group : optimizer.param_groups()) {
        for (auto& p : group.params()) {
          if (p.grad().defined()) p.mutable_grad().mul_(grad_scale);
        }
      }
    }
    optimizer.step();
    return;
  }
  torch::NoGradGuard no_grad;
  std::vector<AdamUpdate> updates;
  std::vector<torch::Tensor> updated;
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
      updates.push_back({p.data_ptr<float>(), p.grad().data_ptr<float>(), state.exp_avg().data_ptr<float>(),
                         state.exp_avg_sq().data_ptr<float>(), p.numel(), static_cast<float>(beta1), static_cast<float>(beta2),
                         static_cast<float>(options.weight_decay()), static_cast<float>(1 / std::sqrt(bias_correction2)),
                         static_cast<float>(options.eps()), static_cast<float>(options.lr() / bias_correction1), grad_scale});
      updated.push_back(p);
    }
  }
  run_updates(updates);
  // Written through raw pointers: say so, as an in-place op would, so that whatever is keyed to
  // these weights (the decoder's decoding tables, autograd's checks) sees the change.
  for (auto& p : updated) p.unsafeGetTensorImpl()->bump_version();
}

}  // namespace captioner
