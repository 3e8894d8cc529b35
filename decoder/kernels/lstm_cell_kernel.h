// The element-wise half of one LSTM decoding step as a single pass over the gates, instead of the
// dozen LibTorch ops (and their temporaries) of RecurrentLayerImpl::step. Per row r, gate order
// (input, forget, output, cell) as in decoder/network/caption_decoder.h:
//   z = gates[r] + (word_gates[tokens[r]] + image_gates[image_rows[r]])   (the bracket optional;
//                                                                        no gates: the bracket)
//   i, f, o = sigmoid(z[0:H]), sigmoid(z[H:2H]), sigmoid(z[2H:3H]);  g = tanh(z[3H:4H])
//   c_out[r] = f * c[r] + i * g;   h[r] = o * tanh(c_out[r])
// Shapes: gates (R, 4H), word_gates (V, 4H), image_gates (B, 4H), c, c_out, h (R, H), all row-major
// float32, H a multiple of 8. Bit-identical to those ops when H is a multiple of 16 (LibTorch's
// vector loop then leaves no scalar tail) and LibTorch's sigmoid and tanh call SLEEF's 8-wide
// functions, as Debian's LibTorch 1.13 does on x86 (tests/decoder/kernels/decoding_kernels_test.cpp checks it):
// the same exp and tanh, the same operation order, no fused multiply-adds.
#pragma once

#include <cstdint>

namespace captioner {

// Whether this CPU can run lstm_cell_step (AVX2; no FMA is used).
bool lstm_cell_kernel_available();

struct LstmCellInputs {
  const float* gates = nullptr;         // (R, 4H) W_hh h (+ bias), or the whole pre-activation
  const float* word_gates = nullptr;    // (V, 4H) or null: then tokens and image_gates are unused
  const int64_t* tokens = nullptr;      // (R,) rows of word_gates
  const float* image_gates = nullptr;   // (B, 4H) or null
  const int64_t* image_rows = nullptr;  // (R,) rows of image_gates; null: row r
};

// c_out may be c (updated in place). Call only where lstm_cell_kernel_available(); throws
// std::invalid_argument unless hidden is a multiple of 8.
void lstm_cell_step(const LstmCellInputs& in, const float* c, float* c_out, float* h, int64_t rows, int64_t hidden);

}  // namespace captioner
