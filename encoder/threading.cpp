#include "encoder/threading.h"

#include <ATen/Parallel.h>

#include <dlfcn.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

namespace captioner {

int usable_cores() {
  int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof allowed, &allowed) == 0 && CPU_COUNT(&allowed) > 0) cores = CPU_COUNT(&allowed);
  // torchrun --nproc_per_node K: K processes share this machine's cores; each taking all of them
  // would run K times as many threads as cores.
  if (const char* local = std::getenv("LOCAL_WORLD_SIZE"); local && *local) {
    char* end = nullptr;
    const long k = std::strtol(local, &end, 10);
    if (*end == '\0' && k > 1) cores = std::max(1, cores / static_cast<int>(std::min<long>(k, cores)));
  }
  return cores;
}

ThreadPlan ThreadPlan::choose(int requested) {
  ThreadPlan p;
  const int cores = usable_cores();
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
