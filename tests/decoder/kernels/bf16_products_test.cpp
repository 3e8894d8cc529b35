// Training's bf16 products (decoder/kernels/bf16_matmul.h): exactly the float32 sums of bf16-rounded
// operands, with gradients to match, and within bf16's rounding of the float32 training step.
#include <gtest/gtest.h>

#include "decoder/kernels/bf16_matmul.h"
#include "decoder/network/caption_decoder.h"
#include "decoder/kernels/lstm_sequence.h"
#include "tests/model_fixtures.h"

using namespace captioner;

namespace {

torch::Tensor rounded(const torch::Tensor& x) { return x.to(torch::kBFloat16).to(torch::kDouble); }

// Largest difference relative to the largest magnitude of the expected tensor.
double relative_error(const torch::Tensor& got, const torch::Tensor& want) {
  const auto w = want.to(torch::kDouble);
  return ((got.to(torch::kDouble) - w).abs().max() / w.abs().max()).item<double>();
}

}  // namespace

TEST(Bf16Matmul, SumsTheRoundedOperandsInFloat32) {
  torch::manual_seed(0);
  for (const auto& [M, K, N] : std::vector<std::array<int64_t, 3>>{{7, 33, 19}, {1, 64, 5}, {64, 512, 96}}) {
    const auto a = torch::randn({M, K}), b = torch::randn({K, N}), c = torch::randn({M, N});
    const auto want = rounded(a).mm(rounded(b));
    // Plain and transposed layouts of both operands, as the backward passes use them.
    for (bool a_t : {false, true}) {
      for (bool b_t : {false, true}) {
        const auto ab = a_t ? to_bf16(a.t()).t() : to_bf16(a);
        const auto bb = b_t ? to_bf16(b.t()).t() : to_bf16(b);
        auto out = torch::empty({M, N});
        bf16_matmul_out(out, ab, bb, /*accumulate=*/false);
        EXPECT_LT(relative_error(out, want), 1e-5) << M << "x" << K << "x" << N << " a_t " << a_t << " b_t " << b_t;
        auto acc = c.clone();
        bf16_matmul_out(acc, ab, bb, /*accumulate=*/true);
        EXPECT_LT(relative_error(acc, want + c.to(torch::kDouble)), 1e-5);
      }
    }
    // The rounding is real: against the unrounded operands the error is bf16's (2^-9 per operand).
    auto out = torch::empty({M, N});
    bf16_matmul_out(out, to_bf16(a), to_bf16(b), false);
    EXPECT_GT(relative_error(out, a.to(torch::kDouble).mm(b.to(torch::kDouble))), 1e-5);
  }
}

TEST(Bf16Matmul, EmptyInnerDimensionAndWrongInputs) {
  auto out = torch::ones({3, 4});
  bf16_matmul_out(out, to_bf16(torch::zeros({3, 0})), to_bf16(torch::zeros({0, 4})), /*accumulate=*/true);
  EXPECT_TRUE(torch::equal(out, torch::ones({3, 4})));
  bf16_matmul_out(out, to_bf16(torch::zeros({3, 0})), to_bf16(torch::zeros({0, 4})), /*accumulate=*/false);
  EXPECT_TRUE(torch::equal(out, torch::zeros({3, 4})));
  const auto a = to_bf16(torch::randn({3, 5})), b = to_bf16(torch::randn({5, 4}));
  EXPECT_THROW(bf16_matmul_out(out, a.to(torch::kFloat), b, false), std::invalid_argument);  // float operand
  EXPECT_THROW(bf16_matmul_out(out, a, to_bf16(torch::randn({6, 4})), false), std::invalid_argument);
  EXPECT_THROW(bf16_matmul_out(torch::empty({3, 4}, torch::kDouble), a, b, false), std::invalid_argument);
  EXPECT_THROW(bf16_linear(torch::randn({2, 5}), torch::randn({4, 6}), torch::Tensor()), std::invalid_argument);
}

