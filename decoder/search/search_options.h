// How captions are decoded: beam width, length limits and penalties, repeat blocking, sampling.
// The model bundle stores its defaults as JSON; the CLI overrides them per run.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace captioner {

struct SearchOptions {
  int beam_size = 3;                     // 1: greedy
  int max_length = 20;                   // words, not counting <end>
  int min_length = 1;                    // words before <end> may be chosen
  double length_penalty = 0.0;           // alpha: beams are ranked by log_prob / (words + 1)^alpha
  int block_ngram_repeat = 0;            // n > 0: never repeat an n-gram within a caption
  bool block_consecutive_repeat = true;  // never the same word twice in a row ("dog dog")
  bool suppress_unk = true;
  // n > 0: a word may appear at most n times in a caption (never "a woman and a woman and a
  // woman"), except those in repeat_exempt: the vocabulary's function words, filled in by
  // ModelBundle::load and not stored with the options.
  int max_word_repeats = 0;
  std::vector<int64_t> repeat_exempt;
  // > 0: tag-guided captioning (decoder/search/tag_guide.h): when the encoder's ImageNet head is this
  // sure of a concept the vocabulary can name, the caption must name it. 0: off.
  double tag_threshold = 0;
  // > 0: animal subjects, tag guidance for animals alone: when the ImageNet head is this sure of
  // an animal (and the tag_threshold is off or higher), a caption that does not name it, or names
  // a kind of it the head rules out, is made again with the animal as its subject. 0: off.
  double subject_threshold = 0;
  // > 0: mutual-information decoding (Li et al. 2016, "A Diversity-Promoting Objective Function
  // for Neural Conversation Models"): words are ranked by log p(w | photo) - mi_weight *
  // log p(w | mean photo), so a caption says what sets this photo apart rather than what every
  // photo gets. Needs the model's image prior (ModelBundle::image_prior). 0: off.
  double mi_weight = 0;
  bool sample = false;       // sample instead of searching
  double temperature = 1.0;  // sampling only
  int top_k = 0;             // sampling only: 0 = the whole vocabulary
  uint64_t seed = 0;         // sampling only
};

// What a command line may change in a model's decoding defaults; unset fields keep the model's.
struct SearchOverrides {
  int beam_size = 0;              // 0: the model's
  int max_length = 0;             // 0: the model's
  double length_penalty = -1;     // < 0: the model's
  int block_ngram_repeat = -1;    // < 0: the model's
  int max_word_repeats = -1;      // < 0: the model's
  double tag_threshold = -1;      // < 0: the model's; 0: off
  double subject_threshold = -1;  // < 0: the model's; 0: off
  double mi_weight = -1;          // < 0: the model's; 0: off
  SearchOptions applied_to(SearchOptions defaults) const;
};

// Whether two sets of options decode alike: every field compared (photos of requests with equal
// options may share a batch, decoder/pipeline/caption_service.h).
bool same_decoding(const SearchOptions& a, const SearchOptions& b);

nlohmann::json search_options_to_json(const SearchOptions& o);
// Ranges as the command line's; errors name `origin` and the entry.
SearchOptions search_options_from_json(const nlohmann::json& j, const std::string& origin);

}  // namespace captioner
