#include "decoder/search/caption_search.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include <map>
#include <set>

#include "decoder/pipeline/caption_pipeline.h"
#include "vocab/vocabulary.h"
#include "tests/model_fixtures.h"

using namespace captioner;

namespace {
// A randomly initialised decoder with peaked distributions, so searches make real choices.
CaptionDecoder random_decoder(const std::string& cell, uint64_t seed, int64_t vocab = 20) {
  torch::manual_seed(seed);
  CaptionDecoder d(test::tiny_decoder_config(vocab, 6, cell, 8, 16, 8));
  torch::NoGradGuard g;
  for (auto& p : d->parameters()) p.mul_(3.0);
  d->eval();
  return d;
}

FeatureViews features(int64_t B, uint64_t seed) {
  torch::manual_seed(seed);
  return {torch::randn({B, 6})};
}

SearchOptions opts(int beam) {
  SearchOptions o;
  o.beam_size = beam;
  o.max_length = 12;
  o.block_consecutive_repeat = false;
  return o;
}
}  // namespace

TEST(Search, BeamOfWidthOneEqualsGreedy) {
  for (const char* cell : {"lstm", "gru", "rnn"}) {
    auto d = random_decoder(cell, 10);
    DecoderScorer s(d);
    auto f = features(16, 11);
    auto greedy = greedy_search(s, f, opts(1));
    auto beam = beam_search(s, f, opts(1));
    for (size_t i = 0; i < greedy.size(); ++i) {
      EXPECT_EQ(beam[i].tokens, greedy[i].tokens) << cell << " image " << i;
      EXPECT_NEAR(beam[i].log_prob, greedy[i].log_prob, 1e-4);
    }
  }
}

// How far two float32 evaluations of the same caption's log-probability may drift apart when
// the rows are batched differently (greedy's B rows vs beam's B*K rows): each step's log-softmax
// comes from a GEMM whose summation order depends on the batch shape on some CPUs, so every
// token's log-prob may move by a few float32 ulps of its magnitude (and of the logits behind it).
// The sum over the caption's steps adds those up; 64 ulps per step covers it with a wide margin
// and is still far below any real difference between two captions.
double float32_drift(const Caption& c) {
  const double steps = static_cast<double>(c.tokens.size() + 1);
  return 64 * std::numeric_limits<float>::epsilon() * steps * (1 + std::abs(c.log_prob));
}

TEST(Search, BeamIsNeverWorseThanGreedyByTheModelsOwnLogProb) {
  int strictly_better = 0;
  for (uint64_t seed = 0; seed < 4; ++seed) {
    auto d = random_decoder(seed % 2 ? "gru" : "lstm", 20 + seed);
    DecoderScorer s(d);
    auto f = features(32, 30 + seed);
    auto greedy = greedy_search(s, f, opts(1));
    for (int beam : {2, 3, 5}) {
      auto best = search_captions(s, f, opts(beam));
      for (size_t i = 0; i < best.size(); ++i) {
        const double tolerance = float32_drift(greedy[i]);
        if (best[i].tokens == greedy[i].tokens) {
          // The beam kept greedy's own caption: the two numbers differ by arithmetic only.
          EXPECT_NEAR(best[i].log_prob, greedy[i].log_prob, tolerance) << "beam " << beam << " image " << i;
        } else {
          EXPECT_GE(best[i].log_prob, greedy[i].log_prob - tolerance) << "beam " << beam << " image " << i;
        }
        strictly_better += best[i].log_prob > greedy[i].log_prob + tolerance;
      }
    }
  }
  EXPECT_GT(strictly_better, 0) << "beam search never found anything better than greedy: it is not searching";
}

TEST(Search, ReportedLogProbIsTheModelsLogProbOfTheCaption) {
  auto d = random_decoder("lstm", 40);
  DecoderScorer s(d);
  auto f = features(8, 41);
  for (int beam : {1, 3}) {
    auto caps = search_captions(s, f, opts(beam));
    std::vector<std::vector<int64_t>> tokens;
    for (const auto& c : caps) tokens.push_back(c.tokens);
    auto rescored = caption_log_probs(s, f, tokens);
    for (size_t i = 0; i < caps.size(); ++i) EXPECT_NEAR(caps[i].log_prob, rescored[i], 1e-4);
  }
}

