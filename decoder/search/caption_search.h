// Turning next-word probabilities into captions, for many images at once: greedy decoding, beam
// search (all images' beams in one tensor) and sampling. Every method starts at <start>, stops at
// <end> or max_length words, never emits <pad>/<start>/<unk>, and returns the caption's
// log-probability under the model (the <end> token included).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "decoder/search/search_options.h"
#include "decoder/search/sequence_scorer.h"

namespace captioner {

struct Caption {
  std::vector<int64_t> tokens;  // word ids, without <start>/<end>
  double log_prob = 0;          // sum of log p(token | prefix), <end> included
  double score = 0;             // what the search ranked by (log_prob with the length penalty)
};

// What one image's caption must say and must not: at least one of `required` (none: no
// constraint), none of `banned`.
struct WordGuide {
  std::vector<int64_t> required;
  std::vector<int64_t> banned;
  // The required word as the caption's subject: said within the first `within` words (0:
  // anywhere), and none of `banned_before` before it ("a man in a blue shirt ... a bird").
  int within = 0;
  std::vector<int64_t> banned_before;
  std::vector<int64_t> also_met_by;  // words that do not satisfy the search but make a guide unneeded
  // A caption that says one of these within its first `within` words (0: anywhere), before any
  // required word, and no banned word, makes the guide unneeded too ("a man ..." against an animal).
  std::vector<int64_t> trusted_leads;
  bool empty() const { return required.empty() && banned.empty(); }
};
using WordGuides = std::vector<WordGuide>;  // one per image

// features: the images' feature views, each (B, D). One Caption per image.
std::vector<Caption> greedy_search(SequenceScorer& scorer, const FeatureViews& features, const SearchOptions& options);
std::vector<Caption> beam_search(SequenceScorer& scorer, const FeatureViews& features, const SearchOptions& options);
// Constrained beam search (Anderson et al. 2017, "Guided Open Vocabulary Image Captioning with
// Constrained Beam Search"), for one disjunctive constraint: K beams that have not yet said a
// required word and K that have. The best caption that has said one wins; an image whose
// constraint no caption meets within max_length gets its best unconstrained-state caption, which
// avoids the required words, or, when a `within` closed that state too, an empty caption scored
// -inf. Banned words are never chosen.
std::vector<Caption> constrained_beam_search(SequenceScorer& scorer, const FeatureViews& features, const SearchOptions& options,
                                             const WordGuides& guides);
std::vector<Caption> sample_captions(SequenceScorer& scorer, const FeatureViews& features, const SearchOptions& options);

// Dispatches on options.sample and options.beam_size (sampling ignores guides). A guide is a
// second opinion: every image first gets the caption it would get without one, and an image whose
// caption says none of its required words (or says a banned one) is captioned again by
// constrained beam search, keeping the first caption when no caption meets the guide. Beam search keeps the greedy caption among
// its beams, so the result is never ranked below greedy's by the search's own score. When the
// scorer ranks by something other than its model's log-probabilities (MI decoding), `score` is
// what the search ranked by and `log_prob` still the model's (SequenceScorer::last_model_log_probs).
std::vector<Caption> search_captions(SequenceScorer& scorer, const FeatureViews& features, const SearchOptions& options,
                                     const WordGuides& guides = {});

// log p(tokens, <end> | image) under teacher forcing: checks and re-ranks captions.
std::vector<double> caption_log_probs(SequenceScorer& scorer, const FeatureViews& features,
                                      const std::vector<std::vector<int64_t>>& captions);

}  // namespace captioner
