// An LSTM layer run over a whole teacher-forced sequence as one autograd node, for training:
//   gates_t = pre_t + W_hh h_{t-1};  i, f, o = sigmoid, g = tanh;  c_t = f c_{t-1} + i g;  h_t = o tanh(c_t)
// where pre_t (= W_x x_t + W_ih v + b) is computed by the caller for all steps at once.
//
// Why: step by step, autograd records ~12 nodes per time step and the backward pass runs ~20 small
// ops per step, each a separate pass over memory; here the forward pass keeps the activated gates,
// the backward pass is one fused loop per step plus one (B, 4H) x (4H, H) product, and dW_hh is a
// single (4H, T*B) x (T*B, H) product over all steps instead of T small ones.
//
// Gate order (input, forget, output, cell), as RecurrentLayerImpl::step.
// Shapes: pre (B, T, 4H), w_hh (4H, H), h0 (B, H), c0 (B, H) -> h (B, T, H). CPU, float32.
#pragma once

#include <torch/torch.h>

namespace captioner {

// True when lstm_sequence can run these tensors (CPU float32); otherwise step the cell.
bool lstm_sequence_supports(const torch::Tensor& pre);

// Differentiable in pre, w_hh, h0 and c0; equal to stepping RecurrentLayerImpl::step T times
// (to float rounding: the products sum in another order). bf16_products: the W_hh products of
// both passes take bf16 operands (decoder/kernels/bf16_matmul.h); the cell's arithmetic stays float32.
torch::Tensor lstm_sequence(const torch::Tensor& pre, const torch::Tensor& w_hh, const torch::Tensor& h0, const torch::Tensor& c0,
                            bool bf16_products = false);

}  // namespace captioner
