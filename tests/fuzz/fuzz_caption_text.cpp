// Arbitrary caption text through the PTB tokenizer and all three metrics.
#include <string>
#include <vector>

#include "datasets/metrics/bleu.h"
#include "datasets/metrics/cider.h"
#include "datasets/metrics/rouge.h"
#include "datasets/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  size_t split = text.find('\n');
  std::string hyp = captioner::tokenize_caption_joined(text.substr(0, split));
  std::string ref = split == std::string::npos ? "a b c" : captioner::tokenize_caption_joined(text.substr(split + 1));
  for (const auto& t : captioner::tokenize_caption(text)) {
    if (t.empty() || t.find(' ') != std::string::npos) __builtin_trap();  // tokens are non-empty words
  }
  auto b = captioner::metrics::compute_bleu({hyp}, {{ref}});
  auto c = captioner::metrics::compute_cider_d({hyp, ref}, {{ref}, {hyp}});
  auto r = captioner::metrics::compute_rouge_l({hyp}, {{ref}});
  for (double v : {b.bleu[0], b.bleu[3], c.cider_d, r.rouge_l}) {
    if (!(v >= 0) || v > 10.0 + 1e-9) __builtin_trap();  // finite, non-negative, bounded
  }
  return 0;
}
