// The training loop: a CaptionDecoder on cached image features under a TrainingObjective, Adam,
// gradient clipping, step learning-rate decay, greedy validation BLEU every epoch, the best model
// kept in the RunDirectory, early stopping. Checkpoints every few hundred batches and at every epoch end (atomically), so
// Ctrl-C, SIGTERM, kill -9 or a crash lose at most one interval; `resume` continues bit-for-bit.
#pragma once

#include <torch/torch.h>

#include <array>
#include <filesystem>
#include <string>
#include <vector>

#include "datasets/metrics/caption_metrics.h"
#include "decoder/bundle/model_bundle.h"
#include "decoder/training/run_directory.h"
#include "decoder/training/trainer_options.h"
#include "decoder/training/training_objective.h"

namespace captioner {

struct ValidationData {
  torch::Tensor features;                            // (M, D)
  std::vector<std::vector<std::string>> references;  // raw reference captions per image
};

class Trainer {
 public:
  // `model` supplies the vocabulary, encoder, decoding defaults and one decoder (its weights are
  // the starting point). Output: <output_dir>/{config.json, vocab.json, decoder.pt} (best so
  // far), checkpoint.pt (latest state) and metrics.jsonl (one JSON object per line).
  Trainer(ModelBundle model, TrainingData train, ValidationData val, TrainerOptions options, std::filesystem::path output_dir);

  TrainResult run(const TrainerCallbacks& callbacks = {});

  // Validation BLEU-1..4 of the current decoder (greedy unless options.val_search says otherwise).
  CaptionScores validate();  // greedy captions of the validation photos: BLEU-1..4 and CIDEr-D

 private:
  // One optimisation step on a batch of the objective's items; returns the loss.
  StepResult train_step(const std::vector<int64_t>& items, int epoch, int64_t batch_index);
  std::string fingerprint() const;
  CheckpointParts checkpoint_parts() { return {*decoder_, ema_, *optimizer_}; }
  void update_ema(int64_t step);
  // Swaps the averaged weights into the decoder (for validation and saving) and back.
  void swap_ema();
  bool stop_requested() const;  // by a signal here, or (data-parallel) on any rank

  // The steps of run(), in order. begin: the checkpoint's state when resuming, else a fresh one.
  // train_epoch: one pass over the epoch's batches from state.next_batch; false when asked to
  // stop (checkpoint written). end_epoch: validate, keep the model if it is the best so far,
  // log, checkpoint the epoch's end.
  using Say = std::function<void(const std::string&)>;
  TrainingState begin(const Say& say);
  bool train_epoch(int epoch, double learning_rate, TrainingState& state, const TrainerCallbacks& callbacks);
  EpochReport end_epoch(int epoch, double learning_rate, TrainingState& state);
  void save_checkpoint(TrainingState& state, int epoch, int64_t next_batch, double epoch_seconds);

  ModelBundle model_;
  CaptionDecoder decoder_{nullptr};
  TrainingData train_;
  ValidationData val_;
  TrainerOptions options_;
  RunDirectory run_dir_;
  std::unique_ptr<TrainingObjective> objective_;
  std::unique_ptr<torch::optim::Adam> optimizer_;
  torch::Device device_ = torch::kCPU;
  std::vector<torch::Tensor> ema_;  // averaged parameters, in parameters() order
  bool stop_agreed_ = false;        // data-parallel: a rank asked to stop
};

}  // namespace captioner
