#include "decoder/search/search_options.h"

#include <nlohmann/json.hpp>

#include "datasets/json_util.h"

namespace captioner {

using nlohmann::json;

SearchOptions SearchOverrides::applied_to(SearchOptions o) const {
  if (beam_size > 0) o.beam_size = beam_size;
  if (max_length > 0) o.max_length = max_length;
  if (length_penalty >= 0) o.length_penalty = length_penalty;
  if (block_ngram_repeat >= 0) o.block_ngram_repeat = block_ngram_repeat;
  if (max_word_repeats >= 0) o.max_word_repeats = max_word_repeats;
  if (tag_threshold >= 0) o.tag_threshold = tag_threshold;
  if (subject_threshold >= 0) o.subject_threshold = subject_threshold;
  if (mi_weight >= 0) o.mi_weight = mi_weight;
  return o;
}

bool same_decoding(const SearchOptions& a, const SearchOptions& b) {
  return a.beam_size == b.beam_size && a.max_length == b.max_length && a.min_length == b.min_length &&
         a.length_penalty == b.length_penalty && a.block_ngram_repeat == b.block_ngram_repeat &&
         a.block_consecutive_repeat == b.block_consecutive_repeat && a.suppress_unk == b.suppress_unk &&
         a.max_word_repeats == b.max_word_repeats && a.repeat_exempt == b.repeat_exempt && a.tag_threshold == b.tag_threshold &&
         a.subject_threshold == b.subject_threshold && a.mi_weight == b.mi_weight && a.sample == b.sample &&
         a.temperature == b.temperature && a.top_k == b.top_k && a.seed == b.seed;
}

json search_options_to_json(const SearchOptions& o) {
  return json{{"beam_size", o.beam_size},
              {"max_length", o.max_length},
              {"min_length", o.min_length},
              {"length_penalty", o.length_penalty},
              {"block_ngram_repeat", o.block_ngram_repeat},
              {"block_consecutive_repeat", o.block_consecutive_repeat},
              {"suppress_unk", o.suppress_unk},
              {"max_word_repeats", o.max_word_repeats},
              {"tag_threshold", o.tag_threshold},
              {"subject_threshold", o.subject_threshold},
              {"mi_weight", o.mi_weight}};
}

SearchOptions search_options_from_json(const json& j, const std::string& origin) {
  SearchOptions o;
  JsonView v(j, origin, "search");
  if (v.has("beam_size")) o.beam_size = static_cast<int>(v.at("beam_size").as_int());
  if (v.has("max_length")) o.max_length = static_cast<int>(v.at("max_length").as_int());
  if (v.has("min_length")) o.min_length = static_cast<int>(v.at("min_length").as_int());
  if (v.has("length_penalty")) o.length_penalty = v.at("length_penalty").as_number();
  if (v.has("block_ngram_repeat")) o.block_ngram_repeat = static_cast<int>(v.at("block_ngram_repeat").as_int());
  if (v.has("block_consecutive_repeat")) o.block_consecutive_repeat = v.at("block_consecutive_repeat").as_bool();
  if (v.has("suppress_unk")) o.suppress_unk = v.at("suppress_unk").as_bool();
  if (v.has("max_word_repeats")) o.max_word_repeats = static_cast<int>(v.at("max_word_repeats").as_int());
  if (v.has("tag_threshold")) o.tag_threshold = v.at("tag_threshold").as_number();
  if (v.has("subject_threshold")) o.subject_threshold = v.at("subject_threshold").as_number();
  if (v.has("mi_weight")) o.mi_weight = v.at("mi_weight").as_number();
  // The same ranges the command line accepts: a hand-edited 100000-wide beam would otherwise
  // allocate gigabytes before failing inside LibTorch.
  auto range = [&](const char* key, int value, int lo, int hi) {
    if (value < lo || value > hi) v.at(key).fail("must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  };
  if (v.has("beam_size")) range("beam_size", o.beam_size, 1, 64);
  if (v.has("max_length")) range("max_length", o.max_length, 1, 200);
  if (v.has("min_length")) range("min_length", o.min_length, 0, 200);
  if (v.has("block_ngram_repeat")) range("block_ngram_repeat", o.block_ngram_repeat, 0, 10);
  if (v.has("max_word_repeats")) range("max_word_repeats", o.max_word_repeats, 0, 10);
  if (v.has("length_penalty") && !(o.length_penalty >= 0 && o.length_penalty <= 10)) {
    v.at("length_penalty").fail("must be between 0 and 10");
  }
  auto unit = [&](const char* key, double value) {
    if (v.has(key) && !(value >= 0 && value <= 1)) v.at(key).fail("must be between 0 and 1");
  };
  unit("tag_threshold", o.tag_threshold);
  unit("subject_threshold", o.subject_threshold);
  if (v.has("mi_weight") && !(o.mi_weight >= 0 && o.mi_weight < 1)) v.at("mi_weight").fail("must be at least 0 and below 1");
  return o;
}

}  // namespace captioner
