// Metric tests: hand-worked examples, edge cases, and corpora whose expected scores were computed
// by coco-caption's own scorers (pycocoevalcap bleu_scorer.py, cider_scorer.py, rouge.py, run
// under Python on exactly these inputs). Agreement is required to 1e-9 absolute.
#include <gtest/gtest.h>

#include <cmath>

#include "datasets/metrics/bleu.h"
#include "datasets/metrics/caption_metrics.h"
#include "datasets/metrics/cider.h"
#include "datasets/metrics/rouge.h"
#include "tests/test_util.h"

using namespace captioner;
using namespace captioner::metrics;
using Refs = std::vector<std::vector<std::string>>;

TEST(Bleu, HandWorkedExample) {
  // hyp: the cat sat on the mat (6 words); refs of 6 and 7 words -> effective ref length 6.
  // clipped matches: 1-grams the(2) cat on mat = 5/6, 2-grams the-cat on-the the-mat = 3/5,
  // 3-grams on-the-mat = 1/4, 4-grams 0/3. BLEU-4 is not 0 because of the toolkit's 1e-15.
  auto s = compute_bleu({"the cat sat on the mat"}, {{"the cat is on the mat", "there is a cat on the mat"}});
  double bp = std::exp(1 - 1 / ((6 + 1e-15) / (6 + 1e-9)));
  EXPECT_NEAR(s.bleu[0], (5 + 1e-15) / (6 + 1e-9) * bp, 1e-12);
  EXPECT_NEAR(s.bleu[1], std::sqrt(5.0 / 6 * 3.0 / 5), 1e-9);
  EXPECT_NEAR(s.bleu[2], 0.5, 1e-9);
  EXPECT_NEAR(s.bleu[3], std::pow(5.0 / 6 * 3.0 / 5 * 1.0 / 4 * (1e-15 / (3 + 1e-9)), 0.25), 1e-12);
  EXPECT_EQ(s.test_length, 6);
  EXPECT_DOUBLE_EQ(s.ref_length, 6);
}

TEST(Bleu, ClosestReferenceLengthTiesGoToTheShorter) {
  // hyp length 4, refs of length 3 and 5: both 1 away, the toolkit picks 3 (no brevity penalty).
  auto s = compute_bleu({"a b c d"}, {{"a b c", "a b c d e"}});
  EXPECT_DOUBLE_EQ(s.ref_length, 3);
  EXPECT_NEAR(s.bleu[0], 1.0, 1e-9);
}

TEST(Bleu, ClipsCountsAtTheMaxOfAnyOneReference) {
  // "the" x4 in the hypothesis; refs have 2 and 1 -> only 2 count.
  auto s = compute_bleu({"the the the the"}, {{"the cat the", "the"}});
  // closest ref length to 4: 3; no brevity penalty.
  EXPECT_NEAR(s.bleu[0], (2 + 1e-15) / (4 + 1e-9), 1e-12);
}

TEST(Bleu, EmptyHypothesisScoresZero) {
  auto s = compute_bleu({""}, {{"a dog runs"}});
  for (double b : s.bleu) EXPECT_EQ(b, 0.0);
  EXPECT_EQ(s.test_length, 0);
}

TEST(Bleu, HypothesisShorterThanN) {
  // 2 words: no 3- or 4-grams to guess; those precisions are 1e-15/1e-9, not a crash.
  auto s = compute_bleu({"a dog"}, {{"a dog"}});
  const double tiny = 1e-15, small = 1e-9;
  double p1 = (2 + tiny) / (2 + small), p2 = (1 + tiny) / (1 + small), p3 = tiny / small, p4 = tiny / small;
  double bp = std::exp(1 - 1 / ((2 + tiny) / (2 + small)));  // lengths equal, but the constants make ratio < 1
  EXPECT_NEAR(s.bleu[0], p1 * bp, 1e-15);
  EXPECT_NEAR(s.bleu[1], std::sqrt(p1 * p2) * bp, 1e-15);
  EXPECT_NEAR(s.bleu[2], std::cbrt(p1 * p2 * p3) * bp, 1e-15);
  EXPECT_NEAR(s.bleu[3], std::pow(p1 * p2 * p3 * p4, 0.25) * bp, 1e-15);
}

