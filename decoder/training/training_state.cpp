#include "decoder/training/training_state.h"

#include <nlohmann/json.hpp>

#include "datasets/json_util.h"

namespace captioner {

using nlohmann::json;

// The key names are those of earlier checkpoints, which therefore still resume.
std::string training_state_to_json(const TrainingState& s, const std::string& fingerprint) {
  json history = json::array();
  for (const auto& r : s.history) history.push_back(to_json(r));
  return json{{"epoch", s.epoch},
              {"next_batch", s.next_batch},
              {"step", s.step},
              {"best_bleu4", s.best_bleu4},
              {"best_epoch", s.best_epoch},
              {"bad_epochs", s.bad_epochs},
              {"finished", s.finished},
              {"epoch_loss_sum", s.epoch_loss_sum},
              {"epoch_loss_count", s.epoch_items},
              {"epoch_seconds", s.epoch_seconds},
              {"history", std::move(history)},
              {"fingerprint", fingerprint}}
      .dump();
}

TrainingState training_state_from_json(const std::string& text, const std::string& origin, std::string* fingerprint) {
  const json j = parse_json_text(text, origin);
  JsonView v(j, origin, "state");
  v.expect_object();
  TrainingState s;
  s.epoch = static_cast<int>(v.at("epoch").as_int());
  s.next_batch = v.at("next_batch").as_int();
  s.step = v.at("step").as_int();
  s.best_bleu4 = v.at("best_bleu4").as_number();
  s.best_epoch = static_cast<int>(v.at("best_epoch").as_int());
  s.bad_epochs = static_cast<int>(v.at("bad_epochs").as_int());
  if (v.has("finished")) s.finished = v.at("finished").as_bool();
  s.epoch_loss_sum = v.at("epoch_loss_sum").as_number();
  s.epoch_items = v.at("epoch_loss_count").as_int();
  if (v.has("epoch_seconds")) s.epoch_seconds = v.at("epoch_seconds").as_number();
  const JsonView history = v.at("history");
  for (size_t i = 0; i < history.array_size(); ++i) s.history.push_back(epoch_report_from_json(history.at(i)));
  if (fingerprint) *fingerprint = v.at("fingerprint").as_string();
  return s;
}

}  // namespace captioner
