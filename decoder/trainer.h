// Trains a CaptionDecoder on cached image features with teacher forcing: Adam, gradient clipping,
// step learning-rate decay, greedy validation BLEU every epoch, the best model kept as a bundle,
// early stopping. Checkpoints every few hundred batches and at every epoch end (atomically), so
// Ctrl-C, SIGTERM, kill -9 or a crash lose at most one interval; `resume` continues bit-for-bit.
#pragma once

#include <torch/torch.h>

#include <array>
#include <filesystem>
#include <string>
#include <vector>

#include "datasets/metrics/cider_reward.h"
#include "decoder/model_bundle.h"
#include "decoder/trainer_options.h"

namespace captioner {

struct TrainingData {
  torch::Tensor features;                      // (N, D) image features
  torch::Tensor flipped;                       // (N, D) of the mirrored images, or undefined
  std::vector<std::vector<int64_t>> captions;  // <start> w1 .. wn <end>
  std::vector<int64_t> caption_image;          // row of `features` for each caption
};

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
  std::array<double, 4> validate();

 private:
  struct Batch {
    torch::Tensor features;  // (B, D)
    torch::Tensor tokens;    // (B, T)
  };
  std::vector<std::vector<int64_t>> epoch_batches(int epoch) const;
  Batch make_batch(const std::vector<int64_t>& caption_ids, int epoch, int64_t batch_index) const;
  // One optimisation step; returns (loss, reward). `items` are captions (xe) or images (scst).
  std::pair<double, double> train_step(const std::vector<int64_t>& items, int epoch, int64_t batch_index);
  // Data-parallel part of an xe step: this rank's share of the backward pass, then gradients
  // summed over the ranks. Returns the global batch's mean loss.
  double data_parallel_backward(const Batch& batch);
  std::pair<double, double> scst_step(const std::vector<int64_t>& images, int epoch, int64_t batch_index);
  torch::Tensor image_features(const std::vector<int64_t>& images, int epoch, int64_t batch_index) const;
  std::string fingerprint() const;
  void save_checkpoint(int epoch, int64_t next_batch, const nlohmann::json& state);
  bool load_checkpoint(nlohmann::json& state);
  void truncate_metrics(int64_t step);
  void update_ema(int64_t step);
  // Swaps the averaged weights into the decoder (for validation and saving) and back.
  void swap_ema();
  void append_metrics(const nlohmann::json& line);
  bool is_main() const;         // the rank that validates and writes (the only one alone)
  bool stop_requested() const;  // by a signal here, or (data-parallel) on any rank

  ModelBundle model_;
  CaptionDecoder decoder_{nullptr};
  TrainingData train_;
  ValidationData val_;
  TrainerOptions options_;
  std::filesystem::path out_;
  std::unique_ptr<torch::optim::Adam> optimizer_;
  torch::Device device_ = torch::kCPU;
  std::unique_ptr<metrics::CiderReward> reward_;  // scst only
  std::vector<torch::Tensor> ema_;                // averaged parameters, in parameters() order
  bool stop_agreed_ = false;                      // data-parallel: a rank asked to stop
};

}  // namespace captioner
