// Turning next-word probabilities into captions, for many images at once: greedy decoding, beam
// search (all images' beams in one tensor) and sampling. Every method starts at <start>, stops at
// <end> or max_length words, never emits <pad>/<start>/<unk>, and returns the caption's
// log-probability under the model (the <end> token included).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "decoder/sequence_scorer.h"

namespace captioner {

struct SearchOptions {
  int beam_size = 3;              // 1: greedy
  int max_length = 20;            // words, not counting <end>
  int min_length = 1;             // words before <end> may be chosen
  double length_penalty = 0.0;    // alpha: beams are ranked by log_prob / (words + 1)^alpha
  int block_ngram_repeat = 0;     // n > 0: never repeat an n-gram within a caption
  bool block_consecutive_repeat = true;  // never the same word twice in a row ("dog dog")
  bool suppress_unk = true;
  bool sample = false;            // sample instead of searching
  double temperature = 1.0;       // sampling only
  int top_k = 0;                  // sampling only: 0 = the whole vocabulary
  uint64_t seed = 0;              // sampling only
};

struct Caption {
  std::vector<int64_t> tokens;    // word ids, without <start>/<end>
  double log_prob = 0;            // sum of log p(token | prefix), <end> included
  double score = 0;               // what the search ranked by (log_prob with the length penalty)
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
