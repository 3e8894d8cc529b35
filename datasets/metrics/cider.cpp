#include "datasets/metrics/cider.h"

#include <array>
#include <cmath>
#include <stdexcept>

#include "datasets/metrics/ngrams.h"

namespace captioner::metrics {

namespace {
constexpr int kN = 4;
constexpr double kSigma = 6.0;

struct TfIdf {
  std::array<std::unordered_map<std::string, double>, kN> vec;
  std::array<double, kN> norm{};
  int length = 0;  // the toolkit counts bigram occurrences here (its `n == 1` test is 0-based)
};

using DocFreq = std::array<std::unordered_map<std::string, double>, kN>;

TfIdf to_vector(const NgramCounts& counts, const DocFreq& doc_freq, double ref_len) {
  TfIdf out;
  for (int n = 0; n < kN; ++n) {
    for (const auto& [ngram, tf] : counts[n]) {
      auto it = doc_freq[n].find(ngram);
      double df = std::log(std::max(1.0, it == doc_freq[n].end() ? 0.0 : it->second));
      double v = static_cast<double>(tf) * (ref_len - df);
      out.vec[n][ngram] = v;
      out.norm[n] += v * v;
      if (n == 1) out.length += tf;
    }
  }
  for (auto& x : out.norm) x = std::sqrt(x);
  return out;
}

std::array<double, kN> similarity(const TfIdf& hyp, const TfIdf& ref) {
  double delta = static_cast<double>(hyp.length - ref.length);
  std::array<double, kN> val{};
  for (int n = 0; n < kN; ++n) {
    for (const auto& [ngram, v] : hyp.vec[n]) {
      auto it = ref.vec[n].find(ngram);
      double r = it == ref.vec[n].end() ? 0.0 : it->second;
      val[n] += std::min(v, r) * r;  // clipped
    }
    if (hyp.norm[n] != 0 && ref.norm[n] != 0) val[n] /= hyp.norm[n] * ref.norm[n];
    val[n] *= std::pow(M_E, -(delta * delta) / (2 * kSigma * kSigma));
  }
  return val;
}
}  // namespace

CiderScore compute_cider_d(const std::vector<std::string>& hypotheses, const std::vector<std::vector<std::string>>& references) {
  if (hypotheses.size() != references.size()) {
    throw std::invalid_argument("CIDEr-D: " + std::to_string(hypotheses.size()) + " hypotheses but " +
                                std::to_string(references.size()) + " reference sets");
  }
  const size_t num = hypotheses.size();
  std::vector<NgramCounts> test(num);
  std::vector<std::vector<NgramCounts>> refs(num);
  DocFreq doc_freq;
  for (size_t i = 0; i < num; ++i) {
    if (references[i].empty()) throw std::invalid_argument("CIDEr-D: image " + std::to_string(i) + " has no references");
    test[i] = count_ngrams(split_whitespace(hypotheses[i]));
    std::array<std::unordered_map<std::string, bool>, kN> seen;
    for (const auto& r : references[i]) {
      refs[i].push_back(count_ngrams(split_whitespace(r)));
      for (int n = 0; n < kN; ++n) {
        for (const auto& kv : refs[i].back()[n]) seen[n].emplace(kv.first, true);
      }
    }
    for (int n = 0; n < kN; ++n) {
      for (const auto& kv : seen[n]) doc_freq[n][kv.first] += 1;
    }
  }
  CiderScore out;
  if (num == 0) return out;
  double ref_len = std::log(static_cast<double>(num));
  double sum = 0;
  for (size_t i = 0; i < num; ++i) {
    TfIdf hyp = to_vector(test[i], doc_freq, ref_len);
    std::array<double, kN> score{};
    for (const auto& r : refs[i]) {
      auto s = similarity(hyp, to_vector(r, doc_freq, ref_len));
      for (int n = 0; n < kN; ++n) score[n] += s[n];
    }
    double avg = (score[0] + score[1] + score[2] + score[3]) / kN;
    avg /= static_cast<double>(refs[i].size());
    avg *= 10.0;
    out.per_image.push_back(avg);
    sum += avg;
  }
  out.cider_d = sum / static_cast<double>(num);
  return out;
}

}  // namespace captioner::metrics
