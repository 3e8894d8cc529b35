// A training run's folder: checkpoint.pt (weights, averaged weights, optimiser, RNG and the
// TrainingState), metrics.jsonl (the TrainingLog) and the best model's bundle. Data-parallel: only
// rank 0 writes, and the checkpoint it reads is sent to every rank.
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <string>
#include <vector>

#include "decoder/bundle/model_bundle.h"
#include "decoder/training/training_state.h"

namespace captioner {

class DistributedGroup;

// What a checkpoint holds besides the state: the parts are read and written in place.
struct CheckpointParts {
  torch::nn::Module& decoder;
  std::vector<torch::Tensor>& averaged;  // EMA weights in parameters() order; may be empty
  torch::optim::Optimizer& optimizer;
};

class RunDirectory {
 public:
  RunDirectory(std::filesystem::path dir, DistributedGroup* group);

  const std::filesystem::path& path() const { return dir_; }
  std::filesystem::path checkpoint_file() const { return dir_ / "checkpoint.pt"; }
  bool writes() const { return writes_; }  // this rank writes the folder

  // Atomic: a crash leaves the previous checkpoint. `fingerprint` says what it belongs to.
  void save_checkpoint(const CheckpointParts& parts, const TrainingState& state, const std::string& fingerprint);
  // false when there is no checkpoint; throws when it belongs to another fingerprint.
  bool load_checkpoint(const CheckpointParts& parts, TrainingState& state, const std::string& fingerprint);

  void start_log();                                      // a fresh run: no metrics.jsonl
  void log(const BatchLogLine& line);                    // appended; a write error fails the run
  void log(const EpochReport& report);                   //
  void truncate_log(int64_t step);                       // resuming: drop lines after the checkpoint
  void save_model(const ModelBundle& model, bool fp16);  // the best so far, atomically

 private:
  std::filesystem::path log_file() const { return dir_ / "metrics.jsonl"; }

  std::filesystem::path dir_;
  DistributedGroup* group_;
  bool writes_;
};

}  // namespace captioner
