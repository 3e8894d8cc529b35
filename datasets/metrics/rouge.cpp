#include "datasets/metrics/rouge.h"

#include <algorithm>
#include <stdexcept>
#include <string_view>

namespace captioner::metrics {

namespace {
constexpr double kBeta = 1.2;

std::vector<std::string_view> split_spaces(std::string_view s) {  // Python's str.split(" ")
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    size_t sp = s.find(' ', start);
    out.push_back(s.substr(start, sp == std::string_view::npos ? std::string_view::npos : sp - start));
    if (sp == std::string_view::npos) break;
    start = sp + 1;
  }
  return out;
}

size_t lcs(const std::vector<std::string_view>& a, const std::vector<std::string_view>& b) {
  std::vector<size_t> prev(b.size() + 1, 0), cur(b.size() + 1, 0);
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}
}  // namespace

RougeScore compute_rouge_l(const std::vector<std::string>& hypotheses, const std::vector<std::vector<std::string>>& references) {
  if (hypotheses.size() != references.size()) {
    throw std::invalid_argument("ROUGE-L: " + std::to_string(hypotheses.size()) + " hypotheses but " +
                                std::to_string(references.size()) + " reference sets");
  }
  RougeScore out;
  double sum = 0;
  for (size_t i = 0; i < hypotheses.size(); ++i) {
    if (references[i].empty()) throw std::invalid_argument("ROUGE-L: image " + std::to_string(i) + " has no references");
    auto cand = split_spaces(hypotheses[i]);
    double prec_max = 0, rec_max = 0;
    for (const auto& ref : references[i]) {
      auto r = split_spaces(ref);
      double l = static_cast<double>(lcs(r, cand));
      prec_max = std::max(prec_max, l / static_cast<double>(cand.size()));
      rec_max = std::max(rec_max, l / static_cast<double>(r.size()));
    }
    double score = 0;
    if (prec_max != 0 && rec_max != 0) {
      score = ((1 + kBeta * kBeta) * prec_max * rec_max) / (rec_max + kBeta * kBeta * prec_max);
    }
    out.per_image.push_back(score);
    sum += score;
  }
  out.rouge_l = hypotheses.empty() ? 0.0 : sum / static_cast<double>(hypotheses.size());
  return out;
}

}  // namespace captioner::metrics
