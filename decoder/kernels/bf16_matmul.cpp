#include "decoder/kernels/bf16_matmul.h"

#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <stdexcept>
#include <tuple>

namespace captioner {

namespace {

using dnnl::memory;

// oneDNN compiles a kernel per shape and layout: keep them (a training run meets a few dozen).
struct MatmulKey {
  int64_t m, k, n, a0, a1, b0, b1, c0;
  bool accumulate;
  bool operator<(const MatmulKey& o) const {
    return std::tie(m, k, n, a0, a1, b0, b1, c0, accumulate) <
           std::tie(o.m, o.k, o.n, o.a0, o.a1, o.b0, o.b1, o.c0, o.accumulate);
  }
};

class MatmulCache {
 public:
  MatmulCache() : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

  void run(const MatmulKey& key, void* a, void* b, void* c) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = kernels_.find(key);
    if (it == kernels_.end()) {
      if (kernels_.size() > 512) kernels_.clear();  // shapes from an unusual workload: start over
      it = kernels_.emplace(key, make(key)).first;
    }
    const auto& pd = it->second.first;
    memory am(pd.src_desc(), engine_, a), bm(pd.weights_desc(), engine_, b), cm(pd.dst_desc(), engine_, c);
    it->second.second.execute(stream_, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
    stream_.wait();
  }

 private:
  std::pair<dnnl::matmul::primitive_desc, dnnl::matmul> make(const MatmulKey& k) const {
    memory::desc a({k.m, k.k}, memory::data_type::bf16, memory::dims{k.a0, k.a1});
    memory::desc b({k.k, k.n}, memory::data_type::bf16, memory::dims{k.b0, k.b1});
    memory::desc c({k.m, k.n}, memory::data_type::f32, memory::dims{k.c0, 1});
    dnnl::primitive_attr attr;
    if (k.accumulate) {
      dnnl::post_ops ops;
      ops.append_sum(1.0f);
      attr.set_post_ops(ops);
    }
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), attr, engine_);
    return {pd, dnnl::matmul(pd)};
  }

  dnnl::engine engine_;
  dnnl::stream stream_;
  std::mutex mutex_;
  std::map<MatmulKey, std::pair<dnnl::matmul::primitive_desc, dnnl::matmul>> kernels_;
};

MatmulCache& cache() {
  static MatmulCache c;
  return c;
}

// oneDNN (Debian's 2.7) has no bf16 matmul below AVX-512: creating one fails with "could not
// create a primitive descriptor iterator". There the rounded operands are multiplied in float32
// instead: a product of two bf16 values is exact in float32, so the sums are the same up to their
// order. Slower than float32 training, as emulated bf16 would be; `auto` never picks it there.
bool onednn_multiplies_bf16() {
  static const bool available = [] {
    try {
      dnnl::engine engine(dnnl::engine::kind::cpu, 0);
      memory::desc a({1, 1}, memory::data_type::bf16, memory::dims{1, 1});
      memory::desc c({1, 1}, memory::data_type::f32, memory::dims{1, 1});
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, a, c), engine);
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return available;
}

bool unit_stride_matrix(const torch::Tensor& t) { return t.dim() == 2 && (t.stride(0) == 1 || t.stride(1) == 1); }

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// y = x W^T (+ b). The bias is a separate input only when there is one: autograd refuses
// undefined tensors among a function's inputs.
torch::Tensor bf16_linear_forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                                  const torch::Tensor* bias) {
  const int64_t K = weight.size(1), N = weight.size(0);
  auto xb = to_bf16(x.reshape({-1, K}));
  auto wb = to_bf16(weight);
  auto y = torch::empty({xb.size(0), N}, x.options());
  if (bias) y.copy_(bias->unsqueeze(0).expand_as(y));
  bf16_matmul_out(y, xb, wb.t(), /*accumulate=*/bias != nullptr);
  ctx->save_for_backward({xb, wb});
  ctx->saved_data["x_sizes"] = x.sizes().vec();
  auto shape = x.sizes().vec();
  shape.back() = N;
  return y.view(shape);
}

