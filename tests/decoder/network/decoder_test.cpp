#include "decoder/network/caption_decoder.h"

#include <gtest/gtest.h>

#include "decoder/kernels/fused_adam.h"
#include "decoder/search/caption_search.h"
#include "vocab/vocabulary.h"
#include "tests/model_fixtures.h"

using namespace captioner;

namespace {
DecoderConfig tiny(const std::string& cell, int64_t vocab = 12, int64_t feat = 5) {
  return test::tiny_decoder_config(vocab, feat, cell, 6, 7, 4);
}

torch::Tensor random_tokens(int64_t B, int64_t T, int64_t V) {
  auto t = torch::randint(Vocabulary::kNumSpecial, V, {B, T}, torch::kLong);
  t.select(1, 0).fill_(Vocabulary::kStart);
  return t;
}
}  // namespace

class EveryCell : public ::testing::TestWithParam<std::string> {};
INSTANTIATE_TEST_SUITE_P(Cells, EveryCell, ::testing::Values("lstm", "gru", "rnn"));

TEST_P(EveryCell, ShapesOfForwardLossAndSteps) {
  torch::manual_seed(0);
  for (int layers : {1, 2}) {
    auto c = tiny(GetParam());
    c.num_layers = layers;
    c.image_init_state = true;
    CaptionDecoder d(c);
    auto feats = torch::randn({3, 5});
    auto tokens = random_tokens(3, 6, 12);
    EXPECT_EQ(d->forward(feats, tokens).sizes(), (std::vector<int64_t>{3, 6, 12}));
    auto loss = d->loss(feats, tokens);
    EXPECT_EQ(loss.dim(), 0);
    EXPECT_TRUE(std::isfinite(loss.item<double>()));
    auto state = d->start(feats);
    auto logp = d->step(torch::full({3}, Vocabulary::kStart, torch::kLong), state);
    EXPECT_EQ(logp.sizes(), (std::vector<int64_t>{3, 12}));
    EXPECT_NEAR(logp.exp().sum(1).mean().item<double>(), 1.0, 1e-5);
    EXPECT_THROW(d->forward(torch::randn({3, 4}), tokens), std::invalid_argument);
  }
}

TEST_P(EveryCell, TeacherForcingAndStepwiseDecodingAgree) {
  // Training and decoding run the same cell through different code paths (all steps projected at
  // once vs one step at a time); they must compute the same distribution.
  torch::manual_seed(1);
  auto c = tiny(GetParam());
  c.num_layers = 2;
  CaptionDecoder d(c);
  d->eval();
  auto feats = torch::randn({2, 5});
  auto tokens = random_tokens(2, 5, 12);
  auto logits = torch::log_softmax(d->forward(feats, tokens), -1);
  auto state = d->start(feats);
  for (int64_t t = 0; t < 5; ++t) {
    auto lp = d->step(tokens.select(1, t), state);
    EXPECT_TRUE(torch::allclose(lp, logits.select(1, t), 1e-5, 1e-5)) << "step " << t;
  }
}

TEST(CaptionDecoder, ElmanCellIsExactlyTheSpecifiedRecurrence) {
  // h_t = tanh(W_xh x_t + b + W_hh h_{t-1} + W_ih v), with v the raw image features (image_dim 0).
  torch::manual_seed(2);
  auto c = tiny("rnn");
  c.image_dim = 0;
  CaptionDecoder d(c);
  d->eval();
  auto v = torch::randn({1, 5});
  auto tokens = random_tokens(1, 4, 12);
  auto params = d->named_parameters();
  auto E = params["embed.weight"], Wx = params["layers.0.input_proj.weight"], b = params["layers.0.input_proj.bias"];
  auto Wh = params["layers.0.hidden_proj.weight"], Wi = params["layers.0.image_proj.weight"];
  auto Wo = params["output.weight"], bo = params["output.bias"];
  auto h = torch::zeros({1, 7});
  auto logits = d->forward(v, tokens);
  for (int64_t t = 0; t < 4; ++t) {
    auto x = E.index_select(0, tokens.select(1, t));
    h = torch::tanh(x.matmul(Wx.t()) + b + h.matmul(Wh.t()) + v.matmul(Wi.t()));
    EXPECT_TRUE(torch::allclose(logits.select(1, t), h.matmul(Wo.t()) + bo, 1e-5, 1e-6)) << "step " << t;
  }
}

TEST(CaptionDecoder, ImageEntersEveryStepNotOnlyTheFirst) {
  torch::manual_seed(3);
  auto c = tiny("lstm");
  CaptionDecoder every(c);
  every->eval();
  auto tokens = random_tokens(1, 8, 12);
  auto a = every->forward(torch::randn({1, 5}), tokens);
  auto b = every->forward(torch::randn({1, 5}), tokens);
  // Even at the last step the image still changes the prediction directly.
  EXPECT_GT((a.select(1, 7) - b.select(1, 7)).abs().max().item<double>(), 1e-4);
  c.image_every_step = false;
  c.image_init_state = false;
  EXPECT_THROW(CaptionDecoder{c}, std::invalid_argument);
}

