#include "decoder/network/caption_decoder.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "datasets/file_io.h"
#include "datasets/json_util.h"
#include "decoder/kernels/bf16_matmul.h"
#include "decoder/kernels/dropout_mask.h"
#include "decoder/kernels/lstm_cell_kernel.h"
#include "decoder/kernels/lstm_sequence.h"
#include "decoder/kernels/output_cross_entropy.h"
#include "vocab/vocabulary.h"

namespace captioner {

using nlohmann::json;
namespace F = torch::nn::functional;

DenseImpl::DenseImpl(int64_t in_features, int64_t out_features, bool with_bias, Init init) {
  weight = register_parameter("weight", torch::empty({out_features, in_features}));
  if (with_bias) bias = register_parameter("bias", torch::empty({out_features}));
  if (init == Init::none) return;
  // torch::nn::Linear's reset_parameters, draw for draw: models trained before keep their seeds.
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (with_bias) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

RecurrentLayerImpl::RecurrentLayerImpl(const std::string& cell_, int64_t input_dim, int64_t image_dim, int64_t hidden, Init init)
    : cell(cell_), hidden_dim(hidden) {
  const int64_t g = cell == "lstm" ? 4 : cell == "gru" ? 3 : 1;
  input_proj = register_module("input_proj", Dense(input_dim, g * hidden, true, init));
  image_proj = register_module("image_proj", Dense(image_dim, g * hidden, false, init));
  hidden_proj = register_module("hidden_proj", Dense(hidden, g * hidden, cell == "gru", init));
  if (init == Init::none) return;
  // PyTorch's recurrent initialisation, and a forget-gate bias of 1 so early training remembers.
  const double k = 1.0 / std::sqrt(static_cast<double>(hidden));
  torch::NoGradGuard no_grad;
  for (auto& p : parameters()) p.uniform_(-k, k);
  if (cell == "lstm") input_proj->bias.narrow(0, hidden, hidden).fill_(1.0);
}

torch::Tensor RecurrentLayerImpl::project_inputs(const torch::Tensor& inputs) { return input_proj(inputs); }

torch::Tensor RecurrentLayerImpl::project_image(const torch::Tensor& image) { return image_proj(image); }

void RecurrentLayerImpl::step(const torch::Tensor& pre, torch::Tensor& h, torch::Tensor& c, const Int8Linear* hidden_int8) {
  const int64_t H = hidden_dim;
  if (cell == "lstm") {
    // Gate order (input, forget, output, cell): the three sigmoids run as one op.
    auto gates = hidden_int8 ? hidden_int8->forward(h).add_(pre) : torch::addmm(pre, h, hidden_proj->weight.t());
    auto sig = torch::sigmoid(gates.narrow(1, 0, 3 * H));
    auto g = torch::tanh(gates.narrow(1, 3 * H, H));
    c = sig.narrow(1, H, H) * c + sig.narrow(1, 0, H) * g;
    h = sig.narrow(1, 2 * H, H) * torch::tanh(c);
  } else if (cell == "gru") {
    auto hg = (hidden_int8 ? hidden_int8->forward(h) : hidden_proj(h)).chunk(3, 1);  // reset, update, candidate
    auto xg = pre.chunk(3, 1);
    auto r = torch::sigmoid(xg[0] + hg[0]);
    auto z = torch::sigmoid(xg[1] + hg[1]);
    auto n = torch::tanh(xg[2] + r * hg[2]);
    h = (1 - z) * n + z * h;
  } else {
    h = torch::tanh(hidden_int8 ? hidden_int8->forward(h).add_(pre) : torch::addmm(pre, h, hidden_proj->weight.t()));
  }
}

void DecoderState::select(const torch::Tensor& rows) {
  for (auto* v : {&h, &c}) {
    for (auto& t : *v) {
      if (t.defined()) t = t.index_select(0, rows);
    }
  }
  image_rows = image_rows.defined() ? image_rows.index_select(0, rows) : rows.to(torch::kLong).clone();
}

torch::Tensor DecoderState::image_term_rows(size_t layer) const {
  const auto& term = image_term.at(layer);
  if (!term.defined() || !image_rows.defined()) return term;
  return term.index_select(0, image_rows);
}

CaptionDecoderImpl::CaptionDecoderImpl(DecoderConfig config, Init init) : config_(std::move(config)) {
  config_.validate();
  const auto& c = config_;
  auto embed_options = torch::nn::EmbeddingOptions(c.vocab_size, c.embed_dim).padding_idx(Vocabulary::kPad);
  if (init == Init::none) embed_options._weight(torch::empty({c.vocab_size, c.embed_dim}));  // given: not drawn
  embed = register_module("embed", torch::nn::Embedding(embed_options));
  int64_t image_width = c.feature_dim;
  if (c.image_dim > 0) {
    image_in = register_module("image_in", Dense(c.feature_dim, c.image_dim, true, init));
    image_width = c.image_dim;
  }
  if (c.image_init_state) {
    init_h = register_module("init_h", Dense(image_width, c.num_layers * c.hidden_dim, true, init));
    if (c.cell == "lstm") init_c = register_module("init_c", Dense(image_width, c.num_layers * c.hidden_dim, true, init));
  }
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t l = 0; l < c.num_layers; ++l) {
    layers->push_back(RecurrentLayer(c.cell, l == 0 ? c.embed_dim : c.hidden_dim, image_width, c.hidden_dim, init));
  }
  output = register_module("output", Dense(c.hidden_dim, c.vocab_size, true, init));
}

void CaptionDecoderImpl::set_batch_slice(int64_t offset, int64_t global_rows) {
  if (global_rows < 0 || offset < 0 || (global_rows > 0 && offset > global_rows)) {
    throw std::invalid_argument("batch slice outside its global batch");
  }
  slice_offset_ = offset;
  slice_rows_ = global_rows;
}

torch::Tensor CaptionDecoderImpl::drop(const torch::Tensor& x) {
  const double p = config_.dropout;
  if (!is_training() || p == 0) return x;
  // Data-parallel: masks drawn for the global batch's shape, rows [offset, offset + B) kept.
  auto shape = x.sizes().vec();
  if (slice_rows_ > 0) shape[0] = slice_rows_;
  torch::Tensor mask;
  if (x.device().is_cpu() && x.scalar_type() == torch::kFloat) {
    mask = dropout_mask(shape, p);
  } else {
    mask = torch::empty(shape, x.options().requires_grad(false)).bernoulli_(1 - p).div_(1 - p);
  }
  return x * (slice_rows_ > 0 ? mask.narrow(0, slice_offset_, x.size(0)) : mask);
}

torch::Tensor CaptionDecoderImpl::linear(Dense& layer, const torch::Tensor& x) {
  if (bf16_products_ && is_training() && x.device().is_cpu() && x.scalar_type() == torch::kFloat) {
    return bf16_linear(x, layer->weight, layer->bias);
  }
  return layer(x);
}

torch::Tensor CaptionDecoderImpl::image_features(const torch::Tensor& features) {
  if (features.dim() != 2 || features.size(1) != config_.feature_dim) {
    throw std::invalid_argument("decoder expects image features of shape (B, " + std::to_string(config_.feature_dim) + "), got " +
                                c10::str(features.sizes()));
  }
  auto image = image_in ? torch::relu(linear(image_in, features)) : features;
  return config_.image_dropout ? drop(image) : image;
}

void CaptionDecoderImpl::init_state(const torch::Tensor& image, std::vector<torch::Tensor>& h, std::vector<torch::Tensor>& c) {
  const int64_t B = image.size(0), H = config_.hidden_dim, L = config_.num_layers;
  h.assign(L, torch::Tensor());
  c.assign(L, torch::Tensor());
  torch::Tensor h0, c0;
  if (config_.image_init_state) {
    h0 = torch::tanh(init_h(image)).view({B, L, H});
    if (init_c) c0 = torch::tanh(init_c(image)).view({B, L, H});
  }
  for (int64_t l = 0; l < L; ++l) {
    h[l] = h0.defined() ? h0.select(1, l) : torch::zeros({B, H}, image.options());
    if (config_.cell == "lstm") c[l] = c0.defined() ? c0.select(1, l) : torch::zeros({B, H}, image.options());
  }
}

torch::Tensor CaptionDecoderImpl::forward(const torch::Tensor& features, const torch::Tensor& tokens) {
  return linear(output, hidden_states(features, tokens));  // (B, T, V)
}

torch::Tensor CaptionDecoderImpl::hidden_states(const torch::Tensor& features, const torch::Tensor& tokens) {
  const int64_t T = tokens.size(1);
  auto image = image_features(features);  // (B, I)
  std::vector<torch::Tensor> h, c;
  init_state(image, h, c);
  auto x = drop(embed(tokens));  // (B, T, E)
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    auto& layer = *layers[l]->as<RecurrentLayerImpl>();
    auto pre = linear(layer.input_proj, x);  // (B, T, G*H), one product for all steps
    if (config_.image_every_step) pre = pre + linear(layer.image_proj, image).unsqueeze(1);
    if (config_.cell == "lstm" && lstm_sequence_supports(pre)) {
      const bool bf16 = bf16_products_ && is_training();
      x = drop(lstm_sequence(pre, layer.hidden_proj->weight, h[l], c[l], bf16));  // the whole sequence, one node
      continue;
    }
    std::vector<torch::Tensor> outs;
    outs.reserve(T);
    for (int64_t t = 0; t < T; ++t) {
      layer.step(pre.select(1, t), h[l], c[l]);
      outs.push_back(h[l]);
    }
    x = drop(torch::stack(outs, 1));  // (B, T, H)
  }
  return x;
}