TEST(Search, ImagesInABatchDoNotInfluenceEachOther) {
  auto d = random_decoder("gru", 50);
  DecoderScorer s(d);
  auto f = features(6, 51);
  for (int beam : {1, 4}) {
    auto together = search_captions(s, f, opts(beam));
    for (int64_t i = 0; i < 6; ++i) {
      auto alone = search_captions(s, {f[0].narrow(0, i, 1)}, opts(beam));
      EXPECT_EQ(alone[0].tokens, together[i].tokens) << "beam " << beam << " image " << i;
    }
  }
}

TEST(Search, RespectsLengthAndTokenRules) {
  auto d = random_decoder("lstm", 60);
  DecoderScorer s(d);
  auto f = features(24, 61);
  for (int beam : {1, 3}) {
    auto o = opts(beam);
    o.max_length = 5;
    o.min_length = 2;
    o.block_consecutive_repeat = true;
    o.block_ngram_repeat = 2;
    for (const auto& c : search_captions(s, f, o)) {
      EXPECT_LE(c.tokens.size(), 5u);
      EXPECT_GE(c.tokens.size(), 2u);
      std::set<std::pair<int64_t, int64_t>> bigrams;
      for (size_t k = 0; k < c.tokens.size(); ++k) {
        EXPECT_GE(c.tokens[k], Vocabulary::kNumSpecial) << "special token emitted";
        if (k > 0) {
          EXPECT_NE(c.tokens[k], c.tokens[k - 1]) << "word repeated";
          EXPECT_TRUE(bigrams.insert({c.tokens[k - 1], c.tokens[k]}).second) << "bigram repeated";
        }
      }
    }
  }
}

namespace {
// Log-probabilities that depend only on the previous word, from a table (rows: previous word,
// columns: next word; missing entries are impossible). Stateless, so select() has nothing to do.
class MarkovScorer : public SequenceScorer {
 public:
  explicit MarkovScorer(const std::map<std::pair<int64_t, int64_t>, double>& probs, int64_t vocab = 6)
      : table_(torch::full({vocab, vocab}, -std::numeric_limits<float>::infinity())) {
    for (const auto& [from_to, p] : probs) table_[from_to.first][from_to.second] = std::log(p);
  }
  int64_t vocab_size() const override { return table_.size(0); }
  void start(const FeatureViews&) override {}
  torch::Tensor step(const torch::Tensor& tokens) override { return table_.index_select(0, tokens); }
  void select(const torch::Tensor&) override {}

 private:
  torch::Tensor table_;
};
}  // namespace

TEST(Search, LengthPenaltyFavoursLongerCaptions) {
  // "4" has log-prob ln .9 + ln .52 = -0.759, "4 5" ln .9 + ln .48 + ln .95 = -0.890. Plain beam
  // search prefers the shorter; with alpha = 1 (score / (words + 1)) "4 5" wins, -0.297 vs -0.380.
  const int64_t kEnd = Vocabulary::kEnd, kStart = Vocabulary::kStart;
  MarkovScorer s({{{kStart, 4}, 0.9}, {{kStart, 5}, 0.1}, {{4, kEnd}, 0.52}, {{4, 5}, 0.48}, {{5, kEnd}, 0.95}, {{5, 4}, 0.05}});
  const FeatureViews f = {torch::zeros({2, 1})};
  auto penalised = opts(2);
  penalised.length_penalty = 1.0;
  for (const auto& c : search_captions(s, f, opts(2))) {
    EXPECT_EQ(c.tokens, (std::vector<int64_t>{4}));
    EXPECT_NEAR(c.log_prob, std::log(0.9) + std::log(0.52), 1e-6);
  }
  for (const auto& c : search_captions(s, f, penalised)) {
    EXPECT_EQ(c.tokens, (std::vector<int64_t>{4, 5}));
    EXPECT_NEAR(c.score, (std::log(0.9) + std::log(0.48) + std::log(0.95)) / 3, 1e-6);
  }
}