TEST(Bf16Linear, ForwardAndGradientsAreTheRoundedProducts) {
  torch::manual_seed(1);
  const int64_t B = 3, T = 4, K = 24, N = 10;
  for (bool with_bias : {true, false}) {
    auto x = torch::randn({B, T, K}).requires_grad_(true);
    auto w = torch::randn({N, K}).requires_grad_(true);
    auto b = with_bias ? torch::randn({N}).requires_grad_(true) : torch::Tensor();
    const auto y = bf16_linear(x, w, b);
    ASSERT_EQ(y.sizes(), (std::vector<int64_t>{B, T, N}));
    const auto g = torch::randn({B, T, N});
    (y * g).sum().backward();
    const auto x2 = rounded(x.detach()).view({-1, K}), w2 = rounded(w.detach()), g2 = rounded(g).view({-1, N});
    auto want_y = x2.mm(w2.t());
    if (with_bias) want_y = want_y + b.detach().to(torch::kDouble);
    EXPECT_LT(relative_error(y.detach().view({-1, N}), want_y), 1e-5);
    EXPECT_LT(relative_error(x.grad().view({-1, K}), g2.mm(w2)), 1e-5);
    EXPECT_LT(relative_error(w.grad(), g2.t().mm(x2)), 1e-5);
    if (with_bias) {
      EXPECT_LT(relative_error(b.grad(), g.view({-1, N}).sum(0)), 1e-6);
    }
  }
}

TEST(Bf16Products, LstmSequenceStaysWithinBf16RoundingOfFloat32) {
  torch::manual_seed(2);
  const int64_t B = 4, T = 6, H = 16;
  const std::vector<torch::Tensor> inputs{torch::randn({B, T, 4 * H}), torch::randn({4 * H, H}) * 0.3, torch::randn({B, H}) * 0.5,
                                          torch::randn({B, H})};
  std::vector<torch::Tensor> f32, b16;
  for (const auto& t : inputs) {
    f32.push_back(t.clone().requires_grad_(true));
    b16.push_back(t.clone().requires_grad_(true));
  }
  const auto out_f32 = lstm_sequence(f32[0], f32[1], f32[2], f32[3]);
  const auto out_b16 = lstm_sequence(b16[0], b16[1], b16[2], b16[3], /*bf16_products=*/true);
  const double out_error = relative_error(out_b16, out_f32);
  EXPECT_GT(out_error, 0) << "the bf16 path was not taken";
  EXPECT_LT(out_error, 2e-2);
  const auto weights = torch::randn({B, T, H});
  (out_f32 * weights).sum().backward();
  (out_b16 * weights).sum().backward();
  const char* names[] = {"pre", "w_hh", "h0", "c0"};
  for (size_t i = 0; i < inputs.size(); ++i) EXPECT_LT(relative_error(b16[i].grad(), f32[i].grad()), 3e-2) << names[i];
}

TEST(Bf16Products, DecoderLossFollowsFloat32AndEvalModeIsUntouched) {
  const DecoderConfig config = test::tiny_decoder_config(40, 24, "lstm", 16, 32, 0);
  torch::manual_seed(3);
  CaptionDecoder decoder(config);
  const auto features = torch::randn({5, config.feature_dim});
  const auto tokens = torch::randint(4, config.vocab_size, {5, 9});
  decoder->train();
  const auto loss_f32 = decoder->loss(features, tokens);
  auto grads_of = [&](const torch::Tensor& loss) {
    decoder->zero_grad();
    loss.backward();
    std::vector<torch::Tensor> g;
    for (const auto& p : decoder->parameters()) g.push_back(p.grad().clone());
    return g;
  };
  const auto g_f32 = grads_of(loss_f32);
  decoder->set_bf16_products(true);
  const auto loss_b16 = decoder->loss(features, tokens);
  EXPECT_NE(loss_b16.item<float>(), loss_f32.item<float>()) << "the bf16 path was not taken";
  EXPECT_NEAR(loss_b16.item<float>(), loss_f32.item<float>(), 1e-2);
  const auto g_b16 = grads_of(loss_b16);
  for (size_t i = 0; i < g_f32.size(); ++i) EXPECT_LT(relative_error(g_b16[i], g_f32[i]), 5e-2) << "parameter " << i;
  // Inference (eval mode) keeps float32 products whatever the training flag says.
  decoder->eval();
  torch::NoGradGuard no_grad;
  const auto logits_on = decoder->forward(features, tokens);
  decoder->set_bf16_products(false);
  EXPECT_TRUE(torch::equal(logits_on, decoder->forward(features, tokens)));
}
