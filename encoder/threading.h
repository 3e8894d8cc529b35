// How many LibTorch threads each phase gets. Measured on 2 cores: the encoder's oneDNN
// convolutions ran 1.6x faster with 2 intra-op threads than with 1, while the decoder's GEMM-heavy
// training ran 2.8x faster with 1 (OpenBLAS still splits each GEMM over its own threads; OpenMP
// threads spinning beside them steal its cores). See bench/RESULTS.md.
#pragma once

namespace captioner {

// The cores this process may use: those its CPU affinity allows (taskset, a container's cpuset),
// shared evenly among the processes torchrun started on this machine ($LOCAL_WORLD_SIZE); at least 1.
int usable_cores();

struct ThreadPlan {
  int encoder = 1;          // LibTorch (oneDNN) threads of each encoder worker
  int encoder_workers = 1;  // encoder threads running side by side, each on its own batches
  int encoder_alone = 1;    // LibTorch threads of the encoder when it runs alone (feature extraction)
  int decoder = 1;          // LibTorch threads of the decoder
  int decoder_blas = 1;     // OpenBLAS threads of the decoder's matrix products
  bool overlap = true;      // encoder workers and the decoder run concurrently
  // requested 0: one single-threaded encoder worker per usable core beside a single-threaded decoder,
  // all concurrent (measured: a photo costs fewer core-milliseconds on one thread than split
  // across two, and the decoder's skinny GEMMs do not scale); N > 0: N threads each, taking turns.
  static ThreadPlan choose(int requested);
};

// Sets OpenBLAS's own thread count for a scope (LibTorch's CPU matrix products go to OpenBLAS,
// which keeps a pool of its own, one thread per core by default). When the decoder shares the
// cores with a concurrently running encoder, its GEMMs must stay on one core, or OpenBLAS's
// threads spin against the encoder's. A no-op when the BLAS is not OpenBLAS.
class ScopedBlasThreads {
 public:
  explicit ScopedBlasThreads(int threads);
  ~ScopedBlasThreads();
  ScopedBlasThreads(const ScopedBlasThreads&) = delete;
  ScopedBlasThreads& operator=(const ScopedBlasThreads&) = delete;
  static int current();  // 0 when the BLAS is not OpenBLAS

 private:
  int previous_;
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
