#include "datasets/html_report.h"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cstdio>

namespace captioner {

std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string base64_encode(const std::string& in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += t[v >> 18];
    out += t[(v >> 12) & 63];
    out += t[(v >> 6) & 63];
    out += t[v & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    out += t[v >> 18];
    out += t[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += t[v >> 18];
    out += t[(v >> 12) & 63];
    out += t[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

HtmlReport::HtmlReport(const std::filesystem::path& file, const std::string& title) : writer_(file) {
  writer_.stream() << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>" << html_escape(title)
                   << "</title>\n<style>\n"
                      "body{font-family:system-ui,sans-serif;margin:24px;background:#fafafa;color:#222}\n"
                      "h1{font-size:20px}\n"
                      ".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:16px}\n"
                      ".card{background:#fff;border-radius:8px;box-shadow:0 1px 3px #0002;padding:10px}\n"
                      ".card img{width:100%;height:200px;object-fit:cover;border-radius:4px;background:#ddd}\n"
                      ".cap{font-size:16px;margin:8px 0 4px}\n"
                      ".meta{font-size:12px;color:#777;word-break:break-all}\n"
                      ".refs{font-size:12px;color:#555;margin:6px 0 0 16px;padding:0}\n"
                      ".summary{margin:16px 0;font-size:14px}\n"
                      "</style></head>\n<body>\n<h1>"
                   << html_escape(title) << "</h1>\n<div class=\"grid\">\n";
}

void HtmlReport::add(const ReportRow& r) {
  auto& o = writer_.stream();
  o << "<div class=\"card\">";
  if (!r.thumbnail_jpeg.empty()) {
    o << "<img alt=\"" << html_escape(r.file_name) << "\" src=\"data:image/jpeg;base64," << base64_encode(r.thumbnail_jpeg)
      << "\">";
  }
  char lp[64];
  std::snprintf(lp, sizeof lp, "log-prob %.2f", r.log_prob);
  o << "<div class=\"cap\">" << html_escape(r.caption) << "</div><div class=\"meta\">" << html_escape(r.file_name) << " &middot; "
    << lp;
  if (r.bleu4) {
    char b[32];
    std::snprintf(b, sizeof b, " &middot; BLEU-4 %.3f", *r.bleu4);
    o << b;
  }
  if (!r.tag.empty()) {
    char p[32];
    std::snprintf(p, sizeof p, " %.2f", r.tag_probability);
    o << " &middot; tag: " << html_escape(r.tag) << p;
  }
  o << "</div>";
  if (!r.references.empty()) {
    o << "<ul class=\"refs\">";
    for (const auto& ref : r.references) o << "<li>" << html_escape(ref) << "</li>";
    o << "</ul>";
  }
  o << "</div>\n";
  ++rows_;
}

void HtmlReport::finish(const std::vector<std::string>& summary) {
  if (finished_) return;
  auto& o = writer_.stream();
  o << "</div>\n<div class=\"summary\">" << rows_ << " images";
  for (const auto& s : summary) o << "<br>" << html_escape(s);
  // Counts the thumbnails the browser could decode, for tests and for the curious.
  o << "</div>\n<script>\nwindow.addEventListener('load',function(){var n=0;"
       "document.querySelectorAll('img').forEach(function(i){if(i.complete&&i.naturalWidth>0)n++;});"
       "document.body.setAttribute('data-images-loaded',n);});\n</script>\n</body></html>\n";
  writer_.commit();
  finished_ = true;
}

std::string make_thumbnail(const cv::Mat& rgb, int longer_side) {
  double scale = std::min(1.0, static_cast<double>(longer_side) / std::max(rgb.cols, rgb.rows));
  cv::Mat small, bgr;
  cv::resize(rgb, small,
             cv::Size(std::max(1, static_cast<int>(rgb.cols * scale)), std::max(1, static_cast<int>(rgb.rows * scale))), 0, 0,
             cv::INTER_AREA);
  cv::cvtColor(small, bgr, cv::COLOR_RGB2BGR);
  std::vector<uchar> buf;
  cv::imencode(".jpg", bgr, buf, {cv::IMWRITE_JPEG_QUALITY, 80});
  return std::string(buf.begin(), buf.end());
}

}  // namespace captioner
