// Concept scores as decoder input (train --concept-input): the encoder's own ImageNet classifier,
// summed into caption words through WordNet ("bald eagle 0.72, kite 0.27" -> bird 0.99, eagle 0.72,
// animal 0.99, ...), joins the image features, so the decoder learns from the training captions
// when to trust what the classifier says. In the spirit of Wu et al. 2016 ("What value do explicit
// high level concepts have in vision to language problems?"), with ImageNet's classes as concepts.
//
//   v = [f ; s],  s = P^T softmax(W_cls f + b_cls)
// f (B, D) encoder features; W_cls (C, D) the classifier; P (C, K) 1 where class c is a kind of
// concept word k; s (B, K) each word's summed probability, in [0, 1].
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "vocab/vocabulary.h"
#include "vocab/wordnet.h"

namespace captioner {

class ConceptInput {
 public:
  using ClassProbabilities = std::function<torch::Tensor(const torch::Tensor&)>;  // (B, D) -> (B, C)

  // The classifier beside `encoder_file`, WordNet from `wordnet_dir`, words of `vocab`. `words`
  // empty: every word the classes can be summed into (a new model); otherwise exactly those, in
  // that order (a saved model), and a word no class reaches any more is a one-line error.
  static std::shared_ptr<ConceptInput> load(const std::filesystem::path& encoder_file, int64_t feature_dim,
                                            const Vocabulary& vocab, const std::vector<std::string>& words = {},
                                            const std::filesystem::path& wordnet_dir = WordNet::kDefaultDir);

  // class_to_word (C, K) float: P above; words: its K columns' names.
  ConceptInput(ClassProbabilities classify, torch::Tensor class_to_word, std::vector<std::string> words);

  // features (B, D), any device -> (B, K) concept scores on the same device; never differentiated.
  torch::Tensor scores(const torch::Tensor& features) const;
  const std::vector<std::string>& words() const { return words_; }

 private:
  ClassProbabilities classify_;
  torch::Tensor class_to_word_;  // (C, K) float, CPU
  std::vector<std::string> words_;
};

}  // namespace captioner
