// The row passes of decoder/kernels/output_cross_entropy.h, in output_cross_entropy_avx2.cpp (AVX2,
// SLEEF's exp, the function LibTorch's log_softmax uses). z is (rows, V) row-major float32.
#pragma once

#include <cstdint>

namespace captioner {

// z[r] += bias (bias may be null); row_max[r] = max_v z[r][v], log_sum[r] = log(sum_v exp(z[r][v] -
// row_max[r])). Returns sum_r (row_max[r] + log_sum[r] - z[r][targets[r]]), summed in double.
double softmax_rows_forward_avx2(float* z, const float* bias, const int64_t* targets, int64_t rows, int64_t vocab, float* row_max,
                                 float* log_sum);

// z[r] := (exp((z[r] - row_max[r]) - log_sum[r]) - onehot(targets[r])) * scale, in place (the
// order LibTorch's log_softmax rounds in); bias_grad (V, zeroed by the caller; may be null) += the
// column sums of the result.
void softmax_rows_backward_avx2(float* z, const float* row_max, const float* log_sum, const int64_t* targets, float scale,
                                int64_t rows, int64_t vocab, float* bias_grad);

}  // namespace captioner
