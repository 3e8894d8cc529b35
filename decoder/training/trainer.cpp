#include "decoder/training/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "datasets/file_io.h"
#include "datasets/metrics/caption_metrics.h"
#include "decoder/pipeline/caption_pipeline.h"
#include "decoder/training/distributed.h"
#include "decoder/kernels/fused_adam.h"

namespace captioner {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

Trainer::Trainer(ModelBundle model, TrainingData train, ValidationData val, TrainerOptions options, fs::path output_dir)
    : model_(std::move(model)),
      train_(std::move(train)),
      val_(std::move(val)),
      options_(options),
      run_dir_(std::move(output_dir), options_.group) {
  if (model_.members.size() != 1) throw std::invalid_argument("the trainer trains exactly one decoder");
  decoder_ = model_.members[0].decoder;
  if (train_.captions.empty()) throw std::invalid_argument("no training captions");
  if (train_.captions.size() != train_.caption_image.size()) throw std::invalid_argument("caption/image index mismatch");
  if (val_.features.size(0) != static_cast<int64_t>(val_.references.size())) {
    throw std::invalid_argument("validation features and references differ in count");
  }
  if (options_.batch_size < 1 || options_.epochs < 1) throw std::invalid_argument("batch size and epochs must be >= 1");
  if (options_.ema_decay < 0 || options_.ema_decay >= 1) throw std::invalid_argument("EMA decay must be in [0, 1)");
  // The "mean photo" that mutual-information decoding compares each photo with.
  model_.set_image_prior(train_.features);
  device_ = decoder_->parameters().front().device();
  if (options_.bf16_products && !device_.is_cpu()) throw std::invalid_argument("bf16 products are for CPU training");
  decoder_->set_bf16_products(options_.bf16_products);
  objective_ = make_objective(train_, options_, device_);
  if (options_.group) {
    if (device_ != torch::kCPU) throw std::invalid_argument("data-parallel training runs on CPUs (Gloo)");
    // Every rank starts from rank 0's weights, whatever their own initialisation drew.
    torch::NoGradGuard no_grad;
    auto params = decoder_->parameters();
    options_.group->broadcast(std::vector<torch::Tensor>(params.begin(), params.end()));
  }
  if (options_.ema_decay > 0) {
    torch::NoGradGuard no_grad;
    for (const auto& p : decoder_->parameters()) ema_.push_back(p.detach().clone());
  }
  optimizer_ = std::make_unique<torch::optim::Adam>(
      decoder_->parameters(), torch::optim::AdamOptions(options_.learning_rate).weight_decay(options_.weight_decay));
}

StepResult Trainer::train_step(const std::vector<int64_t>& items, int epoch, int64_t b) {
  // Gradients set to none rather than zeroed: backward then hands each parameter its gradient
  // instead of adding it to a tensor of zeros (two passes over 6 M weights fewer per step).
  for (auto& p : decoder_->parameters()) p.mutable_grad() = torch::Tensor();
  StepResult r = objective_->backward(decoder_, items, epoch, b);
  stop_agreed_ = r.any_rank_stopping;
  // Clipping by the gradients' norm is Adam's grad_scale: the same product, without a pass of its own.
  const float clip = options_.grad_clip > 0 ? gradient_clip_scale(decoder_->parameters(), options_.grad_clip) : 1.0f;
  fused_adam_step(*optimizer_, clip);
  return r;
}

void Trainer::update_ema(int64_t step) {
  // The decay ramps up over the first steps (as TensorFlow's ExponentialMovingAverage does with
  // num_updates), so the average is not dominated by the random initial weights.
  const double d = std::min(options_.ema_decay, (1.0 + static_cast<double>(step)) / (10.0 + static_cast<double>(step)));
  torch::NoGradGuard no_grad;
  auto params = decoder_->parameters();
  for (size_t i = 0; i < params.size(); ++i) ema_[i].mul_(d).add_(params[i].detach(), 1.0 - d);
}

void Trainer::swap_ema() {
  torch::NoGradGuard no_grad;
  auto params = decoder_->parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    auto current = params[i].detach().clone();
    params[i].copy_(ema_[i]);
    ema_[i] = current;
  }
}

