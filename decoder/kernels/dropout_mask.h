// Inverted-dropout masks for training: each element 1/(1-p) with probability 1-p, else 0.
// Drawn by a counter-based generator (SplitMix64) seeded with one draw from LibTorch's default CPU
// generator, so torch::manual_seed and the generator state a checkpoint keeps make them repeat.
//
// Why not bernoulli_: LibTorch's CPU bernoulli_ takes ~12 ns per element here (one locked
// generator call each); the dropout masks of a training batch cost more than its LSTM steps.
#pragma once

#include <torch/torch.h>

namespace captioner {

// A float32 CPU mask of `shape`; p in [0, 1] (p = 1: all zeros).
torch::Tensor dropout_mask(at::IntArrayRef shape, double p);

}  // namespace captioner
