// The fused pieces of a training step (LSTM sequence, dropout masks, the output layer's
// cross-entropy, Adam with gradient clipping) against the plain LibTorch computations they replace.
#include <gtest/gtest.h>

#include "decoder/network/caption_decoder.h"
#include "decoder/kernels/dropout_mask.h"
#include "decoder/kernels/fused_adam.h"
#include "decoder/kernels/lstm_sequence.h"
#include "decoder/kernels/output_cross_entropy.h"
#include "tests/model_fixtures.h"
#include "vocab/vocabulary.h"

using namespace captioner;

namespace {

// The decoder's own cell (RecurrentLayerImpl::step, what decoding runs) stepped T times with
// autograd; W_hh's gradient lands in layer->hidden_proj->weight.
torch::Tensor lstm_by_steps(RecurrentLayer& layer, const torch::Tensor& pre, torch::Tensor h, torch::Tensor c) {
  std::vector<torch::Tensor> outs;
  for (int64_t t = 0; t < pre.size(1); ++t) {
    layer->step(pre.select(1, t), h, c);
    outs.push_back(h);
  }
  return torch::stack(outs, 1);
}

std::vector<torch::Tensor> leaves(const std::vector<torch::Tensor>& from) {
  std::vector<torch::Tensor> out;
  for (const auto& t : from) out.push_back(t.detach().clone().requires_grad_(true));
  return out;
}

}  // namespace

TEST(LstmSequence, OutputsAndGradientsMatchSteppingTheCell) {
  torch::manual_seed(0);
  const int64_t B = 3, T = 5, H = 6;
  const std::vector<torch::Tensor> inputs{torch::randn({B, T, 4 * H}), torch::randn({4 * H, H}) * 0.4, torch::randn({B, H}) * 0.5,
                                          torch::randn({B, H})};
  auto fused = leaves(inputs), plain = leaves(inputs);
  RecurrentLayer layer("lstm", /*input_dim=*/1, /*image_dim=*/1, H, Init::random);
  {
    torch::NoGradGuard no_grad;
    layer->hidden_proj->weight.copy_(inputs[1]);
  }
  plain[1] = layer->hidden_proj->weight;
  auto out_fused = lstm_sequence(fused[0], fused[1], fused[2], fused[3]);
  auto out_plain = lstm_by_steps(layer, plain[0], plain[2], plain[3]);
  ASSERT_EQ(out_fused.sizes(), (std::vector<int64_t>{B, T, H}));
  EXPECT_TRUE(torch::allclose(out_fused, out_plain, 1e-5, 1e-6));
  // A loss that weighs every output differently, so every path of the backward pass is used.
  const auto weights = torch::randn({B, T, H});
  (out_fused * weights).sum().backward();
  (out_plain * weights).sum().backward();
  const char* names[] = {"pre", "w_hh", "h0", "c0"};
  for (size_t i = 0; i < inputs.size(); ++i) {
    ASSERT_TRUE(fused[i].grad().defined()) << names[i];
    EXPECT_TRUE(torch::allclose(fused[i].grad(), plain[i].grad(), 1e-4, 1e-5))
        << names[i] << ": max difference " << (fused[i].grad() - plain[i].grad()).abs().max().item<float>();
  }
}

TEST(LstmSequence, RefusesWrongShapes) {
  const auto pre = torch::randn({2, 3, 8}), w = torch::randn({8, 2}), h = torch::zeros({2, 2});
  EXPECT_NO_THROW(lstm_sequence(pre, w, h, h));
  EXPECT_THROW(lstm_sequence(torch::randn({2, 3, 7}), w, h, h), std::invalid_argument);
  EXPECT_THROW(lstm_sequence(pre, torch::randn({8, 3}), h, h), std::invalid_argument);
  EXPECT_THROW(lstm_sequence(pre, w, torch::zeros({3, 2}), h), std::invalid_argument);
  EXPECT_THROW(lstm_sequence(pre.to(torch::kDouble), w, h, h), std::invalid_argument);
}

