#include "decoder/network/decoder_config.h"

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <unordered_set>

#include "datasets/json_util.h"
#include "vocab/vocabulary.h"

namespace captioner {

using nlohmann::json;

int64_t DecoderConfig::gates() const { return cell == "lstm" ? 4 : cell == "gru" ? 3 : 1; }

void DecoderConfig::validate() const {
  auto bad = [](const std::string& m) { throw std::invalid_argument("decoder config: " + m); };
  if (cell != "lstm" && cell != "gru" && cell != "rnn") bad("cell must be lstm, gru or rnn, not \"" + cell + "\"");
  if (vocab_size <= Vocabulary::kNumSpecial) bad("vocabulary of " + std::to_string(vocab_size) + " tokens is too small");
  if (feature_dim <= 0) bad("feature_dim must be positive");
  // Upper bounds far above any real model, so a damaged or hand-edited config is an error, not a
  // multi-terabyte allocation inside LibTorch.
  constexpr int64_t kMaxWidth = 1 << 16, kMaxVocab = 1 << 24;
  if (vocab_size > kMaxVocab) bad("vocab_size above " + std::to_string(kMaxVocab));
  if (feature_dim > kMaxWidth) bad("feature_dim above " + std::to_string(kMaxWidth));
  if (embed_dim <= 0 || hidden_dim <= 0) bad("embed_dim and hidden_dim must be positive");
  if (embed_dim > kMaxWidth || hidden_dim > kMaxWidth)
    bad("embed_dim and hidden_dim must be at most " + std::to_string(kMaxWidth));
  if (image_dim < 0 || image_dim > kMaxWidth) bad("image_dim must be between 0 and " + std::to_string(kMaxWidth));
  if (num_layers < 1 || num_layers > 8) bad("num_layers must be 1..8");
  if (dropout < 0 || dropout >= 1) bad("dropout must be in [0, 1)");
  if (!image_every_step && !image_init_state) bad("the image must enter every step, the initial state, or both");
}

json DecoderConfig::to_json() const {
  json j{{"vocab_size", vocab_size},
         {"feature_dim", feature_dim},
         {"embed_dim", embed_dim},
         {"hidden_dim", hidden_dim},
         {"image_dim", image_dim},
         {"num_layers", num_layers},
         {"cell", cell},
         {"dropout", dropout},
         {"image_dropout", image_dropout},
         {"image_every_step", image_every_step},
         {"image_init_state", image_init_state}};
  return j;
}

DecoderConfig DecoderConfig::from_json(const json& j, const std::string& origin) {
  JsonView v(j, origin, "decoder");
  DecoderConfig c;
  c.vocab_size = v.at("vocab_size").as_int();
  c.feature_dim = v.at("feature_dim").as_int();
  c.embed_dim = v.at("embed_dim").as_int();
  c.hidden_dim = v.at("hidden_dim").as_int();
  c.image_dim = v.at("image_dim").as_int();
  c.num_layers = v.at("num_layers").as_int();
  c.cell = v.at("cell").as_string();
  c.dropout = v.at("dropout").as_number();
  if (v.has("image_dropout")) c.image_dropout = v.at("image_dropout").as_bool();  // absent before: on
  c.image_every_step = v.at("image_every_step").as_bool();
  c.image_init_state = v.at("image_init_state").as_bool();
  if (v.has("concepts")) {
    v.at("concepts")
        .fail(
            "this model was trained with `train --concept-input`, which measured no gain and was removed "
            "(docs/ablation.md); train it again without that option");
  }
  try {
    c.validate();
  } catch (const std::invalid_argument& e) {
    v.fail(e.what());
  }
  return c;
}

}  // namespace captioner
