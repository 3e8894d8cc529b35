// The output layer and the cross-entropy of teacher-forced training as one autograd node:
//   loss = mean over rows n with targets[n] != ignore of  logsumexp(z_n) - z_n[targets[n]],
//   z_n = W_o h_n + b_o
// Why: only rows that predict a word are multiplied (no work on padding), and the backward pass
// forms dL/dz = (softmax(z) - onehot) / M (M the rows that predict a word) and b_o's gradient in
// one pass over z, where LibTorch's linear + cross_entropy make a log-softmax copy, a zeroed
// gradient, a scatter, a log-softmax backward and a column sum (~10% of a training step on 2 cores).
// Shapes: hidden (N, H), weight (V, H), bias (V) or undefined, targets (N) int64 -> loss ().
// CPU float32, AVX2; equal to F::cross_entropy(F::linear(hidden, weight, bias), targets,
// ignore_index) to float rounding (sums in another order).
#pragma once

#include <torch/torch.h>

namespace captioner {

// Whether output_cross_entropy can run these tensors on this CPU; otherwise use LibTorch's ops.
bool output_cross_entropy_supports(const torch::Tensor& hidden);

// Differentiable in hidden, weight and bias. Its backward pass may run once (no retain_graph).
torch::Tensor output_cross_entropy(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& bias,
                                   const torch::Tensor& targets, int64_t ignore_index);

}  // namespace captioner
