// The fused pieces of a decoding step (the LSTM cell's element-wise pass, the beam candidates read
// from unmasked log-probabilities) against the LibTorch ops they replace, and the decoder's step
// with and without them.
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <random>

#include "decoder/search/beam_candidates.h"
#include "decoder/network/caption_decoder.h"
#include "decoder/kernels/lstm_cell_kernel.h"
#include "tests/model_fixtures.h"

using namespace captioner;

namespace {

// The fused pass promises LibTorch's bits (decoder/kernels/lstm_cell_kernel.h): a LibTorch whose sigmoid or
// tanh kernels call other SLEEF functions fails here, and the promise must be revisited.
void expect_same(const torch::Tensor& fused, const torch::Tensor& plain) {
  EXPECT_TRUE(torch::equal(fused, plain)) << "max difference " << (fused - plain).abs().max().item<float>();
}

// decoder/network/caption_decoder.cpp's int8 decoding step, op by op: pre = word_gates[tokens] + image,
// gates = hidden + pre, then RecurrentLayerImpl::step's activations.
std::pair<torch::Tensor, torch::Tensor> lstm_by_ops(const torch::Tensor& hidden, const torch::Tensor& word_gates,
                                                    const torch::Tensor& tokens, const torch::Tensor& image,
                                                    const torch::Tensor& c) {
  const int64_t H = c.size(1);
  auto pre = word_gates.index_select(0, tokens);
  if (image.defined()) pre.add_(image);
  auto gates = hidden.clone().add_(pre);
  auto sig = torch::sigmoid(gates.narrow(1, 0, 3 * H));
  auto g = torch::tanh(gates.narrow(1, 3 * H, H));
  auto c_new = sig.narrow(1, H, H) * c + sig.narrow(1, 0, H) * g;
  return {sig.narrow(1, 2 * H, H) * torch::tanh(c_new), c_new};
}

// An LSTM decoder in eval mode with the raw image in every gate (as the default model), its hidden
// size a multiple of 16 so that decoding takes the fused pass.
CaptionDecoder eval_lstm_decoder(int64_t vocab, int64_t embed, int64_t hidden, int64_t features) {
  CaptionDecoder decoder(test::tiny_decoder_config(vocab, features, "lstm", embed, hidden, 0));
  decoder->eval();
  return decoder;
}

}  // namespace

TEST(LstmCellKernel, EqualsLibTorchOps) {
  if (!lstm_cell_kernel_available()) GTEST_SKIP() << "this CPU has no AVX2: decoding uses LibTorch's ops";
  torch::manual_seed(0);
  for (bool with_image : {true, false}) {
    const int64_t R = 7, H = 48, V = 11;
    auto hidden = torch::randn({R, 4 * H}) * 3, word_gates = torch::randn({V, 4 * H}) * 2;
    auto image = with_image ? torch::randn({R, 4 * H}) : torch::Tensor();
    auto tokens = torch::randint(V, {R}, torch::kLong), c = torch::randn({R, H}) * 2;
    auto [h_plain, c_plain] = lstm_by_ops(hidden, word_gates, tokens, image, c);

    LstmCellInputs in;
    in.gates = hidden.data_ptr<float>();
    in.word_gates = word_gates.data_ptr<float>();
    in.tokens = tokens.data_ptr<int64_t>();
    in.image_gates = with_image ? image.data_ptr<float>() : nullptr;
    auto h = torch::empty({R, H}), c_out = torch::empty({R, H});
    lstm_cell_step(in, c.data_ptr<float>(), c_out.data_ptr<float>(), h.data_ptr<float>(), R, H);
    expect_same(h, h_plain);
    expect_same(c_out, c_plain);

    // Gates given whole (the float path's addmm result), c updated in place.
    auto gates = hidden + (with_image ? word_gates.index_select(0, tokens) + image : word_gates.index_select(0, tokens));
    LstmCellInputs whole;
    whole.gates = gates.data_ptr<float>();
    auto c_in_place = c.clone();
    lstm_cell_step(whole, c_in_place.data_ptr<float>(), c_in_place.data_ptr<float>(), h.data_ptr<float>(), R, H);
    expect_same(h, h_plain);
    expect_same(c_in_place, c_plain);
  }
}

