// The fused pieces of a training step (LSTM sequence, dropout masks, Adam) against the plain
// LibTorch computations they replace.
#include <gtest/gtest.h>

#include "decoder/network/caption_decoder.h"
#include "decoder/kernels/dropout_mask.h"
#include "decoder/kernels/fused_adam.h"
#include "decoder/kernels/lstm_sequence.h"

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
