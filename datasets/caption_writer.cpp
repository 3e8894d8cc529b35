#include "datasets/caption_writer.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cerrno>
#include <cstring>
#include <optional>

#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

#include "datasets/json_util.h"

namespace captioner {

namespace fs = std::filesystem;
using nlohmann::json;

CaptionFormat parse_caption_format(const std::string& name) {
  if (name == "json") return CaptionFormat::kJson;
  if (name == "jsonl") return CaptionFormat::kJsonl;
  if (name == "csv") return CaptionFormat::kCsv;
  if (name == "tsv") return CaptionFormat::kTsv;
  if (name == "text" || name == "txt") return CaptionFormat::kText;
  throw std::invalid_argument("unknown output format \"" + name + "\" (json, jsonl, csv, tsv or text)");
}

CaptionFormat caption_format_for(const fs::path& file) {
  std::string ext = file.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  if (ext == ".json") return CaptionFormat::kJson;
  if (ext == ".jsonl") return CaptionFormat::kJsonl;
  if (ext == ".csv") return CaptionFormat::kCsv;
  if (ext == ".tsv") return CaptionFormat::kTsv;
  if (ext == ".txt") return CaptionFormat::kText;
  throw std::invalid_argument(
      file.string() + ": " +
      (ext.empty() ? std::string("no extension to tell the format") : "\"" + ext + "\" is not a caption format") +
      "; end the name in .json, .jsonl, .csv, .tsv or .txt, or give --format");
}

std::vector<int64_t> image_ids_for(const std::vector<fs::path>& files) {
  std::vector<std::optional<int64_t>> from_name(files.size());
  std::unordered_map<int64_t, int> uses;
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string stem = files[i].stem().string();
    if (stem.empty() || stem.size() > 18 ||
        !std::all_of(stem.begin(), stem.end(), [](unsigned char c) { return std::isdigit(c); }))
      continue;
    from_name[i] = std::stoll(stem);
    ++uses[*from_name[i]];
  }
  int64_t largest = 0;
  for (const auto& [id, n] : uses) largest = std::max(largest, id);
  std::vector<int64_t> ids(files.size());
  for (size_t i = 0; i < files.size(); ++i) {
    const bool unique = from_name[i] && uses[*from_name[i]] == 1;
    ids[i] = unique ? *from_name[i] : largest + static_cast<int64_t>(i) + 1;
  }
  return ids;
}