TEST(DropoutMask, KeepsOneMinusPScaledAndRepeatsWithTheSeed) {
  torch::manual_seed(7);
  const auto a = dropout_mask({1001, 99}, 0.3);
  const auto b = dropout_mask({1001, 99}, 0.3);
  torch::manual_seed(7);
  const auto a2 = dropout_mask({1001, 99}, 0.3);
  EXPECT_TRUE(torch::equal(a, a2));  // the generator's state decides the mask
  EXPECT_FALSE(torch::equal(a, b));  // and each draw moves it on
  const float keep = static_cast<float>(1 / 0.7);
  EXPECT_TRUE(((a == 0) | (a == keep)).all().item<bool>());
  EXPECT_NEAR((a > 0).to(torch::kDouble).mean().item<double>(), 0.7, 0.005);
  EXPECT_NEAR(a.to(torch::kDouble).mean().item<double>(), 1.0, 0.01);  // inverted dropout keeps the mean
  // Neighbours are independent (each 64-bit draw decides two elements).
  const auto kept = (a.flatten() > 0).to(torch::kDouble);
  const auto both = (kept.narrow(0, 0, kept.size(0) - 1) * kept.narrow(0, 1, kept.size(0) - 1)).mean().item<double>();
  EXPECT_NEAR(both, 0.49, 0.01);
  EXPECT_TRUE(torch::equal(dropout_mask({5}, 0.0), torch::ones({5})));
  EXPECT_TRUE(torch::equal(dropout_mask({5}, 1.0), torch::zeros({5})));
  EXPECT_EQ(dropout_mask({0, 3}, 0.5).numel(), 0);
  EXPECT_THROW(dropout_mask({5}, 1.5), std::invalid_argument);
}

TEST(FusedAdam, MatchesAdamStepAndKeepsItsState) {
  torch::manual_seed(3);
  const std::vector<torch::Tensor> start{torch::randn({7, 5}), torch::randn({5}), torch::randn({3})};
  auto fused_params = leaves(start), plain_params = leaves(start);
  const auto options = torch::optim::AdamOptions(0.01).weight_decay(0.001);
  torch::optim::Adam fused(fused_params, options), plain(plain_params, options);
  for (int step = 0; step < 4; ++step) {
    for (size_t i = 0; i < start.size(); ++i) {
      const auto grad = torch::randn(start[i].sizes());
      // The third parameter has no gradient in the first step: Adam skips it, and so must this.
      if (i == 2 && step == 0) continue;
      fused_params[i].mutable_grad() = grad.clone();
      plain_params[i].mutable_grad() = grad.clone();
    }
    // The last step goes through Adam::step itself: the fused steps left it a state it can use.
    if (step < 3) {
      fused_adam_step(fused);
    } else {
      fused.step();
    }
    plain.step();
    for (size_t i = 0; i < start.size(); ++i) {
      EXPECT_TRUE(torch::allclose(fused_params[i], plain_params[i], 1e-5, 1e-6)) << "step " << step << " parameter " << i;
    }
  }
  for (size_t i = 0; i < start.size(); ++i) {
    const auto key = c10::guts::to_string(fused_params[i].unsafeGetTensorImpl());
    const auto key_plain = c10::guts::to_string(plain_params[i].unsafeGetTensorImpl());
    const auto& a = static_cast<torch::optim::AdamParamState&>(*fused.state().at(key));
    const auto& b = static_cast<torch::optim::AdamParamState&>(*plain.state().at(key_plain));
    EXPECT_EQ(a.step(), b.step());
    EXPECT_TRUE(torch::allclose(a.exp_avg(), b.exp_avg(), 1e-5, 1e-7));
    EXPECT_TRUE(torch::allclose(a.exp_avg_sq(), b.exp_avg_sq(), 1e-5, 1e-7));
  }
}

