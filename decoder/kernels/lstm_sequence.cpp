#include "decoder/kernels/lstm_sequence.h"

#include "decoder/kernels/bf16_matmul.h"

#include <stdexcept>

namespace captioner {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Buffers are time-major (T, B, ...) so that step t is one contiguous block.
struct LstmSequenceFunction : public torch::autograd::Function<LstmSequenceFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& pre, const torch::Tensor& w_hh,
                               const torch::Tensor& h0_in, const torch::Tensor& c0_in, bool bf16) {
    const int64_t B = pre.size(0), T = pre.size(1), G = pre.size(2), H = G / 4;
    const auto h0 = h0_in.contiguous(), c0 = c0_in.contiguous();
    auto gates = torch::empty({T, B, G}, pre.options());  // activated: i, f, o, g
    auto c = torch::empty({T, B, H}, pre.options());
    auto tanh_c = torch::empty({T, B, H}, pre.options());
    auto h = torch::empty({T, B, H}, pre.options());
    const auto w_t = w_hh.t();
    // bf16 products: W_hh and every h_{t-1} are rounded once here and kept for the backward
    // pass's products (h_prev_bf16[t] = bf16(h_{t-1}), h_{-1} = h0).
    const auto w_bf16 = bf16 ? to_bf16(w_hh) : torch::Tensor();
    const auto h_prev_bf16 = bf16 ? torch::empty({T, B, H}, pre.options().dtype(torch::kBFloat16)) : torch::Tensor();
    for (int64_t t = 0; t < T; ++t) {
      auto gates_t = gates[t];
      const auto& h_prev = t > 0 ? h[t - 1] : h0;
      if (bf16) {
        auto h_prev_t = h_prev_bf16[t];
        h_prev_t.copy_(h_prev);
        gates_t.copy_(pre.select(1, t));
        bf16_matmul_out(gates_t, h_prev_t, w_bf16.t(), /*accumulate=*/true);
      } else {
        at::addmm_out(gates_t, pre.select(1, t), h_prev, w_t);
      }
      gates_t.narrow(1, 0, 3 * H).sigmoid_();
      gates_t.narrow(1, 3 * H, H).tanh_();
      const float* gp = gates_t.data_ptr<float>();
      const float* c_prev = (t > 0 ? c[t - 1] : c0).data_ptr<float>();
      float* ct = c[t].data_ptr<float>();
      for (int64_t b = 0; b < B; ++b) {
        const float* in = gp + b * G;  // i | f | o | g
        for (int64_t j = 0; j < H; ++j) ct[b * H + j] = in[H + j] * c_prev[b * H + j] + in[j] * in[3 * H + j];
      }
      auto tanh_c_t = tanh_c[t];
      at::tanh_out(tanh_c_t, c[t]);
      const float* tc = tanh_c_t.data_ptr<float>();
      float* ht = h[t].data_ptr<float>();
      for (int64_t b = 0; b < B; ++b) {
        const float* o = gp + b * G + 2 * H;
        for (int64_t j = 0; j < H; ++j) ht[b * H + j] = o[j] * tc[b * H + j];
      }
    }
    ctx->save_for_backward({w_hh, h0, c0, gates, c, tanh_c, h});
    ctx->saved_data["bf16"] = bf16;
    if (bf16) {
      ctx->saved_data["w_bf16"] = w_bf16;
      ctx->saved_data["h_prev_bf16"] = h_prev_bf16;
    }
    return h.transpose(0, 1).contiguous();
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto &w_hh = saved[0], &h0 = saved[1], &c0 = saved[2], &gates = saved[3], &c = saved[4], &tanh_c = saved[5],
               &h = saved[6];
    const int64_t T = gates.size(0), B = gates.size(1), G = gates.size(2), H = G / 4;
    const auto grad_h = grad_outputs[0].transpose(0, 1).contiguous();  // (T, B, H)
    auto grad_gates = torch::empty({T, B, G}, gates.options());        // pre-activation
    auto grad_h_next = torch::zeros({B, H}, gates.options());          // dL/dh_t through step t+1
    auto grad_c_next = torch::zeros({B, H}, gates.options());          // dL/dc_t through step t+1
    float* dh_next = grad_h_next.data_ptr<float>();
    float* dc_next = grad_c_next.data_ptr<float>();
    const bool bf16 = ctx->saved_data["bf16"].toBool();
    const auto w_bf16 = bf16 ? ctx->saved_data["w_bf16"].toTensor() : torch::Tensor();
    // Each step's gate gradients rounded once: for that step's dL/dh_{t-1} and for dW_hh.
    auto grad_gates_bf16 = bf16 ? torch::empty({T, B, G}, gates.options().dtype(torch::kBFloat16)) : torch::Tensor();
    for (int64_t t = T - 1; t >= 0; --t) {
      const float* gp = gates[t].data_ptr<float>();
      const float* tc = tanh_c[t].data_ptr<float>();
      const float* c_prev = (t > 0 ? c[t - 1] : c0).data_ptr<float>();
      const float* dh_out = grad_h[t].data_ptr<float>();
      float* dg = grad_gates[t].data_ptr<float>();
      for (int64_t b = 0; b < B; ++b) {
        const float* in = gp + b * G;
        float* d = dg + b * G;
        for (int64_t j = 0; j < H; ++j) {
          const int64_t k = b * H + j;
          const float i = in[j], f = in[H + j], o = in[2 * H + j], g = in[3 * H + j];
          const float dh = dh_out[k] + dh_next[k];
          const float dc = dh * o * (1 - tc[k] * tc[k]) + dc_next[k];
          d[j] = dc * g * i * (1 - i);
          d[H + j] = dc * c_prev[k] * f * (1 - f);
          d[2 * H + j] = dh * tc[k] * o * (1 - o);
          d[3 * H + j] = dc * i * (1 - g * g);
          dc_next[k] = dc * f;
        }
      }
      // dL/dh_{t-1} through the gates
      if (bf16) {
        auto grad_gates_t = grad_gates_bf16[t];
        grad_gates_t.copy_(grad_gates[t]);
        bf16_matmul_out(grad_h_next, grad_gates_t, w_bf16, /*accumulate=*/false);
      } else {
        at::mm_out(grad_h_next, grad_gates[t], w_hh);
      }
    }
    // dW_hh = sum_t grad_gates_t^T h_{t-1}: one product over all steps.
    torch::Tensor grad_w;
    if (bf16) {
      grad_w = torch::empty({G, H}, gates.options());
      const auto h_prev_bf16 = ctx->saved_data["h_prev_bf16"].toTensor().view({T * B, H});
      bf16_matmul_out(grad_w, grad_gates_bf16.view({T * B, G}).t(), h_prev_bf16, /*accumulate=*/false);
    } else {
      auto h_prev = torch::cat({h0.unsqueeze(0), h.narrow(0, 0, T - 1)}, 0).view({T * B, H});
      grad_w = grad_gates.view({T * B, G}).t().mm(h_prev);
    }
    return {grad_gates.transpose(0, 1), grad_w, grad_h_next, grad_c_next, torch::Tensor()};
  }
};

}  // namespace

bool lstm_sequence_supports(const torch::Tensor& pre) { return pre.device().is_cpu() && pre.scalar_type() == torch::kFloat; }

torch::Tensor lstm_sequence(const torch::Tensor& pre, const torch::Tensor& w_hh, const torch::Tensor& h0, const torch::Tensor& c0,
                            bool bf16_products) {
  if (!lstm_sequence_supports(pre) || pre.dim() != 3 || pre.size(1) < 1 || pre.size(2) % 4 != 0 ||
      w_hh.sizes() != torch::IntArrayRef{pre.size(2), pre.size(2) / 4} ||
      h0.sizes() != torch::IntArrayRef{pre.size(0), pre.size(2) / 4} || c0.sizes() != h0.sizes()) {
    throw std::invalid_argument("lstm_sequence: expects CPU float32 pre (B, T>=1, 4H), w_hh (4H, H), h0 and c0 (B, H); got " +
                                c10::str(pre.sizes(), ", ", w_hh.sizes(), ", ", h0.sizes(), ", ", c0.sizes()));
  }
  return LstmSequenceFunction::apply(pre, w_hh, h0, c0, bf16_products);
}

}  // namespace captioner
