#include "decoder/kernels/int8_linear.h"

#include <gtest/gtest.h>

#include <limits>
#include <tuple>

#include "decoder/search/caption_search.h"
#include "decoder/search/sequence_scorer.h"
#include "tests/model_fixtures.h"
#include "vocab/vocabulary.h"

using namespace captioner;

namespace {
// Inputs shaped like a recurrent cell's hidden state: most values well inside (-1, 1).
torch::Tensor hidden_like(int64_t rows, int64_t width, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::tanh(torch::randn({rows, width}));
}
}  // namespace

// The hand loop makes exactly what LibTorch's tensor ops make for the recipe (it replaced them to
// cut start-up): random rows at several magnitudes, a zero row, a tiny one, rows whose products
// land on .5 (ties round to even) and one at the clamp.
TEST(Int8Linear, QuantizesRowsAsLibTorchsTensorOps) {
  torch::manual_seed(11);
  const int64_t N = 64, K = 301, columns = 320;
  auto w = torch::randn({N, K}) * torch::rand({N, 1}) * 3;
  w[0].zero_();
  w[1].fill_(1e-30f);
  w[2] = (torch::arange(K) % 254).to(torch::kFloat) - 126.5f;  // k + 0.5 at scale 1: every tie
  w[2][0] = 127.0f;
  w[3] = torch::linspace(-1, 1, K);
  auto [q, scales] = quantize_rows(w, columns);
  auto padded = torch::zeros({N, columns});
  padded.narrow(1, 0, K).copy_(w);
  const auto expected_scales = (padded.abs().amax(1) / 127.0).clamp_min(1e-12);
  const auto expected_q = (padded * expected_scales.reciprocal().unsqueeze(1)).round_().clamp_(-127, 127).to(torch::kChar);
  EXPECT_TRUE(torch::equal(scales.to(torch::kFloat), expected_scales));
  EXPECT_TRUE(torch::equal(q, expected_q));
  EXPECT_EQ(q[2][1].item<int>(), -126);  // -125.5 rounds to even
  EXPECT_EQ(q[2][2].item<int>(), -124);  // -124.5 too

  w[5][7] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(quantize_rows(w, columns), std::invalid_argument);
  EXPECT_THROW(quantize_rows(w, K - 1), std::invalid_argument);
}

TEST(Int8Linear, IsCloseToTheFloatProduct) {
  torch::manual_seed(3);
  auto w = torch::randn({300, 128}) * 0.1;
  auto b = torch::randn({300});
  auto x = hidden_like(40, 128, 4);
  auto exact = torch::nn::functional::linear(x, w, b);
  auto got = Int8Linear(w, b).forward(x);
  ASSERT_EQ(got.sizes(), exact.sizes());
  // 7-bit inputs on [-1, 1] and per-row int8 weights: ~1% relative error (measured 0.6%).
  const double rel = ((got - exact).norm() / exact.norm()).item<double>();
  EXPECT_LT(rel, 0.02);
  EXPECT_GT(rel, 0.0);  // it really ran in int8
  // Without a bias too (an LSTM's W_hh).
  auto no_bias = Int8Linear(w, torch::Tensor()).forward(x);
  EXPECT_LT(((no_bias - x.matmul(w.t())).norm() / x.matmul(w.t()).norm()).item<double>(), 0.02);
}

TEST(Int8Linear, EachRowIsIndependentOfTheOthers) {
  // The input range is fixed, so a row's result is the same alone, in any batch, and whatever
  // the other rows hold: captions cannot depend on which photos share a batch.
  torch::manual_seed(5);
  Int8Linear layer(torch::randn({64, 32}), torch::randn({64}));
  auto x = hidden_like(17, 32, 6);
  auto all = layer.forward(x);
  auto small = x * 0.01;  // a batch whose own min/max would give a much finer scale
  auto mixed = layer.forward(torch::cat({small, x.narrow(0, 3, 1)}));
  for (int64_t r = 0; r < x.size(0); ++r) {
    EXPECT_TRUE(torch::equal(layer.forward(x.narrow(0, r, 1)), all.narrow(0, r, 1))) << "row " << r;
  }
  EXPECT_TRUE(torch::equal(mixed.narrow(0, 17, 1), all.narrow(0, 3, 1)));
}

