// The fused LSTM step's AVX2 code (decoder/kernels/lstm_cell_kernel.h). This file alone is compiled with
// -mavx2 (and -ffp-contract=off, so that f * c + i * g rounds twice, as LibTorch's separate mul
// and add kernels do); it includes no library code the linker could share with files built for
// any x86-64, and runs only after lstm_cell_kernel.cpp has checked the CPU.
#include <immintrin.h>
#include <sleef.h>

#include "decoder/kernels/lstm_cell_kernel.h"

namespace captioner {

namespace {

// LibTorch's vectorised sigmoid (UnaryOpsKernel.cpp): 1 / (1 + exp(0 - x)), SLEEF's exp.
inline __m256 sigmoid8(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(Sleef_expf8_u10(_mm256_sub_ps(_mm256_setzero_ps(), x)), one));
}

}  // namespace

void lstm_cell_step_avx2(const LstmCellInputs& in, const float* c, float* c_out, float* h, int64_t rows, int64_t hidden) {
  const int64_t H = hidden, G = 4 * hidden;
  for (int64_t r = 0; r < rows; ++r) {
    const float* z = in.gates ? in.gates + r * G : nullptr;
    const float* word = in.word_gates ? in.word_gates + in.tokens[r] * G : nullptr;
    const float* image = in.word_gates && in.image_gates ? in.image_gates + (in.image_rows ? in.image_rows[r] : r) * G : nullptr;
    const float* c_row = c + r * H;
    float* c_out_row = c_out + r * H;
    float* h_row = h + r * H;
    // One gate block of 8 units: z + (word + image), added in the order the decoder adds them.
    auto load = [&](int64_t j) {
      if (!word) return _mm256_loadu_ps(z + j);
      __m256 x = _mm256_loadu_ps(word + j);
      if (image) x = _mm256_add_ps(x, _mm256_loadu_ps(image + j));
      return z ? _mm256_add_ps(_mm256_loadu_ps(z + j), x) : x;
    };
    for (int64_t u = 0; u < H; u += 8) {
      const __m256 i = sigmoid8(load(u));
      const __m256 f = sigmoid8(load(H + u));
      const __m256 o = sigmoid8(load(2 * H + u));
      const __m256 g = Sleef_tanhf8_u10(load(3 * H + u));
      const __m256 c_new = _mm256_add_ps(_mm256_mul_ps(f, _mm256_loadu_ps(c_row + u)), _mm256_mul_ps(i, g));
      _mm256_storeu_ps(c_out_row + u, c_new);
      _mm256_storeu_ps(h_row + u, _mm256_mul_ps(o, Sleef_tanhf8_u10(c_new)));
    }
  }
}

}  // namespace captioner
