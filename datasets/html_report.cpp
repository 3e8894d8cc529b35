#include "datasets/html_report.h"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cctype>
#include <cmath>
#include <cstdio>
#include <ctime>

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

std::string url_path_escape(const std::string& path) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : path) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '/') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string local_time_now() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M", &local);
  return text;
}

double per_word_confidence(const std::string& caption, double log_prob) {
  size_t words = 0;
  bool in_word = false;
  for (char c : caption) {
    const bool space = c == ' ';
    words += !space && !in_word;
    in_word = !space;
  }
  return std::exp(log_prob / static_cast<double>(words + 1));
}

namespace {
// The caption, escaped, with the words that name its tag (or the tag's plural) in <mark>.
std::string caption_with_tag_marked(const std::string& caption, const std::string& tag) {
  if (tag.empty()) return html_escape(caption);
  std::string out;
  size_t start = 0;
  while (start <= caption.size()) {
    size_t end = caption.find(' ', start);
    if (end == std::string::npos) end = caption.size();
    const std::string word = caption.substr(start, end - start);
    if (!out.empty() || start > 0) out += ' ';
    const bool names_tag = word == tag || word == tag + "s" || word == tag + "es";
    out += names_tag ? "<mark>" + html_escape(word) + "</mark>" : html_escape(word);
    start = end + 1;
  }
  return out;
}

// Sorting and filtering in the browser: by input order, confidence or BLEU-4; low-confidence
// captions only; words in the caption or file name. The URL's #fragment can preset them.
const char* kScript = R"JS(
(function(){
  var grid=document.querySelector('.grid'), cards=[].slice.call(grid.children);
  function num(c,k){var v=c.getAttribute('data-'+k);return v===null?NaN:parseFloat(v);}
  function apply(){
    var how=document.getElementById('sort').value, low=document.getElementById('low').checked,
        q=document.getElementById('find').value.toLowerCase(), shown=0;
    var key=how.split(':')[0], dir=how.split(':')[1]==='desc'?-1:1;
    var sorted=cards.slice().sort(function(a,b){
      var x=num(a,key),y=num(b,key);
      if(isNaN(x)&&isNaN(y))return num(a,'order')-num(b,'order');
      if(isNaN(x))return 1; if(isNaN(y))return -1;
      return dir*(x-y)||num(a,'order')-num(b,'order');});
    sorted.forEach(function(c){
      var ok=(!low||c.classList.contains('low'))&&(!q||c.textContent.toLowerCase().indexOf(q)>=0);
      c.style.display=ok?'':'none'; shown+=ok; grid.appendChild(c);});
    document.getElementById('shown').textContent=shown+' of '+cards.length+' shown';
  }
  ['sort','low','find'].forEach(function(id){document.getElementById(id).addEventListener('input',apply);});
  // A link can carry the view: report.html#sort=confidence:asc&low=1&find=dog
  location.hash.slice(1).split('&').forEach(function(kv){
    var k=kv.split('=')[0], v=decodeURIComponent(kv.split('=').slice(1).join('='));
    if(k==='sort')document.getElementById('sort').value=v;
    if(k==='low')document.getElementById('low').checked=v==='1';
    if(k==='find')document.getElementById('find').value=v;});
  apply();
})();
window.addEventListener('load',function(){var n=0;
  document.querySelectorAll('img').forEach(function(i){if(i.complete&&i.naturalWidth>0)n++;});
  document.body.setAttribute('data-images-loaded',n);});
)JS";
}  // namespace

