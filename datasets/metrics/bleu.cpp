#include "datasets/metrics/bleu.h"

#include <cmath>
#include <cstdlib>
#include <stdexcept>

#include "datasets/metrics/ngrams.h"

namespace captioner::metrics {

namespace {
constexpr int kN = 4;
constexpr double kSmall = 1e-9;
constexpr double kTiny = 1e-15;

// The toolkit multiplies the precisions in order and takes the 1/n-th power; the same order of
// floating-point operations keeps results identical to the last bit in practice.
std::array<double, kN> cumulative(const std::array<long, kN>& correct, const std::array<long, kN>& guess, double test_len,
                                  double ref_len) {
  std::array<double, kN> out{};
  double ratio = (test_len + kTiny) / (ref_len + kSmall);
  for (int nn = 1; nn <= kN; ++nn) {
    double b = 1.0;
    for (int k = 0; k < nn; ++k) b *= (static_cast<double>(correct[k]) + kTiny) / (static_cast<double>(guess[k]) + kSmall);
    out[nn - 1] = std::pow(b, 1.0 / nn);
    if (ratio < 1) out[nn - 1] *= std::exp(1 - 1 / ratio);
  }
  return out;
}
}  // namespace

BleuScore compute_bleu(const std::vector<std::string>& hypotheses, const std::vector<std::vector<std::string>>& references) {
  if (hypotheses.size() != references.size()) {
    throw std::invalid_argument("BLEU: " + std::to_string(hypotheses.size()) + " hypotheses but " +
                                std::to_string(references.size()) + " reference sets");
  }
  BleuScore score;
  std::array<long, kN> total_correct{}, total_guess{};
  score.per_image.reserve(hypotheses.size());
  for (size_t i = 0; i < hypotheses.size(); ++i) {
    if (references[i].empty()) throw std::invalid_argument("BLEU: image " + std::to_string(i) + " has no references");
    // cook_refs: for every n-gram, the largest count in any one reference.
    NgramCounts max_ref;  // per order: the largest count of each n-gram in any one reference
    std::vector<long> ref_lens;
    for (const auto& ref : references[i]) {
      auto words = split_whitespace(ref);
      ref_lens.push_back(static_cast<long>(words.size()));
      auto counts = count_ngrams(words);
      for (int k = 0; k < kN; ++k) {
        for (auto& [ngram, count] : counts[k]) {
          int& m = max_ref[k][ngram];
          if (count > m) m = count;
        }
      }
    }
    // cook_test
    auto words = split_whitespace(hypotheses[i]);
    long test_len = static_cast<long>(words.size());
    std::array<long, kN> correct{}, guess{};
    for (int k = 1; k <= kN; ++k) guess[k - 1] = std::max(0L, test_len - k + 1);
    auto counts = count_ngrams(words);
    for (int k = 0; k < kN; ++k) {
      for (auto& [ngram, count] : counts[k]) {
        auto it = max_ref[k].find(ngram);
        if (it != max_ref[k].end()) correct[k] += std::min(count, it->second);
      }
    }
    // 'closest' reference length: min over (|l - testlen|, l), so ties go to the shorter one.
    long best = ref_lens[0];
    for (long l : ref_lens) {
      long d = std::labs(l - test_len), db = std::labs(best - test_len);
      if (d < db || (d == db && l < best)) best = l;
    }
    score.test_length += test_len;
    score.ref_length += static_cast<double>(best);
    for (int k = 0; k < kN; ++k) {
      total_correct[k] += correct[k];
      total_guess[k] += guess[k];
    }
    score.per_image.push_back(cumulative(correct, guess, static_cast<double>(test_len), static_cast<double>(best)));
  }
  score.bleu = cumulative(total_correct, total_guess, static_cast<double>(score.test_length), score.ref_length);
  return score;
}

}  // namespace captioner::metrics
