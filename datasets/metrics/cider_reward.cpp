#include "datasets/metrics/cider_reward.h"

#include <cmath>
#include <stdexcept>
#include <unordered_set>

namespace captioner::metrics {

namespace {
constexpr double kSigma = 6.0;

// All 1..4-grams with their counts; key = ids packed 16 bits each (no id is 0, so the order is
// implied by the number of non-zero slots).
std::unordered_map<uint64_t, int> ngram_counts(const std::vector<int64_t>& w) {
  std::unordered_map<uint64_t, int> counts;
  for (size_t i = 0; i < w.size(); ++i) {
    uint64_t key = 0;
    for (size_t k = 0; k < 4 && i + k < w.size(); ++k) {
      if (w[i + k] <= 0 || w[i + k] > 0xFFFF) throw std::invalid_argument("CIDEr reward: word id out of range");
      key |= static_cast<uint64_t>(w[i + k]) << (16 * k);
      ++counts[key];
    }
  }
  return counts;
}

int order_of(uint64_t key) {
  int n = 0;
  while (key) {
    ++n;
    key >>= 16;
  }
  return n;
}
}  // namespace

CiderReward::CiderReward(const std::vector<std::vector<std::vector<int64_t>>>& references) {
  for (const auto& refs : references) {
    std::unordered_set<uint64_t> seen;
    for (const auto& r : refs) {
      for (const auto& kv : ngram_counts(r)) seen.insert(kv.first);
    }
    for (uint64_t k : seen) doc_freq_[k] += 1;
  }
  log_num_images_ = std::log(static_cast<double>(std::max<size_t>(1, references.size())));
  refs_.reserve(references.size());
  for (const auto& refs : references) {
    std::vector<Vec> v;
    for (const auto& r : refs) v.push_back(vectorize(r));
    refs_.push_back(std::move(v));
  }
}

CiderReward::Vec CiderReward::vectorize(const std::vector<int64_t>& words) const {
  Vec v;
  for (const auto& [key, tf] : ngram_counts(words)) {
    auto it = doc_freq_.find(key);
    double df = std::log(std::max(1.0, it == doc_freq_.end() ? 0.0 : it->second));
    int n = order_of(key) - 1;
    double x = tf * (log_num_images_ - df);
    v.w[n][key] = x;
    v.norm[n] += x * x;
    if (n == 1) v.length += tf;  // the toolkit's length counts bigrams
  }
  for (auto& x : v.norm) x = std::sqrt(x);
  return v;
}

double CiderReward::score(const std::vector<int64_t>& caption, size_t image) const {
  const auto& refs = refs_.at(image);
  if (refs.empty()) return 0.0;
  Vec hyp = vectorize(caption);
  double total = 0;
  for (const auto& ref : refs) {
    double delta = hyp.length - ref.length;
    double penalty = std::pow(M_E, -(delta * delta) / (2 * kSigma * kSigma));
    for (int n = 0; n < 4; ++n) {
      double val = 0;
      for (const auto& [key, x] : hyp.w[n]) {
        auto it = ref.w[n].find(key);
        if (it != ref.w[n].end()) val += std::min(x, it->second) * it->second;
      }
      if (hyp.norm[n] != 0 && ref.norm[n] != 0) val /= hyp.norm[n] * ref.norm[n];
      total += val * penalty;
    }
  }
  return total / 4.0 / static_cast<double>(refs.size()) * 10.0;
}

}  // namespace captioner::metrics
