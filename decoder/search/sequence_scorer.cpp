#include "decoder/search/sequence_scorer.h"

#include <cmath>
#include <stdexcept>
#include <unordered_map>

namespace captioner {

void DecoderScorer::prepare() {
  // A scorer lives for one decoding run (a caption command, one validation) during which the
  // weights do not change, so the table is built once and shared by every batch.
  if (decoder_->is_training()) return;
  if (!word_gates_.defined()) word_gates_ = decoder_->word_gate_table();
  if (int8_ && !int8_weights_) int8_weights_ = decoder_->int8_weights();
}

void DecoderScorer::start(const FeatureViews& views) {
  if (view_ >= views.size()) {
    throw std::invalid_argument("decoder wants feature view " + std::to_string(view_) + " but only " +
                                std::to_string(views.size()) + " were computed");
  }
  device_ = decoder_->parameters().front().device();
  state_ = decoder_->start(views[view_].to(device_));
  if (!decoder_->is_training()) {
    prepare();
    state_.word_gates = word_gates_;
    state_.int8 = int8_weights_;
  }
}

// Search bookkeeping runs on the CPU; only the decoder's tensors live on its device.
torch::Tensor DecoderScorer::step(const torch::Tensor& tokens) {
  return decoder_->step(tokens.to(device_), state_).to(torch::kCPU);
}

void DecoderScorer::select(const torch::Tensor& rows) { state_.select(rows.to(device_)); }

EnsembleScorer::EnsembleScorer(std::vector<std::unique_ptr<SequenceScorer>> members) : members_(std::move(members)) {
  if (members_.empty()) throw std::invalid_argument("an ensemble needs at least one member");
  for (const auto& m : members_) {
    if (m->vocab_size() != members_.front()->vocab_size()) {
      throw std::invalid_argument("ensemble members disagree on the vocabulary size");
    }
  }
}

void EnsembleScorer::prepare() {
  for (auto& m : members_) m->prepare();
}

void EnsembleScorer::start(const FeatureViews& views) {
  for (auto& m : members_) m->start(views);
}

torch::Tensor EnsembleScorer::step(const torch::Tensor& tokens) {
  if (members_.size() == 1) return members_[0]->step(tokens);
  std::vector<torch::Tensor> logp;
  logp.reserve(members_.size());
  for (auto& m : members_) logp.push_back(m->step(tokens));
  return torch::logsumexp(torch::stack(logp), 0) - std::log(static_cast<double>(members_.size()));
}

void EnsembleScorer::select(const torch::Tensor& rows) {
  for (auto& m : members_) m->select(rows);
}

MutualInformationScorer::MutualInformationScorer(std::unique_ptr<SequenceScorer> photo, std::unique_ptr<SequenceScorer> prior,
                                                 torch::Tensor image_prior, double weight)
    : photo_(std::move(photo)), prior_(std::move(prior)), image_prior_(std::move(image_prior)), weight_(weight) {
  if (!photo_ || !prior_) throw std::invalid_argument("mutual-information decoding needs two scorers");
  if (photo_->vocab_size() != prior_->vocab_size()) throw std::invalid_argument("MI scorers disagree on the vocabulary size");
  if (!image_prior_.defined() || image_prior_.dim() != 1) throw std::invalid_argument("the image prior must be a (D,) feature");
  if (!(weight_ >= 0 && weight_ < 1)) throw std::invalid_argument("the MI weight must be in [0, 1)");
}

void MutualInformationScorer::prepare() {
  photo_->prepare();
  prior_->prepare();
}

void MutualInformationScorer::start(const FeatureViews& views) {
  photo_->start(views);
  FeatureViews prior_views;
  for (const auto& v : views) {
    if (v.dim() != 2 || v.size(1) != image_prior_.size(0)) {
      throw std::invalid_argument("features of width " + std::to_string(v.dim() == 2 ? v.size(1) : -1) +
                                  " do not match the image prior's " + std::to_string(image_prior_.size(0)));
    }
    // The mirrored view's mean is the same photo statistics: every view reads the one prior.
    prior_views.push_back(image_prior_.to(v.dtype()).unsqueeze(0));
  }
  prior_->start(prior_views);  // one row: the empty prefix
  prefix_row_.assign(static_cast<size_t>(views.front().size(0)), 0);
}

torch::Tensor MutualInformationScorer::step(const torch::Tensor& tokens) {
  photo_logp_ = photo_->step(tokens);
  const auto t = tokens.to(torch::kCPU, torch::kLong).contiguous();
  const int64_t R = t.size(0);
  if (static_cast<int64_t>(prefix_row_.size()) != R) throw std::logic_error("MI scorer: rows and tokens disagree");
  // Each row's new prefix is (its old prefix, its token); the mean photo scores each distinct one once.
  const int64_t* tok = t.data_ptr<int64_t>();
  std::unordered_map<int64_t, int64_t> distinct;
  std::vector<int64_t> parent_rows, next_tokens;
  const int64_t V = vocab_size();
  for (int64_t r = 0; r < R; ++r) {
    const int64_t key = prefix_row_[static_cast<size_t>(r)] * V + tok[r];
    auto [it, added] = distinct.emplace(key, static_cast<int64_t>(parent_rows.size()));
    if (added) {
      parent_rows.push_back(prefix_row_[static_cast<size_t>(r)]);
      next_tokens.push_back(tok[r]);
    }
    prefix_row_[static_cast<size_t>(r)] = it->second;
  }
  prior_->select(torch::tensor(parent_rows, torch::kLong));
  const auto prior_logp = prior_->step(torch::tensor(next_tokens, torch::kLong));
  return photo_logp_ - weight_ * prior_logp.index_select(0, torch::tensor(prefix_row_, torch::kLong));
}

void MutualInformationScorer::select(const torch::Tensor& rows) {
  photo_->select(rows);
  // The prior's state is re-selected lazily, by prefix, at the next step.
  const auto r = rows.to(torch::kCPU, torch::kLong).contiguous();
  std::vector<int64_t> kept(static_cast<size_t>(r.size(0)));
  for (int64_t i = 0; i < r.size(0); ++i)
    kept[static_cast<size_t>(i)] = prefix_row_.at(static_cast<size_t>(r.data_ptr<int64_t>()[i]));
  prefix_row_ = std::move(kept);
}

}  // namespace captioner
