// Tag-guided captioning: the encoder's own ImageNet classifier says what a photo shows, WordNet
// turns the class into a caption word ("bald eagle" -> "bird"), and constrained beam search makes
// the caption say it. Anderson et al. 2017; the nocaps baseline guides the same way.
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "decoder/search/caption_search.h"
#include "decoder/search/search_options.h"
#include "encoder/encoder_info.h"
#include "encoder/image_classifier.h"
#include "vocab/tagger.h"

namespace captioner {

using ImageTags = std::vector<std::optional<Tag>>;  // one per image: its tag, if any

// Whether `search` asks for tags at all (SearchOptions::tag_threshold or subject_threshold).
bool uses_tags(const SearchOptions& search);

class TagGuide {
 public:
  // The classifier beside `encoder`'s file, WordNet from `wordnet_dir`, words from `vocab`; each
  // missing piece is a one-line error naming it.
  static TagGuide load(const EncoderInfo& encoder, const Vocabulary& vocab,
                       const std::filesystem::path& wordnet_dir = WordNet::kDefaultDir);

  // features: (N, D), the encoder's output for N photos (unmirrored) -> N tags: those that guide
  // under `search` (any concept at tag_threshold, an animal at subject_threshold), else none.
  ImageTags tags(const torch::Tensor& features, const SearchOptions& search);

 private:
  TagGuide(ImageClassifier classifier, Tagger tagger) : classifier_(std::move(classifier)), tagger_(std::move(tagger)) {}
  ImageClassifier classifier_;
  Tagger tagger_;
};

// The guide `search` asks for, or none when it uses no tags. Animal subjects alone (a model's
// default, not a request) are not worth failing a run over: without the classifier file or
// WordNet they are off and `warning` says why in one line; with tag_threshold > 0 that is an error.
std::optional<TagGuide> load_tag_guide(const EncoderInfo& encoder, const Vocabulary& vocab, const SearchOptions& search,
                                       std::string& warning);

// What each caption must say (the tag, or a kind of it the classifier holds more likely present
// than not; an animal as the subject: within its first kSubjectWithin words and after no word for
// people, which the classifier cannot vouch for), what makes guidance unneeded (any kind it does
// not rule out; a broader word: "dog" for a golden retriever) and what it must not say (kinds of
// the tag the classifier rules out: "dog" when the tag is "animal" and the dog classes score below
// 2%).
// Tags that guide only as animal subjects (SearchOptions::subject_threshold) leave a caption
// that leads with a person as it is, unless the classifier gives the animal kOverridesPeople.
constexpr int kSubjectWithin = 5;
constexpr double kOverridesPeople = 0.99;
WordGuides word_guides(const ImageTags& tags, const SearchOptions& search);

}  // namespace captioner
