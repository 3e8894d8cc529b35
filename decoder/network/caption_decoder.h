// Recurrent caption decoder: word embedding, image projection and an LSTM, GRU or Elman RNN whose
// every gate also receives the image, as in Mao et al. 2015 (m-RNN) and Karpathy & Fei-Fei 2015:
//   rnn:  h_t = tanh(W_xh x_t + W_hh h_{t-1} + W_ih v)     (the same W_ih v term in LSTM/GRU gates)
// The image term is computed once per image; training projects all time steps in one product and,
// for the LSTM on CPU, runs the recurrence as one fused autograd node (decoder/kernels/lstm_sequence.h);
// decoding runs the LSTM cell's element-wise work as one pass (decoder/kernels/lstm_cell_kernel.h).
//
// Dimensions: B batch, T time steps, V vocabulary, D image feature, E embedding, H hidden,
// G gates per cell (LSTM 4, GRU 3, RNN 1), L layers, I the image width W_ih reads (D, or
// image_dim with a projection).
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "decoder/network/decoder_config.h"
#include "decoder/kernels/int8_linear.h"

namespace captioner {

// Whether a new decoder draws its random initial weights: a decoder about to load its weights
// skips the ~17M draws from LibTorch's serial generator, 100-150 ms of every process's start-up.
enum class Init { random, none };

// y = x W^T + b: torch::nn::Linear's parameters ("weight", "bias"), initialisation and product,
// with the initialisation optional (Init).
class DenseImpl : public torch::nn::Module {
 public:
  DenseImpl(int64_t in_features, int64_t out_features, bool bias, Init init);
  torch::Tensor forward(const torch::Tensor& x) { return torch::linear(x, weight, bias); }
  torch::Tensor weight, bias;  // (out, in), (out) or undefined
};
TORCH_MODULE(Dense);

// One layer of the recurrent cell, unrolled by the caller so the image term and the input
// projection can be shared across steps.
class RecurrentLayerImpl : public torch::nn::Module {
 public:
  RecurrentLayerImpl(const std::string& cell, int64_t input_dim, int64_t image_dim, int64_t hidden_dim, Init init);
  // inputs (B, T, in) -> pre-activations (B, T, G*H): W_x x + b, all steps in one product.
  torch::Tensor project_inputs(const torch::Tensor& inputs);
  // image (B, I) -> (B, G*H): W_ih v, once per image.
  torch::Tensor project_image(const torch::Tensor& image);
  // One step from pre-activations `pre` (B, G*H); updates h (and c for LSTM) in place. With
  // `hidden_int8`, W_hh h is that int8 product instead of the float one (decoding only).
  void step(const torch::Tensor& pre, torch::Tensor& h, torch::Tensor& c, const Int8Linear* hidden_int8 = nullptr);

  Dense input_proj{nullptr};   // W_x, bias b
  Dense image_proj{nullptr};   // W_ih (no bias: b already covers it)
  Dense hidden_proj{nullptr};  // W_hh (bias only for GRU's candidate gate)
  std::string cell;
  int64_t hidden_dim;
};
TORCH_MODULE(RecurrentLayer);

// Int8 copies of the two products decoding makes at every step, W_hh h of each layer and the
// output layer's W_o h + b_o: ~3x faster than float32 on CPUs with VNNI (bench/RESULTS.md).
struct DecoderInt8Weights {
  std::vector<Int8Linear> hidden;  // per layer
  Int8Linear output;
};

// Decoding state for R rows (images x beams): per layer h (R, H), c (R, H) for LSTM, and the
// image pre-activation term (B, G*H), one row per image: row r uses image_term[l][image_rows[r]]
// (image_rows undefined: row r, as at the start), so re-ranking beams copies indices, not terms.
// word_gates, when set, is layer 0's input term for every word (V, G*H): a row lookup then
// replaces the embedding and its product at each step. int8, when set, replaces the float
// products of each step (eval mode only).
struct DecoderState {
  std::vector<torch::Tensor> h, c, image_term;
  torch::Tensor image_rows;  // (R,) int64, or undefined
  bool zero_state = false;   // h and c still all zero (step 0, no image-initialised state)
  torch::Tensor word_gates;
  std::shared_ptr<const DecoderInt8Weights> int8;
  torch::Tensor image_term_rows(size_t layer) const;  // (R, G*H): layer's image term for each row
  void select(const torch::Tensor& rows);             // keep/duplicate rows, e.g. when beams are re-ranked
};

class CaptionDecoderImpl : public torch::nn::Module {
 public:
  explicit CaptionDecoderImpl(DecoderConfig config, Init init = Init::random);

