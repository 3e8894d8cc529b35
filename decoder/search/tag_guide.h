// Tag-guided captioning (--tags): the encoder's own ImageNet classifier says what a photo shows,
// WordNet turns the class into a caption word ("bald eagle" -> "bird"), and constrained beam
// search makes the caption say it. Anderson et al. 2017; the nocaps baseline guides the same way.
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <optional>
#include <vector>

#include "decoder/search/caption_search.h"
#include "encoder/encoder_info.h"
#include "encoder/image_classifier.h"
#include "vocab/tagger.h"

namespace captioner {

using ImageTags = std::vector<std::optional<Tag>>;  // one per image: its tag, if any

class TagGuide {
 public:
  // The classifier beside `encoder`'s file, WordNet from `wordnet_dir`, words from `vocab`; each
  // missing piece is a one-line error naming it. threshold: see SearchOptions::tag_threshold.
  static TagGuide load(const EncoderInfo& encoder, const Vocabulary& vocab, double threshold,
                       const std::filesystem::path& wordnet_dir = WordNet::kDefaultDir);

  // features: (N, D), the encoder's output for N photos (unmirrored) -> N tags.
  ImageTags tags(const torch::Tensor& features);
  // The same at another threshold: one guide serves callers whose thresholds differ.
  ImageTags tags(const torch::Tensor& features, double threshold);
  double threshold() const { return threshold_; }

 private:
  TagGuide(ImageClassifier classifier, Tagger tagger, double threshold)
      : classifier_(std::move(classifier)), tagger_(std::move(tagger)), threshold_(threshold) {}
  ImageClassifier classifier_;
  Tagger tagger_;
  double threshold_;
};

// What each caption must say (the tag or a kind of it; an animal as the subject: within its first
// kSubjectWithin words and after no word for people, which the classifier cannot vouch for), what
// makes guidance unneeded (a broader word: "dog" for a golden retriever) and what it must not say
// (kinds of the tag the classifier rules out: "dog" when the tag is "animal" and the dog classes
// score below 2%).
constexpr int kSubjectWithin = 5;
WordGuides word_guides(const ImageTags& tags);

}  // namespace captioner
