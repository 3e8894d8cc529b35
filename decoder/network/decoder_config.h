// The decoder's shape and wiring, as the model bundle stores it (config.json "decoder"): cell,
// widths, layers, dropout and where the image enters. validate() bounds every field.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace captioner {

struct DecoderConfig {
  int64_t vocab_size = 0;
  int64_t feature_dim = 0;
  int64_t embed_dim = 512;
  int64_t hidden_dim = 512;
  int64_t image_dim = 512;  // image projection width; 0 feeds the raw features to W_ih
  int64_t num_layers = 1;
  std::string cell = "lstm";      // lstm | gru | rnn
  double dropout = 0.5;           // on embeddings, between layers, before the output (and the image)
  bool image_dropout = true;      // also drop out the image features (or their projection)
  bool image_every_step = true;   // W_ih v in every step's gates
  bool image_init_state = false;  // also h_0 (and c_0) = tanh(W v)
  int64_t gates() const;
  void validate() const;  // throws std::invalid_argument
  nlohmann::json to_json() const;
  static DecoderConfig from_json(const nlohmann::json& j, const std::string& origin);
};

}  // namespace captioner