TEST(Search, SamplingIsSeededAndTopKLimited) {
  auto d = random_decoder("rnn", 80);
  DecoderScorer s(d);
  auto f = features(8, 81);
  auto o = opts(1);
  o.sample = true;
  o.seed = 7;
  auto a = search_captions(s, f, o);
  auto b = search_captions(s, f, o);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].tokens, b[i].tokens);
  o.top_k = 1;  // sampling among one word is greedy
  auto greedy = greedy_search(s, f, opts(1));
  auto top1 = search_captions(s, f, o);
  for (size_t i = 0; i < greedy.size(); ++i) EXPECT_EQ(top1[i].tokens, greedy[i].tokens);
}

TEST(Search, EnsembleOfOneModelWithItselfIsThatModel) {
  auto d = random_decoder("lstm", 90);
  DecoderScorer single(d);
  std::vector<std::unique_ptr<SequenceScorer>> members;
  members.push_back(std::make_unique<DecoderScorer>(d));
  members.push_back(std::make_unique<DecoderScorer>(d));
  EnsembleScorer twice(std::move(members));
  auto f = features(10, 91);
  auto a = search_captions(single, f, opts(3));
  auto b = search_captions(twice, f, opts(3));
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].tokens, b[i].tokens);
    EXPECT_NEAR(a[i].log_prob, b[i].log_prob, 1e-4);
  }
}

TEST(Search, CaptioningFeaturesInChunksGivesTheCaptionsOfOneSearch) {
  DecoderScorer s(random_decoder("lstm", 12));
  auto f = features(10, 13);
  const auto together = search_captions(s, f, opts(3));
  std::vector<size_t> progress;
  const auto chunked = caption_features(s, f, opts(3), 4, [&](size_t done, size_t total) {
    EXPECT_EQ(total, 10u);
    progress.push_back(done);
  });
  ASSERT_EQ(chunked.size(), together.size());
  for (size_t i = 0; i < chunked.size(); ++i) EXPECT_EQ(chunked[i].tokens, together[i].tokens) << "image " << i;
  EXPECT_EQ(progress, (std::vector<size_t>{4, 8, 10}));
}

TEST(SearchOverrides, ChangeOnlyWhatWasGiven) {
  SearchOptions model;
  model.beam_size = 5;
  model.length_penalty = 0.3;
  model.block_ngram_repeat = 2;
  SearchOverrides none;
  const SearchOptions same = none.applied_to(model);
  EXPECT_EQ(same.beam_size, 5);
  EXPECT_EQ(same.length_penalty, 0.3);
  EXPECT_EQ(same.block_ngram_repeat, 2);
  SearchOverrides some;
  some.beam_size = 1;
  some.block_ngram_repeat = 0;  // 0 is a value ("off"), not "unset"
  const SearchOptions changed = some.applied_to(model);
  EXPECT_EQ(changed.beam_size, 1);
  EXPECT_EQ(changed.block_ngram_repeat, 0);
  EXPECT_EQ(changed.length_penalty, 0.3);
  SearchOverrides subjects;
  subjects.subject_threshold = 0;  // off, where the model has it on
  model.subject_threshold = 0.9;
  EXPECT_EQ(none.applied_to(model).subject_threshold, 0.9);
  EXPECT_EQ(subjects.applied_to(model).subject_threshold, 0.0);
}

TEST(Search, NoWordIsUsedMoreOftenThanAllowedExceptTheExemptOnes) {
  // A decoder whose every step favours a few words, so unconstrained captions repeat them.
  DecoderScorer s(random_decoder("lstm", 21, 8));
  auto f = features(16, 22);
  auto count_max = [](const std::vector<int64_t>& tokens, int64_t except) {
    std::map<int64_t, int> n;
    int most = 0;
    for (int64_t w : tokens) {
      if (w != except) most = std::max(most, ++n[w]);
    }
    return most;
  };
  SearchOptions o = opts(3);
  o.max_length = 16;
  int most_free = 0;
  for (const auto& c : search_captions(s, f, o)) most_free = std::max(most_free, count_max(c.tokens, -1));
  ASSERT_GT(most_free, 2) << "the test needs captions that repeat words when not constrained";
  o.max_word_repeats = 2;
  o.repeat_exempt = {5};
  for (int beam : {1, 3}) {
    o.beam_size = beam;
    for (const auto& c : search_captions(s, f, o)) {
      EXPECT_LE(count_max(c.tokens, 5), 2) << "beam " << beam;
    }
  }
  o.repeat_exempt.clear();
  for (const auto& c : search_captions(s, f, o)) EXPECT_LE(count_max(c.tokens, -1), 2);
}

