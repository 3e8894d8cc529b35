// A trained captioning model as a self-describing directory: config.json (decoder dimensions,
// encoder file and preprocessing, vocabulary fingerprint, decoding defaults, how it was trained),
// vocab.json and the decoder weights. Loading refuses parts that do not belong together.
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "decoder/network/caption_decoder.h"
#include "decoder/search/caption_search.h"
#include "encoder/encoder_info.h"
#include "vocab/vocabulary.h"

namespace captioner {

struct BundleMember {
  CaptionDecoder decoder{nullptr};
  size_t view = 0;           // feature view it reads: 0 the photo, 1 mirrored
  std::string weights_file;  // relative to the bundle directory
};

struct ModelBundle {
  static constexpr int kFormatVersion = 1;

  Vocabulary vocab;
  EncoderInfo encoder;                 // as recorded when the model was trained
  std::filesystem::path encoder_file;  // resolved path of the TorchScript encoder
  std::vector<BundleMember> members;   // one decoder, or an ensemble
  SearchOptions search;                // decoding defaults chosen on validation data
  // "float32", or "int8": the decoder's per-step products in int8 on the CPU (decoder/kernels/int8_linear.h;
  // a GPU decodes in float32). Checked against the float32 captions before it is made a default.
  std::string decoder_precision = "float32";
  static const std::vector<std::string>& decoder_precisions();  // the names it may hold
  nlohmann::json training = nlohmann::json::object();           // command, data, epochs, scores...
  // (D,) the mean feature of the training photos (image_prior.pt), the "mean photo" of
  // mutual-information decoding; undefined for models saved without one.
  torch::Tensor image_prior;
  int64_t image_prior_images = 0;  // how many photos it averages

  size_t num_views() const;  // 1, or 2 when a member reads the mirrored photo
  // mi_weight > 0: a MutualInformationScorer over the image prior (an error without one).
  std::unique_ptr<SequenceScorer> make_scorer(double mi_weight = 0) const;
  void set_image_prior(const torch::Tensor& train_features);  // the mean of (N, D) training features

  // Writes the bundle to `dir` atomically (a staged directory swapped in). fp16 halves the size.
  void save(const std::filesystem::path& dir, bool fp16 = false) const;
  // Loads and cross-checks every part; decoders are put on `device` in eval mode.
  static ModelBundle load(const std::filesystem::path& dir, torch::Device device = torch::kCPU);
};

}  // namespace captioner
