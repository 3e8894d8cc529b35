#include "datasets/training_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <opencv2/freetype.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <stdexcept>
#include <vector>

#include "datasets/file_io.h"
#include "datasets/training_log.h"

namespace captioner {

namespace {
// Text in a real font (DejaVu Sans, Debian's fonts-dejavu-core) where it is installed; OpenCV's
// Hershey font otherwise. Sizes are pixel heights of the text's line.
class Font {
 public:
  static Font& get() {
    static Font font;
    return font;
  }
  cv::Size size(const std::string& text, int px) const {
    int baseline = 0;
    if (ft_) {
      cv::Size s = ft_->getTextSize(text, px, -1, &baseline);
      return {s.width, px};
    }
    cv::Size s = cv::getTextSize(text, cv::FONT_HERSHEY_SIMPLEX, px / 30.0, 1, &baseline);
    return {s.width, px};
  }
  // `top_left` is the top-left corner of the text's line box.
  void draw(cv::Mat& img, const std::string& text, cv::Point top_left, int px, cv::Scalar color) const {
    if (ft_) {
      ft_->putText(img, text, {top_left.x, top_left.y + px * 4 / 5}, px, color, -1, cv::LINE_AA, true);
    } else {
      cv::putText(img, text, {top_left.x, top_left.y + px * 4 / 5}, cv::FONT_HERSHEY_SIMPLEX, px / 30.0, color, 1, cv::LINE_AA);
    }
  }

