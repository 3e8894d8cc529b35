#include "datasets/metrics/ngrams.h"

namespace captioner::metrics {

std::vector<std::string_view> split_whitespace(std::string_view s) {
  std::vector<std::string_view> words;
  size_t i = 0;
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
  while (i < s.size()) {
    while (i < s.size() && space(s[i])) ++i;
    size_t start = i;
    while (i < s.size() && !space(s[i])) ++i;
    if (i > start) words.push_back(s.substr(start, i - start));
  }
  return words;
}

NgramCounts count_ngrams(const std::vector<std::string_view>& words) {
  NgramCounts counts;
  const int len = static_cast<int>(words.size());
  for (int k = 1; k <= kMaxNgram; ++k) {
    for (int i = 0; i + k <= len; ++i) {
      std::string key(words[i]);
      for (int j = 1; j < k; ++j) {
        key += ' ';
        key += words[i + j];
      }
      ++counts[k - 1][key];
    }
  }
  return counts;
}

}  // namespace captioner::metrics
