// The training run's log, <run>/metrics.jsonl: one JSON object per line, a "batch" line every
// --log-every steps and an "epoch" line after each validation. The trainer writes it; `plot` reads it.
#pragma once

#include <array>
#include <string>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <vector>

namespace captioner {

class JsonView;

struct BatchLogLine {
  int epoch = 0;      // 1-based
  int64_t batch = 0;  // 1-based within the epoch
  int64_t step = 0;   // batches since the start of training
  double loss = 0;
  double learning_rate = 0;
};

struct EpochReport {
  int epoch = 0;      // 1-based
  int epochs = 0;     // of the run (or phase) as asked; not logged
  std::string phase;  // "" for photos; "text": captions without photos (TrainJob::text_captions); not logged
  int64_t step = 0;   // batches since the start of training, at the epoch's end
  double train_loss = 0;
  std::array<double, 4> bleu{};  // validation BLEU-1..4 (greedy)
  double cider_d = -1;           // validation CIDEr-D (greedy); -1: not in the log (older runs)
  double learning_rate = 0;
  double seconds = 0;
  double captions_per_second = 0;
  bool improved = false;
  int best_epoch = 0;
  double best_bleu4 = 0;
};

nlohmann::json to_json(const BatchLogLine& line);   // {"type": "batch", ...}
nlohmann::json to_json(const EpochReport& report);  // {"type": "epoch", ...}
EpochReport epoch_report_from_json(const JsonView& j);

struct TrainingLog {
  std::vector<BatchLogLine> batches;
  std::vector<EpochReport> epochs;
};

// Reads a metrics.jsonl; a line that is not a log line is an error naming the file, the line and
// the entry. A last line without its newline (torn by a crash) is left out; lines of other types
// are skipped, so older readers take newer logs.
TrainingLog read_training_log(const std::filesystem::path& file);

}  // namespace captioner
