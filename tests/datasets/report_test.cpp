// The HTML report opened in a real headless Chromium (Debian's `chromium`), and the training plot.
#include <gtest/gtest.h>

#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <algorithm>
#include <cmath>
#include <regex>

#include "datasets/file_io.h"

#include "datasets/html_report.h"
#include "datasets/training_log.h"
#include "datasets/training_plot.h"
#include "tests/model_fixtures.h"
#include "tests/test_util.h"

using namespace captioner;
using namespace captioner::test;
namespace fs = std::filesystem;

namespace {
const char* kChromium = "/usr/bin/chromium";
std::string chromium(const std::string& args) {
  // Flags for a sandboxed, offline, root-run CI machine.
  return std::string(kChromium) +
         " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
         "--disable-background-networking --disable-component-update --disable-sync " +
         args;
}
}  // namespace

TEST(HtmlReport, EscapesAndEncodes) {
  EXPECT_EQ(html_escape("a <b> & \"c\" 'd'"), "a &lt;b&gt; &amp; &quot;c&quot; &#39;d&#39;");
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
}

TEST(HtmlReport, MarksTheTagAndShowsAConfidenceComparableAcrossLengths) {
  // exp(log_prob / (words + 1)): three tokens ("a", "dog", <END>) at 0.5 each.
  EXPECT_NEAR(per_word_confidence("a dog", 3 * std::log(0.5)), 0.5, 1e-12);
  EXPECT_NEAR(per_word_confidence("a dog runs on the grass", 7 * std::log(0.5)), 0.5, 1e-12);
  TempDir tmp;
  {
    HtmlReport report(tmp / "r.html", {"t", "models/x", "beam 3", "2026-12-07 10:00"});
    report.add({"two.jpg", "two dogs play with a dog", 7 * std::log(0.6), "", {}, std::nullopt, "dog", 0.91});
    report.add({"low.jpg", "a <b> cat", 4 * std::log(0.1), "", {}, std::nullopt, "", 0});
    report.finish();
  }
  const std::string html = read_file(tmp / "r.html");
  EXPECT_NE(html.find("two <mark>dogs</mark> play with a <mark>dog</mark>"), std::string::npos) << html;
  EXPECT_NE(html.find("tag: dog 91%"), std::string::npos);
  EXPECT_NE(html.find("confidence 0.60 per word"), std::string::npos);
  // Under kLowConfidence: flagged on the card, which the "only low confidence" filter keeps.
  EXPECT_NE(html.find("<div class=\"card low\""), std::string::npos);
  EXPECT_NE(html.find("low confidence 0.10 per word"), std::string::npos);
  EXPECT_NE(html.find("a &lt;b&gt; cat"), std::string::npos);
  EXPECT_NE(html.find("models/x &middot; beam 3 &middot; 2026-12-07 10:00"), std::string::npos);
}