TEST(Int8Linear, FewRowsGiveTheOpsResultsBitForBit) {
  // forward() takes fewer than 16 rows to our own AVX2 loop: it must equal LibTorch's op exactly,
  // for every row count (each register blocking), widths that are and are not multiples of 32,
  // with and without a bias, and inputs on the quantizer's rounding boundaries.
  const bool avx2 = __builtin_cpu_supports("avx2");
  for (auto [N, K, bias] : {std::tuple{3072, 768, false}, {2429, 768, true}, {37, 30, true}, {5, 100, false}}) {
    torch::manual_seed(N + K);
    Int8Linear layer(torch::randn({N, K}) * torch::rand({N, 1}) * 0.3, bias ? torch::randn({N}) : torch::Tensor());
    if (avx2) {
      EXPECT_TRUE(layer.own_rows()) << N << "x" << K << ": the AVX2 loop no longer reproduces the op on this CPU "
                                    << "(forward falls back to the op; captions are unaffected, few-row decoding slower)";
    }
    for (int64_t R = 1; R <= Int8Linear::kOwnRowsBelow + 1; ++R) {
      auto x = hidden_like(R, K, static_cast<uint64_t>(R));
      // Every third value on a boundary (j + 0.5) / 63.5 of the input's 7-bit grid, or at +-1.
      auto flat = x.view({-1});
      for (int64_t i = 0; i < flat.numel(); i += 3) {
        const int64_t j = (i * 7) % 128 - 64;
        flat[i] = j == -64 ? -1.0f : j == 63 ? 1.0f : static_cast<float>((j + 0.5) / 63.5);
      }
      if (R < Int8Linear::kOwnRowsBelow || !layer.own_rows_always()) {
        EXPECT_TRUE(torch::equal(layer.forward(x), layer.forward_onednn(x))) << N << "x" << K << ", " << R << " rows";
      } else {  // where the op's many-row kernel rounds otherwise (VNNI): its few-row results
        const auto y = layer.forward(x);
        for (int64_t r = 0; r < R; ++r) {
          EXPECT_TRUE(torch::equal(y.narrow(0, r, 1), layer.forward_onednn(x.narrow(0, r, 1)))) << N << "x" << K << ", row " << r;
        }
      }
    }
    // Inputs that are not contiguous float32 are converted as the op's path converts them.
    auto strided = hidden_like(3, 2 * K, 10).narrow(1, K / 2, K);
    EXPECT_TRUE(torch::equal(layer.forward(strided), layer.forward_onednn(strided)));
    auto wider_type = hidden_like(2, K, 11).to(torch::kDouble);
    EXPECT_TRUE(torch::equal(layer.forward(wider_type), layer.forward_onednn(wider_type)));
    // Beyond [-1, 1] the op measures its own range: forward hands such inputs to it.
    auto wide = hidden_like(3, K, 9) * 3;
    EXPECT_TRUE(torch::equal(layer.forward(wide), layer.forward_onednn(wide)));
  }
}

TEST(Int8Linear, RefusesWrongShapes) {
  Int8Linear layer(torch::randn({8, 4}), torch::Tensor());
  EXPECT_THROW(layer.forward(torch::zeros({2, 5})), std::invalid_argument);
  EXPECT_THROW(Int8Linear(torch::randn({8}), torch::Tensor()), std::invalid_argument);
  EXPECT_THROW(Int8Linear().forward(torch::zeros({1, 4})), std::logic_error);
}

TEST(Int8Linear, DecodingFollowsTheFloatModelAndIgnoresBatchMates) {
  for (const char* cell : {"lstm", "gru", "rnn"}) {
    const int64_t vocab_size = 30;
    auto d = test::make_decoder(vocab_size, 6, cell, 7);
    torch::manual_seed(8);
    FeatureViews f{torch::randn({12, 6})};
    // Step by step on the same words, int8's next-word log-probabilities stay near float32's.
    DecoderScorer float_scorer(d), int8_scorer(d, 0, true);
    float_scorer.start(f);
    int8_scorer.start(f);
    for (int t = 0; t < 6; ++t) {
      auto words = torch::randint(Vocabulary::kNumSpecial, vocab_size, {12}, torch::kLong);
      auto exact = float_scorer.step(words), got = int8_scorer.step(words);
      EXPECT_LT((got - exact).abs().max().item<double>(), 0.03) << cell << " step " << t;
      EXPECT_FALSE(torch::equal(got, exact)) << cell << ": int8 did not run";
    }
    // Alone, an image gets exactly the caption it got in a batch.
    SearchOptions o;
    o.beam_size = 3;
    o.max_length = 10;
    auto batch = beam_search(int8_scorer, f, o);
    for (size_t i = 0; i < batch.size(); ++i) {
      auto alone = beam_search(int8_scorer, {f[0].narrow(0, static_cast<int64_t>(i), 1)}, o);
      EXPECT_EQ(alone[0].tokens, batch[i].tokens) << cell << " image " << i;
      EXPECT_NEAR(alone[0].log_prob, batch[i].log_prob, 1e-5) << cell << " image " << i;
    }
  }
}