variable_list bf16_linear_backward(AutogradContext* ctx, const torch::Tensor& grad_out, bool bias) {
  const auto saved = ctx->get_saved_variables();
  const auto &xb = saved[0], &wb = saved[1];
  const int64_t M = xb.size(0), K = wb.size(1), N = wb.size(0);
  const auto grad = grad_out.reshape({M, N});
  const auto gb = to_bf16(grad);
  torch::Tensor dx, dw, db;
  if (ctx->needs_input_grad(0)) {
    dx = torch::empty({M, K}, grad.options());
    bf16_matmul_out(dx, gb, wb, false);  // (M, N) x (N, K)
    dx = dx.view(ctx->saved_data["x_sizes"].toIntVector());
  }
  if (ctx->needs_input_grad(1)) {
    dw = torch::empty({N, K}, grad.options());
    bf16_matmul_out(dw, gb.t(), xb, false);  // (N, M) x (M, K): summed over every row of the batch
  }
  if (!bias) return {dx, dw};
  if (ctx->needs_input_grad(2)) db = grad.sum(0);
  return {dx, dw, db};
}

struct Bf16LinearFunction : public torch::autograd::Function<Bf16LinearFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias) {
    return bf16_linear_forward(ctx, x, weight, &bias);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    return bf16_linear_backward(ctx, grad_outputs[0], true);
  }
};

struct Bf16LinearNoBiasFunction : public torch::autograd::Function<Bf16LinearNoBiasFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight) {
    return bf16_linear_forward(ctx, x, weight, nullptr);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    return bf16_linear_backward(ctx, grad_outputs[0], false);
  }
};

}  // namespace

bool bf16_products_native() {
  static const bool native = [] {
    // oneDNN's ISA values nest: each one's bits include those of the ISAs it extends.
    const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
    const auto bf16 = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_bf16);
    return (isa & bf16) == bf16;
  }();
  return native;
}

torch::Tensor to_bf16(const torch::Tensor& x) { return x.to(torch::kBFloat16).contiguous(); }

void bf16_matmul_out(const torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b, bool accumulate) {
  if (a.scalar_type() != torch::kBFloat16 || b.scalar_type() != torch::kBFloat16 || out.scalar_type() != torch::kFloat ||
      !a.device().is_cpu() || !b.device().is_cpu() || !out.device().is_cpu() || !unit_stride_matrix(a) ||
      !unit_stride_matrix(b) || out.dim() != 2 || out.stride(1) != 1 || a.size(1) != b.size(0) || out.size(0) != a.size(0) ||
      out.size(1) != b.size(1)) {
    throw std::invalid_argument("bf16_matmul_out: expects bf16 a (M, K), b (K, N) and float32 out (M, N) on the CPU; got " +
                                c10::str(a.sizes(), " ", a.scalar_type(), ", ", b.sizes(), " ", b.scalar_type(), ", ",
                                         out.sizes(), " ", out.scalar_type()));
  }
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (!accumulate) out.zero_();
    return;
  }
  // A size-1 dimension's stride is arbitrary; oneDNN wants it consistent with a plain layout.
  const auto stride = [](const torch::Tensor& t, int d) { return t.size(d) == 1 ? (d == 0 ? t.size(1) : 1) : t.stride(d); };
  if (!onednn_multiplies_bf16()) {
    const auto product = torch::mm(a.to(torch::kFloat), b.to(torch::kFloat));
    accumulate ? out.add_(product) : out.copy_(product);
    return;
  }
  MatmulKey key{M,         K, N, stride(a, 0), stride(a, 1), stride(b, 0), stride(b, 1), out.size(0) == 1 ? N : out.stride(0),
                accumulate};
  cache().run(key, a.data_ptr(), b.data_ptr(), out.data_ptr());
}

torch::Tensor bf16_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  if (!x.device().is_cpu() || x.scalar_type() != torch::kFloat || weight.dim() != 2 || x.dim() < 1 ||
      x.size(-1) != weight.size(1) || (bias.defined() && bias.numel() != weight.size(0))) {
    throw std::invalid_argument("bf16_linear: expects CPU float32 x (..., K), weight (N, K), bias (N); got " +
                                c10::str(x.sizes(), " ", x.scalar_type(), ", ", weight.sizes()));
  }
  return bias.defined() ? Bf16LinearFunction::apply(x, weight, bias) : Bf16LinearNoBiasFunction::apply(x, weight);
}

}  // namespace captioner
