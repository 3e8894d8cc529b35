// Recurrent caption decoder: word embedding, image projection and an LSTM, GRU or Elman RNN whose
// every gate also receives the image, as in Mao et al. 2015 (m-RNN) and Karpathy & Fei-Fei 2015:
//   rnn:  h_t = tanh(W_xh x_t + W_hh h_{t-1} + W_ih v)     (the same W_ih v term in LSTM/GRU gates)
// The image term is computed once per image; training projects all time steps in one product.
//
// Dimensions: B batch, T time steps, V vocabulary, D image feature, E embedding, H hidden,
// G gates per cell (LSTM 4, GRU 3, RNN 1), L layers.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace captioner {

struct DecoderConfig {
  int64_t vocab_size = 0;
  int64_t feature_dim = 0;
  int64_t embed_dim = 512;
  int64_t hidden_dim = 512;
  int64_t image_dim = 512;       // image projection width; 0 feeds the raw features to W_ih
  int64_t num_layers = 1;
  std::string cell = "lstm";     // lstm | gru | rnn
  double dropout = 0.5;          // on embeddings, image projection, between layers, before the output
  bool image_every_step = true;  // W_ih v in every step's gates
  bool image_init_state = false; // also h_0 (and c_0) = tanh(W v)

  int64_t gates() const;
  void validate() const;  // throws std::invalid_argument
  nlohmann::json to_json() const;
  static DecoderConfig from_json(const nlohmann::json& j, const std::string& origin);
};

// One layer of the recurrent cell, unrolled by the caller so the image term and the input
// projection can be shared across steps.
class RecurrentLayerImpl : public torch::nn::Module {
 public:
  RecurrentLayerImpl(const std::string& cell, int64_t input_dim, int64_t image_dim, int64_t hidden_dim);
  // inputs (B, T, in) -> pre-activations (B, T, G*H): W_x x + b, all steps in one product.
  torch::Tensor project_inputs(const torch::Tensor& inputs);
  // image (B, I) -> (B, G*H): W_ih v, once per image.
  torch::Tensor project_image(const torch::Tensor& image);
  // One step from pre-activations `pre` (B, G*H); updates h (and c for LSTM) in place.
  void step(const torch::Tensor& pre, torch::Tensor& h, torch::Tensor& c);

  torch::nn::Linear input_proj{nullptr};   // W_x, bias b
  torch::nn::Linear image_proj{nullptr};   // W_ih (no bias: b already covers it)
  torch::nn::Linear hidden_proj{nullptr};  // W_hh (bias only for GRU's candidate gate)
  std::string cell;
  int64_t hidden_dim;
};
TORCH_MODULE(RecurrentLayer);

// Decoding state for R rows (images x beams): per layer h (R, H), c (R, H) for LSTM, and the
// image pre-activation term (R, G*H).
struct DecoderState {
  std::vector<torch::Tensor> h, c, image_term;
  void select(const torch::Tensor& rows);  // keep/duplicate rows, e.g. when beams are re-ranked
};

class CaptionDecoderImpl : public torch::nn::Module {
 public:
  explicit CaptionDecoderImpl(DecoderConfig config);

  const DecoderConfig& config() const { return config_; }

  // Teacher forcing. features (B, D), tokens (B, T) starting with <start> -> logits (B, T, V).
  torch::Tensor forward(const torch::Tensor& features, const torch::Tensor& tokens);

  // Mean cross-entropy of predicting tokens[:, 1:] from tokens[:, :-1], <pad> ignored.
  torch::Tensor loss(const torch::Tensor& features, const torch::Tensor& tokens, double label_smoothing = 0.0);

  // Step-wise decoding: a state for each image, then next-word log-probabilities (R, V).
  DecoderState start(const torch::Tensor& features);
  torch::Tensor step(const torch::Tensor& tokens, DecoderState& state);

 private:
  torch::Tensor image_features(const torch::Tensor& features);  // (B, D) -> (B, I)
  void init_state(const torch::Tensor& image, std::vector<torch::Tensor>& h, std::vector<torch::Tensor>& c);

  DecoderConfig config_;
  torch::nn::Embedding embed{nullptr};
  torch::nn::Linear image_in{nullptr};     // D -> I, when image_dim > 0
  torch::nn::Linear init_h{nullptr}, init_c{nullptr};
  torch::nn::ModuleList layers{nullptr};
  torch::nn::Linear output{nullptr};       // H -> V
  torch::nn::Dropout dropout{nullptr};
};
TORCH_MODULE(CaptionDecoder);

}  // namespace captioner
