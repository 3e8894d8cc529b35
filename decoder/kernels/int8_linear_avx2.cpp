// Int8Linear's few-row product in AVX2 (decoder/kernels/int8_linear.h): the arithmetic of
// LibTorch's oneDNN quantized::linear_dynamic on the pinned input range [-1, 1], step for step:
//   x_q  = round_half_even(x * 63.5f + 64.0f)                 (u8, 0..128; scale 2/127, zero point 64)
//   acc  = sum_k x_q[k] * w_q[n][k] - 64 * sum_k w_q[n][k]    (exact int32)
//   y    = (float(acc) + bias_q[n]) * out_scale[n]            (two roundings, no fused multiply-add)
// with bias_q = b * (63.5 / w_scale) and out_scale = 1 / (63.5 / w_scale) as that op forms them.
// Why our own: the op pads every call to 16 rows and pays a fixed cost per call; a beam of 3
// needs 3. This file alone is compiled with -mavx2 -ffp-contract=off and runs only after
// int8_linear.cpp has checked the CPU and that its results equal the op's bit for bit. It uses
// no library templates (the linker could share an AVX2 instantiation with the rest).
#include <immintrin.h>

#include <cstdint>

#include "decoder/kernels/int8_linear_kernel.h"

namespace captioner {

namespace {

inline int32_t sum8(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// RB input rows against NB weight rows at once: RB * NB accumulators of 8 int32 each. u8 x s8
// pairs summed into int16 (vpmaddubsw) cannot saturate: 2 * 128 * 127 < 32767. Writes
// y[r * y_stride + n0 + n] for r < RB, n < NB.
template <int RB, int NB>
void block(const uint8_t* xq, int64_t Kw, const Int8Rows& m, int64_t n0, float* y, int64_t y_stride) {
  const int8_t* w = m.weights + n0 * Kw;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[RB][NB];
  for (int r = 0; r < RB; ++r)
    for (int n = 0; n < NB; ++n) acc[r][n] = _mm256_setzero_si256();
  for (int64_t k = 0; k < Kw; k += 32) {
    __m256i xv[RB];
    for (int r = 0; r < RB; ++r) xv[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + r * Kw + k));
    for (int n = 0; n < NB; ++n) {
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + n * Kw + k));
      for (int r = 0; r < RB; ++r) {
        acc[r][n] = _mm256_add_epi32(acc[r][n], _mm256_madd_epi16(_mm256_maddubs_epi16(xv[r], wv), ones));
      }
    }
  }
  for (int r = 0; r < RB; ++r) {
    for (int n = 0; n < NB; ++n) {
      const int32_t sum = sum8(acc[r][n]) - 64 * m.weight_sums[n0 + n];
      y[r * y_stride + n0 + n] = (static_cast<float>(sum) + m.bias_q[n0 + n]) * m.out_scale[n0 + n];
    }
  }
}

// Rows [0, RB) of xq against every weight row: NB at a time, then one at a time.
template <int RB, int NB>
void rows_block(const uint8_t* xq, const Int8Rows& m, float* y) {
  int64_t n = 0;
  for (; n + NB <= m.out_features; n += NB) block<RB, NB>(xq, m.padded_in, m, n, y, m.out_features);
  for (; n < m.out_features; ++n) block<RB, 1>(xq, m.padded_in, m, n, y, m.out_features);
}

}  // namespace

void int8_linear_rows_avx2(const Int8Rows& m, const float* x, int64_t rows, uint8_t* xq, float* y) {
  const int64_t K = m.in_features, Kw = m.padded_in;
  // Quantize every row once: x * 63.5f, + 64.0f, each rounded to float, then to the nearest
  // integer, ties to even: the op's rounding, named here rather than taken from MXCSR.
  const __m256 scale = _mm256_set1_ps(63.5f), zero_point = _mm256_set1_ps(64.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * K;
    uint8_t* qr = xq + r * Kw;
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
      const __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(xr + k), scale), zero_point);
      const __m256i q = _mm256_cvtps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      alignas(32) int32_t lanes[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), q);
      for (int j = 0; j < 8; ++j) qr[k + j] = static_cast<uint8_t>(lanes[j]);
    }
    for (; k < K; ++k) {
      const __m128 v = _mm_set_ss(xr[k] * 63.5f + 64.0f);
      qr[k] = static_cast<uint8_t>(_mm_cvtss_si32(_mm_round_ss(v, v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
    }
    for (; k < Kw; ++k) qr[k] = 0;  // padding columns: their weights are 0
  }
  // Up to four input rows share each weight load; registers hold RB * NB accumulators (<= 12).
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) rows_block<4, 2>(xq + r * Kw, m, y + r * m.out_features);
  const uint8_t* xr = xq + r * Kw;
  float* yr = y + r * m.out_features;
  switch (rows - r) {
    case 3:
      rows_block<3, 3>(xr, m, yr);
      break;
    case 2:
      rows_block<2, 4>(xr, m, yr);
      break;
    case 1:
      rows_block<1, 8>(xr, m, yr);
      break;
    default:
      break;
  }
}

}  // namespace captioner
