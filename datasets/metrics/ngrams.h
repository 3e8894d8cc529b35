// N-gram counting shared by BLEU and CIDEr-D: the toolkit's precook(), which splits on whitespace
// and counts every 1..n-gram of a sentence.
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace captioner::metrics {

constexpr int kMaxNgram = 4;

// counts[n - 1]: the n-grams of order n, words joined by ' ' (words never contain a space,
// being whitespace-split). One table per order: a token may contain any other byte.
using NgramCounts = std::array<std::unordered_map<std::string, int>, kMaxNgram>;

std::vector<std::string_view> split_whitespace(std::string_view s);

// Counts of all n-grams of order 1..kMaxNgram.
NgramCounts count_ngrams(const std::vector<std::string_view>& words);

}  // namespace captioner::metrics