TEST(Bleu, BrevityPenaltyFromSummedLengths) {
  // Each image alone has no penalty issues, but the corpus is shorter than its references.
  auto s = compute_bleu({"a dog", "a cat sat"}, {{"a dog runs fast"}, {"a cat sat"}});
  double ratio = (5 + 1e-15) / (7 + 1e-9);
  EXPECT_NEAR(s.bleu[0], (5 + 1e-15) / (5 + 1e-9) * std::exp(1 - 1 / ratio), 1e-12);
}

TEST(Bleu, RejectsMismatchedInputs) {
  EXPECT_THROW(compute_bleu({"a"}, Refs{}), std::invalid_argument);
  EXPECT_THROW(compute_bleu({"a"}, Refs{{}}), std::invalid_argument);
}

namespace {
// The same deterministic corpora were generated in Python (64-bit LCG, words drawn from the
// first `num_words` of this list) and scored there by coco-caption's scorers.
struct Lcg {
  uint64_t x;
  uint64_t next(uint64_t n) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return (x >> 33) % n;
  }
};
void corpus(uint64_t seed, int images, int num_words, std::vector<std::string>& hyps, Refs& refs) {
  static const char* words[] = {"a", "dog", "cat", "runs", "on", "the", "grass", "red", "ball", "man", "in", "water"};
  Lcg g{seed};
  auto sentence = [&](uint64_t len) {
    std::string s;
    for (uint64_t i = 0; i < len; ++i) s += (i ? " " : "") + std::string(words[g.next(num_words)]);
    return s;
  };
  for (int i = 0; i < images; ++i) {
    hyps.push_back(sentence(g.next(9)));
    std::vector<std::string> rs;
    uint64_t nrefs = 1 + g.next(5);
    for (uint64_t k = 0; k < nrefs; ++k) rs.push_back(sentence(1 + g.next(12)));
    refs.push_back(rs);
  }
}
struct Expected {
  uint64_t seed;
  int images, words;
  std::array<double, 4> bleu;
  double cider, rouge;
};
}  // namespace

TEST(Metrics, AgreeWithCocoCaptionOnRandomCorpora) {
  const Expected cases[] = {
      {1,
       50,
       12,
       {0.3820451950758073, 0.18051032092789146, 6.41808240428444e-07, 1.3411934163246154e-09},
       0.5219123452445855,
       0.2902410906920252},
      {2,
       200,
       4,
       {0.6690824084710425, 0.5486365655657411, 0.35971923564400227, 0.21237540302141553},
       1.336627060753848,
       0.4966161996029193},
      {3,
       7,
       6,
       {0.36183165406927775, 0.22157573131116434, 1.4934272475565564e-06, 4.360587506031668e-09},
       0.6120109548558232,
       0.3491793416256962},
  };
  for (const auto& c : cases) {
    std::vector<std::string> hyps;
    Refs refs;
    corpus(c.seed, c.images, c.words, hyps, refs);
    auto b = compute_bleu(hyps, refs);
    for (int k = 0; k < 4; ++k) EXPECT_NEAR(b.bleu[k], c.bleu[k], 1e-9) << "seed " << c.seed << " BLEU-" << k + 1;
    EXPECT_NEAR(compute_cider_d(hyps, refs).cider_d, c.cider, 1e-9) << "seed " << c.seed;
    EXPECT_NEAR(compute_rouge_l(hyps, refs).rouge_l, c.rouge, 1e-9) << "seed " << c.seed;
  }
}

TEST(Metrics, SmallCorpusWithEmptyAndShortHypotheses) {
  std::vector<std::string> hyps = {"the cat sat on the mat", "", "a dog"};
  Refs refs = {{"the cat is on the mat", "there is a cat on the mat"}, {"a b c"}, {"a dog runs", "a dog"}};
  auto b = compute_bleu(hyps, refs);
  const double bleu[] = {0.6013781187917564, 0.5249258572563724, 0.36176385259426863, 5.7388312709586944e-05};
  for (int k = 0; k < 4; ++k) EXPECT_NEAR(b.bleu[k], bleu[k], 1e-9);
  EXPECT_NEAR(compute_cider_d(hyps, refs).cider_d, 2.6123870675995, 1e-9);
  EXPECT_NEAR(compute_rouge_l(hyps, refs).rouge_l, 0.6111111111111112, 1e-9);
}