namespace {

// F::linear + F::cross_entropy and output_cross_entropy on the same leaves: loss and gradients.
void expect_output_cross_entropy_matches(int64_t N, int64_t H, int64_t V, bool with_bias, const torch::Tensor& targets) {
  const auto h0 = torch::randn({N, H}), w0 = torch::randn({V, H}) * 0.3, b0 = torch::randn({V});
  auto plain = leaves({h0, w0, b0}), fused = leaves({h0, w0, b0});
  namespace F = torch::nn::functional;
  const auto plain_loss = F::cross_entropy(F::linear(plain[0], plain[1], with_bias ? plain[2] : torch::Tensor()), targets,
                                           F::CrossEntropyFuncOptions().ignore_index(Vocabulary::kPad));
  const auto fused_loss =
      output_cross_entropy(fused[0], fused[1], with_bias ? fused[2] : torch::Tensor(), targets, Vocabulary::kPad);
  EXPECT_NEAR(fused_loss.item<double>(), plain_loss.item<double>(), 1e-5 * std::abs(plain_loss.item<double>()));
  (plain_loss * 3).backward();  // a gradient other than 1 reaches the node
  (fused_loss * 3).backward();
  EXPECT_TRUE(torch::allclose(fused[0].grad(), plain[0].grad(), 1e-4, 1e-6)) << "hidden";
  EXPECT_TRUE(torch::allclose(fused[1].grad(), plain[1].grad(), 1e-4, 1e-6)) << "weight";
  if (with_bias) {
    EXPECT_TRUE(torch::allclose(fused[2].grad(), plain[2].grad(), 1e-4, 1e-6)) << "bias";
  } else {
    EXPECT_FALSE(fused[2].grad().defined());
  }
  // Rows whose target is <pad> get no gradient at all.
  const auto pad_rows = (targets == Vocabulary::kPad).nonzero().squeeze(1);
  if (pad_rows.numel() > 0) {
    EXPECT_EQ(fused[0].grad().index_select(0, pad_rows).abs().max().item<float>(), 0.0f);
  }
}

}  // namespace

TEST(OutputCrossEntropy, EqualsLinearThenCrossEntropyWithPaddingIgnored) {
  if (!output_cross_entropy_supports(torch::zeros({1, 1}))) GTEST_SKIP() << "needs an AVX2 CPU";
  torch::manual_seed(11);
  // Vocabularies that are not a multiple of 8 (the row passes' scalar tail; all tail) and one that is;
  // padded rows, and targets at both ends of the vocabulary.
  for (const int64_t V : {5, 53, 64}) {
    for (const bool bias : {true, false}) {
      auto targets = torch::randint(1, V, {37}, torch::kLong);
      targets[3] = Vocabulary::kPad;
      targets[20] = Vocabulary::kPad;
      targets[21] = V - 1;
      targets[22] = 1;
      SCOPED_TRACE("V " + std::to_string(V) + (bias ? " with bias" : " without bias"));
      expect_output_cross_entropy_matches(37, 24, V, bias, targets);
      expect_output_cross_entropy_matches(37, 24, V, bias, torch::randint(1, V, {37}, torch::kLong));  // no padding
    }
  }
}

TEST(OutputCrossEntropy, LargeLogitsStayFiniteAndBadInputsAreRefused) {
  if (!output_cross_entropy_supports(torch::zeros({1, 1}))) GTEST_SKIP() << "needs an AVX2 CPU";
  // Logits in the hundreds: the maximum is subtracted before exp.
  const auto h = (torch::randn({5, 8}) * 100).requires_grad_(true), w = torch::randn({19, 8}).requires_grad_(true);
  const auto targets = torch::tensor({1L, 2L, 18L, 4L, 5L});
  auto loss = output_cross_entropy(h, w, torch::Tensor(), targets, Vocabulary::kPad);
  namespace F = torch::nn::functional;
  const auto plain = F::cross_entropy(F::linear(h, w), targets);
  EXPECT_TRUE(std::isfinite(loss.item<float>()));
  EXPECT_NEAR(loss.item<double>(), plain.item<double>(), 1e-4 * std::abs(plain.item<double>()));
  loss.backward({}, /*retain_graph=*/true);
  EXPECT_TRUE(torch::isfinite(h.grad()).all().item<bool>());
  EXPECT_THROW(loss.backward(), std::exception);  // the logits became their gradient: only once
  // Every target padding: no word to predict, NaN as LibTorch's mean over nothing.
  EXPECT_TRUE(std::isnan(output_cross_entropy(h, w, torch::Tensor(), torch::zeros({5}, torch::kLong), 0).item<float>()));
  EXPECT_THROW(output_cross_entropy(h, w, torch::Tensor(), torch::tensor({1L, 2L, 19L, 4L, 5L}), 0), std::invalid_argument);
  EXPECT_THROW(output_cross_entropy(h, w, torch::Tensor(), torch::tensor({1L, -2L, 3L, 4L, 5L}), 0), std::invalid_argument);
  EXPECT_THROW(output_cross_entropy(h, w.t(), torch::Tensor(), targets, 0), std::invalid_argument);
  EXPECT_THROW(output_cross_entropy(h, w, torch::zeros({18}), targets, 0), std::invalid_argument);
  EXPECT_THROW(output_cross_entropy(h.to(torch::kDouble), w, torch::Tensor(), targets, 0), std::invalid_argument);
  EXPECT_THROW(output_cross_entropy(h, w, torch::Tensor(), targets.narrow(0, 0, 4), 0), std::invalid_argument);
}

