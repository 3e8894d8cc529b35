// Draws a training run's metrics.jsonl (written by the Trainer) as a PNG: the training loss per
// logged batch and per epoch on the left, validation BLEU-1 and BLEU-4 per epoch on the right.
#pragma once

#include <filesystem>
#include <opencv2/core/types.hpp>
#include <string>
#include <vector>

namespace captioner {

// Reads `metrics_jsonl` and writes `png` (atomically). Throws with the file name on bad input.
void plot_training_metrics(const std::filesystem::path& metrics_jsonl, const std::filesystem::path& png, int width = 1100,
                           int height = 440);

// Where one panel's title, legend entries and plotting area go inside `area`; no two overlap.
struct PanelLayout {
  cv::Rect title;
  std::vector<cv::Rect> legend;
  cv::Rect plot;
};
PanelLayout layout_panel(cv::Rect area, const std::string& title, const std::vector<std::string>& legend);

}  // namespace captioner
