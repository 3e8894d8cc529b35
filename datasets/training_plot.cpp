#include "datasets/training_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <stdexcept>
#include <vector>

#include "datasets/file_io.h"
#include "datasets/training_log.h"

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

constexpr auto kFont = cv::FONT_HERSHEY_SIMPLEX;
constexpr double kTitleScale = 0.6, kLegendScale = 0.45;
constexpr int kLegendSwatch = 30;  // the coloured line before each legend name

cv::Size text_size(const std::string& text, double scale) {
  int baseline = 0;
  cv::Size s = cv::getTextSize(text, kFont, scale, 1, &baseline);
  return {s.width, s.height + baseline};
}

// One panel: axes with 5 ticks each, the series, a title and a legend.
void panel(cv::Mat& img, cv::Rect area, const std::string& title, const std::string& xlabel, const std::vector<Series>& series) {
  std::vector<std::string> names;
  for (const auto& s : series) names.push_back(s.name);
  const PanelLayout layout = layout_panel(area, title, names);
  cv::putText(img, title, {layout.title.x, layout.title.y + layout.title.height - 4}, kFont, kTitleScale, {30, 30, 30}, 1,
              cv::LINE_AA);
  for (size_t k = 0; k < series.size(); ++k) {
    const cv::Rect& r = layout.legend[k];
    cv::line(img, {r.x, r.y + r.height / 2}, {r.x + kLegendSwatch - 5, r.y + r.height / 2}, series[k].color, 2, cv::LINE_AA);
    cv::putText(img, series[k].name, {r.x + kLegendSwatch, r.y + r.height - 4}, kFont, kLegendScale, {40, 40, 40}, 1,
                cv::LINE_AA);
  }
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
  const int L = layout.plot.x, R = layout.plot.x + layout.plot.width, T = layout.plot.y, B = layout.plot.y + layout.plot.height;
  auto px = [&](double x) { return static_cast<int>(L + (x - x0) / (x1 - x0) * (R - L)); };
  auto py = [&](double y) { return static_cast<int>(B - (y - y0) / (y1 - y0) * (B - T)); };
  cv::rectangle(img, {L, T}, {R, B}, {160, 160, 160}, 1);
  for (int k = 0; k <= 4; ++k) {
    double xv = x0 + (x1 - x0) * k / 4, yv = y0 + (y1 - y0) * k / 4;
    cv::line(img, {px(xv), B}, {px(xv), B + 5}, {120, 120, 120});
    cv::putText(img, number(xv), {px(xv) - 12, B + 20}, kFont, 0.4, {80, 80, 80}, 1, cv::LINE_AA);
    cv::line(img, {L - 5, py(yv)}, {R, py(yv)}, {230, 230, 230});
    cv::putText(img, number(yv), {area.x + 8, py(yv) + 4}, kFont, 0.4, {80, 80, 80}, 1, cv::LINE_AA);
  }
  cv::putText(img, xlabel, {(L + R) / 2 - 20, B + 38}, kFont, 0.45, {60, 60, 60}, 1, cv::LINE_AA);
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
  }
}
}  // namespace

PanelLayout layout_panel(cv::Rect area, const std::string& title, const std::vector<std::string>& legend) {
  PanelLayout out;
  const int left = area.x + 60, right = area.x + area.width - 15, top = area.y + 8;
  cv::Size ts = text_size(title, kTitleScale);
  out.title = {left, top, ts.width, ts.height};
  // Legend entries follow the title on its line and wrap onto lines of their own when the panel
  // is too narrow: they never cover the title or the data.
  int x = out.title.x + out.title.width + 24, y = top, row_height = ts.height;
  for (const auto& name : legend) {
    cv::Size ns = text_size(name, kLegendScale);
    const int w = kLegendSwatch + ns.width;
    if (x + w > right && x > left) {
      y += row_height + 6;
      x = left;
      row_height = ns.height;
    }
    out.legend.push_back({x, y, w, ns.height});
    row_height = std::max(row_height, ns.height);
    x += w + 16;
  }
  const int plot_top = y + row_height + 12, plot_bottom = area.y + area.height - 45;
  out.plot = {left, plot_top, std::max(1, right - left), std::max(1, plot_bottom - plot_top)};
  return out;
}

void plot_training_metrics(const std::filesystem::path& metrics, const std::filesystem::path& png, int width, int height) {
  const TrainingLog log = read_training_log(metrics);
  Series batch_loss{{}, {}, {200, 170, 120}, "batch loss", true};
  Series epoch_loss{{}, {}, {160, 80, 0}, "epoch loss"};
  Series bleu1{{}, {}, {60, 140, 40}, "val BLEU-1"};
  Series bleu4{{}, {}, {40, 40, 200}, "val BLEU-4"};
  for (const auto& b : log.batches) {
    batch_loss.x.push_back(static_cast<double>(b.step));
    batch_loss.y.push_back(b.loss);
  }
  for (const auto& e : log.epochs) {
    epoch_loss.x.push_back(static_cast<double>(e.step));
    epoch_loss.y.push_back(e.train_loss);
    bleu1.x.push_back(e.epoch);
    bleu1.y.push_back(e.bleu[0]);
    bleu4.x.push_back(e.epoch);
    bleu4.y.push_back(e.bleu[3]);
  }
  if (batch_loss.x.empty() && epoch_loss.x.empty()) {
    throw std::runtime_error(metrics.string() + ": no training metrics (expected lines written by `captioner train`)");
  }
  cv::Mat img(height, width, CV_8UC3, cv::Scalar(255, 255, 255));
  panel(img, cv::Rect(0, 0, width / 2, height), "training loss", "step", {batch_loss, epoch_loss});
  panel(img, cv::Rect(width / 2, 0, width / 2, height), "validation BLEU (greedy)", "epoch", {bleu1, bleu4});
  std::vector<uchar> buf;
  if (!cv::imencode(".png", img, buf)) throw std::runtime_error("cannot encode " + png.string());
  write_file_atomic(png, std::string(buf.begin(), buf.end()));
}

}  // namespace captioner
