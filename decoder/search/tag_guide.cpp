#include "decoder/search/tag_guide.h"

#include <stdexcept>

namespace captioner {

TagGuide TagGuide::load(const EncoderInfo& encoder, const Vocabulary& vocab, double threshold,
                        const std::filesystem::path& wordnet_dir) {
  if (!(threshold > 0 && threshold <= 1)) throw std::invalid_argument("tag threshold must be in (0, 1]");
  auto classifier = ImageClassifier::load_beside(encoder.model_file, encoder.feature_dim);
  auto tagger = Tagger::build(classifier.labels(), WordNet::open(wordnet_dir), vocab);
  return TagGuide(std::move(classifier), std::move(tagger), threshold);
}

ImageTags TagGuide::tags(const torch::Tensor& features) { return tags(features, threshold_); }

ImageTags TagGuide::tags(const torch::Tensor& features, double threshold) {
  if (!(threshold > 0 && threshold <= 1)) throw std::invalid_argument("tag threshold must be in (0, 1]");
  auto probs = classifier_.probabilities(features).contiguous();
  ImageTags out;
  const int64_t C = probs.size(1);
  for (int64_t i = 0; i < probs.size(0); ++i) {
    const float* row = probs[i].data_ptr<float>();
    out.push_back(tagger_.tag(std::vector<float>(row, row + C), threshold));
  }
  return out;
}

WordGuides word_guides(const ImageTags& tags) {
  WordGuides out;
  for (const auto& tag : tags) {
    if (!tag) {
      out.emplace_back();
      continue;
    }
    // An animal is the subject (issue 32): "a black and white dog" names it by the fifth word, after
    // no person. Other tags may come anywhere: a swimsuit or a roof as the subject of a Flickr8k
    // sentence cost 0.02 held-out BLEU-4 (docs/ablation.md).
    const bool subject = tag->animal && !tag->people.empty();
    out.push_back(WordGuide{tag->satisfied_by, tag->ruled_out, subject ? kSubjectWithin : 0,
                            subject ? tag->people : std::vector<int64_t>{}, tag->broader});
  }
  return out;
}

}  // namespace captioner