namespace {
bool contains_any(const std::vector<int64_t>& tokens, const std::vector<int64_t>& words) {
  return std::any_of(tokens.begin(), tokens.end(),
                     [&](int64_t t) { return std::find(words.begin(), words.end(), t) != words.end(); });
}
// The first ordinary word a caption does not use: a guide requiring it has to change the caption.
int64_t first_word_not_in(const std::vector<int64_t>& tokens) {
  int64_t w = Vocabulary::kNumSpecial;
  while (contains_any(tokens, {w})) ++w;
  return w;
}
}  // namespace

TEST(ConstrainedSearch, EveryCaptionContainsARequiredWordAndNoBannedOne) {
  auto d = random_decoder("lstm", 40, 30);
  DecoderScorer s(d);
  auto f = features(12, 41);
  auto o = opts(3);
  o.max_length = 15;
  const auto plain = beam_search(s, f, o);
  WordGuides guides(12);
  for (int64_t i = 0; i < 12; ++i) {
    const int64_t w = first_word_not_in(plain[i].tokens);
    guides[i].required = {w, w == 29 ? 28 : w + 1};
    guides[i].banned = {plain[i].tokens.empty() ? 5 : plain[i].tokens.front()};
    for (int64_t w : guides[i].required)
      guides[i].banned.erase(std::remove(guides[i].banned.begin(), guides[i].banned.end(), w), guides[i].banned.end());
  }
  const auto guided = constrained_beam_search(s, f, o, guides);
  for (size_t i = 0; i < guided.size(); ++i) {
    EXPECT_TRUE(contains_any(guided[i].tokens, guides[i].required)) << "image " << i;
    EXPECT_FALSE(contains_any(guided[i].tokens, guides[i].banned)) << "image " << i;
    // The reported log-prob is still the model's own for the caption it returns.
    EXPECT_NEAR(guided[i].log_prob, caption_log_probs(s, {f[0].narrow(0, static_cast<int64_t>(i), 1)}, {guided[i].tokens})[0],
                1e-3);
  }
}

TEST(ConstrainedSearch, ImagesWithoutAGuideGetTheCaptionsOfPlainSearch) {
  auto d = random_decoder("gru", 42, 30);
  DecoderScorer s(d);
  auto f = features(10, 43);
  const auto plain = search_captions(s, f, opts(3));
  EXPECT_EQ(search_captions(s, f, opts(3), WordGuides(10)).size(), 10u);
  WordGuides guides(10);
  guides[3].required = {7};
  guides[6].required = {9, 11};
  const auto guided = search_captions(s, f, opts(3), guides);
  for (size_t i = 0; i < guided.size(); ++i) {
    if (!guides[i].empty()) {
      EXPECT_TRUE(contains_any(guided[i].tokens, guides[i].required)) << "image " << i;
    } else {
      EXPECT_EQ(guided[i].tokens, plain[i].tokens) << "image " << i;
    }
  }
  // No guide at all: exactly the plain search.
  const auto none = search_captions(s, f, opts(3), WordGuides(10));
  for (size_t i = 0; i < none.size(); ++i) EXPECT_EQ(none[i].tokens, plain[i].tokens);
}