torch::Tensor CaptionDecoderImpl::loss(const torch::Tensor& features, const torch::Tensor& tokens, double label_smoothing) {
  auto inputs = tokens.narrow(1, 0, tokens.size(1) - 1);
  auto targets = tokens.narrow(1, 1, tokens.size(1) - 1);
  const auto h = hidden_states(features, inputs);  // (B, T, H)
  const bool bf16 = bf16_products_ && is_training();
  if (!bf16 && label_smoothing == 0 && output_cross_entropy_supports(h)) {
    return output_cross_entropy(h.reshape({-1, config_.hidden_dim}), output->weight, output->bias, targets.reshape({-1}),
                                Vocabulary::kPad);
  }
  auto logits = linear(output, h);
  return F::cross_entropy(logits.reshape({-1, config_.vocab_size}), targets.reshape({-1}),
                          F::CrossEntropyFuncOptions().ignore_index(Vocabulary::kPad).label_smoothing(label_smoothing));
}

DecoderState CaptionDecoderImpl::start(const torch::Tensor& features) {
  DecoderState s;
  auto image = image_features(features);
  init_state(image, s.h, s.c);
  s.zero_state = !config_.image_init_state;
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    auto& layer = *layers[l]->as<RecurrentLayerImpl>();
    s.image_term.push_back(config_.image_every_step ? layer.project_image(image) : torch::Tensor());
  }
  return s;
}

