// A self-contained HTML page of captioned photos: an inline thumbnail (alt text: the caption, a
// click opens the photo), the caption with its tag marked, a per-word confidence, and with
// references, the reference captions and each photo's BLEU-4; sortable and filterable in the
// browser. Written row by row (memory stays flat) and published atomically.
#pragma once

#include <array>
#include <filesystem>
#include <opencv2/core/mat.hpp>
#include <optional>
#include <string>
#include <vector>

#include "datasets/file_io.h"

namespace captioner {

// What made the page: shown at its top.
struct ReportHeader {
  std::string title;
  std::string model;     // the model directory
  std::string settings;  // decoding settings, e.g. "beam 3, length penalty 0.5, at most 20 words"
  std::string made_at;   // local date and time
};

// A caption's confidence comparable across lengths: the geometric mean of the probabilities of
// its words and of <END>, exp(log_prob / (words + 1)). The sum log_prob favours short captions.
double per_word_confidence(const std::string& caption, double log_prob);
// Captions under this are flagged on the page: 53 of the default model's 500 captions of the
// held-out Flickr8k photos (11%) fell below it, against 20% under 0.3 (2026-12-07).
inline constexpr double kLowConfidence = 0.28;

struct ReportRow {
  std::string file_name;
  std::string caption;
  double log_prob = 0;
  std::string thumbnail_jpeg;           // encoded JPEG bytes; empty: no picture
  std::vector<std::string> references;  // may be empty
  std::optional<double> bleu4;          // this image's BLEU-4 against its references
  std::string tag;                      // the concept that guided the caption (--tags); may be empty
  double tag_probability = 0;
};

class HtmlReport {
 public:
  HtmlReport(const std::filesystem::path& file, const ReportHeader& header);
  void add(const ReportRow& row);
  // Closes the page; `summary` lines (e.g. corpus scores) go at the top of the page's footer.
  void finish(const std::vector<std::string>& summary = {});

 private:
  std::filesystem::path folder_;  // the page's folder: photo links are relative to it
  AtomicFileWriter writer_;
  size_t rows_ = 0;
  bool finished_ = false;
};

// A JPEG of an RGB photo scaled so its longer side is at most `longer_side` pixels.
std::string make_thumbnail(const cv::Mat& rgb, int longer_side);

std::string html_escape(const std::string& text);
// A relative path as a URL path: every byte but unreserved ones and '/' percent-encoded.
std::string url_path_escape(const std::string& path);
// "2026-12-07 01:02" in local time.
std::string local_time_now();
std::string base64_encode(const std::string& bytes);

}  // namespace captioner