TEST(CaptionDecoder, LossIgnoresPadding) {
  torch::manual_seed(4);
  CaptionDecoder d(tiny("gru"));
  d->eval();
  auto feats = torch::randn({2, 5});
  auto tokens = random_tokens(2, 5, 12);
  auto padded = torch::cat({tokens, torch::full({2, 3}, Vocabulary::kPad, torch::kLong)}, 1);
  EXPECT_NEAR(d->loss(feats, tokens).item<double>(), d->loss(feats, padded).item<double>(), 1e-6);
  // A sequence padded inside the batch counts only its real tokens: equal to scoring it alone.
  auto first = tokens.narrow(0, 0, 1);
  auto mixed = torch::cat(
      {first, torch::cat({tokens.narrow(0, 1, 1).narrow(1, 0, 3), torch::full({1, 2}, Vocabulary::kPad, torch::kLong)}, 1)});
  auto manual = d->loss(feats.narrow(0, 0, 1), first).item<double>() * 4 +
                d->loss(feats.narrow(0, 1, 1), tokens.narrow(0, 1, 1).narrow(1, 0, 3)).item<double>() * 2;
  EXPECT_NEAR(d->loss(feats, mixed).item<double>(), manual / 6, 1e-5);
}

TEST_P(EveryCell, LearnsHelloAtCharacterLevel) {
  // The classic check of a recurrent core (Karpathy's min-char-rnn): vocabulary {h, e, l, o},
  // trained on "hello"; greedy decoding from "h" must give "ello". The second "l" -> "o" needs
  // memory of the step before, so a cell that ignores its state cannot pass.
  torch::manual_seed(5);
  Vocabulary vocab = Vocabulary::build({{"h", "e", "l", "o"}}, 1);
  CaptionDecoder d(test::tiny_decoder_config(static_cast<int64_t>(vocab.size()), 1, GetParam(), 8, 16, 0));
  auto seq = torch::tensor(std::vector<int64_t>{vocab.id("h"), vocab.id("e"), vocab.id("l"), vocab.id("l"), vocab.id("o"),
                                                Vocabulary::kEnd})
                 .unsqueeze(0);
  auto feats = torch::zeros({1, 1});
  torch::optim::Adam opt(d->parameters(), torch::optim::AdamOptions(0.05));
  for (int i = 0; i < 300; ++i) {
    opt.zero_grad();
    auto loss = d->loss(feats, seq);
    loss.backward();
    opt.step();
  }
  d->eval();
  torch::NoGradGuard no_grad;
  auto state = d->start(feats);
  auto token = torch::tensor(std::vector<int64_t>{vocab.id("h")});
  std::string out;
  for (int i = 0; i < 8; ++i) {
    auto next = d->step(token, state).argmax(1);
    if (next.item<int64_t>() == Vocabulary::kEnd) break;
    out += vocab.token(next.item<int64_t>());
    token = next;
  }
  EXPECT_EQ(out, "ello") << GetParam();
}

// The decoding tables (word -> gate table, int8 weights) are built once per set of weights and
// shared by every caller, and rebuilt when a weight changes: by an in-place op, by the fused Adam
// step that writes through a raw pointer, or by loading other weights.
TEST(CaptionDecoder, DecodingTablesAreSharedUntilAWeightChanges) {
  torch::manual_seed(5);
  DecoderConfig c = tiny("lstm", 12, 5);
  c.hidden_dim = 16;
  CaptionDecoder d(c);
  d->eval();
  const auto table = d->word_gate_table();
  const auto int8 = d->int8_weights();
  EXPECT_EQ(d->word_gate_table().data_ptr(), table.data_ptr()) << "rebuilt without a change";
  EXPECT_EQ(d->int8_weights(), int8);

  {
    torch::NoGradGuard no_grad;
    d->parameters().front().add_(0.5);  // the embedding
  }
  const auto after_edit = d->word_gate_table();
  EXPECT_FALSE(torch::equal(after_edit, table)) << "a stale table after an in-place edit";
  EXPECT_NE(d->int8_weights(), int8);

  d->train();
  torch::optim::Adam adam(d->parameters(), torch::optim::AdamOptions(0.1));
  d->loss(torch::randn({2, 5}), random_tokens(2, 4, 12)).backward();
  fused_adam_step(adam);
  d->eval();
  CaptionDecoder fresh(c);
  fresh->eval();
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < d->parameters().size(); ++i) fresh->parameters()[i].copy_(d->parameters()[i]);
  }
  EXPECT_TRUE(torch::equal(d->word_gate_table(), fresh->word_gate_table())) << "a stale table after a fused Adam step";
}

// Dense draws torch::nn::Linear's initial weights draw for draw (a seed trains the model it
// trained before), and a decoder about to load its weights draws nothing (its start-up).
TEST(Dense, InitialisesAsTorchLinearOrNotAtAll) {
  torch::manual_seed(7);
  torch::nn::Linear reference(9, 5);
  torch::manual_seed(7);
  Dense dense(9, 5, true, Init::random);
  EXPECT_TRUE(torch::equal(dense->weight, reference->weight));
  EXPECT_TRUE(torch::equal(dense->bias, reference->bias));
  EXPECT_TRUE(torch::equal(dense(torch::ones({2, 9})), reference(torch::ones({2, 9}))));
  EXPECT_FALSE(Dense(9, 5, false, Init::random)->bias.defined());

  torch::manual_seed(3);
  const auto expected = torch::rand({4});
  torch::manual_seed(3);
  CaptionDecoder unset(tiny("lstm"), Init::none);
  EXPECT_TRUE(torch::equal(torch::rand({4}), expected)) << "Init::none drew from the generator";
  CaptionDecoder drawn(tiny("lstm"));
  EXPECT_EQ(unset->named_parameters().keys(), drawn->named_parameters().keys());
}