CaptionDecoderImpl::WeightsSignature CaptionDecoderImpl::weights_signature() {
  WeightsSignature signature;
  for (const auto& p : parameters()) signature.emplace_back(p.data_ptr(), p._version());
  return signature;
}

torch::Tensor CaptionDecoderImpl::word_gate_table() {
  if (is_training()) throw std::logic_error("word_gate_table is for decoding in eval mode");
  std::lock_guard<std::mutex> lock(tables_->mutex);
  WeightsSignature now = weights_signature();
  if (!tables_->word_gates.defined() || tables_->word_gates_of != now) {
    torch::NoGradGuard no_grad;
    tables_->word_gates = layers[0]->as<RecurrentLayerImpl>()->project_inputs(embed->weight);  // (V, G*H)
    tables_->word_gates_of = std::move(now);
  }
  return tables_->word_gates;
}

std::shared_ptr<const DecoderInt8Weights> CaptionDecoderImpl::int8_weights() {
  if (is_training()) throw std::logic_error("int8_weights is for decoding in eval mode");
  std::lock_guard<std::mutex> lock(tables_->mutex);
  WeightsSignature now = weights_signature();
  if (!tables_->int8 || tables_->int8_of != now) {
    auto w = std::make_shared<DecoderInt8Weights>();
    for (int64_t l = 0; l < config_.num_layers; ++l) {
      auto& proj = *layers[l]->as<RecurrentLayerImpl>()->hidden_proj;
      w->hidden.emplace_back(proj.weight, proj.bias);
    }
    w->output = Int8Linear(output->weight, output->bias);
    tables_->int8 = std::move(w);
    tables_->int8_of = std::move(now);
  }
  return tables_->int8;
}

