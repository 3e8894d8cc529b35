// Training's matrix products in bfloat16 with float32 results: the operands are rounded to bf16
// (8-bit mantissa), the products summed in float32 by oneDNN, everything else stays float32.
//
// Why: on CPUs that multiply bf16 natively (AVX512-BF16, AMX) oneDNN's bf16 products run ~2x the
// float32 GEMMs, and the products are two thirds of a training step (bench/RESULTS.md). Weights,
// gradients, optimizer state and every element-wise op keep float32: the mixed-precision recipe
// of Kalamkar et al. 2019, "A Study of BFLOAT16 for Deep Learning Training".
//
// Shapes: bf16_linear x (..., K), weight (N, K), bias (N) or undefined -> (..., N); CPU float32.
#pragma once

#include <torch/torch.h>

namespace captioner {

// True when this CPU multiplies bf16 natively (elsewhere oneDNN emulates it, slower than float32).
bool bf16_products_native();

// Rounds a float32 tensor to bf16 (round to nearest even), contiguous.
torch::Tensor to_bf16(const torch::Tensor& x);

// out (M, N) = a (M, K) b (K, N) [+ out when accumulate]: a and b bf16 matrices with unit stride
// in one dimension (transposed views welcome), out float32 with unit stride in its last.
void bf16_matmul_out(const torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b, bool accumulate);

// Differentiable y = x W^T + b with every product (forward, dL/dx, dL/dW) in bf16.
torch::Tensor bf16_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

}  // namespace captioner
