// CIDEr-D as coco-caption's cider_scorer.py computes it (Vedantam et al. 2015): tf-idf n-gram
// vectors with document frequencies from the evaluated references, clipped cosine similarity,
// Gaussian length penalty (sigma 6), mean over n = 1..4, averaged over references, times 10.
#pragma once

#include <string>
#include <vector>

namespace captioner::metrics {

struct CiderScore {
  double cider_d = 0;
  std::vector<double> per_image;
};

// Inputs as for compute_bleu. Two documented differences from the toolkit's oldest release: an
// n-gram order that is absent from the hypothesis or a reference contributes 0 (it produced NaN),
// as in the toolkit's later releases; and the length penalty uses the toolkit's own "length",
// which counts bigrams, not words.
CiderScore compute_cider_d(const std::vector<std::string>& hypotheses, const std::vector<std::vector<std::string>>& references);

}  // namespace captioner::metrics
