#include "decoder/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <stdexcept>

#include "datasets/file_io.h"
#include "datasets/json_util.h"
#include "datasets/metrics/caption_metrics.h"
#include "decoder/distributed.h"

namespace captioner {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {
constexpr int kBucketBatches = 50;  // batches whose captions are sorted by length together

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

Trainer::Trainer(ModelBundle model, TrainingData train, ValidationData val, TrainerOptions options, fs::path output_dir)
    : model_(std::move(model)), train_(std::move(train)), val_(std::move(val)), options_(options), out_(std::move(output_dir)) {
  if (model_.members.size() != 1) throw std::invalid_argument("the trainer trains exactly one decoder");
  decoder_ = model_.members[0].decoder;
  if (train_.captions.empty()) throw std::invalid_argument("no training captions");
  if (train_.captions.size() != train_.caption_image.size()) throw std::invalid_argument("caption/image index mismatch");
  if (val_.features.size(0) != static_cast<int64_t>(val_.references.size())) {
    throw std::invalid_argument("validation features and references differ in count");
  }
  if (options_.batch_size < 1 || options_.epochs < 1) throw std::invalid_argument("batch size and epochs must be >= 1");
  if (options_.flip_augment && !train_.flipped.defined())
    throw std::invalid_argument("flip augmentation needs mirrored features");
  if (is_main()) fs::create_directories(out_);
  device_ = decoder_->parameters().front().device();
  if (options_.objective != "xe" && options_.objective != "scst") {
    throw std::invalid_argument("objective must be xe or scst, not " + options_.objective);
  }
  if (options_.objective == "scst") {
    if (options_.scst_samples < 2) throw std::invalid_argument("scst needs at least 2 samples per image");
    // The reward's references: every training caption of the image, as word ids.
    std::vector<std::vector<std::vector<int64_t>>> refs(static_cast<size_t>(train_.features.size(0)));
    for (size_t i = 0; i < train_.captions.size(); ++i) {
      const auto& c = train_.captions[i];
      refs.at(static_cast<size_t>(train_.caption_image[i])).emplace_back(c.begin() + 1, c.end() - 1);
    }
    reward_ = std::make_unique<metrics::CiderReward>(refs);
  }
  if (options_.ema_decay < 0 || options_.ema_decay >= 1) throw std::invalid_argument("EMA decay must be in [0, 1)");
  if (options_.group) {
    if (options_.objective != "xe") throw std::invalid_argument("data-parallel training supports the xe objective only");
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

std::vector<std::vector<int64_t>> Trainer::epoch_batches(int epoch) const {
  // A fixed function of (seed, epoch): resuming rebuilds exactly the same batches.
  std::mt19937_64 rng(options_.seed * 1000003ULL + static_cast<uint64_t>(epoch));
  if (options_.objective == "scst") {  // batches of images
    std::vector<int64_t> images(static_cast<size_t>(train_.features.size(0)));
    for (size_t i = 0; i < images.size(); ++i) images[i] = static_cast<int64_t>(i);
    std::shuffle(images.begin(), images.end(), rng);
    std::vector<std::vector<int64_t>> batches;
    for (size_t start = 0; start < images.size(); start += options_.scst_images) {
      batches.emplace_back(images.begin() + static_cast<std::ptrdiff_t>(start),
                           images.begin() + static_cast<std::ptrdiff_t>(std::min(images.size(), start + options_.scst_images)));
    }
    return batches;
  }
  std::vector<int64_t> order(train_.captions.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  std::shuffle(order.begin(), order.end(), rng);
  // Sort captions of similar length into the same batch (within buckets, so batches stay random).
  const size_t bucket = static_cast<size_t>(options_.batch_size) * kBucketBatches;
  for (size_t start = 0; start < order.size(); start += bucket) {
    auto end = order.begin() + static_cast<std::ptrdiff_t>(std::min(order.size(), start + bucket));
    std::stable_sort(order.begin() + static_cast<std::ptrdiff_t>(start), end,
                     [&](int64_t a, int64_t b) { return train_.captions[a].size() < train_.captions[b].size(); });
  }
  std::vector<std::vector<int64_t>> batches;
  for (size_t start = 0; start < order.size(); start += options_.batch_size) {
    batches.emplace_back(order.begin() + static_cast<std::ptrdiff_t>(start),
                         order.begin() + static_cast<std::ptrdiff_t>(std::min(order.size(), start + options_.batch_size)));
  }
  std::shuffle(batches.begin(), batches.end(), rng);
  return batches;
}

torch::Tensor Trainer::image_features(const std::vector<int64_t>& images, int epoch, int64_t batch_index) const {
  auto index = torch::tensor(images);
  auto feats = train_.features.index_select(0, index);
  if (options_.flip_augment) {
    std::mt19937_64 rng(options_.seed ^ (static_cast<uint64_t>(epoch) << 40) ^ static_cast<uint64_t>(batch_index));
    std::vector<int64_t> flip(images.size());
    for (auto& f : flip) f = static_cast<int64_t>(rng() & 1);
    auto mask = torch::tensor(flip).to(torch::kBool).unsqueeze(1);
    feats = torch::where(mask, train_.flipped.index_select(0, index), feats);
  }
  return feats.to(device_);
}

Trainer::Batch Trainer::make_batch(const std::vector<int64_t>& ids, int epoch, int64_t batch_index) const {
  size_t T = 0;
  for (int64_t id : ids) T = std::max(T, train_.captions[id].size());
  const int64_t B = static_cast<int64_t>(ids.size());
  auto tokens = torch::zeros({B, static_cast<int64_t>(T)}, torch::kLong);  // <pad> = 0
  auto ta = tokens.accessor<int64_t, 2>();
  std::vector<int64_t> images(B);
  for (int64_t b = 0; b < B; ++b) {
    const auto& c = train_.captions[ids[b]];
    for (size_t t = 0; t < c.size(); ++t) ta[b][t] = c[t];
    images[b] = train_.caption_image[ids[b]];
  }
  return Batch{image_features(images, epoch, batch_index), tokens.to(device_)};
}

std::pair<double, double> Trainer::train_step(const std::vector<int64_t>& items, int epoch, int64_t b) {
  if (options_.objective == "scst") return scst_step(items, epoch, b);
  decoder_->train();
  Batch batch = make_batch(items, epoch, b);
  optimizer_->zero_grad();
  double loss_value = 0;
  if (!options_.group) {
    auto loss = decoder_->loss(batch.features, batch.tokens, options_.label_smoothing);
    loss.backward();
    loss_value = loss.item<double>();
  } else {
    loss_value = data_parallel_backward(batch);
  }
  if (options_.grad_clip > 0) torch::nn::utils::clip_grad_norm_(decoder_->parameters(), options_.grad_clip);
  optimizer_->step();
  return {loss_value, 0.0};
}

double Trainer::data_parallel_backward(const Batch& batch) {
  // This rank's rows of the global batch. Its loss is its tokens' share of the global mean, so
  // the summed gradients are exactly those of the global batch's mean loss.
  auto& group = *options_.group;
  const int64_t B = batch.tokens.size(0), W = group.world_size(), r = group.rank();
  const int64_t lo = B * r / W, hi = B * (r + 1) / W;
  const auto target_tokens = [](const torch::Tensor& t) {
    return (t.narrow(1, 1, t.size(1) - 1) != Vocabulary::kPad).sum().item<double>();
  };
  const double global_tokens = std::max(1.0, target_tokens(batch.tokens));
  double loss_sum = 0;
  if (hi > lo) {
    auto tokens = batch.tokens.narrow(0, lo, hi - lo);
    decoder_->set_batch_slice(lo, B);
    auto loss = decoder_->loss(batch.features.narrow(0, lo, hi - lo), tokens, options_.label_smoothing);
    decoder_->set_batch_slice(0, 0);
    const double local_tokens = target_tokens(tokens);
    (loss * (local_tokens / global_tokens)).backward();
    loss_sum = loss.item<double>() * local_tokens;
  }
  std::vector<torch::Tensor> grads;
  for (auto& p : decoder_->parameters()) {
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    grads.push_back(p.grad());
  }
  // Two more numbers ride along: the loss and whether any rank was asked to stop.
  auto extra = torch::tensor({loss_sum, options_.stop && options_.stop->load() ? 1.0 : 0.0}, torch::kDouble);
  grads.push_back(extra);
  group.allreduce_sum(grads);
  stop_agreed_ = extra[1].item<double>() > 0;
  return extra[0].item<double>() / global_tokens;  // the global batch's mean loss
}

std::pair<double, double> Trainer::scst_step(const std::vector<int64_t>& images, int epoch, int64_t b) {
  const int64_t n = options_.scst_samples;
  const int64_t B = static_cast<int64_t>(images.size());
  // Dropout off: the captions are sampled from, and credited to, the same policy.
  decoder_->eval();
  auto feats = image_features(images, epoch, b).repeat_interleave(n, 0);  // (B*n, D)
  SearchOptions so;
  so.sample = true;
  so.max_length = options_.scst_max_length;
  so.seed = options_.seed * 7919ULL + (static_cast<uint64_t>(epoch) << 32) + static_cast<uint64_t>(b);
  std::vector<Caption> samples;
  {
    DecoderScorer scorer(decoder_);
    samples = sample_captions(scorer, {feats}, so);
  }
  // Rewards, and each sample's baseline: the mean reward of the image's other samples.
  std::vector<double> reward(samples.size()), advantage(samples.size());
  double mean_reward = 0;
  for (int64_t i = 0; i < B * n; ++i) {
    reward[i] = reward_->score(samples[i].tokens, static_cast<size_t>(images[i / n]));
    mean_reward += reward[i];
  }
  for (int64_t img = 0; img < B; ++img) {
    double sum = 0;
    for (int64_t k = 0; k < n; ++k) sum += reward[img * n + k];
    for (int64_t k = 0; k < n; ++k) advantage[img * n + k] = reward[img * n + k] - (sum - reward[img * n + k]) / (n - 1);
  }
  // log p(sample) with gradients: teacher forcing over <start> sample <end>.
  size_t T = 0;
  for (const auto& c : samples) T = std::max(T, c.tokens.size() + 2);
  auto tokens = torch::zeros({B * n, static_cast<int64_t>(T)}, torch::kLong);
  auto ta = tokens.accessor<int64_t, 2>();
  for (int64_t i = 0; i < B * n; ++i) {
    ta[i][0] = Vocabulary::kStart;
    for (size_t t = 0; t < samples[i].tokens.size(); ++t) ta[i][t + 1] = samples[i].tokens[t];
    ta[i][samples[i].tokens.size() + 1] = Vocabulary::kEnd;
  }
  tokens = tokens.to(device_);
  optimizer_->zero_grad();
  auto inputs = tokens.narrow(1, 0, tokens.size(1) - 1);
  auto targets = tokens.narrow(1, 1, tokens.size(1) - 1);
  auto logp = torch::log_softmax(decoder_->forward(feats, inputs), -1).gather(2, targets.unsqueeze(2)).squeeze(2);
  auto seq_logp = (logp * (targets != Vocabulary::kPad).to(logp.dtype())).sum(1);
  auto adv = torch::tensor(advantage, torch::kDouble).to(seq_logp.dtype()).to(device_);
  auto loss = -(adv * seq_logp).mean();
  loss.backward();
  if (options_.grad_clip > 0) torch::nn::utils::clip_grad_norm_(decoder_->parameters(), options_.grad_clip);
  optimizer_->step();
  return {loss.item<double>(), mean_reward / static_cast<double>(B * n)};
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
  json o{{"objective", options_.objective},    {"samples", options_.scst_samples},
         {"images", options_.scst_images},     {"scst_len", options_.scst_max_length},
         {"batch", options_.batch_size},       {"lr", options_.learning_rate},
         {"decay", options_.lr_decay},         {"every", options_.lr_decay_every},
         {"wd", options_.weight_decay},        {"clip", options_.grad_clip},
         {"smooth", options_.label_smoothing}, {"ema", options_.ema_decay},
         {"flip", options_.flip_augment},      {"seed", options_.seed},
         {"n_train", train_.features.size(0)}, {"n_val", val_.features.size(0)}};
  return hex64(fnv1a64(o.dump(), h));
}

bool Trainer::is_main() const { return !options_.group || options_.group->is_main(); }

bool Trainer::stop_requested() const {
  if (options_.group) return stop_agreed_;  // the same answer on every rank, from the last step
  return options_.stop && options_.stop->load();
}

void Trainer::save_checkpoint(int epoch, int64_t next_batch, const json& state_in) {
  if (!is_main()) return;
  json state = state_in;
  state["epoch"] = epoch;
  state["next_batch"] = next_batch;
  state["fingerprint"] = fingerprint();
  torch::serialize::OutputArchive archive;
  for (const auto& p : decoder_->named_parameters()) archive.write("model." + p.key(), p.value().detach().to(torch::kCPU));
  {
    auto params = decoder_->named_parameters();
    for (size_t i = 0; i < ema_.size(); ++i) archive.write("ema." + params[i].key(), ema_[i].to(torch::kCPU));
  }
  torch::serialize::OutputArchive opt;
  optimizer_->save(opt);
  archive.write("optimizer", opt);
  auto gen = at::detail::getDefaultCPUGenerator();
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    archive.write("rng", gen.get_state());
  }
  archive.write("state", c10::IValue(state.dump()));
  save_archive_atomic(archive, out_ / "checkpoint.pt");
}

bool Trainer::load_checkpoint(json& state) {
  fs::path file = out_ / "checkpoint.pt";
  // Data-parallel: rank 0's checkpoint, sent to all (the others' disks need not hold it).
  std::string bytes;
  if (is_main() && fs::exists(file)) bytes = read_file(file);
  if (options_.group) bytes = options_.group->broadcast_bytes(bytes);
  if (bytes.empty()) return false;
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(bytes.data(), bytes.size());
  } catch (const c10::Error& e) {
    throw std::runtime_error("cannot read checkpoint " + file.string() + ": " + e.what_without_backtrace());
  }
  c10::IValue s;
  archive.read("state", s);
  state = json::parse(s.toStringRef());
  if (state.at("fingerprint").get<std::string>() != fingerprint()) {
    throw std::runtime_error("checkpoint " + file.string() +
                             " was written for other data, vocabulary, model or training options; rerun with the "
                             "same arguments to resume, or without --resume (and another --output) to start over");
  }
  torch::NoGradGuard no_grad;
  for (auto& p : decoder_->named_parameters()) {
    torch::Tensor t;
    archive.read("model." + p.key(), t);
    p.value().copy_(t.to(p.value().device()));
  }
  {
    auto params = decoder_->named_parameters();
    for (size_t i = 0; i < ema_.size(); ++i) {
      torch::Tensor t;
      archive.read("ema." + params[i].key(), t);
      ema_[i].copy_(t.to(ema_[i].device()));
    }
  }
  torch::serialize::InputArchive opt;
  archive.read("optimizer", opt);
  optimizer_->load(opt);  // Adam's moments, step counts
  if (device_ != torch::kCPU) {
    for (auto& st : optimizer_->state()) {
      auto& a = static_cast<torch::optim::AdamParamState&>(*st.second);
      a.exp_avg(a.exp_avg().to(device_));
      a.exp_avg_sq(a.exp_avg_sq().to(device_));
    }
  }
  torch::Tensor rng;
  archive.read("rng", rng);
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(rng);
  return true;
}

void Trainer::append_metrics(const json& line) {
  if (!is_main()) return;
  std::ofstream out(out_ / "metrics.jsonl", std::ios::app);
  out << line.dump() << "\n";
}

void Trainer::truncate_metrics(int64_t step) {
  // Lines logged after the checkpoint will be logged again by the resumed run.
  fs::path file = out_ / "metrics.jsonl";
  if (!is_main() || !fs::exists(file)) return;
  std::istringstream in(read_file(file));
  std::string kept, line;
  while (std::getline(in, line)) {
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded()) continue;  // a line torn by a crash
    if (j.value("step", int64_t(0)) <= step) kept += line + "\n";
  }
  write_file_atomic(file, kept);
}

std::array<double, 4> Trainer::validate() {
  decoder_->eval();
  DecoderScorer scorer(decoder_);
  std::vector<std::string> hyps;
  const int64_t M = val_.features.size(0);
  for (int64_t start = 0; start < M; start += options_.val_batch) {
    auto feats = val_.features.narrow(0, start, std::min<int64_t>(options_.val_batch, M - start));
    for (const auto& c : search_captions(scorer, {feats}, options_.val_search)) hyps.push_back(model_.vocab.decode(c.tokens));
  }
  MetricsOptions mo;
  mo.bleu_only = true;
  return score_captions(hyps, val_.references, mo).bleu;
}

TrainResult Trainer::run(const TrainerCallbacks& cb) {
  auto say = [&](const std::string& m) {
    if (cb.on_message) cb.on_message(m);
  };
  TrainResult result;
  json state{{"step", 0},
             {"best_bleu4", -1.0},
             {"best_epoch", 0},
             {"bad_epochs", 0},
             {"epoch_loss_sum", 0.0},
             {"epoch_loss_count", 0},
             {"epoch_seconds", 0.0},
             {"history", json::array()}};
  int start_epoch = 0;
  int64_t start_batch = 0;
  if (options_.resume && load_checkpoint(state)) {
    start_epoch = state.at("epoch");
    start_batch = state.at("next_batch");
    truncate_metrics(state.at("step"));
    say("resuming from " + (out_ / "checkpoint.pt").string() + " at epoch " + std::to_string(start_epoch + 1) + ", batch " +
        std::to_string(start_batch));
  } else {
    if (options_.resume) say("no checkpoint in " + out_.string() + ": starting from scratch");
    std::error_code ec;
    if (is_main()) fs::remove(out_ / "metrics.jsonl", ec);
  }
  for (size_t i = 0; i < state.at("history").size(); ++i) {
    result.history.push_back(epoch_report_from_json(
        JsonView(state["history"][i], (out_ / "checkpoint.pt").string(), "history[" + std::to_string(i) + "]")));
  }
  // A run that ended because it reached its epoch count continues when asked for more epochs
  // (`--resume --epochs 3` after one epoch); one that early stopping ended stays ended.
  if (state.value("finished", false) && state.at("bad_epochs").get<int>() < options_.patience && start_epoch < options_.epochs) {
    state["finished"] = false;
    say("continuing a finished run of " + std::to_string(start_epoch) + " epochs up to " + std::to_string(options_.epochs));
  }
  if (state.value("finished", false)) {
    say(state.at("bad_epochs").get<int>() >= options_.patience
            ? "training already finished (stopped early at epoch " + std::to_string(start_epoch) + "); nothing to resume"
            : "training already finished its " + std::to_string(start_epoch) + " epochs; nothing to resume (--epochs " +
                  std::to_string(options_.epochs) + ")");
    result.epochs_completed = start_epoch;
    result.best_epoch = state.at("best_epoch");
    for (const auto& r : result.history)
      if (r.epoch == result.best_epoch) result.best_bleu = r.bleu;
    return result;
  }

  // Tests that kill a run need it to die at a known point, not at a moment a timer guessed.
  const char* die_env = std::getenv("CAPTIONER_TEST_DIE_AFTER_STEPS");
  const int64_t die_after_steps = die_env ? std::atoll(die_env) : 0;
  for (int epoch = start_epoch; epoch < options_.epochs; ++epoch) {
    const double lr = options_.learning_rate * std::pow(options_.lr_decay, epoch / std::max(1, options_.lr_decay_every));
    for (auto& group : optimizer_->param_groups()) static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
    auto batches = epoch_batches(epoch);
    const int64_t nb = static_cast<int64_t>(batches.size());
    auto t0 = std::chrono::steady_clock::now();
    double seconds_before = epoch == start_epoch ? state.value("epoch_seconds", 0.0) : 0.0;
    if (epoch != start_epoch || start_batch == 0) {
      state["epoch_reward_sum"] = 0.0;
      state["epoch_loss_sum"] = 0.0;
      state["epoch_loss_count"] = 0;
    }
    int64_t captions_done = 0, steps_done = 0;
    const double comm_before = options_.group ? options_.group->communication_seconds() : 0.0;
    for (int64_t b = (epoch == start_epoch ? start_batch : 0); b < nb; ++b) {
      if (stop_requested()) {
        state["epoch_seconds"] = seconds_before + seconds_since(t0);
        save_checkpoint(epoch, b, state);
        say("interrupted: checkpoint saved to " + (out_ / "checkpoint.pt").string() + "; continue with --resume");
        result.interrupted = true;
        result.epochs_completed = epoch;
        return result;
      }
      auto [l, reward] = train_step(batches[b], epoch, b);
      ++steps_done;
      if (!std::isfinite(l)) throw std::runtime_error("training diverged (loss " + std::to_string(l) + "); lower --lr");
      int64_t step = state.at("step").get<int64_t>() + 1;
      state["step"] = step;
      if (die_after_steps > 0 && step >= die_after_steps) std::_Exit(137);  // tests only: a deterministic kill -9
      if (!ema_.empty()) update_ema(step);
      state["epoch_loss_sum"] = state.at("epoch_loss_sum").get<double>() + l * static_cast<double>(batches[b].size());
      state["epoch_loss_count"] = state.at("epoch_loss_count").get<int64_t>() + static_cast<int64_t>(batches[b].size());
      state["epoch_reward_sum"] = state.value("epoch_reward_sum", 0.0) + reward * static_cast<double>(batches[b].size());
      captions_done += static_cast<int64_t>(batches[b].size()) * (reward_ ? options_.scst_samples : 1);
      double rate = captions_done / std::max(1e-9, seconds_since(t0));
      if (cb.on_batch) cb.on_batch(epoch + 1, b + 1, nb, l, rate);
      if (options_.log_every > 0 && step % options_.log_every == 0) {
        BatchLogLine line{epoch + 1, b + 1, step, l, lr, std::nullopt};
        if (reward_) line.reward = reward;
        append_metrics(to_json(line));
      }
      if (options_.checkpoint_every > 0 && (b + 1) % options_.checkpoint_every == 0 && b + 1 < nb) {
        state["epoch_seconds"] = seconds_before + seconds_since(t0);
        save_checkpoint(epoch, b + 1, state);
      }
    }
    double train_seconds = seconds_before + seconds_since(t0);
    if (options_.group) {
      const double comm = options_.group->communication_seconds() - comm_before;
      char line[160];
      std::snprintf(line, sizeof line, "epoch %d: %.1f ms per step in allreduce (%.0f%% of the step), %d processes", epoch + 1,
                    1000 * comm / std::max<int64_t>(1, steps_done), 100 * comm / std::max(1e-9, seconds_since(t0)),
                    options_.group->world_size());
      say(line);
    }

    EpochReport r;
    r.epoch = epoch + 1;
    r.train_loss = state.at("epoch_loss_sum").get<double>() / std::max<int64_t>(1, state.at("epoch_loss_count").get<int64_t>());
    r.train_reward = state.value("epoch_reward_sum", 0.0) / std::max<int64_t>(1, state.at("epoch_loss_count").get<int64_t>());
    r.learning_rate = lr;
    r.captions_per_second = static_cast<double>(reward_ ? train_.features.size(0) * options_.scst_samples
                                                        : static_cast<int64_t>(train_.captions.size())) /
                            std::max(1e-9, train_seconds);
    if (!ema_.empty()) swap_ema();  // validate (and keep) the averaged weights
    if (is_main()) r.bleu = validate();
    if (options_.group) {  // the others wait for rank 0's score: early stopping agrees everywhere
      auto bleu = torch::tensor(std::vector<double>(r.bleu.begin(), r.bleu.end()), torch::kDouble);
      options_.group->broadcast({bleu});
      for (int n = 0; n < 4; ++n) r.bleu[n] = bleu[n].item<double>();
    }
    r.seconds = train_seconds;
    double best = state.at("best_bleu4");
    r.improved = r.bleu[3] > best;
    if (r.improved) {
      state["best_bleu4"] = r.bleu[3];
      state["best_epoch"] = r.epoch;
      state["bad_epochs"] = 0;
      model_.training["best_epoch"] = r.epoch;
      model_.training["validation_greedy_bleu"] = r.bleu;
      model_.training["epochs_run"] = r.epoch;
      if (is_main()) model_.save(out_, options_.fp16_bundle);
    } else {
      state["bad_epochs"] = state.at("bad_epochs").get<int>() + 1;
    }
    if (!ema_.empty()) swap_ema();
    r.best_epoch = state.at("best_epoch");
    r.best_bleu4 = state.at("best_bleu4");
    r.step = state.at("step");
    state["history"].push_back(to_json(r));
    append_metrics(to_json(r));
    result.history.push_back(r);
    if (cb.on_epoch) cb.on_epoch(r);

    bool stop_early = state.at("bad_epochs").get<int>() >= options_.patience;
    bool last = epoch + 1 == options_.epochs || stop_early;
    if (last) state["finished"] = true;
    save_checkpoint(epoch + 1, 0, state);
    result.epochs_completed = epoch + 1;
    if (stop_early) {
      result.stopped_early = true;
      say("no better validation BLEU-4 for " + std::to_string(options_.patience) + " epochs: stopping early");
      break;
    }
  }
  result.best_epoch = state.at("best_epoch");
  for (const auto& r : result.history) {
    if (r.epoch == result.best_epoch) result.best_bleu = r.bleu;
  }
  return result;
}

}  // namespace captioner
