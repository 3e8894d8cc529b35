#include "encoder/threading.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <thread>

namespace captioner {

ThreadPlan ThreadPlan::choose(int requested) {
  ThreadPlan p;
  if (requested > 0) {
    p.encoder = p.decoder = requested;
  } else {
    p.encoder = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    p.decoder = 1;
  }
  return p;
}

ScopedTorchThreads::ScopedTorchThreads(int threads) : previous_(at::get_num_threads()) {
  if (threads > 0 && threads != previous_) at::set_num_threads(threads);
}

ScopedTorchThreads::~ScopedTorchThreads() {
  if (at::get_num_threads() != previous_) at::set_num_threads(previous_);
}

}  // namespace captioner
