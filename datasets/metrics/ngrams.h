// N-gram counting shared by BLEU and CIDEr-D: the toolkit's precook(), which splits on whitespace
// and counts every 1..n-gram of a sentence.
#pragma once

#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace captioner::metrics {

// Key: the n-gram's words joined by '\x1f' (a byte no caption token contains).
using NgramCounts = std::unordered_map<std::string, int>;

std::vector<std::string_view> split_whitespace(std::string_view s);

// Counts of all n-grams of order 1..max_n; `order_of` is implied by the number of separators.
NgramCounts count_ngrams(const std::vector<std::string_view>& words, int max_n);

inline int ngram_order(const std::string& key) {
  int n = 1;
  for (char c : key) n += (c == '\x1f');
  return n;
}

}  // namespace captioner::metrics
