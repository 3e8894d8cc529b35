#include "decoder/search/tag_guide.h"

#include <algorithm>
#include <stdexcept>

namespace captioner {

bool uses_tags(const SearchOptions& search) { return search.tag_threshold > 0 || search.subject_threshold > 0; }

TagGuide TagGuide::load(const EncoderInfo& encoder, const Vocabulary& vocab, const std::filesystem::path& wordnet_dir) {
  auto classifier = ImageClassifier::load_beside(encoder.model_file, encoder.feature_dim);
  auto tagger = Tagger::build(classifier.labels(), WordNet::open(wordnet_dir), vocab);
  return TagGuide(std::move(classifier), std::move(tagger));
}

std::optional<TagGuide> load_tag_guide(const EncoderInfo& encoder, const Vocabulary& vocab, const SearchOptions& search,
                                       std::string& warning) {
  if (!uses_tags(search)) return std::nullopt;
  try {
    return TagGuide::load(encoder, vocab);
  } catch (const std::exception& e) {
    if (search.tag_threshold > 0) throw;
    const std::string what = e.what();
    warning = "animal subjects are off: " + what.substr(0, what.find('\n'));
    return std::nullopt;
  }
}

ImageTags TagGuide::tags(const torch::Tensor& features, const SearchOptions& search) {
  const double all = search.tag_threshold, animals = search.subject_threshold;
  for (double t : {all, animals}) {
    if (!(t >= 0 && t <= 1)) throw std::invalid_argument("tag thresholds must be in [0, 1]");
  }
  if (!uses_tags(search)) return ImageTags(static_cast<size_t>(features.size(0)));
  // The most specific concept at the lower threshold; then whether it may guide.
  const double threshold = all > 0 && animals > 0 ? std::min(all, animals) : std::max(all, animals);
  auto probs = classifier_.probabilities(features).contiguous();
  ImageTags out;
  const int64_t C = probs.size(1);
  for (int64_t i = 0; i < probs.size(0); ++i) {
    const float* row = probs[i].data_ptr<float>();
    const std::vector<float> p(row, row + C);
    auto tag = tagger_.tag(p, threshold);
    const auto guides = [&](const std::optional<Tag>& t) {
      return t && ((all > 0 && t->probability >= all) || (animals > 0 && t->animal && t->probability >= animals));
    };
    // An object at the lower (animal) threshold guides nothing; a broader concept may at `all`.
    if (!guides(tag) && all > threshold) tag = tagger_.tag(p, all);
    out.push_back(guides(tag) ? std::move(tag) : std::nullopt);
  }
  return out;
}

WordGuides word_guides(const ImageTags& tags, const SearchOptions& search) {
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
    // A kind the classifier does not rule out meets the tag in a caption the model wrote, but a
    // caption made again names the tag or a kind it holds likely (Tag::named_by).
    std::vector<int64_t> met_by = tag->broader;
    for (int64_t w : tag->satisfied_by) {
      if (std::find(tag->named_by.begin(), tag->named_by.end(), w) == tag->named_by.end()) met_by.push_back(w);
    }
    // Guided as an animal subject alone (not at tag_threshold), a caption about people is kept
    // unless it names a ruled-out animal or the classifier is all but certain: it has no people
    // to see, and on the held-out photos it put 0.92-0.97 on an animal in five photos of people
    // (and in two where the person was the model's mistake), never 0.99 (docs/ablation.md).
    const bool any_tag = search.tag_threshold > 0 && tag->probability >= search.tag_threshold;
    const bool trust_people = subject && !any_tag && tag->probability < kOverridesPeople;
    out.push_back(WordGuide{tag->named_by, tag->ruled_out, subject ? kSubjectWithin : 0,
                            subject ? tag->people : std::vector<int64_t>{}, std::move(met_by),
                            trust_people ? tag->people : std::vector<int64_t>{}});
  }
  return out;
}

}  // namespace captioner