namespace {
json row_json(const CaptionRow& r) {
  json j{{"file_name", r.file_name}, {"image_id", r.image_id}, {"caption", r.caption}, {"log_prob", r.log_prob}};
  if (!r.tag.empty()) j["tag"] = {{"word", r.tag}, {"probability", std::round(r.tag_probability * 1e4) / 1e4}};
  return j;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Text rows are "name<TAB>caption": a tab, newline or backslash in a name is escaped so that the
// row reads back as the same name.
std::string text_field(const std::string& s) {
  if (s.find_first_of("\t\n\r\\") == std::string::npos) return s;
  std::string out;
  for (char c : s) {
    switch (c) {
      case '\t':
        out += "\\t";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\\':
        out += "\\\\";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string text_field_value(const std::string& s) {
  if (s.find('\\') == std::string::npos) return s;
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    const char e = s[++i];
    if (e == 't')
      out += '\t';
    else if (e == 'n')
      out += '\n';
    else if (e == 'r')
      out += '\r';
    else if (e == '\\')
      out += '\\';
    else
      out += std::string{'\\', e};  // not an escape this writer makes: kept as written
  }
  return out;
}

// The name a row written in `format` reads back as.
std::string stored_file_name(const std::string& name, CaptionFormat format) {
  if (format == CaptionFormat::kJson || format == CaptionFormat::kJsonl) return json::parse(dump(json(name))).get<std::string>();
  return name;
}

// One key per file, however its path is spelled.
std::string same_file(const std::string& name) {
  std::error_code ec;
  auto p = fs::weakly_canonical(fs::path(name), ec);
  return ec ? fs::path(name).lexically_normal().string() : p.string();
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

// A row's image_id and log_prob as written by this writer; anything else names the file and row.
std::pair<int64_t, double> row_numbers(const std::string& id_text, const std::string& log_prob_text, const std::string& where) {
  // Whole-field numbers only: std::stoll's bare "stoll" message would name neither file nor row.
  size_t used = 0;
  try {
    const int64_t id = std::stoll(id_text, &used);
    if (used != id_text.size()) throw std::invalid_argument(id_text);
    const double lp = std::stod(log_prob_text, &used);
    if (used != log_prob_text.size()) throw std::invalid_argument(log_prob_text);
    return {id, lp};
  } catch (const std::logic_error&) {
    throw std::runtime_error(where + ": image_id \"" + id_text + "\" and log_prob \"" + log_prob_text +
                             "\" must be numbers (is this a file captioner wrote?)");
  }
}

// A CSV or TSV row's four fields (file_name, image_id, caption, log_prob) as a row.
CaptionRow row_from_fields(const std::vector<std::string>& f, const std::string& where) {
  if (f.size() != 4) throw std::runtime_error(where + " has " + std::to_string(f.size()) + " fields, expected 4");
  const auto [id, lp] = row_numbers(f[1], f[3], where);
  return {f[0], id, f[2], lp, "", 0};
}

// Splits one CSV record (RFC 4180 quoting) starting at `pos`; advances `pos` past it.
std::vector<std::string> csv_record(const std::string& text, size_t& pos) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (; pos < text.size(); ++pos) {
    char c = text[pos];
    if (quoted) {
      if (c == '"' && pos + 1 < text.size() && text[pos + 1] == '"') {
        fields.back() += '"';
        ++pos;
      } else if (c == '"') {
        quoted = false;
      } else {
        fields.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      fields.emplace_back();
    } else if (c == '\n') {
      ++pos;
      break;
    } else if (c != '\r') {
      fields.back() += c;
    }
  }
  return fields;
}
}  // namespace

CaptionWriter::CaptionWriter(std::ostream& out, CaptionFormat format) : format_(format), out_(&out) { write_header(); }

CaptionWriter::CaptionWriter(const fs::path& file, CaptionFormat format)
    : format_(format), file_writer_(std::make_unique<AtomicFileWriter>(file)), file_(file), out_(&file_writer_->stream()) {
  write_header();
}

void CaptionWriter::write_header() {
  if (format_ == CaptionFormat::kJson) *out_ << "[";
  if (format_ == CaptionFormat::kCsv) *out_ << "file_name,image_id,caption,log_prob\n";
  if (format_ == CaptionFormat::kTsv) *out_ << "file_name\timage_id\tcaption\tlog_prob\n";
}

CaptionWriter::~CaptionWriter() = default;  // an unfinished file output is discarded

std::string CaptionWriter::footer() const {
  if (format_ != CaptionFormat::kJson) return "";
  return rows_ ? "\n]\n" : "]\n";
}

void CaptionWriter::write(const CaptionRow& r) {
  switch (format_) {
    case CaptionFormat::kJson:
      *out_ << (rows_ ? ",\n " : "\n ") << dump(row_json(r));
      break;
    case CaptionFormat::kJsonl:
      *out_ << dump(row_json(r)) << "\n";
      break;
    case CaptionFormat::kCsv: {
      char lp[32];
      std::snprintf(lp, sizeof lp, "%.6f", r.log_prob);
      *out_ << csv_field(r.file_name) << "," << r.image_id << "," << csv_field(r.caption) << "," << lp << "\n";
      break;
    }
    case CaptionFormat::kTsv: {
      char lp[32];
      std::snprintf(lp, sizeof lp, "%.6f", r.log_prob);
      *out_ << text_field(r.file_name) << "\t" << r.image_id << "\t" << text_field(r.caption) << "\t" << lp << "\n";
      break;
    }
    case CaptionFormat::kText:
      *out_ << text_field(r.file_name) << "\t" << text_field(r.caption) << "\n";
      break;
  }
  ++rows_;
  if (!file_writer_) flush_stream();
}

// A stream (stdout) that cannot take the captions fails the run instead of losing them quietly:
// `caption DIR > file-on-a-full-disk` must not end with exit 0.
void CaptionWriter::flush_stream() {
  errno = 0;
  out_->flush();
  if (!*out_) {
    const int err = errno;
    throw std::runtime_error(std::string("cannot write captions to standard output: ") +
                             (err ? std::strerror(err) : "write failed") + " (disk full, or the reader went away?)");
  }
}

void CaptionWriter::snapshot() {
  if (!file_writer_ || finished_) return;
  out_->flush();
  std::string body = read_file(file_writer_->temp_path());
  write_file_atomic(file_, body + footer());
}

void CaptionWriter::finish() {
  if (finished_) return;
  *out_ << footer();
  if (file_writer_) {
    file_writer_->commit();
  } else {
    flush_stream();
  }
  finished_ = true;
}

std::vector<size_t> photos_not_in(const std::vector<CaptionRow>& rows, const std::vector<fs::path>& photos,
                                  CaptionFormat format) {
  std::unordered_map<std::string, size_t> held;  // rows per stored file
  for (const auto& r : rows) ++held[same_file(r.file_name)];
  std::vector<size_t> pending;
  for (size_t i = 0; i < photos.size(); ++i) {
    auto it = held.find(same_file(stored_file_name(photos[i].string(), format)));
    if (it != held.end() && it->second > 0) {
      --it->second;
      continue;
    }
    pending.push_back(i);
  }
  return pending;
}

std::vector<CaptionRow> read_caption_file(const fs::path& file, std::optional<CaptionFormat> format) {
  std::string text = read_file(file);
  std::vector<CaptionRow> rows;
  auto from_json = [&](const json& j, const std::string& where) {
    JsonView v(j, file.string(), where);
    CaptionRow r;
    r.file_name = v.at("file_name").as_string();
    r.caption = v.at("caption").as_string();
    if (v.has("image_id")) r.image_id = v.at("image_id").as_int();
    if (v.has("log_prob")) r.log_prob = v.at("log_prob").as_number();
    if (v.has("tag")) {
      r.tag = v.at("tag").at("word").as_string();
      r.tag_probability = v.at("tag").at("probability").as_number();
    }
    return r;
  };
  switch (format ? *format : caption_format_for(file)) {
    case CaptionFormat::kJson: {
      json doc = parse_json_text(text, file.string());
      JsonView root(doc, file.string(), "");
      for (size_t i = 0; i < root.array_size(); ++i) rows.push_back(from_json(doc[i], "[" + std::to_string(i) + "]"));
      break;
    }
    case CaptionFormat::kJsonl: {
      std::istringstream in(text);
      std::string line;
      size_t n = 0;
      while (std::getline(in, line)) {
        ++n;
        if (line.empty()) continue;
        rows.push_back(from_json(parse_json_text(line, file.string() + ":" + std::to_string(n)), "line " + std::to_string(n)));
      }
      break;
    }
    case CaptionFormat::kCsv: {
      size_t pos = 0;
      csv_record(text, pos);  // header
      size_t row = 1;
      while (pos < text.size()) {
        auto f = csv_record(text, pos);
        ++row;
        if (f.size() == 1 && f[0].empty()) continue;
        const std::string where = file.string() + ": CSV row " + std::to_string(row);
        rows.push_back(row_from_fields(f, where));
      }
      break;
    }
    case CaptionFormat::kTsv: {
      std::istringstream in(text);
      std::string line;
      std::getline(in, line);  // header
      for (size_t row = 2; std::getline(in, line); ++row) {
        if (line.empty()) continue;
        std::vector<std::string> f;
        for (size_t start = 0;;) {
          const size_t tab = line.find('\t', start);
          f.push_back(text_field_value(line.substr(start, tab == std::string::npos ? std::string::npos : tab - start)));
          if (tab == std::string::npos) break;
          start = tab + 1;
        }
        const std::string where = file.string() + ": TSV row " + std::to_string(row);
        rows.push_back(row_from_fields(f, where));
      }
      break;
    }
    case CaptionFormat::kText: {
      std::istringstream in(text);
      std::string line;
      while (std::getline(in, line)) {
        auto tab = line.find('\t');
        if (tab == std::string::npos) continue;
        rows.push_back({text_field_value(line.substr(0, tab)), 0, text_field_value(line.substr(tab + 1)), 0, "", 0});
      }
      break;
    }
  }
  return rows;
}

}  // namespace captioner
