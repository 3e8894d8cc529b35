// CIDEr-D of a caption against one image's references, fast enough to score thousands of sampled
// captions per second during self-critical training. Same formula as compute_cider_d (cider.h),
// over token ids, with document frequencies fixed from a training corpus as the toolkit's
// "corpus" mode does, and the references' tf-idf vectors computed once.
#pragma once

#include <array>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace captioner::metrics {

class CiderReward {
 public:
  // references[i]: the reference captions of image i, as word ids (no <start>/<end>). Ids must be
  // in 1..65535 (n-grams are packed into 64-bit keys).
  explicit CiderReward(const std::vector<std::vector<std::vector<int64_t>>>& references);

  // CIDEr-D (x10, as the toolkit reports it) of `caption` for image `image`.
  double score(const std::vector<int64_t>& caption, size_t image) const;

 private:
  struct Vec {
    std::array<std::unordered_map<uint64_t, double>, 4> w;
    std::array<double, 4> norm{};
    int length = 0;
  };
  Vec vectorize(const std::vector<int64_t>& words) const;

  std::unordered_map<uint64_t, double> doc_freq_;
  double log_num_images_ = 0;
  std::vector<std::vector<Vec>> refs_;
};

}  // namespace captioner::metrics
