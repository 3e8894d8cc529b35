// What caption search needs from a model: start a batch of images, then next-word
// log-probabilities per row, with rows re-selectable as beams are re-ranked. One decoder, or an
// ensemble of decoders and feature views (e.g. the mirrored photo) averaged in probability space.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "decoder/network/caption_decoder.h"

namespace captioner {

// Feature views of the same images: view 0 the photo as is, view 1 (if any) mirrored. (B, D) each.
using FeatureViews = std::vector<torch::Tensor>;

class SequenceScorer {
 public:
  virtual ~SequenceScorer() = default;
  virtual int64_t vocab_size() const = 0;
  virtual void start(const FeatureViews& views) = 0;            // B rows, one per image
  virtual torch::Tensor step(const torch::Tensor& tokens) = 0;  // (R,) int64 -> (R, V) log-probs
  virtual void select(const torch::Tensor& rows) = 0;           // (R',) int64 rows to keep
  // Builds what start() needs once (the decoder's word table, its int8 weights) ahead of the first
  // photos, e.g. while they are being encoded; start() builds it otherwise.
  virtual void prepare() {}
  // When step() ranks words by something other than the model's log-probabilities
  // (MutualInformationScorer): the model's own of the last step, (R, V), which captions report.
  // Undefined otherwise.
  virtual torch::Tensor last_model_log_probs() const { return {}; }
};

class DecoderScorer : public SequenceScorer {
 public:
  // int8: each step's two products in int8 (decoder/kernels/int8_linear.h), on the CPU in eval mode.
  explicit DecoderScorer(CaptionDecoder decoder, size_t view = 0, bool int8 = false)
      : decoder_(std::move(decoder)), view_(view), int8_(int8) {}
  int64_t vocab_size() const override { return decoder_->config().vocab_size; }
  void prepare() override;
  void start(const FeatureViews& views) override;
  torch::Tensor step(const torch::Tensor& tokens) override;
  void select(const torch::Tensor& rows) override;

 private:
  CaptionDecoder decoder_;
  size_t view_;
  bool int8_;
  torch::Device device_ = torch::kCPU;
  DecoderState state_;
  torch::Tensor word_gates_;                                // the decoder's word -> gate table, built by prepare()
  std::shared_ptr<const DecoderInt8Weights> int8_weights_;  // likewise, when int8
};

// log(mean_m p_m(w | prefix)): members vote with probabilities, as ensembles usually do.
class EnsembleScorer : public SequenceScorer {
 public:
  explicit EnsembleScorer(std::vector<std::unique_ptr<SequenceScorer>> members);
  int64_t vocab_size() const override { return members_.front()->vocab_size(); }
  void prepare() override;
  void start(const FeatureViews& views) override;
  torch::Tensor step(const torch::Tensor& tokens) override;
  void select(const torch::Tensor& rows) override;

 private:
  std::vector<std::unique_ptr<SequenceScorer>> members_;
};

// Mutual-information decoding: log p(w | prefix, photo) - weight * log p(w | prefix, mean photo).
// The second term is the same decoder reading the average training feature (the image prior)
// with the same prefix, so words that any photo would get (the generic "a man in a blue shirt")
// lose ground to the ones this photo makes likely. The mean photo is the same for every row, so
// its term depends on the prefix alone: it is computed once per distinct prefix among the rows
// ("a man" once for every beam of every photo that says it), not once per row.
class MutualInformationScorer : public SequenceScorer {
 public:
  // photo and prior: two scorers of the same model(s); image_prior (D,), weight in [0, 1).
  MutualInformationScorer(std::unique_ptr<SequenceScorer> photo, std::unique_ptr<SequenceScorer> prior, torch::Tensor image_prior,
                          double weight);
  int64_t vocab_size() const override { return photo_->vocab_size(); }
  void prepare() override;
  void start(const FeatureViews& views) override;
  torch::Tensor step(const torch::Tensor& tokens) override;
  void select(const torch::Tensor& rows) override;
  torch::Tensor last_model_log_probs() const override { return photo_logp_; }

 private:
  std::unique_ptr<SequenceScorer> photo_, prior_;
  torch::Tensor image_prior_;
  double weight_;
  std::vector<int64_t> prefix_row_;  // for each row, its prefix's row in prior_'s state
  torch::Tensor photo_logp_;         // the last step's log p(w | prefix, photo)
};

}  // namespace captioner