std::string Trainer::fingerprint() const {
  // What must not change between a checkpoint and its resumption.
  uint64_t h = model_.vocab.fingerprint();
  h = fnv1a64(decoder_->config().to_json().dump(), h);
  h = fnv1a64(model_.encoder.fingerprint(), h);
  for (size_t i = 0; i < train_.captions.size(); ++i) {
    h = fnv1a64(
        std::string_view(reinterpret_cast<const char*>(train_.captions[i].data()), train_.captions[i].size() * sizeof(int64_t)),
        h);
    h = fnv1a64(std::to_string(train_.caption_image[i]), h);
  }
  // The first four are the defaults of the self-critical objective, removed since (issue 28): kept
  // as constants so that checkpoints written before still resume.
  json o{{"objective", "xe"},
         {"samples", 5},
         {"images", 32},
         {"scst_len", 16},
         {"batch", options_.batch_size},
         {"lr", options_.learning_rate},
         {"decay", options_.lr_decay},
         {"every", options_.lr_decay_every},
         {"wd", options_.weight_decay},
         {"clip", options_.grad_clip},
         {"smooth", options_.label_smoothing},
         {"ema", options_.ema_decay},
         {"flip", options_.flip_augment},
         {"seed", options_.seed},
         {"n_train", train_.features.size(0)},
         {"n_val", val_.features.size(0)}};
  return hex64(fnv1a64(o.dump(), h));
}

bool Trainer::stop_requested() const {
  if (options_.group) return stop_agreed_;  // the same answer on every rank, from the last step
  return options_.stop && options_.stop->load();
}

CaptionScores Trainer::validate() {
  decoder_->eval();
  DecoderScorer scorer(decoder_);
  std::vector<std::string> hyps;
  for (const auto& c : caption_features(scorer, {val_.features}, options_.val_search, options_.val_batch)) {
    hyps.push_back(model_.vocab.decode(c.tokens));
  }
  return score_captions(hyps, val_.references);
}

TrainingState Trainer::begin(const Say& say) {
  TrainingState state;
  if (options_.resume && run_dir_.load_checkpoint(checkpoint_parts(), state, fingerprint())) {
    run_dir_.truncate_log(state.step);
    say("resuming from " + run_dir_.checkpoint_file().string() + " at epoch " + std::to_string(state.epoch + 1) + ", batch " +
        std::to_string(state.next_batch));
  } else {
    if (options_.resume) say("no checkpoint in " + run_dir_.path().string() + ": starting from scratch");
    run_dir_.start_log();
  }
  // A run that ended because it reached its epoch count continues when asked for more epochs
  // (`--resume --epochs 3` after one epoch); one that early stopping ended stays ended.
  if (state.finished && state.bad_epochs < options_.patience && state.epoch < options_.epochs) {
    state.finished = false;
    say("continuing a finished run of " + std::to_string(state.epoch) + " epochs up to " + std::to_string(options_.epochs));
  }
  if (state.finished) {
    say(state.bad_epochs >= options_.patience
            ? "training already finished (stopped early at epoch " + std::to_string(state.epoch) + "); nothing to resume"
            : "training already finished its " + std::to_string(state.epoch) + " epochs; nothing to resume (--epochs " +
                  std::to_string(options_.epochs) + ")");
  }
  return state;
}

void Trainer::save_checkpoint(TrainingState& state, int epoch, int64_t next_batch, double epoch_seconds) {
  state.epoch = epoch;
  state.next_batch = next_batch;
  state.epoch_seconds = epoch_seconds;
  run_dir_.save_checkpoint(checkpoint_parts(), state, fingerprint());
}

bool Trainer::train_epoch(int epoch, double lr, TrainingState& state, const TrainerCallbacks& cb) {
  for (auto& group : optimizer_->param_groups()) static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
  const auto batches = objective_->epoch_batches(epoch);
  const int64_t nb = static_cast<int64_t>(batches.size());
  const auto t0 = std::chrono::steady_clock::now();
  const bool resumed_mid_epoch = epoch == state.epoch && state.next_batch > 0;
  if (!resumed_mid_epoch) state.start_epoch_sums();
  const double seconds_before = state.epoch_seconds;
  int64_t captions_done = 0, steps_done = 0;
  const double comm_before = options_.group ? options_.group->communication_seconds() : 0.0;
  for (int64_t b = resumed_mid_epoch ? state.next_batch : 0; b < nb; ++b) {
    if (stop_requested()) {
      save_checkpoint(state, epoch, b, seconds_before + seconds_since(t0));
      return false;
    }
    const StepResult step = train_step(batches[b], epoch, b);
    ++steps_done;
    if (!std::isfinite(step.loss))
      throw std::runtime_error("training diverged (loss " + std::to_string(step.loss) + "); lower --lr");
    state.step += 1;
    if (!ema_.empty()) update_ema(state.step);
    const auto items = static_cast<int64_t>(batches[b].size());
    state.epoch_loss_sum += step.loss * static_cast<double>(items);
    state.epoch_items += items;
    captions_done += items;
    if (cb.on_batch) cb.on_batch(epoch + 1, b + 1, nb, step.loss, captions_done / std::max(1e-9, seconds_since(t0)));
    if (options_.log_every > 0 && state.step % options_.log_every == 0) {
      run_dir_.log(BatchLogLine{epoch + 1, b + 1, state.step, step.loss, lr});
    }
    if (options_.checkpoint_every > 0 && (b + 1) % options_.checkpoint_every == 0 && b + 1 < nb) {
      save_checkpoint(state, epoch, b + 1, seconds_before + seconds_since(t0));
    }
  }
  state.epoch_seconds = seconds_before + seconds_since(t0);
  if (options_.group) {
    const double comm = options_.group->communication_seconds() - comm_before;
    char line[160];
    std::snprintf(line, sizeof line, "epoch %d: %.1f ms per step in allreduce (%.0f%% of the step), %d processes", epoch + 1,
                  1000 * comm / std::max<int64_t>(1, steps_done), 100 * comm / std::max(1e-9, seconds_since(t0)),
                  options_.group->world_size());
    if (cb.on_message) cb.on_message(line);
  }
  return true;
}

