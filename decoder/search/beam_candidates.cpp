#include "decoder/search/beam_candidates.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

namespace captioner {

namespace {

constexpr int64_t kChunk = 16;

// Whether any of x[0..16) + prior beats `bar`. Nearly every chunk of a row fails once the list is
// full, so this test is where the time goes, not the insertion. Four 4-wide vectors (GCC/Clang
// vector extensions: SSE2 on any x86-64), since the compiler does not vectorise the plain loop.
using Float4 = float __attribute__((vector_size(16)));
using Int4 = int32_t __attribute__((vector_size(16)));
static_assert(kChunk == 16, "any_above reads four 4-wide vectors");

inline bool any_above(const float* x, float prior, float bar) {
  Float4 v[4];
  std::memcpy(v, x, sizeof v);
  const Int4 above = ((v[0] + prior) > bar) | ((v[1] + prior) > bar) | ((v[2] + prior) > bar) | ((v[3] + prior) > bar);
  return (above[0] | above[1] | above[2] | above[3]) != 0;
}

bool is_banned(const std::vector<int64_t>& banned, int64_t w) { return std::binary_search(banned.begin(), banned.end(), w); }

// Inserts c into `best` (sorted best first, at most `take` long) after any equal scores, so that
// candidates met in index order keep ties in index order.
void insert(std::vector<BeamCandidate>& best, BeamCandidate c, size_t take) {
  auto at =
      std::upper_bound(best.begin(), best.end(), c.score, [](float score, const BeamCandidate& b) { return score > b.score; });
  if (best.size() == take) {
    if (at == best.end()) return;
    best.pop_back();
  }
  best.insert(at, c);
}

}  // namespace

std::vector<std::vector<BeamCandidate>> best_beam_candidates(const float* scores, int64_t images, int64_t beams, int64_t vocab,
                                                             const std::vector<double>& prior,
                                                             const std::vector<std::vector<int64_t>>& banned, int64_t take) {
  const auto rows = static_cast<size_t>(images * beams);
  if (prior.size() != rows || banned.size() != rows) throw std::invalid_argument("one prior and one ban list per beam expected");
  if (take < 1) throw std::invalid_argument("take must be >= 1");
  const float ninf = -std::numeric_limits<float>::infinity();
  std::vector<std::vector<BeamCandidate>> out(static_cast<size_t>(images));
  for (int64_t a = 0; a < images; ++a) {
    auto& best = out[static_cast<size_t>(a)];
    best.reserve(static_cast<size_t>(take) + 1);
    for (int64_t k = 0; k < beams; ++k) {
      const int64_t r = a * beams + k;
      // The same float sum LibTorch forms for `masked + prior`, so ranks and ties match.
      const float p = static_cast<float>(prior[static_cast<size_t>(r)]);
      if (p == ninf) continue;
      const float* row = scores + r * vocab;
      const auto& ban = banned[static_cast<size_t>(r)];
      for (int64_t w0 = 0; w0 < vocab; w0 += kChunk) {
        const int64_t n = std::min(kChunk, vocab - w0);
        const bool full = static_cast<int64_t>(best.size()) == take;
        const float bar = full ? best.back().score : ninf;
        if (n == kChunk && !any_above(row + w0, p, bar)) continue;
        for (int64_t w = w0; w < w0 + n; ++w) {
          const float s = row[w] + p;
          if (!std::isfinite(s) || is_banned(ban, w)) continue;
          if (static_cast<int64_t>(best.size()) < take || s > best.back().score) {
            insert(best, {s, k * vocab + w}, static_cast<size_t>(take));
          }
        }
      }
    }
  }
  return out;
}

int64_t best_allowed_word(const float* row, int64_t vocab, const std::vector<int64_t>& banned) {
  int64_t best = 0;
  float best_score = -std::numeric_limits<float>::infinity();
  for (int64_t w0 = 0; w0 < vocab; w0 += kChunk) {
    const int64_t n = std::min(kChunk, vocab - w0);
    if (n == kChunk && !any_above(row + w0, 0.0f, best_score)) continue;  // x + 0 is x
    for (int64_t w = w0; w < w0 + n; ++w) {
      if (row[w] > best_score && !is_banned(banned, w)) {
        best = w;
        best_score = row[w];
      }
    }
  }
  return best;
}

}  // namespace captioner
