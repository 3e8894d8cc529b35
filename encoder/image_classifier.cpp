#include "encoder/image_classifier.h"

#include <torch/torch.h>

#include <stdexcept>

namespace captioner {

ImageClassifier ImageClassifier::load_beside(const std::filesystem::path& encoder_file, int64_t feature_dim) {
  const std::filesystem::path file = encoder_file.string() + ".classifier.pt";
  if (!std::filesystem::exists(file)) {
    throw std::runtime_error(file.string() +
                             " not found: tags need the encoder's ImageNet classifier (re-create the "
                             "encoder with scripts/make_default_encoder.sh)");
  }
  ImageClassifier classifier;
  try {
    classifier.module_ = torch::jit::load(file.string(), torch::kCPU);
    classifier.module_.eval();
    for (const auto& label : classifier.module_.attr("labels").toListRef()) classifier.labels_.push_back(label.toStringRef());
  } catch (const c10::Error& e) {
    throw std::runtime_error("cannot load classifier " + file.string() + ": " + e.what_without_backtrace());
  }
  torch::Tensor probe;
  try {
    probe = classifier.probabilities(torch::zeros({1, feature_dim}));
  } catch (const std::exception& e) {
    throw std::runtime_error(file.string() + " does not classify " + std::to_string(feature_dim) + "-d features");
  }
  if (probe.size(1) != static_cast<int64_t>(classifier.labels_.size())) {
    throw std::runtime_error(file.string() + " has " + std::to_string(probe.size(1)) + " classes but " +
                             std::to_string(classifier.labels_.size()) + " labels");
  }
  return classifier;
}

torch::Tensor ImageClassifier::probabilities(const torch::Tensor& features) {
  c10::InferenceMode guard;
  return torch::softmax(module_.forward({features.to(torch::kCPU, torch::kFloat)}).toTensor(), 1);
}

}  // namespace captioner
