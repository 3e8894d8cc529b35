#include "decoder/training_objective.h"

#include <algorithm>
#include <random>
#include <stdexcept>

#include "datasets/metrics/cider_reward.h"
#include "decoder/caption_search.h"
#include "decoder/distributed.h"
#include "vocab/vocabulary.h"

namespace captioner {

namespace {

constexpr int kBucketBatches = 50;  // batches whose captions are sorted by length together

// Both objectives read image features, with mirrored ones half of the time under flip_augment.
class FeatureSource {
 public:
  FeatureSource(const TrainingData& data, const TrainerOptions& options, torch::Device device)
      : data_(data), options_(options), device_(device) {}

  torch::Tensor rows(const std::vector<int64_t>& images, int epoch, int64_t batch_index) const {
    auto index = torch::tensor(images);
    auto feats = data_.features.index_select(0, index);
    if (options_.flip_augment) {
      std::mt19937_64 rng(options_.seed ^ (static_cast<uint64_t>(epoch) << 40) ^ static_cast<uint64_t>(batch_index));
      std::vector<int64_t> flip(images.size());
      for (auto& f : flip) f = static_cast<int64_t>(rng() & 1);
      auto mask = torch::tensor(flip).to(torch::kBool).unsqueeze(1);
      feats = torch::where(mask, data_.flipped.index_select(0, index), feats);
    }
    return feats.to(device_);
  }

 private:
  const TrainingData& data_;
  const TrainerOptions& options_;
  torch::Device device_;
};

// Cross-entropy with teacher forcing over batches of captions of similar length.
class CrossEntropyObjective : public TrainingObjective {
 public:
  CrossEntropyObjective(const TrainingData& data, const TrainerOptions& options, torch::Device device)
      : data_(data), options_(options), features_(data, options, device), device_(device) {}

  int64_t items_per_epoch() const override { return static_cast<int64_t>(data_.captions.size()); }

  std::vector<std::vector<int64_t>> epoch_batches(int epoch) const override {
    std::mt19937_64 rng(options_.seed * 1000003ULL + static_cast<uint64_t>(epoch));
    std::vector<int64_t> order(data_.captions.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
    std::shuffle(order.begin(), order.end(), rng);
    // Sort captions of similar length into the same batch (within buckets, so batches stay random).
    const size_t bucket = static_cast<size_t>(options_.batch_size) * kBucketBatches;
    for (size_t start = 0; start < order.size(); start += bucket) {
      auto end = order.begin() + static_cast<std::ptrdiff_t>(std::min(order.size(), start + bucket));
      std::stable_sort(order.begin() + static_cast<std::ptrdiff_t>(start), end,
                       [&](int64_t a, int64_t b) { return data_.captions[a].size() < data_.captions[b].size(); });
    }
    std::vector<std::vector<int64_t>> batches;
    for (size_t start = 0; start < order.size(); start += options_.batch_size) {
      batches.emplace_back(order.begin() + static_cast<std::ptrdiff_t>(start),
                           order.begin() + static_cast<std::ptrdiff_t>(std::min(order.size(), start + options_.batch_size)));
    }
    std::shuffle(batches.begin(), batches.end(), rng);
    return batches;
  }

  StepResult backward(CaptionDecoder& decoder, const std::vector<int64_t>& ids, int epoch, int64_t batch_index) override {
    decoder->train();
    size_t T = 0;
    for (int64_t id : ids) T = std::max(T, data_.captions[id].size());
    const int64_t B = static_cast<int64_t>(ids.size());
    auto tokens = torch::zeros({B, static_cast<int64_t>(T)}, torch::kLong);  // <pad> = 0
    auto ta = tokens.accessor<int64_t, 2>();
    std::vector<int64_t> images(B);
    for (int64_t b = 0; b < B; ++b) {
      const auto& c = data_.captions[ids[b]];
      for (size_t t = 0; t < c.size(); ++t) ta[b][t] = c[t];
      images[b] = data_.caption_image[ids[b]];
    }
    const torch::Tensor features = features_.rows(images, epoch, batch_index);
    tokens = tokens.to(device_);
    if (options_.group) return data_parallel_backward(decoder, features, tokens);
    auto loss = decoder->loss(features, tokens, options_.label_smoothing);
    loss.backward();
    return {loss.item<double>(), 0.0, false};
  }

 private:
  // This rank's rows of the global batch. Its loss is its tokens' share of the global mean, so the
  // summed gradients are exactly those of the global batch's mean loss.
  StepResult data_parallel_backward(CaptionDecoder& decoder, const torch::Tensor& features, const torch::Tensor& tokens) {
    auto& group = *options_.group;
    const int64_t B = tokens.size(0), W = group.world_size(), r = group.rank();
    const int64_t lo = B * r / W, hi = B * (r + 1) / W;
    const auto target_tokens = [](const torch::Tensor& t) {
      return (t.narrow(1, 1, t.size(1) - 1) != Vocabulary::kPad).sum().item<double>();
    };
    const double global_tokens = std::max(1.0, target_tokens(tokens));
    double loss_sum = 0;
    if (hi > lo) {
      auto mine = tokens.narrow(0, lo, hi - lo);
      decoder->set_batch_slice(lo, B);
      auto loss = decoder->loss(features.narrow(0, lo, hi - lo), mine, options_.label_smoothing);
      decoder->set_batch_slice(0, 0);
      const double local_tokens = target_tokens(mine);
      (loss * (local_tokens / global_tokens)).backward();
      loss_sum = loss.item<double>() * local_tokens;
    }
    std::vector<torch::Tensor> grads;
    for (auto& p : decoder->parameters()) {
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      grads.push_back(p.grad());
    }
    // Two more numbers ride along: the loss and whether any rank was asked to stop.
    auto extra = torch::tensor({loss_sum, options_.stop && options_.stop->load() ? 1.0 : 0.0}, torch::kDouble);
    grads.push_back(extra);
    group.allreduce_sum(grads);
    return {extra[0].item<double>() / global_tokens, 0.0, extra[1].item<double>() > 0};
  }

  const TrainingData& data_;
  const TrainerOptions& options_;
  FeatureSource features_;
  torch::Device device_;
};

// Self-critical sequence training: CIDEr-D on the training captions as the reward, the mean reward
// of the image's other samples as the baseline (Luo 2020, "A Better Variant of Self-Critical
// Sequence Training"). Start it from an xe-trained model.
class SelfCriticalObjective : public TrainingObjective {
 public:
  SelfCriticalObjective(const TrainingData& data, const TrainerOptions& options, torch::Device device)
      : data_(data), options_(options), features_(data, options, device), device_(device), reward_(references(data)) {}

