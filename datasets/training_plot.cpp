#include "datasets/training_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "datasets/file_io.h"

namespace captioner {

namespace {
struct Series {
  std::vector<double> x, y;
  cv::Scalar color;
  std::string name;
  bool points = false;
};

std::string number(double v) {
  char b[32];
  std::snprintf(b, sizeof b, std::fabs(v) >= 100 ? "%.0f" : std::fabs(v) >= 10 ? "%.1f" : "%.2f", v);
  return b;
}

// One panel: axes with 5 ticks each, the series, a title and a legend.
void panel(cv::Mat& img, cv::Rect area, const std::string& title, const std::string& xlabel, const std::vector<Series>& series) {
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  for (const auto& s : series) {
    for (size_t i = 0; i < s.x.size(); ++i) {
      x0 = std::min(x0, s.x[i]);
      x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, s.y[i]);
      y1 = std::max(y1, s.y[i]);
    }
  }
  if (x0 > x1) return;
  if (x1 == x0) x1 = x0 + 1;
  double pad = (y1 - y0) * 0.08 + 1e-9;
  y0 -= pad;
  y1 += pad;
  const int L = area.x + 60, R = area.x + area.width - 15, T = area.y + 40, B = area.y + area.height - 45;
  auto px = [&](double x) { return static_cast<int>(L + (x - x0) / (x1 - x0) * (R - L)); };
  auto py = [&](double y) { return static_cast<int>(B - (y - y0) / (y1 - y0) * (B - T)); };
  const auto font = cv::FONT_HERSHEY_SIMPLEX;
  cv::putText(img, title, {L, area.y + 25}, font, 0.6, {30, 30, 30}, 1, cv::LINE_AA);
  cv::rectangle(img, {L, T}, {R, B}, {160, 160, 160}, 1);
  for (int k = 0; k <= 4; ++k) {
    double xv = x0 + (x1 - x0) * k / 4, yv = y0 + (y1 - y0) * k / 4;
    cv::line(img, {px(xv), B}, {px(xv), B + 5}, {120, 120, 120});
    cv::putText(img, number(xv), {px(xv) - 12, B + 20}, font, 0.4, {80, 80, 80}, 1, cv::LINE_AA);
    cv::line(img, {L - 5, py(yv)}, {R, py(yv)}, {230, 230, 230});
    cv::putText(img, number(yv), {area.x + 8, py(yv) + 4}, font, 0.4, {80, 80, 80}, 1, cv::LINE_AA);
  }
  cv::putText(img, xlabel, {(L + R) / 2 - 20, B + 38}, font, 0.45, {60, 60, 60}, 1, cv::LINE_AA);
  int legend_x = L + 230;  // legends sit on the title line, clear of the data
  for (const auto& s : series) {
    for (size_t i = 0; i < s.x.size(); ++i) {
      cv::Point p{px(s.x[i]), py(s.y[i])};
      if (s.points) {
        cv::circle(img, p, 1, s.color, cv::FILLED, cv::LINE_AA);
      } else {
        if (i > 0) cv::line(img, {px(s.x[i - 1]), py(s.y[i - 1])}, p, s.color, 2, cv::LINE_AA);
        cv::circle(img, p, 3, s.color, cv::FILLED, cv::LINE_AA);
      }
    }
    cv::line(img, {legend_x, area.y + 21}, {legend_x + 25, area.y + 21}, s.color, 2, cv::LINE_AA);
    cv::putText(img, s.name, {legend_x + 30, area.y + 25}, font, 0.45, {40, 40, 40}, 1, cv::LINE_AA);
    legend_x += 40 + 8 * static_cast<int>(s.name.size());
  }
}
}  // namespace

void plot_training_metrics(const std::filesystem::path& metrics, const std::filesystem::path& png, int width, int height) {
  std::istringstream in(read_file(metrics));
  Series batch_loss{{}, {}, {200, 170, 120}, "batch loss", true};
  Series epoch_loss{{}, {}, {160, 80, 0}, "epoch loss"};
  Series bleu1{{}, {}, {60, 140, 40}, "val BLEU-1"};
  Series bleu4{{}, {}, {40, 40, 200}, "val BLEU-4"};
  std::string line;
  size_t n = 0;
  double steps_per_epoch = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      throw std::runtime_error(metrics.string() + ":" + std::to_string(n) + ": not a JSON object");
    }
    std::string type = j.value("type", "");
    if (type == "batch" && j.contains("loss")) {
      batch_loss.x.push_back(j.value("step", 0.0));
      batch_loss.y.push_back(j["loss"].get<double>());
    } else if (type == "epoch") {
      double epoch = j.value("epoch", 0.0), step = j.value("step", 0.0);
      if (epoch > 0) steps_per_epoch = step / epoch;
      epoch_loss.x.push_back(step);
      epoch_loss.y.push_back(j.value("train_loss", 0.0));
      bleu1.x.push_back(epoch);
      bleu1.y.push_back(j.value("bleu1", 0.0));
      bleu4.x.push_back(epoch);
      bleu4.y.push_back(j.value("bleu4", 0.0));
    }
  }
  if (batch_loss.x.empty() && epoch_loss.x.empty()) {
    throw std::runtime_error(metrics.string() + ": no training metrics (expected lines written by `captioner train`)");
  }
  (void)steps_per_epoch;
  cv::Mat img(height, width, CV_8UC3, cv::Scalar(255, 255, 255));
  panel(img, cv::Rect(0, 0, width / 2, height), "training loss", "step", {batch_loss, epoch_loss});
  panel(img, cv::Rect(width / 2, 0, width / 2, height), "validation BLEU (greedy)", "epoch", {bleu1, bleu4});
  std::vector<uchar> buf;
  if (!cv::imencode(".png", img, buf)) throw std::runtime_error("cannot encode " + png.string());
  write_file_atomic(png, std::string(buf.begin(), buf.end()));
}

}  // namespace captioner
