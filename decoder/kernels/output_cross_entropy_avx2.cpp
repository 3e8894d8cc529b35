// The AVX2 row passes of the output layer's cross-entropy (decoder/kernels/output_cross_entropy_kernel.h).
// This file alone is compiled with -mavx2 and runs only after output_cross_entropy.cpp has checked
// the CPU; it includes no library code the linker could share with files built for any x86-64.
#include <immintrin.h>
#include <sleef.h>

#include "decoder/kernels/output_cross_entropy_kernel.h"

namespace captioner {

namespace {

inline float horizontal_max(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

}  // namespace

double softmax_rows_forward_avx2(float* z, const float* bias, const int64_t* targets, int64_t rows, int64_t vocab, float* row_max,
                                 float* log_sum) {
  const int64_t full = vocab / 8 * 8;
  double loss = 0;
  for (int64_t r = 0; r < rows; ++r) {
    float* row = z + r * vocab;
    // Pass 1: add the bias, find the maximum.
    __m256 vmax = _mm256_set1_ps(-__builtin_inff());
    int64_t v = 0;
    for (; v < full; v += 8) {
      __m256 x = _mm256_loadu_ps(row + v);
      if (bias) x = _mm256_add_ps(x, _mm256_loadu_ps(bias + v));
      _mm256_storeu_ps(row + v, x);
      vmax = _mm256_max_ps(vmax, x);
    }
    float m = horizontal_max(vmax);
    for (; v < vocab; ++v) {
      if (bias) row[v] += bias[v];
      m = __builtin_fmaxf(m, row[v]);
    }
    // Pass 2: sum of exp(z - max).
    const __m256 vm = _mm256_set1_ps(m);
    __m256 vsum = _mm256_setzero_ps();
    for (v = 0; v < full; v += 8) vsum = _mm256_add_ps(vsum, Sleef_expf8_u10(_mm256_sub_ps(_mm256_loadu_ps(row + v), vm)));
    float sum = horizontal_sum(vsum);
    for (; v < vocab; ++v) sum += Sleef_expf_u10(row[v] - m);
    row_max[r] = m;
    log_sum[r] = __builtin_logf(sum);
    loss += static_cast<double>(m) + static_cast<double>(log_sum[r]) - static_cast<double>(row[targets[r]]);
  }
  return loss;
}

void softmax_rows_backward_avx2(float* z, const float* row_max, const float* log_sum, const int64_t* targets, float scale,
                                int64_t rows, int64_t vocab, float* bias_grad) {
  const int64_t full = vocab / 8 * 8;
  const __m256 vscale = _mm256_set1_ps(scale);
  for (int64_t r = 0; r < rows; ++r) {
    float* row = z + r * vocab;
    const __m256 vm = _mm256_set1_ps(row_max[r]), vl = _mm256_set1_ps(log_sum[r]);
    int64_t v = 0;
    for (; v < full; v += 8) {
      const __m256 p = _mm256_mul_ps(Sleef_expf8_u10(_mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(row + v), vm), vl)), vscale);
      _mm256_storeu_ps(row + v, p);
      if (bias_grad) _mm256_storeu_ps(bias_grad + v, _mm256_add_ps(_mm256_loadu_ps(bias_grad + v), p));
    }
    for (; v < vocab; ++v) {
      row[v] = Sleef_expf_u10((row[v] - row_max[r]) - log_sum[r]) * scale;
      if (bias_grad) bias_grad[v] += row[v];
    }
    row[targets[r]] -= scale;
    if (bias_grad) bias_grad[targets[r]] -= scale;
  }
}

}  // namespace captioner
