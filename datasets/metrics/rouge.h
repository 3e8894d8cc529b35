// ROUGE-L as coco-caption's rouge.py computes it (Lin 2004): longest common subsequence against
// each reference, the best precision and best recall combined with beta = 1.2, mean over images.
#pragma once

#include <string>
#include <vector>

namespace captioner::metrics {

struct RougeScore {
  double rouge_l = 0;
  std::vector<double> per_image;
};

// Like the toolkit, sentences are split on single spaces, so an empty sentence is one empty token.
RougeScore compute_rouge_l(const std::vector<std::string>& hypotheses, const std::vector<std::vector<std::string>>& references);

}  // namespace captioner::metrics