  int64_t items_per_epoch() const override { return data_.features.size(0); }
  int64_t captions_per_item() const override { return options_.scst_samples; }
  bool reports_reward() const override { return true; }

  std::vector<std::vector<int64_t>> epoch_batches(int epoch) const override {
    std::mt19937_64 rng(options_.seed * 1000003ULL + static_cast<uint64_t>(epoch));
    std::vector<int64_t> images(static_cast<size_t>(data_.features.size(0)));
    for (size_t i = 0; i < images.size(); ++i) images[i] = static_cast<int64_t>(i);
    std::shuffle(images.begin(), images.end(), rng);
    std::vector<std::vector<int64_t>> batches;
    for (size_t start = 0; start < images.size(); start += options_.scst_images) {
      batches.emplace_back(images.begin() + static_cast<std::ptrdiff_t>(start),
                           images.begin() + static_cast<std::ptrdiff_t>(std::min(images.size(), start + options_.scst_images)));
    }
    return batches;
  }

  StepResult backward(CaptionDecoder& decoder, const std::vector<int64_t>& images, int epoch, int64_t b) override {
    const int64_t n = options_.scst_samples;
    const int64_t B = static_cast<int64_t>(images.size());
    // Dropout off: the captions are sampled from, and credited to, the same policy.
    decoder->eval();
    auto feats = features_.rows(images, epoch, b).repeat_interleave(n, 0);  // (B*n, D)
    SearchOptions so;
    so.sample = true;
    so.max_length = options_.scst_max_length;
    so.seed = options_.seed * 7919ULL + (static_cast<uint64_t>(epoch) << 32) + static_cast<uint64_t>(b);
    std::vector<Caption> samples;
    {
      DecoderScorer scorer(decoder);
      samples = sample_captions(scorer, {feats}, so);
    }
    // Rewards, and each sample's baseline: the mean reward of the image's other samples.
    std::vector<double> reward(samples.size()), advantage(samples.size());
    double mean_reward = 0;
    for (int64_t i = 0; i < B * n; ++i) {
      reward[i] = reward_.score(samples[i].tokens, static_cast<size_t>(images[i / n]));
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
    auto inputs = tokens.narrow(1, 0, tokens.size(1) - 1);
    auto targets = tokens.narrow(1, 1, tokens.size(1) - 1);
    auto logp = torch::log_softmax(decoder->forward(feats, inputs), -1).gather(2, targets.unsqueeze(2)).squeeze(2);
    auto seq_logp = (logp * (targets != Vocabulary::kPad).to(logp.dtype())).sum(1);
    auto adv = torch::tensor(advantage, torch::kDouble).to(seq_logp.dtype()).to(device_);
    auto loss = -(adv * seq_logp).mean();
    loss.backward();
    return {loss.item<double>(), mean_reward / static_cast<double>(B * n), false};
  }

 private:
  // The reward's references: every training caption of the image, as word ids.
  static std::vector<std::vector<std::vector<int64_t>>> references(const TrainingData& data) {
    std::vector<std::vector<std::vector<int64_t>>> refs(static_cast<size_t>(data.features.size(0)));
    for (size_t i = 0; i < data.captions.size(); ++i) {
      const auto& c = data.captions[i];
      refs.at(static_cast<size_t>(data.caption_image[i])).emplace_back(c.begin() + 1, c.end() - 1);
    }
    return refs;
  }

  const TrainingData& data_;
  const TrainerOptions& options_;
  FeatureSource features_;
  torch::Device device_;
  metrics::CiderReward reward_;
};

}  // namespace

std::unique_ptr<TrainingObjective> make_objective(const TrainingData& data, const TrainerOptions& options, torch::Device device) {
  if (options.flip_augment && !data.flipped.defined()) throw std::invalid_argument("flip augmentation needs mirrored features");
  switch (options.objective) {
    case Objective::kCrossEntropy:
      return std::make_unique<CrossEntropyObjective>(data, options, device);
    case Objective::kSelfCritical:
      if (options.scst_samples < 2) throw std::invalid_argument("scst needs at least 2 samples per image");
      if (options.group) throw std::invalid_argument("data-parallel training supports the xe objective only");
      return std::make_unique<SelfCriticalObjective>(data, options, device);
  }
  throw std::invalid_argument("unknown training objective");
}

}  // namespace captioner

namespace captioner {

const char* objective_name(Objective objective) { return objective == Objective::kSelfCritical ? "scst" : "xe"; }

}  // namespace captioner
