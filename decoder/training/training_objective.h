// What one optimisation step minimises, and over which items an epoch runs: cross-entropy with
// teacher forcing over captions of similar length. The Trainer owns the loop, the optimiser and
// the run directory; an objective leaves gradients in the decoder's parameters.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "decoder/network/caption_decoder.h"
#include "decoder/training/trainer_options.h"

namespace captioner {

struct TrainingData {
  torch::Tensor features;                      // (N, D) image features
  torch::Tensor flipped;                       // (N, D) of the mirrored images, or undefined
  std::vector<std::vector<int64_t>> captions;  // <start> w1 .. wn <end>
  std::vector<int64_t> caption_image;          // row of `features` for each caption
};

struct StepResult {
  double loss = 0;                 // the batch's mean loss (over every rank's share, data-parallel)
  bool any_rank_stopping = false;  // data-parallel: some rank was asked to stop
};

class TrainingObjective {
 public:
  virtual ~TrainingObjective() = default;
  // The epoch's batches of items (caption or image indices): a fixed function of (seed, epoch),
  // so a resumed run rebuilds exactly the same batches.
  virtual std::vector<std::vector<int64_t>> epoch_batches(int epoch) const = 0;
  // Forward and backward for one batch (the gradients start at zero).
  virtual StepResult backward(CaptionDecoder& decoder, const std::vector<int64_t>& items, int epoch, int64_t batch_index) = 0;
  virtual int64_t items_per_epoch() const = 0;
};

// Checks the options against the data (throws std::invalid_argument) and builds the objective.
std::unique_ptr<TrainingObjective> make_objective(const TrainingData& data, const TrainerOptions& options, torch::Device device);

}  // namespace captioner