 private:
  Font() {
    for (const char* file :
         {"/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf"}) {
      FILE* f = std::fopen(file, "rb");
      if (!f) continue;
      std::fclose(f);
      try {
        ft_ = cv::freetype::createFreeType2();
        ft_->loadFontData(file, 0);
        return;
      } catch (const cv::Exception&) {
        ft_.release();
      }
    }
  }
  cv::Ptr<cv::freetype::FreeType2> ft_;
};

constexpr int kTitlePx = 17, kLegendPx = 14, kTickPx = 13, kLabelPx = 14;
constexpr int kLegendSwatch = 26;  // the coloured line before each legend name

struct Series {
  std::vector<double> x, y;
  cv::Scalar color;
  std::string name;
  int thickness = 2;
  bool markers = true;
};

struct Axis {
  std::vector<double> ticks;    // the first and last are the axis's ends
  int decimals = 0;             // of each label, or of its mantissa when `exponent` is set
  std::optional<int> exponent;  // labels as "3.5e-4" for small numbers (learning rates)
};

std::string tick_label(double v, const Axis& a) {
  char b[32];
  if (a.exponent) {
    std::snprintf(b, sizeof b, "%.*fe%d", a.decimals, v / std::pow(10, *a.exponent), *a.exponent);
    if (v == 0) std::snprintf(b, sizeof b, "0");
  } else {
    std::snprintf(b, sizeof b, "%.*f", a.decimals, v);
  }
  return b;
}

// Decimals that show `step` exactly (0.25: 2, 0.5: 1, 2: 0).
int decimals_for(double step) {
  for (int d = 0; d < 8; ++d) {
    const double scaled = step * std::pow(10, d);
    if (std::fabs(scaled - std::round(scaled)) < 1e-6 * std::max(1.0, scaled)) return d;
  }
  return 8;
}

Axis axis_for(double lo, double hi, int max_ticks, bool integers) {
  Axis a;
  a.ticks = nice_ticks(lo, hi, max_ticks, integers);
  const double step = a.ticks[1] - a.ticks[0];
  const double largest = std::max(std::fabs(a.ticks.front()), std::fabs(a.ticks.back()));
  if (largest > 0 && largest < 1e-2) {
    a.exponent = static_cast<int>(std::floor(std::log10(largest)));
    a.decimals = decimals_for(step / std::pow(10, *a.exponent));
  } else {
    a.decimals = decimals_for(step);
  }
  return a;
}

// One panel: title, legend, axes with rounded ticks, the series, and an optional marked x.
void panel(cv::Mat& img, cv::Rect area, const std::string& title, const std::string& xlabel, const std::vector<Series>& series,
           bool integer_x, std::optional<double> mark_x = std::nullopt, const std::string& mark_label = "") {
  const Font& font = Font::get();
  std::vector<std::string> names;
  for (const auto& s : series) names.push_back(s.name);
  const PanelLayout layout = layout_panel(area, title, names);
  font.draw(img, title, layout.title.tl(), kTitlePx, {30, 30, 30});
  for (size_t k = 0; k < series.size(); ++k) {
    const cv::Rect& r = layout.legend[k];
    cv::line(img, {r.x, r.y + r.height / 2}, {r.x + kLegendSwatch - 6, r.y + r.height / 2}, series[k].color, 3, cv::LINE_AA);
    font.draw(img, series[k].name, {r.x + kLegendSwatch, r.y}, kLegendPx, {50, 50, 50});
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
  const Axis xa = axis_for(integer_x ? std::min(x0, 1.0) : x0, x1, 8, integer_x);
  // Every quantity plotted here is non-negative: the axis never goes below 0.
  const Axis ya = axis_for(std::max(0.0, y0 - (y1 - y0) * 0.05), y1 + (y1 - y0) * 0.05, 6, false);
  const double X0 = xa.ticks.front(), X1 = xa.ticks.back(), Y0 = ya.ticks.front(), Y1 = ya.ticks.back();
  const int L = layout.plot.x, R = layout.plot.x + layout.plot.width, T = layout.plot.y, B = layout.plot.y + layout.plot.height;
  auto px = [&](double x) { return static_cast<int>(std::lround(L + (x - X0) / (X1 - X0) * (R - L))); };
  auto py = [&](double y) { return static_cast<int>(std::lround(B - (y - Y0) / (Y1 - Y0) * (B - T))); };
  for (double yv : ya.ticks) {
    cv::line(img, {L, py(yv)}, {R, py(yv)}, {232, 232, 232}, 1);
    const std::string label = tick_label(yv, ya);
    font.draw(img, label, {L - 8 - font.size(label, kTickPx).width, py(yv) - kTickPx / 2}, kTickPx, {90, 90, 90});
  }
  for (double xv : xa.ticks) {
    cv::line(img, {px(xv), B}, {px(xv), B + 5}, {120, 120, 120}, 1);
    const std::string label = tick_label(xv, xa);
    font.draw(img, label, {px(xv) - font.size(label, kTickPx).width / 2, B + 8}, kTickPx, {90, 90, 90});
  }
  cv::rectangle(img, {L, T}, {R, B}, {170, 170, 170}, 1);
  font.draw(img, xlabel, {(L + R) / 2 - font.size(xlabel, kLabelPx).width / 2, B + 26}, kLabelPx, {60, 60, 60});
  if (mark_x) {
    const int x = px(*mark_x);
    for (int y = T; y < B; y += 8) cv::line(img, {x, y}, {x, std::min(B, y + 4)}, {90, 90, 90}, 1);
    const int w = font.size(mark_label, kTickPx).width;
    font.draw(img, mark_label, {std::min(x + 4, R - w - 2), T + 4}, kTickPx, {60, 60, 60});
  }
  for (const auto& s : series) {
    for (size_t i = 0; i < s.x.size(); ++i) {
      cv::Point p{px(s.x[i]), py(s.y[i])};
      if (i > 0) cv::line(img, {px(s.x[i - 1]), py(s.y[i - 1])}, p, s.color, s.thickness, cv::LINE_AA);
      if (s.markers) cv::circle(img, p, 3, s.color, cv::FILLED, cv::LINE_AA);
    }
  }
}
}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int max_ticks, bool integers) {
  if (!(hi > lo)) hi = lo + (integers ? 1 : std::max(1e-12, std::fabs(lo) * 0.1 + 1e-12));
  const double raw = (hi - lo) / std::max(1, max_ticks - 1);
  const double magnitude = std::pow(10, std::floor(std::log10(raw)));
  double step = magnitude * 10;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    if (magnitude * m >= raw * (1 - 1e-9)) {
      step = magnitude * m;
      break;
    }
  }
  if (integers) step = std::max(1.0, std::round(step) == step ? step : std::ceil(step));
  const double first = std::floor(lo / step + 1e-9) * step, last = std::ceil(hi / step - 1e-9) * step;
  std::vector<double> ticks;
  for (int k = 0; first + k * step <= last + step * 1e-6; ++k) {
    double v = first + k * step;
    if (std::fabs(v) < step * 1e-9) v = 0;  // no "-0.00"
    ticks.push_back(v);
  }
  if (ticks.size() < 2) ticks.push_back(ticks.back() + step);
  return ticks;
}