TEST(Rouge, HandWorkedExample) {
  // LCS("a dog runs", "a big dog runs fast") = 3: P = 1, R = 3/5.
  auto s = compute_rouge_l({"a dog runs"}, {{"a big dog runs fast"}});
  double p = 1.0, r = 0.6, b2 = 1.44;
  EXPECT_NEAR(s.rouge_l, (1 + b2) * p * r / (r + b2 * p), 1e-12);
  EXPECT_EQ(compute_rouge_l({"x y"}, {{"a b"}}).rouge_l, 0.0);
}

TEST(Cider, IdenticalCaptionScoresHigherThanUnrelated) {
  std::vector<std::string> hyps = {"a dog runs on the grass", "a man in the water"};
  Refs refs = {{"a dog runs on the grass", "a brown dog runs"}, {"a man swims in the water", "a person in water"}};
  auto good = compute_cider_d(hyps, refs);
  auto bad = compute_cider_d({"a man in the water", "a dog runs on the grass"}, refs);
  EXPECT_GT(good.cider_d, bad.cider_d);
  EXPECT_EQ(good.per_image.size(), 2u);
}

TEST(CaptionMetrics, TokenizesBothSidesBeforeScoring) {
  // Case, punctuation and clitics must not matter once tokenized.
  auto s = score_captions({"A Dog's ball."}, {{"a dog 's ball"}});
  EXPECT_NEAR(s.bleu[0], 1.0, 1e-9);
  EXPECT_NEAR(s.rouge_l, 1.0, 1e-9);
  auto j = scores_to_json(s);
  for (const char* k : {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr-D", "ROUGE-L", "images"}) {
    EXPECT_TRUE(j.contains(k)) << k;
  }
}

TEST(CaptionMetrics, HumanAgreementOnFlickr8kDevMatchesCocoCaption) {
  REQUIRE_SHARED();
  // Caption #0 of every dev image scored against the other four. Expected values: coco-caption's
  // scorers run on the same tokenized captions (this tokenizer's output).
  DatasetOptions opt;
  opt.check_images = false;
  auto ds = load_caption_file(captioner::test::shared_dir() / "datasets/flickr8k/captions_val.json", opt);
  std::vector<std::string> hyps;
  Refs refs;
  for (const auto& r : ds.records) {
    hyps.push_back(r.captions[0]);
    refs.emplace_back(r.captions.begin() + 1, r.captions.end());
  }
  auto s = score_captions(hyps, refs);
  EXPECT_NEAR(s.bleu[0], 0.6275129488191882, 1e-9);
  EXPECT_NEAR(s.bleu[1], 0.44342979576264063, 1e-9);
  EXPECT_NEAR(s.bleu[2], 0.30708129327795985, 1e-9);
  EXPECT_NEAR(s.bleu[3], 0.21160098501492874, 1e-9);
  EXPECT_NEAR(s.cider_d, 0.8036617887303764, 1e-9);
  EXPECT_NEAR(s.rouge_l, 0.49173408652537204, 1e-9);
}

TEST(Bleu, TokensMayContainAnyByte) {
  // Found by fuzz_caption_text: n-gram keys joined with '\x1f' broke on tokens containing it.
  std::string odd = std::string("a\x1f") + "b";
  auto s = compute_bleu({odd + " c d e"}, {{odd + " c d e"}});
  for (double b : s.bleu) EXPECT_NEAR(b, 1.0, 1e-9);
  auto c = compute_cider_d({odd + " c", "x y"}, {{odd + " c"}, {"x z"}});
  EXPECT_EQ(c.per_image.size(), 2u);
  EXPECT_GT(c.per_image[0], c.per_image[1]);
}
