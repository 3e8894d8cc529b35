#include "encoder/threading.h"

#include <ATen/Parallel.h>

#include <dlfcn.h>

#include <algorithm>
#include <thread>

namespace captioner {

ThreadPlan ThreadPlan::choose(int requested) {
  ThreadPlan p;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (requested > 0) {
    p.encoder = p.encoder_alone = p.decoder = p.decoder_blas = requested;
    p.encoder_workers = 1;
    p.overlap = false;
  } else {
    p.encoder = 1;
    p.encoder_workers = cores;
    p.encoder_alone = cores;
    p.decoder = p.decoder_blas = 1;
    p.overlap = true;
  }
  return p;
}

namespace {
// Looked up at run time: LibTorch links whichever BLAS the system provides.
using SetThreads = void (*)(int);
using GetThreads = int (*)();
SetThreads openblas_set() {
  static const auto f = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  return f;
}
GetThreads openblas_get() {
  static const auto f = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  return f;
}
}  // namespace

int ScopedBlasThreads::current() { return openblas_get() ? openblas_get()() : 0; }

ScopedBlasThreads::ScopedBlasThreads(int threads) : previous_(current()) {
  if (openblas_set() && threads > 0 && threads != previous_) openblas_set()(threads);
}

ScopedBlasThreads::~ScopedBlasThreads() {
  if (openblas_set() && previous_ > 0 && current() != previous_) openblas_set()(previous_);
}

ScopedTorchThreads::ScopedTorchThreads(int threads) : previous_(at::get_num_threads()) {
  if (threads > 0 && threads != previous_) at::set_num_threads(threads);
}

ScopedTorchThreads::~ScopedTorchThreads() {
  if (at::get_num_threads() != previous_) at::set_num_threads(previous_);
}

}  // namespace captioner
