#include "decoder/training/training_objective.h"

#include <algorithm>
#include <random>
#include <stdexcept>

#include "decoder/search/caption_search.h"
#include "decoder/training/distributed.h"
#include "vocab/vocabulary.h"

namespace captioner {

namespace {

constexpr int kBucketBatches = 50;  // batches whose captions are sorted by length together

// The objective reads image features, with mirrored ones half of the time under flip_augment.
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
    return {loss.item<double>(), false};
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
    return {extra[0].item<double>() / global_tokens, extra[1].item<double>() > 0};
  }

  const TrainingData& data_;
  const TrainerOptions& options_;
  FeatureSource features_;
  torch::Device device_;
};

}  // namespace

std::unique_ptr<TrainingObjective> make_objective(const TrainingData& data, const TrainerOptions& options, torch::Device device) {
  if (options.flip_augment && !data.flipped.defined()) throw std::invalid_argument("flip augmentation needs mirrored features");
  return std::make_unique<CrossEntropyObjective>(data, options, device);
}

}  // namespace captioner