namespace {

// The LSTM cell's element-wise work in one pass (decoder/kernels/lstm_cell_kernel.h): for decoding on a
// CPU with AVX2, where it equals LibTorch's ops bit for bit (H a multiple of 16).
void fused_lstm_step(const LstmCellInputs& in, torch::Tensor& h, torch::Tensor& c) {
  const int64_t R = h.size(0), H = h.size(1);
  auto c_in = c.contiguous();
  auto h_out = torch::empty({R, H}, h.options());
  auto c_out = torch::empty({R, H}, c.options());
  lstm_cell_step(in, c_in.data_ptr<float>(), c_out.data_ptr<float>(), h_out.data_ptr<float>(), R, H);
  h = std::move(h_out);
  c = std::move(c_out);
}

}  // namespace

bool CaptionDecoderImpl::fused_lstm_cell(const DecoderState& s) const {
  static const bool available = lstm_cell_kernel_available();
  return available && config_.cell == "lstm" && config_.hidden_dim % 16 == 0 && !is_training() &&
         !torch::GradMode::is_enabled() && !s.h.empty() && s.h[0].device().is_cpu() && s.h[0].scalar_type() == torch::kFloat &&
         s.c[0].scalar_type() == torch::kFloat &&
         (!s.word_gates.defined() || (s.word_gates.is_contiguous() && s.word_gates.scalar_type() == torch::kFloat)) &&
         (s.image_term.empty() || !s.image_term[0].defined() ||
          (s.image_term[0].is_contiguous() && s.image_term[0].scalar_type() == torch::kFloat));
}