PanelLayout layout_panel(cv::Rect area, const std::string& title, const std::vector<std::string>& legend) {
  const Font& font = Font::get();
  PanelLayout out;
  const int left = area.x + 64, right = area.x + area.width - 16, top = area.y + 8;
  out.title = {left, top, font.size(title, kTitlePx).width, kTitlePx};
  // The legend has rows of its own under the title, wrapping when the panel is too narrow: it never
  // covers the title or the data.
  int x = left, y = top + kTitlePx + 8;
  for (const auto& name : legend) {
    const int w = kLegendSwatch + font.size(name, kLegendPx).width;
    if (x + w > right && x > left) {
      y += kLegendPx + 6;
      x = left;
    }
    out.legend.push_back({x, y, std::min(w, right - x), kLegendPx});
    x += w + 18;
  }
  const int plot_top = (legend.empty() ? top + kTitlePx : y + kLegendPx) + 14, plot_bottom = area.y + area.height - 48;
  out.plot = {left, plot_top, std::max(1, right - left), std::max(1, plot_bottom - plot_top)};
  return out;
}

void plot_training_metrics(const std::filesystem::path& metrics, const std::filesystem::path& png, int width, int height) {
  const TrainingLog log = read_training_log(metrics);
  Series batch_loss{{}, {}, {225, 190, 140}, "loss per logged batch", 1, false};
  Series epoch_loss{{}, {}, {170, 80, 0}, "mean loss of the epoch"};
  Series bleu1{{}, {}, {60, 150, 40}, "BLEU-1"};
  Series bleu4{{}, {}, {40, 40, 210}, "BLEU-4"};
  Series cider{{}, {}, {30, 150, 220}, "CIDEr-D"};
  Series lr{{}, {}, {120, 60, 140}, "learning rate"};
  for (const auto& b : log.batches) {
    batch_loss.x.push_back(static_cast<double>(b.step));
    batch_loss.y.push_back(b.loss);
  }
  const EpochReport* best = nullptr;
  for (const auto& e : log.epochs) {
    epoch_loss.x.push_back(static_cast<double>(e.step));
    epoch_loss.y.push_back(e.train_loss);
    bleu1.x.push_back(e.epoch);
    bleu1.y.push_back(e.bleu[0]);
    bleu4.x.push_back(e.epoch);
    bleu4.y.push_back(e.bleu[3]);
    if (e.cider_d >= 0) {  // logs written before CIDEr-D was validated have none
      cider.x.push_back(e.epoch);
      cider.y.push_back(e.cider_d);
    }
    lr.x.push_back(e.epoch);
    lr.y.push_back(e.learning_rate);
    if (!best || e.bleu[3] > best->bleu[3]) best = &e;
  }
  if (batch_loss.x.empty() && epoch_loss.x.empty()) {
    throw std::runtime_error(metrics.string() + ": no training metrics (expected lines written by `captioner train`)");
  }
  cv::Mat img(height, width, CV_8UC3, cv::Scalar(255, 255, 255));
  // The run's name (its folder) and its best epoch head the picture.
  const std::filesystem::path folder = std::filesystem::absolute(metrics).parent_path();
  std::string heading = "run " + folder.filename().string();
  char best_text[96] = "";
  if (best) {
    std::snprintf(best_text, sizeof best_text, "best epoch %d, BLEU-4 %.4f", best->epoch, best->bleu[3]);
    heading += std::string("  \xC2\xB7  ") + best_text + " (greedy, on the validation photos)";
  }
  Font::get().draw(img, heading, {16, 10}, kTitlePx + 1, {20, 20, 20});
  const int top = 40, panel_height = height - top;
  const int loss_width = width * 2 / 5, bleu_width = width * 2 / 5;
  std::vector<Series> loss_series;
  if (!batch_loss.x.empty()) loss_series.push_back(batch_loss);
  if (!epoch_loss.x.empty()) loss_series.push_back(epoch_loss);
  panel(img, {0, top, loss_width, panel_height}, "training loss", "step (batches)", loss_series, true);
  if (!log.epochs.empty()) {
    std::optional<double> mark;
    if (best) mark = best->epoch;
    std::vector<Series> scores{bleu1, bleu4};
    if (!cider.x.empty()) scores.push_back(cider);
    panel(img, {loss_width, top, bleu_width, panel_height}, "validation (greedy captions)", "epoch", scores, true, mark,
          best ? "best" : "");
    panel(img, {loss_width + bleu_width, top, width - loss_width - bleu_width, panel_height}, "learning rate", "epoch", {lr},
          true);
  }
  std::vector<uchar> buf;
  if (!cv::imencode(".png", img, buf)) throw std::runtime_error("cannot encode " + png.string());
  write_file_atomic(png, std::string(buf.begin(), buf.end()));
}

}  // namespace captioner