EpochReport Trainer::end_epoch(int epoch, double lr, TrainingState& state) {
  EpochReport r;
  r.epoch = epoch + 1;
  r.epochs = options_.epochs;
  r.phase = options_.phase;
  r.train_loss = state.epoch_loss_sum / static_cast<double>(std::max<int64_t>(1, state.epoch_items));
  r.learning_rate = lr;
  r.seconds = state.epoch_seconds;
  r.captions_per_second = static_cast<double>(objective_->items_per_epoch()) / std::max(1e-9, state.epoch_seconds);
  if (!ema_.empty()) swap_ema();  // validate (and keep) the averaged weights
  if (run_dir_.writes()) {
    const CaptionScores scores = validate();
    r.bleu = scores.bleu;
    r.cider_d = scores.cider_d;
  }
  if (options_.group) {  // the others wait for rank 0's score: early stopping agrees everywhere
    auto shared = torch::tensor(std::vector<double>{r.bleu[0], r.bleu[1], r.bleu[2], r.bleu[3], r.cider_d}, torch::kDouble);
    options_.group->broadcast({shared});
    for (int n = 0; n < 4; ++n) r.bleu[n] = shared[n].item<double>();
    r.cider_d = shared[4].item<double>();
  }
  r.improved = r.bleu[3] > state.best_bleu4;
  if (r.improved) {
    state.best_bleu4 = r.bleu[3];
    state.best_epoch = r.epoch;
    state.bad_epochs = 0;
    model_.training["best_epoch"] = r.epoch;
    model_.training["validation_greedy_bleu"] = r.bleu;
    model_.training["epochs_run"] = r.epoch;
    run_dir_.save_model(model_, options_.fp16_bundle);
  } else {
    state.bad_epochs += 1;
  }
  if (!ema_.empty()) swap_ema();
  r.best_epoch = state.best_epoch;
  r.best_bleu4 = state.best_bleu4;
  r.step = state.step;
  state.history.push_back(r);
  run_dir_.log(r);
  if (r.epoch == options_.epochs || state.bad_epochs >= options_.patience) state.finished = true;
  state.start_epoch_sums();
  save_checkpoint(state, epoch + 1, 0, 0);
  return r;
}

TrainResult Trainer::run(const TrainerCallbacks& cb) {
  const Say say = [&](const std::string& m) {
    if (cb.on_message) cb.on_message(m);
  };
  TrainingState state = begin(say);
  TrainResult result;
  result.history = state.history;
  result.epochs_completed = state.epoch;
  while (!state.finished && state.epoch < options_.epochs) {
    const int epoch = state.epoch;
    const double lr = options_.learning_rate * std::pow(options_.lr_decay, epoch / std::max(1, options_.lr_decay_every));
    if (!train_epoch(epoch, lr, state, cb)) {
      say("interrupted: checkpoint saved to " + run_dir_.checkpoint_file().string() + "; continue with --resume");
      result.interrupted = true;
      return result;
    }
    const EpochReport r = end_epoch(epoch, lr, state);
    result.history.push_back(r);
    result.epochs_completed = r.epoch;
    if (cb.on_epoch) cb.on_epoch(r);
    if (state.bad_epochs >= options_.patience) {
      result.stopped_early = true;
      say("no better validation BLEU-4 for " + std::to_string(options_.patience) + " epochs: stopping early");
    }
  }
  result.best_epoch = state.best_epoch;
  for (const auto& r : result.history) {
    if (r.epoch == result.best_epoch) result.best_bleu = r.bleu;
  }
  return result;
}

}  // namespace captioner