TEST(OutputCrossEntropy, DecoderLossEqualsItsLogitsCrossEntropy) {
  if (!output_cross_entropy_supports(torch::zeros({1, 1}))) GTEST_SKIP() << "needs an AVX2 CPU";
  torch::manual_seed(5);
  DecoderConfig config = test::tiny_decoder_config(41, 12, "lstm", 16, 24, 8);
  config.dropout = 0.5;  // masks drawn, the same for both passes below (seeded)
  CaptionDecoder decoder(config);
  decoder->train();
  const auto features = torch::randn({6, 12});
  auto tokens = torch::randint(1, 41, {6, 9}, torch::kLong);
  tokens.narrow(1, 6, 3).narrow(0, 0, 4).fill_(Vocabulary::kPad);  // shorter captions, padded
  torch::manual_seed(9);                                           // the same dropout masks for both
  const auto fused = decoder->loss(features, tokens);
  auto fused_grads = std::vector<torch::Tensor>();
  fused.backward();
  for (const auto& p : decoder->parameters()) fused_grads.push_back(p.grad().clone());
  for (auto& p : decoder->parameters()) p.mutable_grad() = torch::Tensor();
  torch::manual_seed(9);
  namespace F = torch::nn::functional;
  const auto logits = decoder->forward(features, tokens.narrow(1, 0, 8));
  const auto plain = F::cross_entropy(logits.reshape({-1, 41}), tokens.narrow(1, 1, 8).reshape({-1}),
                                      F::CrossEntropyFuncOptions().ignore_index(Vocabulary::kPad));
  plain.backward();
  EXPECT_NEAR(fused.item<double>(), plain.item<double>(), 1e-5 * plain.item<double>());
  const auto params = decoder->parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(torch::allclose(fused_grads[i], params[i].grad(), 1e-4, 1e-6)) << "parameter " << i;
  }
}

TEST(FusedAdam, ClipScaleEqualsClipGradNormBitForBitOnEveryThread) {
  torch::manual_seed(4);
  // 300,018 weights: the update is split across threads where the machine has several cores, at
  // cuts that fall inside parameters.
  const std::vector<torch::Tensor> start{torch::randn({150001}), torch::randn({17}), torch::randn({300, 500})};
  auto clipped_params = leaves(start), scaled_params = leaves(start), plain_params = leaves(start);
  const auto options = torch::optim::AdamOptions(0.01).weight_decay(0.001);
  torch::optim::Adam clipped(clipped_params, options), scaled(scaled_params, options), plain(plain_params, options);
  for (int step = 0; step < 3; ++step) {
    for (size_t i = 0; i < start.size(); ++i) {
      // Large gradients, so that the norm exceeds max_norm and clipping really scales them.
      const auto grad = torch::randn(start[i].sizes()) * 10;
      clipped_params[i].mutable_grad() = grad.clone();
      scaled_params[i].mutable_grad() = grad.clone();
      plain_params[i].mutable_grad() = grad.clone();
    }
    const float scale = gradient_clip_scale(scaled_params, 5.0);
    EXPECT_LT(scale, 1.0f);
    torch::nn::utils::clip_grad_norm_(clipped_params, 5.0);
    fused_adam_step(clipped, 1.0f);
    fused_adam_step(scaled, scale);
    torch::nn::utils::clip_grad_norm_(plain_params, 5.0);  // and LibTorch's own Adam: every weight updated once
    plain.step();
    for (size_t i = 0; i < start.size(); ++i) {
      EXPECT_TRUE(torch::equal(clipped_params[i], scaled_params[i])) << "step " << step << " parameter " << i;
      EXPECT_TRUE(torch::allclose(scaled_params[i], plain_params[i], 1e-5, 1e-6)) << "step " << step << " parameter " << i;
    }
  }
  // Small gradients are not scaled; no gradient at all gives 1.
  for (auto& p : scaled_params) p.mutable_grad() = torch::full(p.sizes(), 1e-6f);
  EXPECT_EQ(gradient_clip_scale(scaled_params, 5.0), 1.0f);
  for (auto& p : scaled_params) p.mutable_grad() = torch::Tensor();
  EXPECT_EQ(gradient_clip_scale(scaled_params, 5.0), 1.0f);
}
