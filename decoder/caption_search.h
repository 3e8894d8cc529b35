// Turning next-word probabilities into captions, for many images at once: greedy decoding, beam
// search (all images' beams in one tensor) and sampling. Every method starts at <start>, stops at
// <end> or max_length words, never emits <pad>/<start>/<unk>, and returns the caption's
// log-probability under the model (the <end> token included).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "decoder/search_options.h"
#include "decoder/sequence_scorer.h"

namespace captioner {

struct Caption {
  std::vector<int64_t> tokens;  // word ids, without <start>/<end>
  double log_prob = 0;          // sum of log p(token | prefix), <end> included
  double score = 0;             // what the search ranked by (log_prob with the length penalty)
};

// features: the images' feature views, each (B, D). One Caption per image.
std::vector<Caption> greedy_search(SequenceScorer& scorer, const FeatureViews& features, const SearchOptions& options);
std::vector<Caption> beam_search(SequenceScorer& scorer, const FeatureViews& features, const SearchOptions& options);
std::vector<Caption> sample_captions(SequenceScorer& scorer, const FeatureViews& features, const SearchOptions& options);

// Dispatches on options.sample and options.beam_size. Beam search keeps the greedy caption among
// its beams, so the result is never ranked below greedy's by the search's own score.
std::vector<Caption> search_captions(SequenceScorer& scorer, const FeatureViews& features, const SearchOptions& options);

// log p(tokens, <end> | image) under teacher forcing: checks and re-ranks captions.
std::vector<double> caption_log_probs(SequenceScorer& scorer, const FeatureViews& features,
                                      const std::vector<std::vector<int64_t>>& captions);

}  // namespace captioner