TEST(LstmCellKernel, RefusesHiddenSizesItCannotVectorise) {
  if (!lstm_cell_kernel_available()) GTEST_SKIP() << "this CPU has no AVX2";
  float x[64] = {};
  LstmCellInputs in;
  in.gates = x;
  EXPECT_THROW(lstm_cell_step(in, x, x, x, 1, 12), std::invalid_argument);
}

TEST(LstmCellKernel, DecoderStepMatchesTheUnfusedCell) {
  // The decoder's step takes the fused pass only when no gradient is recorded, so the same step
  // with autograd on (eval mode: no dropout) runs RecurrentLayerImpl::step's LibTorch ops.
  if (!lstm_cell_kernel_available()) GTEST_SKIP() << "this CPU has no AVX2: decoding uses LibTorch's ops";
  torch::manual_seed(1);
  auto decoder = eval_lstm_decoder(/*vocab=*/23, /*embed=*/8, /*hidden=*/32, /*features=*/10);
  const auto features = torch::randn({4, 10});
  const auto first = torch::randint(4, 23, {4}, torch::kLong), second = torch::randint(4, 23, {4}, torch::kLong);
  for (bool int8 : {false, true}) {
    auto run = [&](bool record_gradients) {
      torch::AutoGradMode mode(record_gradients);
      DecoderState s = decoder->start(features);
      s.word_gates = decoder->word_gate_table();
      if (int8) s.int8 = decoder->int8_weights();
      auto logp = decoder->step(first, s);
      s.select(torch::tensor({2, 0, 0, 3}, torch::kLong));  // beams re-ranked between steps
      logp = torch::cat({logp, decoder->step(second, s)});
      return std::vector<torch::Tensor>{logp.detach(), s.h[0].detach(), s.c[0].detach()};
    };
    const auto fused = run(false), plain = run(true);
    for (size_t i = 0; i < fused.size(); ++i) expect_same(fused[i], plain[i]);
  }
}

namespace {

// topk((masked + prior).view(A, K*V), take) by LibTorch, finite entries only.
std::vector<std::vector<BeamCandidate>> candidates_by_ops(const torch::Tensor& scores, int64_t A, int64_t K,
                                                          const std::vector<double>& prior,
                                                          const std::vector<std::vector<int64_t>>& banned, int64_t take) {
  const int64_t V = scores.size(1);
  auto masked = scores.clone();
  for (size_t r = 0; r < banned.size(); ++r) {
    for (int64_t w : banned[r]) masked[static_cast<int64_t>(r)][w] = -std::numeric_limits<float>::infinity();
  }
  auto p = torch::tensor(prior, torch::kDouble).to(torch::kFloat).unsqueeze(1);
  auto top = (masked + p).view({A, K * V}).topk(take, 1);
  std::vector<std::vector<BeamCandidate>> out(static_cast<size_t>(A));
  for (int64_t a = 0; a < A; ++a) {
    for (int64_t j = 0; j < take; ++j) {
      const float v = std::get<0>(top)[a][j].item<float>();
      if (std::isfinite(v)) out[static_cast<size_t>(a)].push_back({v, std::get<1>(top)[a][j].item<int64_t>()});
    }
  }
  return out;
}

}  // namespace