// The tag as the subject (issue 32): a required word within the first `within` words, and none of
// banned_before ahead of it.
TEST(ConstrainedSearch, ASubjectComesWithinItsWordsAndAfterNoBannedBeforeWord) {
  auto d = random_decoder("lstm", 44, 30);
  DecoderScorer s(d);
  auto f = features(12, 45);
  auto o = opts(3);
  o.max_length = 12;
  const auto plain = beam_search(s, f, o);
  WordGuides guides(12);
  for (int64_t i = 0; i < 12; ++i) {
    guides[i].required = {first_word_not_in(plain[i].tokens)};
    guides[i].within = 2;
    // The plain caption's first word may not come before the subject.
    if (!plain[i].tokens.empty()) guides[i].banned_before = {plain[i].tokens.front()};
  }
  const auto guided = search_captions(s, f, o, guides);
  for (size_t i = 0; i < guided.size(); ++i) {
    const auto& t = guided[i].tokens;
    const auto at = std::find(t.begin(), t.end(), guides[i].required[0]);
    ASSERT_NE(at, t.end()) << "image " << i;
    EXPECT_LT(at - t.begin(), 2) << "image " << i;
    EXPECT_FALSE(contains_any(std::vector<int64_t>(t.begin(), at), guides[i].banned_before)) << "image " << i;
  }
}

// A guide is a second opinion: a caption that already says a required word, or an also_met_by
// word, is kept as plain search made it.
TEST(ConstrainedSearch, ACaptionThatAlreadyMeetsItsGuideIsKept) {
  auto d = random_decoder("lstm", 46, 30);
  DecoderScorer s(d);
  auto f = features(6, 47);
  const auto plain = search_captions(s, f, opts(3));
  WordGuides guides(6);
  for (size_t i = 0; i < 6; ++i) {
    ASSERT_FALSE(plain[i].tokens.empty());
    guides[i].required = {first_word_not_in(plain[i].tokens)};
    guides[i].within = 1;
    if (i % 2 == 0)
      guides[i].required.push_back(plain[i].tokens.back());  // says it already
    else
      guides[i].also_met_by = {plain[i].tokens.back()};  // says a broader word
  }
  const auto guided = search_captions(s, f, opts(3), guides);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(guided[i].tokens, plain[i].tokens) << "image " << i;
}

// A caption that leads with a trusted word (a person, against an animal guiding as a subject
// alone) is kept, unless it says a banned word; one whose trusted word comes too late is not.
TEST(ConstrainedSearch, ACaptionLedByATrustedWordIsKeptUnlessItSaysABannedOne) {
  auto d = random_decoder("lstm", 46, 30);
  DecoderScorer s(d);
  auto f = features(6, 48);
  const auto plain = search_captions(s, f, opts(3));
  WordGuides guides(6);
  for (size_t i = 0; i < 6; ++i) {
    ASSERT_GE(plain[i].tokens.size(), 2u);
    guides[i].required = {first_word_not_in(plain[i].tokens)};
    guides[i].within = 2;
    guides[i].trusted_leads = {plain[i].tokens[i % 2 == 0 ? 0 : 1]};
    if (i == 4) guides[i].banned = {plain[i].tokens.back()};
  }
  guides[5].within = 1;  // its trusted word is the caption's second: past `within`
  const auto guided = search_captions(s, f, opts(3), guides);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(guided[i].tokens, plain[i].tokens) << "image " << i;
  for (size_t i : {4, 5}) {
    const auto& t = guided[i].tokens;
    EXPECT_NE(std::find(t.begin(), t.end(), guides[i].required[0]), t.end()) << "image " << i;
  }
}

namespace {
// Counts the rows each step() scores.
class CountingScorer : public SequenceScorer {
 public:
  CountingScorer(CaptionDecoder d, std::vector<int64_t>& rows) : inner_(std::move(d)), rows_(rows) {}
  int64_t vocab_size() const override { return inner_.vocab_size(); }
  void start(const FeatureViews& views) override { inner_.start(views); }
  torch::Tensor step(const torch::Tensor& tokens) override {
    rows_.push_back(tokens.size(0));
    return inner_.step(tokens);
  }
  void select(const torch::Tensor& rows) override { inner_.select(rows); }

 private:
  DecoderScorer inner_;
  std::vector<int64_t>& rows_;
};
}  // namespace