TEST(HtmlReport, RendersInHeadlessChromiumWithEveryThumbnail) {
  if (!fs::exists(kChromium)) GTEST_SKIP() << kChromium << " not installed (scripts/setup.sh installs Debian's chromium)";
  TempDir tmp;
  auto vocab = make_vocab({"a", "dog", "cat", "runs", "on", "the", "grass"});
  make_bundle(make_tiny_encoder(tmp / "enc"), vocab).save(tmp / "model");
  fs::create_directories(tmp / "photos");
  const cv::Scalar colors[] = {{0, 0, 255}, {0, 255, 0}, {255, 0, 0}, {0, 255, 255}};
  std::string coco = R"({"images": [)";
  for (int i = 0; i < 4; ++i) {
    cv::imwrite((tmp / "photos" / ("p" + std::to_string(i) + ".jpg")).string(), cv::Mat(240, 320, CV_8UC3, colors[i]));
    coco += std::string(i ? "," : "") + R"({"id": )" + std::to_string(i + 1) + R"(, "file_name": "p)" + std::to_string(i) +
            R"(.jpg"})";
  }
  coco += R"(], "annotations": [{"id": 1, "image_id": 1, "caption": "a dog runs on <the> grass"}]})";
  write_text(tmp / "refs.json", coco);
  auto r = run_cli("caption " + (tmp / "photos").string() + " --model " + (tmp / "model").string() + " --html " +
                   (tmp / "report.html").string() + " --annotations " + (tmp / "refs.json").string() + " -q");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream in(tmp / "report.html");
  std::string html((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(html.find("a dog runs on &lt;the&gt; grass"), std::string::npos) << "references missing or unescaped";
  EXPECT_NE(html.find("BLEU-4"), std::string::npos);
  // The facts under the look: alt text is the caption, a click opens the photo (relative link),
  // no word is broken mid-word, and the header names the model and the date.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(html, m, std::regex("<img alt=\"([^\"]*)\"")));
  const std::string alt = m[1];
  EXPECT_FALSE(alt.empty());
  EXPECT_NE(html.find("<div class=\"cap\">" + alt + "</div>"), std::string::npos) << "alt text is not the caption: " << alt;
  EXPECT_NE(html.find("<a href=\"photos/p0.jpg\""), std::string::npos);
  EXPECT_EQ(html.find("break-all"), std::string::npos);
  EXPECT_NE(html.find("model " + (tmp / "model").string()), std::string::npos);
  EXPECT_TRUE(std::regex_search(html, std::regex("beam [0-9]+, length penalty [0-9.]+, at most [0-9]+ words &middot; "
                                                 "20[0-9]{2}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}")));
  EXPECT_NE(html.find("confidence "), std::string::npos);

  // Sorting by confidence in the browser (preset by the URL): the cards come out in that order.
  auto sorted =
      run_shell(chromium("--user-data-dir=" + (tmp / "profile0").string() + " --virtual-time-budget=5000 --dump-dom 'file://" +
                         (tmp / "report.html").string() + "#sort=confidence:desc'"));
  ASSERT_EQ(sorted.exit_code, 0) << sorted.err;
  std::vector<double> order;
  const std::regex confidence("data-confidence=\"([0-9.]+)\"");
  for (auto it = std::sregex_iterator(sorted.out.begin(), sorted.out.end(), confidence); it != std::sregex_iterator(); ++it) {
    order.push_back(std::stod((*it)[1]));
  }
  ASSERT_EQ(order.size(), 4u) << sorted.out.substr(0, 2000);
  EXPECT_TRUE(std::is_sorted(order.rbegin(), order.rend())) << "not highest first";
  EXPECT_NE(sorted.out.find("4 of 4 shown"), std::string::npos);

  // The browser's view: every thumbnail decoded (the page counts them on load) ...
  auto dom = run_shell(chromium("--user-data-dir=" + (tmp / "profile1").string() +
                                " --virtual-time-budget=5000 --dump-dom file://" + (tmp / "report.html").string()));
  ASSERT_EQ(dom.exit_code, 0) << dom.err;
  EXPECT_NE(dom.out.find("data-images-loaded=\"4\""), std::string::npos) << dom.out.substr(0, 400);
  // ... and a screenshot that shows the thumbnails' colours.
  auto shot = run_shell(chromium("--user-data-dir=" + (tmp / "profile2").string() + " --window-size=1200,800 --screenshot=" +
                                 (tmp / "shot.png").string() + " file://" + (tmp / "report.html").string()));
  ASSERT_EQ(shot.exit_code, 0) << shot.err;
  cv::Mat png = cv::imread((tmp / "shot.png").string());
  ASSERT_FALSE(png.empty());
  EXPECT_EQ(png.cols, 1200);
  int red = 0, green = 0, blue = 0;
  for (int y = 0; y < png.rows; y += 4) {
    for (int x = 0; x < png.cols; x += 4) {
      auto p = png.at<cv::Vec3b>(y, x);
      red += p[2] > 200 && p[1] < 60 && p[0] < 60;
      green += p[1] > 200 && p[2] < 60 && p[0] < 60;
      blue += p[0] > 200 && p[1] < 60 && p[2] < 60;
    }
  }
  EXPECT_GT(red, 100);
  EXPECT_GT(green, 100);
  EXPECT_GT(blue, 100);
}

TEST(TrainingPlot, DrawsLossAndBleuCurves) {
  TempDir tmp;
  std::ofstream m(tmp / "metrics.jsonl");
  for (int s = 1; s <= 40; ++s) m << to_json(BatchLogLine{1, s, s * 10, 5.0 - s * 0.05, 1e-3}).dump() << "\n";
  for (int e = 1; e <= 4; ++e) {
    EpochReport r;
    r.epoch = e;
    r.step = e * 100;
    r.train_loss = 5 - e * 0.4;
    r.bleu = {0.4 + e * 0.05, 0.3, 0.2, 0.1 + e * 0.02};
    r.cider_d = 0.2 + e * 0.03;
    m << to_json(r).dump() << "\n";
  }
  m << R"({"type":"batch","epoch":5,"ba)";  // torn by a kill: left out
  m.close();
  plot_training_metrics(tmp / "metrics.jsonl", tmp / "curves.png");
  cv::Mat img = cv::imread((tmp / "curves.png").string());
  ASSERT_EQ(img.cols, 1200);
  ASSERT_EQ(img.rows, 460);
  cv::Scalar mean, stddev;
  cv::meanStdDev(img, mean, stddev);
  EXPECT_GT(stddev[0], 10) << "blank picture";
  // The CLI form, and a clear error for a file that is not a metrics log.
  auto r = run_cli("plot " + tmp.path().string() + " -o " + (tmp / "cli.png").string());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(tmp / "cli.png"));
  write_text(tmp / "bad.jsonl", "not json\n");
  r = run_cli("plot " + (tmp / "bad.jsonl").string());
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("bad.jsonl:1: not a JSON object"), std::string::npos) << r.err;
}