TEST(BeamCandidates, EqualTopKOfTheMaskedScores) {
  std::mt19937 rng(3);
  const float ninf = -std::numeric_limits<float>::infinity();
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t A = 1 + trial % 4, K = 1 + trial % 3, V = 37 + 5 * trial;  // odd V: chunk tails
    const int64_t take = std::min<int64_t>(2 * K, K * V);
    torch::manual_seed(trial);
    auto scores = torch::log_softmax(torch::randn({A * K, V}) * 4, 1);
    std::vector<double> prior(static_cast<size_t>(A * K));
    std::vector<std::vector<int64_t>> banned(static_cast<size_t>(A * K));
    for (size_t r = 0; r < prior.size(); ++r) {
      prior[r] = (rng() % 5 == 0) ? -std::numeric_limits<double>::infinity() : -0.1 * static_cast<double>(rng() % 100);
      for (int n = rng() % 6; n > 0; --n) banned[r].push_back(static_cast<int64_t>(rng() % V));
      std::sort(banned[r].begin(), banned[r].end());
    }
    if (trial % 5 == 0) scores[0].fill_(ninf), scores[0][3] = -2.0f;  // a row with one finite word
    const auto fused = best_beam_candidates(scores.data_ptr<float>(), A, K, V, prior, banned, take);
    const auto plain = candidates_by_ops(scores, A, K, prior, banned, take);
    ASSERT_EQ(fused.size(), plain.size());
    for (size_t a = 0; a < fused.size(); ++a) {
      ASSERT_EQ(fused[a].size(), plain[a].size()) << "trial " << trial << " image " << a;
      for (size_t j = 0; j < fused[a].size(); ++j) {
        EXPECT_EQ(fused[a][j].score, plain[a][j].score);
        EXPECT_EQ(fused[a][j].index, plain[a][j].index);  // random floats: no ties
      }
    }
    // The greedy word of each row: argmax of its masked scores.
    for (int64_t r = 0; r < A * K; ++r) {
      auto row = scores[r].clone();
      for (int64_t w : banned[static_cast<size_t>(r)]) row[w] = ninf;
      EXPECT_EQ(best_allowed_word(scores[r].data_ptr<float>(), V, banned[static_cast<size_t>(r)]), row.argmax().item<int64_t>());
    }
  }
}

TEST(BeamCandidates, TiesGoToTheLowerIndexAndEmptyBeamsGiveNothing) {
  // Two beams, four words, every score equal: the first `take` indices in order.
  std::vector<float> scores(8, -1.0f);
  auto out = best_beam_candidates(scores.data(), 1, 2, 4, {0.0, 0.0}, {{}, {1}}, 4);
  ASSERT_EQ(out[0].size(), 4u);
  EXPECT_EQ(out[0][0].index, 0);
  EXPECT_EQ(out[0][3].index, 3);
  out = best_beam_candidates(scores.data(), 1, 2, 4, {-std::numeric_limits<double>::infinity(), 0.0}, {{}, {1}}, 4);
  ASSERT_EQ(out[0].size(), 3u);  // beam 0 is empty, beam 1 bans word 1
  EXPECT_EQ(out[0][0].index, 4);
  EXPECT_EQ(out[0][1].index, 6);
  EXPECT_EQ(out[0][2].index, 7);
  EXPECT_EQ(best_allowed_word(scores.data(), 4, {0}), 1);
  EXPECT_THROW(best_beam_candidates(scores.data(), 1, 2, 4, {0.0}, {{}, {}}, 4), std::invalid_argument);
}

TEST(LstmCellKernel, DecoderStepRefusesTokensOutsideTheVocabulary) {
  // The fused pass reads the word-gate table by token id unchecked, so the step checks the ids.
  torch::manual_seed(2);
  auto decoder = eval_lstm_decoder(/*vocab=*/9, /*embed=*/4, /*hidden=*/16, /*features=*/5);
  torch::NoGradGuard no_grad;
  DecoderState s = decoder->start(torch::randn({2, 5}));
  s.word_gates = decoder->word_gate_table();
  EXPECT_ANY_THROW(decoder->step(torch::tensor({1, 9}, torch::kLong), s));
  EXPECT_ANY_THROW(decoder->step(torch::tensor({-1, 2}, torch::kLong), s));
  EXPECT_NO_THROW(decoder->step(torch::tensor({1, 8}, torch::kLong), s));
}
