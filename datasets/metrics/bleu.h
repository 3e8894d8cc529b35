// Corpus BLEU-1..4 exactly as coco-caption's bleu_scorer.py computes it (Papineni et al. 2002):
// clipped n-gram matches summed over the corpus, p_n = (matches + 1e-15) / (guesses + 1e-9),
// 'closest' reference length (ties to the shorter), brevity penalty from the summed lengths.
#pragma once

#include <array>
#include <string>
#include <vector>

namespace captioner::metrics {

struct BleuScore {
  std::array<double, 4> bleu{};  // corpus BLEU-1..4
  // Per image: cumulative BLEU-1..4 with that image's own brevity penalty (same constants). The
  // toolkit's own per-image list is per-order precision; this one is what a reader expects.
  std::vector<std::array<double, 4>> per_image;
  long test_length = 0;   // summed hypothesis lengths
  double ref_length = 0;  // summed effective reference lengths
};

// hypotheses[i] is scored against references[i]; all are tokenized, space-separated strings.
BleuScore compute_bleu(const std::vector<std::string>& hypotheses, const std::vector<std::vector<std::string>>& references);

}  // namespace captioner::metrics
