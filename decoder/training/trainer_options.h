// What a training run is asked to do (TrainerOptions), what it reports as it goes
// (TrainerCallbacks) and what it returns (TrainResult): no tensors, so the CLI can fill them in
// without compiling LibTorch's headers.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "datasets/training_log.h"
#include "decoder/search/search_options.h"

namespace captioner {

class DistributedGroup;

struct TrainerOptions {
  int epochs = 30;
  int batch_size = 64;
  double learning_rate = 5e-4;
  double lr_decay = 0.8;  // learning rate multiplied by this every lr_decay_every epochs
  int lr_decay_every = 2;
  double weight_decay = 0.0;
  double grad_clip = 5.0;  // max global L2 norm of the gradients
  double label_smoothing = 0.0;
  // Validate and save an exponential moving average of the weights (Polyak averaging) instead of
  // the last step's: 0 is off. Epoch-to-epoch validation noise on small sets like Flickr8k is
  // larger than most tuning gains; the average removes much of it and scores higher.
  double ema_decay = 0.0;
  int patience = 5;           // epochs without a better validation BLEU-4 before stopping
  bool flip_augment = false;  // train on the mirrored photo's features half of the time
  uint64_t seed = 1;
  int checkpoint_every = 500;  // batches (and at every epoch end)
  int log_every = 50;          // batches between loss lines in metrics.jsonl
  int val_batch = 500;
  SearchOptions val_search = [] {  // greedy unless changed
    SearchOptions s;
    s.beam_size = 1;
    return s;
  }();
  bool resume = false;
  std::string phase;  // reported with each epoch ("text" for the text phase)
  bool fp16_bundle = false;
  bool bf16_products = false;               // the decoder's training products in bf16 (decoder/kernels/bf16_matmul.h); CPU
  const std::atomic<bool>* stop = nullptr;  // set by a signal handler: checkpoint and return
  // Data-parallel training: every rank holds the same data and options; each global
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
  bool interrupted = false;  // stop flag seen: a checkpoint was written, resume to continue
  std::vector<EpochReport> history;
};

// The options that shape the model, under the names a bundle's config.json records them
// ("training"."options"); the CLI's flags, the stop flag and the group are left out.
nlohmann::json to_json(const TrainerOptions& options);

}  // namespace captioner
