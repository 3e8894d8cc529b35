// A self-contained HTML page of captioned images: an inline thumbnail and the caption of every
// image, and with references, the reference captions and each image's BLEU-4. Written row by row
// (memory stays flat) and published atomically.
#pragma once

#include <array>
#include <filesystem>
#include <opencv2/core/mat.hpp>
#include <optional>
#include <string>
#include <vector>

#include "datasets/file_io.h"

namespace captioner {

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
  HtmlReport(const std::filesystem::path& file, const std::string& title);
  void add(const ReportRow& row);
  // Closes the page; `summary` lines (e.g. corpus scores) go at the top of the page's footer.
  void finish(const std::vector<std::string>& summary = {});

 private:
  AtomicFileWriter writer_;
  size_t rows_ = 0;
  bool finished_ = false;
};

// A JPEG of an RGB photo scaled so its longer side is at most `longer_side` pixels.
std::string make_thumbnail(const cv::Mat& rgb, int longer_side);

std::string html_escape(const std::string& text);
std::string base64_encode(const std::string& bytes);

}  // namespace captioner