// A metrics log whose entries have the wrong type names the file, the line and the entry in one
// line (it was a raw nlohmann type_error).
TEST(TrainingPlot, ABadEntryInTheMetricsLogIsOneLineNamingLineAndEntry) {
  TempDir tmp;
  write_text(tmp / "metrics.jsonl", to_json(BatchLogLine{1, 1, 1, 4.5, 1e-3}).dump() + "\n" +
                                        R"({"type":"batch","epoch":1,"batch":2,"step":2,"loss":"high","lr":0.001})" + "\n");
  auto r = run_cli("plot " + tmp.path().string());
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("metrics.jsonl:2: loss:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("string"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_FALSE(fs::exists(tmp / "curves.png"));
}

// The legend used to start at a fixed offset and covered the BLEU panel's title.
// Ticks a reader can read: 4.0 4.2 ... not 4.01 4.20 4.38; whole epochs; nothing below zero.
TEST(TrainingPlot, TicksAreRoundNumbers) {
  EXPECT_EQ(nice_ticks(4.01, 4.74, 6, false), (std::vector<double>{4.0, 4.2, 4.4, 4.6, 4.8}));
  EXPECT_EQ(nice_ticks(1, 4, 8, true), (std::vector<double>{1, 2, 3, 4}));
  EXPECT_EQ(nice_ticks(1, 14, 8, true), (std::vector<double>{0, 2, 4, 6, 8, 10, 12, 14}));
  for (double t : nice_ticks(0, 0.63, 6, false)) EXPECT_GE(t, 0);
  const auto bleu = nice_ticks(0, 0.63, 6, false);
  EXPECT_EQ(bleu.front(), 0);
  EXPECT_NEAR(bleu[1], 0.2, 1e-12);
  for (double t : nice_ticks(10, 4300, 8, true)) EXPECT_EQ(t, std::round(t)) << "a step axis shows whole steps";
  EXPECT_NEAR(nice_ticks(0, 5e-4, 6, false).back(), 5e-4, 1e-12);
  EXPECT_NEAR(nice_ticks(0, 5e-4, 6, false)[1], 1e-4, 1e-12);
  EXPECT_GE(nice_ticks(3, 3, 5, true).size(), 2u) << "one epoch still has an axis";
}

TEST(TrainingPlot, LegendNeverCoversTheTitleOrTheData) {
  for (int width : {1100, 800}) {
    for (const auto& [title, names] : std::vector<std::pair<std::string, std::vector<std::string>>>{
             {"training loss", {"loss per logged batch", "mean loss of the epoch"}},
             {"validation BLEU (greedy)", {"BLEU-1", "BLEU-4"}}}) {
      cv::Rect area(width / 2, 0, width / 2, 440);
      PanelLayout l = layout_panel(area, title, names);
      std::vector<cv::Rect> boxes{l.title, l.plot};
      boxes.insert(boxes.end(), l.legend.begin(), l.legend.end());
      ASSERT_EQ(l.legend.size(), names.size());
      for (size_t i = 0; i < boxes.size(); ++i) {
        for (size_t j = i + 1; j < boxes.size(); ++j) {
          EXPECT_TRUE((boxes[i] & boxes[j]).empty())
              << title << " at width " << width << ": boxes " << i << " and " << j << " overlap";
        }
      }
      for (size_t i = 0; i < boxes.size(); ++i) {
        EXPECT_LE(boxes[i].x + boxes[i].width, area.x + area.width)
            << title << " at width " << width << ": box " << i << " leaves the panel";
      }
    }
  }
}
