// Writes captions as JSON (a COCO-results-like list), JSON lines, CSV, TSV or plain text, one row
// at a time so memory stays flat; reads such files back for `caption --resume`.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "datasets/file_io.h"

namespace captioner {

enum class CaptionFormat { kJson, kJsonl, kCsv, kTsv, kText };

CaptionFormat parse_caption_format(const std::string& name);  // throws on unknown names
// By extension, in any case (.json, .jsonl, .csv, .tsv, .txt); any other name throws, naming the
// file: an output called `captions.out` is refused rather than silently written as JSON.
CaptionFormat caption_format_for(const std::filesystem::path& file);

struct CaptionRow {
  std::string file_name;
  int64_t image_id = 0;
  std::string caption;
  double log_prob = 0;
  // The concept that guided the caption (--tags), JSON formats only; empty: none.
  std::string tag;
  double tag_probability = 0;
};

// The image_id of every photo of one run: the number a COCO-style name carries (000000493652.jpg:
// 493652) when no other photo in the list carries the same number (123.jpg and 0123.jpg do); any
// other photo gets an id above all of those, from its place in the list. It depends on the whole
// list only, so the shards of one run agree.
std::vector<int64_t> image_ids_for(const std::vector<std::filesystem::path>& files);

class CaptionWriter {
 public:
  // Writes to `out` (e.g. stdout).
  CaptionWriter(std::ostream& out, CaptionFormat format);
  // Writes to `file` atomically: the file appears (or is replaced) only on finish(), or as a
  // complete snapshot of the rows so far on snapshot().
  CaptionWriter(const std::filesystem::path& file, CaptionFormat format);
  ~CaptionWriter();

  void write(const CaptionRow& row);
  void snapshot();  // file output only: publish the rows written so far as a complete file
  void finish();    // closes the list and, for files, commits

 private:
  void write_header();
  std::string footer() const;
  void flush_stream();  // throws when the stream could not take what was written

  CaptionFormat format_;
  std::unique_ptr<AtomicFileWriter> file_writer_;
  std::filesystem::path file_;
  std::ostream* out_;
  size_t rows_ = 0;
  bool finished_ = false;
};

// The indices of `photos` that `rows` (read back from an output in `format`) do not hold yet, for
// --resume. Rows match by the file they name (P/a.jpg, ./P/a.jpg and P//a.jpg are one photo) as
// the format stores it: a name that is not UTF-8 reads back from JSON with U+FFFD in place of each
// bad byte, so such photos are counted off against rows of the same stored name.
std::vector<size_t> photos_not_in(const std::vector<CaptionRow>& rows, const std::vector<std::filesystem::path>& photos,
                                  CaptionFormat format);

// Rows of an existing output file in any of the formats (text rows have no id or log-prob); the
// format is the given one, or else the one the extension implies.
std::vector<CaptionRow> read_caption_file(const std::filesystem::path& file, std::optional<CaptionFormat> format = std::nullopt);

}  // namespace captioner
