// The encoder's own ImageNet classifier, applied to the features it already computed: what a
// photo shows, as class probabilities. Kept beside the encoder file as <encoder>.classifier.pt.
#pragma once

#include <torch/script.h>

#include <filesystem>
#include <string>
#include <vector>

namespace captioner {

class ImageClassifier {
 public:
  // Loads <encoder_file>.classifier.pt (written by scripts/convert_tflite_mobilenet.py); a clear
  // error when it is missing or is not a classifier for `feature_dim`-d features.
  static ImageClassifier load_beside(const std::filesystem::path& encoder_file, int64_t feature_dim);

  // features: (N, D) float -> (N, C) class probabilities (softmax), float on the CPU.
  torch::Tensor probabilities(const torch::Tensor& features);
  const std::vector<std::string>& labels() const { return labels_; }  // one per class

 private:
  torch::jit::Module module_;
  std::vector<std::string> labels_;
};

}  // namespace captioner