torch::Tensor CaptionDecoderImpl::step(const torch::Tensor& tokens, DecoderState& s) {
  const bool lookup = s.word_gates.defined() && !is_training();
  const DecoderInt8Weights* int8 = is_training() ? nullptr : s.int8.get();
  torch::Tensor x = lookup ? torch::Tensor() : drop(embed(tokens));  // (R, E)
  const bool fused = fused_lstm_cell(s);
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    auto& layer = *layers[l]->as<RecurrentLayerImpl>();
    const Int8Linear* hidden_int8 = int8 ? &int8->hidden[l] : nullptr;
    // From a zero state W_hh h is zero: the fused pass skips that product (0 + z is z, up to the
    // sign of a zero, which no activation below keeps).
    const bool skip_hidden = fused && s.zero_state;
    if (fused && (hidden_int8 || skip_hidden) && l == 0 && lookup) {
      // The word and image terms are added inside the fused pass, not gathered and summed first.
      auto gates = skip_hidden ? torch::Tensor() : hidden_int8->forward(s.h[l]);
      // The pass reads word_gates rows by these ids unchecked: vet them as index_select would.
      auto rows = tokens.to(torch::kLong).contiguous();
      const int64_t* ids = rows.data_ptr<int64_t>();
      for (int64_t r = 0; r < rows.numel(); ++r) {
        if (ids[r] < 0 || ids[r] >= config_.vocab_size) {
          throw std::invalid_argument("token id " + std::to_string(ids[r]) + " outside the vocabulary of " +
                                      std::to_string(config_.vocab_size));
        }
      }
      LstmCellInputs in;
      in.gates = skip_hidden ? nullptr : gates.data_ptr<float>();
      in.word_gates = s.word_gates.data_ptr<float>();
      in.tokens = ids;
      auto image_rows = s.image_rows.defined() ? s.image_rows.contiguous() : torch::Tensor();
      if (s.image_term[l].defined()) {
        in.image_gates = s.image_term[l].data_ptr<float>();
        if (image_rows.defined()) in.image_rows = image_rows.data_ptr<int64_t>();
      }
      fused_lstm_step(in, s.h[l], s.c[l]);
    } else {
      auto pre = l == 0 && lookup ? s.word_gates.index_select(0, tokens) : layer.project_inputs(x);
      if (s.image_term[l].defined()) pre.add_(s.image_term_rows(l));
      if (fused) {
        auto gates = skip_hidden   ? pre
                     : hidden_int8 ? hidden_int8->forward(s.h[l]).add_(pre)
                                   : torch::addmm(pre, s.h[l], layer.hidden_proj->weight.t());
        LstmCellInputs in;
        in.gates = gates.data_ptr<float>();
        fused_lstm_step(in, s.h[l], s.c[l]);
      } else {
        layer.step(pre, s.h[l], s.c[l], hidden_int8);
      }
    }
    x = drop(s.h[l]);
  }
  s.zero_state = false;
  return torch::log_softmax(int8 ? int8->output.forward(x) : output(x), -1);  // (R, V)
}

void save_decoder_weights(CaptionDecoder& decoder, const std::filesystem::path& file, bool fp16) {
  torch::serialize::OutputArchive archive;
  for (const auto& p : decoder->named_parameters()) {
    archive.write(p.key(), p.value().detach().to(torch::kCPU, fp16 ? torch::kHalf : torch::kFloat));
  }
  save_archive_atomic(archive, file);
}

void save_archive_atomic(torch::serialize::OutputArchive& archive, const std::filesystem::path& file) {
  // Serialised in memory first: LibTorch's zip writer throws from its destructor when a write
  // fails half way (a full disk), which no catch can stop from aborting the process.
  std::ostringstream bytes;
  archive.save_to(bytes);
  AtomicFileWriter writer(file);
  const std::string data = bytes.str();
  writer.stream().write(data.data(), static_cast<std::streamsize>(data.size()));
  writer.commit();  // flushes, checks the stream, fsyncs and renames; throws a one-line error
}

void load_decoder_weights(CaptionDecoder& decoder, const std::filesystem::path& file) {
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(file.string());
  } catch (const c10::Error& e) {
    throw std::runtime_error("cannot read decoder weights " + file.string() + ": " + e.what_without_backtrace() +
                             " (truncated or not a weights file)");
  }
  torch::NoGradGuard no_grad;
  for (auto& p : decoder->named_parameters()) {
    torch::Tensor t;
    if (!archive.try_read(p.key(), t)) {
      throw std::runtime_error(file.string() + ": missing weight \"" + p.key() + "\" (written for another decoder layout)");
    }
    if (t.sizes() != p.value().sizes()) {
      throw std::runtime_error(file.string() + ": weight \"" + p.key() + "\" has shape " + c10::str(t.sizes()) +
                               " but the config needs " + c10::str(p.value().sizes()));
    }
    p.value().copy_(t);  // converts float16 weights in the same pass: a copy via .to() cost ~25 ms more
  }
}

}  // namespace captioner
