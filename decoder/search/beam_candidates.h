// The best continuations of every image's beams at one beam-search step, read straight from the
// step's log-probabilities with the banned words skipped: no masked (R, V) copy, no top-k op.
//
// For A images with K beams each and a vocabulary of V words, image a's candidates are
//   score(k, w) = scores[a*K + k][w] + prior[a*K + k]   (float, as LibTorch adds them)
// for every beam k and word w not banned in that row; the result lists its best `take` of them,
// best first, as topk((masked + prior).view(A, K*V), take) would, with ties to the lower index
// k*V + w. Only finite scores are listed; a beam with prior -inf (an empty slot) has none.
#pragma once

#include <cstdint>
#include <vector>

namespace captioner {

struct BeamCandidate {
  float score;    // the beam's log-prob plus the word's, in float: it ranks, it is not kept
  int64_t index;  // k * V + w: beam k of its image, word w
};

// scores: (A*K, V) row-major. prior: A*K beam log-probs. banned: A*K lists of word ids, each
// sorted ascending (duplicates allowed). Returns A lists of at most `take` candidates.
std::vector<std::vector<BeamCandidate>> best_beam_candidates(const float* scores, int64_t images, int64_t beams, int64_t vocab,
                                                             const std::vector<double>& prior,
                                                             const std::vector<std::vector<int64_t>>& banned, int64_t take);

// argmax of one row with its banned words skipped, ties to the lower id (as LibTorch's argmax
// of the masked row). 0 when every word is banned or -inf.
int64_t best_allowed_word(const float* row, int64_t vocab, const std::vector<int64_t>& banned);

}  // namespace captioner