  const DecoderConfig& config() const { return config_; }

  // Teacher forcing. features (B, D), tokens (B, T) starting with <start> -> logits (B, T, V).
  torch::Tensor forward(const torch::Tensor& features, const torch::Tensor& tokens);

  // Mean cross-entropy of predicting tokens[:, 1:] from tokens[:, :-1], <pad> ignored. On CPU
  // float32 (no label smoothing, no bf16 products) the output layer and the loss are one node
  // that skips <pad> rows (decoder/kernels/output_cross_entropy.h).
  torch::Tensor loss(const torch::Tensor& features, const torch::Tensor& tokens, double label_smoothing = 0.0);

  // Step-wise decoding: a state for each image, then next-word log-probabilities (R, V).
  DecoderState start(const torch::Tensor& features);
  // W_x embed(w) + b of layer 0 for every word w: (V, G*H). Inference only (eval mode, where
  // dropout is the identity). Built once per set of weights and shared by every caller (each
  // library call, each serve batch): ~2.5 GFLOP for the default model, the fixed cost of a call.
  torch::Tensor word_gate_table();
  // Int8 copies of the current weights for decoding (eval mode, CPU); cached like the table.
  std::shared_ptr<const DecoderInt8Weights> int8_weights();
  torch::Tensor step(const torch::Tensor& tokens, DecoderState& state);

  // Data-parallel training: the batches this module sees are rows [offset, offset + B) of a
  // global batch of `global_rows`. Dropout then draws its masks for the whole global batch and
  // keeps this slice, so every rank's masks are the ones a single process would draw for the
  // same rows (the random generators agree on all ranks). global_rows 0: off.
  void set_batch_slice(int64_t offset, int64_t global_rows);

  // Training (train mode, CPU float32): the matrix products of forward() and its backward pass
  // take bf16 operands with float32 sums (decoder/kernels/bf16_matmul.h). Eval-mode paths are untouched.
  void set_bf16_products(bool on) { bf16_products_ = on; }

 private:
  bool fused_lstm_cell(const DecoderState& s) const;            // whether step() may use decoder/kernels/lstm_cell_kernel.h
  torch::Tensor drop(const torch::Tensor& x);                   // dropout, slice-aware (see set_batch_slice)
  torch::Tensor image_features(const torch::Tensor& features);  // (B, D) -> (B, I)
  torch::Tensor linear(Dense& layer, const torch::Tensor& x);   // float32, or bf16 products in training
  void init_state(const torch::Tensor& image, std::vector<torch::Tensor>& h, std::vector<torch::Tensor>& c);
  // forward() up to the output layer: features (B, D), tokens (B, T) -> (B, T, H).
  torch::Tensor hidden_states(const torch::Tensor& features, const torch::Tensor& tokens);

  DecoderConfig config_;
  torch::nn::Embedding embed{nullptr};
  Dense image_in{nullptr};  // D -> I, when image_dim > 0
  Dense init_h{nullptr}, init_c{nullptr};
  torch::nn::ModuleList layers{nullptr};
  Dense output{nullptr};  // H -> V
  int64_t slice_offset_ = 0, slice_rows_ = 0;
  bool bf16_products_ = false;

  // The tables above for the weights they were built from: a parameter's version counter moves
  // with every in-place update (an optimizer step) and its storage with a reload, so a changed
  // weight rebuilds them. Several threads may decode with one model at once.
  using WeightsSignature = std::vector<std::pair<const void*, int64_t>>;
  WeightsSignature weights_signature();
  struct DecodingTables {
    std::mutex mutex;
    WeightsSignature word_gates_of, int8_of;
    torch::Tensor word_gates;
    std::shared_ptr<const DecoderInt8Weights> int8;
  };
  std::shared_ptr<DecodingTables> tables_ = std::make_shared<DecodingTables>();
};
TORCH_MODULE(CaptionDecoder);

// Decoder weights alone (named tensors), optionally stored as float16.
void save_decoder_weights(CaptionDecoder& decoder, const std::filesystem::path& file, bool fp16);
// Writes a LibTorch archive through AtomicFileWriter: the old file survives any failure (a full
// disk included), the temporary file is removed, and the error is one line naming the file.
void save_archive_atomic(torch::serialize::OutputArchive& archive, const std::filesystem::path& file);
void load_decoder_weights(CaptionDecoder& decoder, const std::filesystem::path& file);

}  // namespace captioner
