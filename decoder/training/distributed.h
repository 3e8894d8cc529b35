// Several captioner processes working as one, on PyTorch's own c10d engine and its Gloo backend
// (CPU, TCP): the same rendezvous torchrun sets up for torch.distributed, so
// `torchrun --no_python ... captioner train ...` runs as a PyTorch user expects.
//
// Who is who comes from the environment torchrun sets (RANK, WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT, TORCHELASTIC_USE_AGENT_STORE, TORCHELASTIC_RESTART_COUNT) or from flags. With a
// world of one there is no group at all and nothing changes: callers hold a null pointer.
//
// Every collective is synchronous and bounded by the timeout: a rank that died or never came
// turns into a one-line error on the others, never a hang.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace at {
class Tensor;
}

namespace captioner {

struct DistributedOptions {
  int rank = -1;                      // -1: $RANK, else 0
  int world_size = -1;                // -1: $WORLD_SIZE, else 1
  std::string master_addr;            // empty: $MASTER_ADDR, else 127.0.0.1
  int master_port = 0;                // 0: $MASTER_PORT, else 29500
  std::chrono::seconds timeout{300};  // waiting for a peer at start or in any collective
};

// The rank and world size the options and environment describe (throws on nonsense such as
// RANK=3 with WORLD_SIZE=2).
struct WorldPlace {
  int rank = 0;
  int world_size = 1;
};
WorldPlace resolve_world(const DistributedOptions& options);

// How many times torchrun (--max-restarts) has restarted this group: $TORCHELASTIC_RESTART_COUNT,
// 0 on the first attempt or outside torchrun.
int torchrun_restart_count();

class DistributedGroup {
 public:
  // Joins the group (blocks until all world_size ranks arrived or the timeout). nullptr when the
  // world is a single process.
  static std::unique_ptr<DistributedGroup> connect(const DistributedOptions& options);
  ~DistributedGroup();

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  bool is_main() const { return rank_ == 0; }

  // In place: every tensor becomes the sum over ranks. Float tensors travel in flat buckets of
  // about `bucket_bytes` (as DistributedDataParallel does), so many small gradients cost a few
  // round trips, not one each.
  void allreduce_sum(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes = 25 << 20);
  // In place: every rank ends with root's values (same shapes and types everywhere).
  void broadcast(const std::vector<at::Tensor>& tensors, int root = 0);
  // root's bytes on every rank (the others' argument is ignored).
  std::string broadcast_bytes(const std::string& bytes, int root = 0);

  // A setting that shapes the result ("--lr", "0.001"); every rank lists the same names in the
  // same order, each with its own value.
  using Setting = std::pair<std::string, std::string>;
  // Throws the same one-line error on every rank when any rank's settings differ from rank 0's,
  // naming the first setting that differs and both values; returns on every rank otherwise.
  // Call it before any collective whose sizes depend on those settings.
  void check_same_settings(const std::vector<Setting>& settings);

  // Seconds this process spent in collectives so far (waiting for the others included).
  double communication_seconds() const;

 private:
  struct Impl;
  DistributedGroup(std::unique_ptr<Impl> impl, int rank, int world_size);
  std::unique_ptr<Impl> impl_;
  int rank_ = 0;
  int world_size_ = 1;
};

}  // namespace captioner
