#include "datasets/training_log.h"

#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "datasets/file_io.h"
#include "datasets/json_util.h"

namespace captioner {

using nlohmann::json;

json to_json(const BatchLogLine& l) {
  json j{{"type", "batch"}, {"epoch", l.epoch}, {"batch", l.batch}, {"step", l.step}, {"loss", l.loss}, {"lr", l.learning_rate}};
  return j;
}

json to_json(const EpochReport& r) {
  return json{{"type", "epoch"},
              {"epoch", r.epoch},
              {"step", r.step},
              {"train_loss", r.train_loss},
              {"bleu1", r.bleu[0]},
              {"bleu2", r.bleu[1]},
              {"bleu3", r.bleu[2]},
              {"bleu4", r.bleu[3]},
              {"cider_d", r.cider_d},
              {"lr", r.learning_rate},
              {"seconds", r.seconds},
              {"captions_per_second", r.captions_per_second},
              {"improved", r.improved},
              {"best_epoch", r.best_epoch},
              {"best_bleu4", r.best_bleu4}};
}

namespace {
// A logged number a plot can draw: no loss, score or rate of a real run comes near 1e15, and the
// axes of values like 1e308 overflow (an infinite tick loop, a crash).
double logged_number(const JsonView& v) {
  const double x = v.as_number();
  if (!(std::fabs(x) < 1e15)) {
    char text[32];
    std::snprintf(text, sizeof text, "%g", x);
    v.fail(std::string("out of range for a training log (") + text + ")");
  }
  return x;
}
}  // namespace

EpochReport epoch_report_from_json(const JsonView& j) {
  EpochReport r;
  r.epoch = static_cast<int>(j.at("epoch").as_int());
  if (j.has("step")) r.step = j.at("step").as_int();
  r.train_loss = logged_number(j.at("train_loss"));
  r.bleu = {logged_number(j.at("bleu1")), logged_number(j.at("bleu2")), logged_number(j.at("bleu3")),
            logged_number(j.at("bleu4"))};
  if (j.has("cider_d")) r.cider_d = logged_number(j.at("cider_d"));
  r.learning_rate = logged_number(j.at("lr"));
  r.seconds = logged_number(j.at("seconds"));
  r.captions_per_second = logged_number(j.at("captions_per_second"));
  r.improved = j.at("improved").as_bool();
  r.best_epoch = static_cast<int>(j.at("best_epoch").as_int());
  r.best_bleu4 = logged_number(j.at("best_bleu4"));
  return r;
}

TrainingLog read_training_log(const std::filesystem::path& file) {
  const std::string text = read_file(file);
  TrainingLog log;
  size_t pos = 0, line_number = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    const bool torn = end == std::string::npos;
    std::string line = text.substr(pos, torn ? std::string::npos : end - pos);
    pos = torn ? text.size() : end + 1;
    ++line_number;
    if (line.empty()) continue;
    const std::string where = file.string() + ":" + std::to_string(line_number);
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded()) {
      if (torn) break;  // the run was killed while writing its last line
      throw std::runtime_error(where + ": not a JSON object (is this a metrics.jsonl written by `captioner train`?)");
    }
    JsonView v(j, where, "");
    v.expect_object();
    const std::string type = v.has("type") ? v.at("type").as_string() : "";
    if (type == "batch") {
      BatchLogLine b;
      b.epoch = static_cast<int>(v.at("epoch").as_int());
      b.batch = v.at("batch").as_int();
      b.step = v.at("step").as_int();
      b.loss = logged_number(v.at("loss"));
      b.learning_rate = logged_number(v.at("lr"));
      log.batches.push_back(b);
    } else if (type == "epoch") {
      log.epochs.push_back(epoch_report_from_json(v));
    }
  }
  return log;
}

}  // namespace captioner
