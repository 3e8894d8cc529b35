// One step of a torch::optim::Adam, made in a single pass over each parameter's memory.
// Same update and the same optimizer state (so checkpoints and load/save are unchanged).
//
// Why: Adam::step runs ~8 tensor ops per parameter, each a pass over 4-byte-per-weight arrays;
// the decoder's 6 M weights make that ~480 MB of memory traffic per batch, ~10% of a training
// step here. One fused loop reads each of weight, gradient and moments once (~170 MB), split
// across the cores: between OpenBLAS's products the others would only wait.
#pragma once

#include <torch/torch.h>

#include <vector>

namespace captioner {

// The factor torch::nn::utils::clip_grad_norm_(params, max_norm) multiplies every gradient by,
// computed by the same tensor operations: min(1, max_norm / (||all gradients||_2 + 1e-6)).
// 1 when no parameter has a gradient.
float gradient_clip_scale(const std::vector<torch::Tensor>& params, double max_norm);

// Exactly Adam::step's update on gradients multiplied by grad_scale (as clip_grad_norm_ followed
// by Adam::step would make it; the gradients themselves are left as they are), L2 weight decay
// added to the gradient, bias corrections, in float arithmetic, for CPU float32 contiguous
// parameters; falls back to scaling the gradients and optimizer.step() otherwise (amsgrad, other
// devices or types, sparse gradients). Bit-identical whatever the number of threads.
void fused_adam_step(torch::optim::Adam& optimizer, float grad_scale = 1.0f);

}  // namespace captioner
