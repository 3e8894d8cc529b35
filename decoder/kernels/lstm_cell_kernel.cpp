#include "decoder/kernels/lstm_cell_kernel.h"

#include <stdexcept>

namespace captioner {

// In lstm_cell_kernel_avx2.cpp, compiled for AVX2.
void lstm_cell_step_avx2(const LstmCellInputs& in, const float* c, float* c_out, float* h, int64_t rows, int64_t hidden);

bool lstm_cell_kernel_available() { return __builtin_cpu_supports("avx2"); }

void lstm_cell_step(const LstmCellInputs& in, const float* c, float* c_out, float* h, int64_t rows, int64_t hidden) {
  if (hidden % 8 != 0) throw std::invalid_argument("lstm_cell_step needs a hidden size that is a multiple of 8");
  if (!in.gates && !in.word_gates) throw std::invalid_argument("lstm_cell_step needs gates or word gates");
  lstm_cell_step_avx2(in, c, c_out, h, rows, hidden);
}

}  // namespace captioner
