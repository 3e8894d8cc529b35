// Trains a CaptionDecoder on cached image features with teacher forcing: Adam, gradient clipping,
// step learning-rate decay, greedy validation BLEU every epoch, the best model kept as a bundle,
// early stopping. Checkpoints every few hundred batches and at every epoch end (atomically), so
// Ctrl-C, SIGTERM, kill -9 or a crash lose at most one interval; `resume` continues bit-for-bit.
#pragma once

#include <torch/torch.h>

#include <array>
#include <atomic>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "datasets/metrics/cider_reward.h"
#include "datasets/training_log.h"
#include "decoder/model_bundle.h"

namespace captioner {

class DistributedGroup;

struct TrainingData {
  torch::Tensor features;                        // (N, D) image features
  torch::Tensor flipped;                         // (N, D) of the mirrored images, or undefined
  std::vector<std::vector<int64_t>> captions;    // <start> w1 .. wn <end>
  std::vector<int64_t> caption_image;            // row of `features` for each caption
};

struct ValidationData {
  torch::Tensor features;                        // (M, D)
  std::vector<std::vector<std::string>> references;  // raw reference captions per image
};

struct TrainerOptions {
  int epochs = 30;
  int batch_size = 64;
  double learning_rate = 5e-4;
  double lr_decay = 0.8;          // learning rate multiplied by this every lr_decay_every epochs
  int lr_decay_every = 2;
  double weight_decay = 0.0;
  double grad_clip = 5.0;         // max global L2 norm of the gradients
  double label_smoothing = 0.0;
  // Validate and save an exponential moving average of the weights (Polyak averaging) instead of
  // the last step's: 0 is off. Epoch-to-epoch validation noise on small sets like Flickr8k is
  // larger than most tuning gains; the average removes much of it and scores higher.
  double ema_decay = 0.0;
  int patience = 5;               // epochs without a better validation BLEU-4 before stopping
  bool flip_augment = false;      // train on the mirrored photo's features half of the time
  uint64_t seed = 1;
  int checkpoint_every = 500;     // batches (and at every epoch end)
  int log_every = 50;             // batches between loss lines in metrics.jsonl
  int val_batch = 500;
  SearchOptions val_search = [] {  // greedy unless changed
    SearchOptions s;
    s.beam_size = 1;
    return s;
  }();
  bool resume = false;
  bool fp16_bundle = false;
  // "xe": cross-entropy with teacher forcing. "scst": self-critical sequence training (Rennie et
  // al. 2017) with CIDEr-D on the training captions as the reward and the mean reward of the
  // image's other samples as the baseline (Luo 2020); start it from an xe-trained model.
  std::string objective = "xe";
  int scst_samples = 5;           // captions sampled per image
  int scst_images = 32;           // images per batch
  int scst_max_length = 16;
  const std::atomic<bool>* stop = nullptr;  // set by a signal handler: checkpoint and return
  // Data-parallel training (xe only): every rank holds the same data and options; each global
  // batch of batch_size captions is split across the ranks, gradients are summed, and every rank
  // takes the same step. Rank 0 alone validates and writes; a stop on any rank stops all. null:
  // one process.
  DistributedGroup* group = nullptr;
};

struct TrainerCallbacks {
  std::function<void(int epoch, int64_t batch, int64_t batches, double loss, double captions_per_second)> on_batch;
  std::function<void(const EpochReport&)> on_epoch;
  std::function<void(const std::string&)> on_message;
};

struct TrainResult {
  int epochs_completed = 0;
  int best_epoch = 0;
  std::array<double, 4> best_bleu{};
  bool stopped_early = false;
  bool interrupted = false;       // stop flag seen: a checkpoint was written, resume to continue
  std::vector<EpochReport> history;
};

class Trainer {
 public:
  // `model` supplies the vocabulary, encoder, decoding defaults and one decoder (its weights are
  // the starting point). Output: <output_dir>/{config.json, vocab.json, decoder.pt} (best so
  // far), checkpoint.pt (latest state) and metrics.jsonl (one JSON object per line).
  Trainer(ModelBundle model, TrainingData train, ValidationData val, TrainerOptions options,
          std::filesystem::path output_dir);

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
  bool is_main() const;        // the rank that validates and writes (the only one alone)
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
  std::vector<torch::Tensor> ema_;                 // averaged parameters, in parameters() order
  bool stop_agreed_ = false;                       // data-parallel: a rank asked to stop
};

}  // namespace captioner
