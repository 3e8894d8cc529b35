// How many LibTorch threads each phase gets. Measured on 2 cores: the encoder's oneDNN
// convolutions ran 1.6x faster with 2 intra-op threads than with 1, while the decoder's GEMM-heavy
// training ran 2.8x faster with 1 (OpenBLAS still splits each GEMM over its own threads; OpenMP
// threads spinning beside them steal its cores). See bench/RESULTS.md.
#pragma once

namespace captioner {

struct ThreadPlan {
  int encoder = 1;
  int decoder = 1;
  // requested 0: all cores for the encoder, one for the decoder; N > 0: N for both.
  static ThreadPlan choose(int requested);
};

// Sets LibTorch's intra-op threads for a scope and restores the previous count after it.
class ScopedTorchThreads {
 public:
  explicit ScopedTorchThreads(int threads);
  ~ScopedTorchThreads();
  ScopedTorchThreads(const ScopedTorchThreads&) = delete;
  ScopedTorchThreads& operator=(const ScopedTorchThreads&) = delete;

 private:
  int previous_;
};

}  // namespace captioner
