// The HTML report opened in a real headless Chromium (Debian's `chromium`), and the training plot.
#include <gtest/gtest.h>

#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <regex>

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
    m << to_json(r).dump() << "\n";
  }
  m << R"({"type":"batch","epoch":5,"ba)";  // torn by a kill: left out
  m.close();
  plot_training_metrics(tmp / "metrics.jsonl", tmp / "curves.png");
  cv::Mat img = cv::imread((tmp / "curves.png").string());
  ASSERT_EQ(img.cols, 1100);
  ASSERT_EQ(img.rows, 440);
  cv::Scalar mean, stddev;
  cv::meanStdDev(img, mean, stddev);
  EXPECT_GT(stddev[0], 10) << "blank picture";
  // The CLI form, and a clear error for a file that is not a metrics log.
  auto r = run_cli("plot " + tmp.path().string() + " -o " + (tmp / "cli.png").string());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(tmp / "cli.png"));
  write_text(tmp / "bad.jsonl", "not json\n");
  r = run_cli("plot " + (tmp / "bad.jsonl").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("bad.jsonl:1: not a JSON object"), std::string::npos) << r.err;
}

// A metrics log whose entries have the wrong type names the file, the line and the entry in one
// line (it was a raw nlohmann type_error).
TEST(TrainingPlot, ABadEntryInTheMetricsLogIsOneLineNamingLineAndEntry) {
  TempDir tmp;
  write_text(tmp / "metrics.jsonl", to_json(BatchLogLine{1, 1, 1, 4.5, 1e-3}).dump() + "\n" +
                                        R"({"type":"batch","epoch":1,"batch":2,"step":2,"loss":"high","lr":0.001})" + "\n");
  auto r = run_cli("plot " + tmp.path().string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("metrics.jsonl:2: loss:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("string"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_FALSE(fs::exists(tmp / "curves.png"));
}

// The legend used to start at a fixed offset and covered the BLEU panel's title.
TEST(TrainingPlot, LegendNeverCoversTheTitleOrTheData) {
  for (int width : {1100, 800}) {
    for (const auto& [title, names] : std::vector<std::pair<std::string, std::vector<std::string>>>{
             {"training loss", {"batch loss", "epoch loss"}}, {"validation BLEU (greedy)", {"val BLEU-1", "val BLEU-4"}}}) {
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