HtmlReport::HtmlReport(const std::filesystem::path& file, const ReportHeader& header)
    : folder_(std::filesystem::absolute(file).parent_path()), writer_(file) {
  auto& o = writer_.stream();
  o << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
       "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n<title>"
    << html_escape(header.title)
    << "</title>\n<style>\n"
       "body{font-family:system-ui,sans-serif;margin:24px;background:#fafafa;color:#222}\n"
       "h1{font-size:20px;margin:0 0 4px}\n"
       ".made{font-size:13px;color:#555;margin-bottom:12px}\n"
       ".tools{display:flex;flex-wrap:wrap;gap:12px;align-items:center;font-size:14px;margin:12px 0 16px}\n"
       ".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:16px}\n"
       ".card{background:#fff;border-radius:8px;box-shadow:0 1px 3px #0002;padding:10px}\n"
       ".card.low{box-shadow:0 0 0 2px #d98c00}\n"
       ".card img{display:block;width:100%;height:200px;object-fit:contain;border-radius:4px;background:#eee}\n"
       ".cap{font-size:16px;margin:8px 0 4px}\n"
       ".cap mark{background:#fde68a;border-radius:3px;padding:0 2px}\n"
       ".meta{font-size:12px;color:#666;overflow-wrap:anywhere}\n"
       ".chip{display:inline-block;white-space:nowrap;margin-right:8px}\n"
       ".flag{color:#a05a00;font-weight:600}\n"
       ".refs{font-size:12px;color:#555;margin:6px 0 0 16px;padding:0}\n"
       ".summary{margin:16px 0;font-size:14px}\n"
       "</style></head>\n<body>\n<h1>"
    << html_escape(header.title) << "</h1>\n<div class=\"made\">";
  std::string made;
  if (!header.model.empty()) made += "model " + html_escape(header.model);
  if (!header.settings.empty()) made += (made.empty() ? "" : " &middot; ") + html_escape(header.settings);
  if (!header.made_at.empty()) made += (made.empty() ? "" : " &middot; ") + html_escape(header.made_at);
  o << made << "</div>\n<div class=\"tools\"><label>Sort <select id=\"sort\">"
    << "<option value=\"order:asc\">as captioned</option>"
       "<option value=\"confidence:asc\">confidence, lowest first</option>"
       "<option value=\"confidence:desc\">confidence, highest first</option>"
       "<option value=\"bleu:asc\">BLEU-4, lowest first</option>"
       "<option value=\"bleu:desc\">BLEU-4, highest first</option></select></label>"
       "<label><input type=\"checkbox\" id=\"low\"> only low confidence (under "
    << kLowConfidence
    << " per word)</label>"
       "<label>Find <input type=\"search\" id=\"find\" placeholder=\"word or file name\"></label>"
       "<span id=\"shown\"></span></div>\n<div class=\"grid\">\n";
}

void HtmlReport::add(const ReportRow& r) {
  auto& o = writer_.stream();
  const double confidence = per_word_confidence(r.caption, r.log_prob);
  const bool low = confidence < kLowConfidence;
  char data[96];
  std::snprintf(data, sizeof data, " data-order=\"%zu\" data-confidence=\"%.4f\"", rows_, confidence);
  o << "<div class=\"card" << (low ? " low" : "") << "\"" << data;
  if (r.bleu4) {
    char b[48];
    std::snprintf(b, sizeof b, " data-bleu=\"%.4f\"", *r.bleu4);
    o << b;
  }
  o << ">";
  if (!r.thumbnail_jpeg.empty()) {
    // A click opens the photo itself, by its path relative to the page.
    const std::filesystem::path photo = std::filesystem::absolute(r.file_name).lexically_normal();
    const std::string link = url_path_escape(photo.lexically_relative(folder_).generic_string());
    o << "<a href=\"" << html_escape(link) << "\" target=\"_blank\"><img alt=\"" << html_escape(r.caption)
      << "\" src=\"data:image/jpeg;base64," << base64_encode(r.thumbnail_jpeg) << "\"></a>";
  }
  o << "<div class=\"cap\">" << caption_with_tag_marked(r.caption, r.tag) << "</div><div class=\"meta\">";
  char chip[96];
  std::snprintf(chip, sizeof chip, "<span class=\"chip%s\" title=\"log-prob %.2f\">%sconfidence %.2f per word</span>",
                low ? " flag" : "", r.log_prob, low ? "low " : "", confidence);
  o << chip;
  if (r.bleu4) {
    std::snprintf(chip, sizeof chip, "<span class=\"chip\">BLEU-4 %.3f</span>", *r.bleu4);
    o << chip;
  }
  if (!r.tag.empty()) {
    std::snprintf(chip, sizeof chip, " %.0f%%</span>", 100 * r.tag_probability);
    o << "<span class=\"chip\">tag: " << html_escape(r.tag) << chip;
  }
  o << "<br>" << html_escape(r.file_name) << "</div>";
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
  o << "</div>\n<div class=\"summary\">" << rows_ << (rows_ == 1 ? " photo" : " photos");
  for (const auto& s : summary) o << "<br>" << html_escape(s);
  o << "</div>\n<script>" << kScript << "</script>\n</body></html>\n";
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
