#include "decoder/concept_input.h"

#include <stdexcept>
#include <unordered_map>

#include "encoder/image_classifier.h"
#include "vocab/tagger.h"

namespace captioner {

std::shared_ptr<ConceptInput> ConceptInput::load(const std::filesystem::path& encoder_file, int64_t feature_dim,
                                                 const Vocabulary& vocab, const std::vector<std::string>& words,
                                                 const std::filesystem::path& wordnet_dir) {
  auto classifier = std::make_shared<ImageClassifier>(ImageClassifier::load_beside(encoder_file, feature_dim));
  const auto tagger = Tagger::build(classifier->labels(), WordNet::open(wordnet_dir), vocab);
  std::vector<std::string> columns = words.empty() ? tagger.concept_words() : words;
  if (columns.empty()) {
    throw std::runtime_error("no ImageNet class of " + encoder_file.string() +
                             ".classifier.pt maps to a word of the vocabulary: nothing for --concept-input to add");
  }
  std::unordered_map<std::string, int64_t> column_of;
  for (size_t k = 0; k < columns.size(); ++k) column_of.emplace(columns[k], static_cast<int64_t>(k));
  const auto C = static_cast<int64_t>(tagger.num_classes()), K = static_cast<int64_t>(columns.size());
  auto class_to_word = torch::zeros({C, K});
  auto acc = class_to_word.accessor<float, 2>();
  std::vector<bool> reached(columns.size(), false);
  for (int64_t c = 0; c < C; ++c) {
    for (const auto& w : tagger.class_words(static_cast<size_t>(c))) {
      auto it = column_of.find(w);
      if (it == column_of.end()) continue;
      acc[c][it->second] = 1;  // once per class, however many of its concepts share the word
      reached[static_cast<size_t>(it->second)] = true;
    }
  }
  for (size_t k = 0; k < columns.size(); ++k) {
    if (!reached[k]) {
      throw std::runtime_error("the model's concept word \"" + columns[k] + "\" is named by no class of " +
                               encoder_file.string() + ".classifier.pt under the WordNet in " + wordnet_dir.string() +
                               ": not the classifier or WordNet it was trained with");
    }
  }
  auto classify = [classifier](const torch::Tensor& f) { return classifier->probabilities(f); };
  return std::make_shared<ConceptInput>(classify, class_to_word, std::move(columns));
}

ConceptInput::ConceptInput(ClassProbabilities classify, torch::Tensor class_to_word, std::vector<std::string> words)
    : classify_(std::move(classify)),
      class_to_word_(class_to_word.to(torch::kCPU, torch::kFloat).contiguous()),
      words_(std::move(words)) {
  if (class_to_word_.dim() != 2 || class_to_word_.size(1) != static_cast<int64_t>(words_.size())) {
    throw std::invalid_argument("concept input: class_to_word must be (C, " + std::to_string(words_.size()) + ")");
  }
}

torch::Tensor ConceptInput::scores(const torch::Tensor& features) const {
  torch::Tensor probs;
  {
    c10::InferenceMode guard;
    probs = classify_(features.detach().to(torch::kCPU, torch::kFloat));
  }
  if (probs.dim() != 2 || probs.size(0) != features.size(0) || probs.size(1) != class_to_word_.size(0)) {
    throw std::runtime_error("concept input: the classifier gave " + c10::str(probs.sizes()) + " for " +
                             std::to_string(features.size(0)) + " photos, expected " + std::to_string(class_to_word_.size(0)) +
                             " classes each");
  }
  torch::NoGradGuard no_grad;
  // Out of inference mode, and clamped: a sum of probabilities can round a hair above 1.
  auto s = probs.clone().matmul(class_to_word_).clamp_(0, 1);
  return s.to(features.device(), features.scalar_type());
}

}  // namespace captioner
