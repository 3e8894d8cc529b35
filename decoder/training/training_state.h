// Where a training run stands, as kept in its checkpoint: the position (epoch, batch, step), the
// best validation score so far and the running sums of the epoch in progress. No tensors.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "datasets/training_log.h"

namespace captioner {

struct TrainingState {
  int epoch = 0;           // epochs completed before the next batch
  int64_t next_batch = 0;  // batch of `epoch` to run next (0 at an epoch's start)
  int64_t step = 0;        // batches run since the start of training
  double best_bleu4 = -1;
  int best_epoch = 0;
  int bad_epochs = 0;  // epochs since the best one (early stopping)
  bool finished = false;
  // The epoch in progress: sums over its batches so far, weighted by each batch's items.
  double epoch_loss_sum = 0;
  int64_t epoch_items = 0;
  double epoch_seconds = 0;
  std::vector<EpochReport> history;

  void start_epoch_sums() { epoch_loss_sum = 0, epoch_items = 0, epoch_seconds = 0; }
};

// The checkpoint's "state" entry. `fingerprint` says what the state belongs to (data, vocabulary,
// options); reading names `origin` in errors.
std::string training_state_to_json(const TrainingState& state, const std::string& fingerprint);
TrainingState training_state_from_json(const std::string& text, const std::string& origin, std::string* fingerprint);

}  // namespace captioner
