// Draws a training run's metrics.jsonl (written by the Trainer) as a PNG: the run's name and best
// epoch on top; the training loss per logged batch and per epoch, validation BLEU-1, BLEU-4 and
// CIDEr-D per epoch with the best epoch marked, and the learning rate per epoch, on rounded axes.
#pragma once

#include <filesystem>
#include <opencv2/core/types.hpp>
#include <string>
#include <vector>

namespace captioner {

// Reads `metrics_jsonl` and writes `png` (atomically). Throws with the file name on bad input.
void plot_training_metrics(const std::filesystem::path& metrics_jsonl, const std::filesystem::path& png, int width = 1200,
                           int height = 460);

// Axis ticks a reader can read: steps of 1, 2, 2.5 or 5 times a power of ten (whole numbers with
// `integers`), at most about `max_ticks` of them, the first at or below `lo` and the last at or
// above `hi`.
std::vector<double> nice_ticks(double lo, double hi, int max_ticks, bool integers);

// Where one panel's title, legend entries and plotting area go inside `area`; no two overlap.
struct PanelLayout {
  cv::Rect title;
  std::vector<cv::Rect> legend;
  cv::Rect plot;
};
PanelLayout layout_panel(cv::Rect area, const std::string& title, const std::vector<std::string>& legend);

}  // namespace captioner