TEST(MutualInformation, StepIsPhotoMinusWeightedMeanPhotoLogProbsScoredOncePerPrefix) {
  auto d = random_decoder("lstm", 110);
  auto f = features(4, 111);
  const auto prior = torch::randn({6});
  std::vector<int64_t> prior_rows;
  MutualInformationScorer mi(std::make_unique<DecoderScorer>(d), std::make_unique<CountingScorer>(d, prior_rows), prior, 0.3);
  DecoderScorer photo(d), mean_photo(d);  // the mean photo on every row, for reference
  mi.start(f);
  photo.start(f);
  mean_photo.start({prior.unsqueeze(0).expand({4, 6}).contiguous()});
  auto expect_step = [&](const torch::Tensor& tokens) {
    const auto expected = photo.step(tokens) - 0.3 * mean_photo.step(tokens);
    EXPECT_TRUE(torch::allclose(mi.step(tokens), expected, 1e-5, 1e-5));
  };
  // Three steps with re-selections between them, as a beam search does.
  expect_step(torch::full({4}, Vocabulary::kStart, torch::kLong));
  auto select = [&](const torch::Tensor& rows) {
    mi.select(rows);
    photo.select(rows);
    mean_photo.select(rows);
  };
  select(torch::tensor({3, 0, 0, 1}, torch::kLong));
  expect_step(torch::tensor({7, 7, 9, 7}, torch::kLong));
  select(torch::tensor({0, 1, 2, 2, 3}, torch::kLong));
  expect_step(torch::tensor({5, 5, 5, 6, 5}, torch::kLong));
  // <start> once; then "7" and "9"; then "7 5" (rows 0, 1 and 4 share it), "9 5", "9 6".
  EXPECT_EQ(prior_rows, (std::vector<int64_t>{1, 2, 3}));
}

TEST(MutualInformation, CaptionsReportTheModelsLogProbAndWeightZeroChangesNothing) {
  auto d = random_decoder("gru", 120);
  auto f = features(8, 121);
  const auto prior = f[0].mean(0);
  DecoderScorer plain(d);
  for (int beam : {1, 3}) {
    const auto reference = search_captions(plain, f, opts(beam));
    MutualInformationScorer off(std::make_unique<DecoderScorer>(d), std::make_unique<DecoderScorer>(d), prior, 0.0);
    const auto same = search_captions(off, f, opts(beam));
    MutualInformationScorer on(std::make_unique<DecoderScorer>(d), std::make_unique<DecoderScorer>(d), prior, 0.5);
    const auto mi = search_captions(on, f, opts(beam));
    std::vector<std::vector<int64_t>> tokens;
    int changed = 0;
    for (size_t i = 0; i < mi.size(); ++i) {
      EXPECT_EQ(same[i].tokens, reference[i].tokens) << "beam " << beam << " image " << i;
      tokens.push_back(mi[i].tokens);
      changed += mi[i].tokens != reference[i].tokens;
    }
    // The search ranked by the MI objective; log_prob is what the model itself gives the caption.
    const auto model_log_probs = caption_log_probs(plain, f, tokens);
    for (size_t i = 0; i < mi.size(); ++i) EXPECT_NEAR(mi[i].log_prob, model_log_probs[i], 1e-4) << "image " << i;
    EXPECT_GT(changed, 0) << "an MI weight of 0.5 changed no caption at beam " << beam;
  }
}

TEST(MutualInformation, RefusesBadInputs) {
  auto d = random_decoder("lstm", 130);
  auto make = [&](torch::Tensor prior, double w) {
    return MutualInformationScorer(std::make_unique<DecoderScorer>(d), std::make_unique<DecoderScorer>(d), prior, w);
  };
  EXPECT_THROW(make(torch::zeros({6}), 1.0), std::invalid_argument);
  EXPECT_THROW(make(torch::zeros({6}), -0.1), std::invalid_argument);
  EXPECT_THROW(make(torch::zeros({2, 6}), 0.1), std::invalid_argument);
  auto wrong_width = make(torch::zeros({5}), 0.1);
  EXPECT_THROW(wrong_width.start(features(2, 1)), std::invalid_argument);
}
