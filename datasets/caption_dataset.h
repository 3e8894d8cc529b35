// Caption datasets as one record type, whatever file they came from: COCO caption JSON,
// Flickr8k's native token file + split list, or Karpathy's dataset_*.json. Loaders validate the
// input and name the file and entry of every problem; missing images are warnings unless asked.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace captioner {

struct CaptionRecord {
  int64_t image_id = 0;
  std::string file_name;              // as written in the caption file
  std::filesystem::path image_path;   // file_name resolved against the image folder
  std::vector<std::string> captions;  // raw, untokenized
};

struct CaptionDataset {
  std::filesystem::path source;
  std::string format;  // "coco", "flickr8k" or "karpathy"
  std::vector<CaptionRecord> records;
  std::vector<std::string> warnings;  // non-fatal problems, one line each

  size_t num_captions() const;
  std::vector<std::filesystem::path> image_paths() const;  // one per record, in order
  const CaptionRecord* find(int64_t image_id) const;
};

struct DatasetOptions {
  std::filesystem::path image_dir;   // where file names resolve; empty: the caption file's folder
  bool require_images = false;       // an image missing on disk is an error, not a warning
  bool check_images = true;          // look for images on disk at all
  std::string split;                 // Karpathy: "train", "val", "test", "restval", "train+restval"
  std::filesystem::path split_list;  // Flickr8k: file with one image name per line
  size_t max_caption_bytes = 4096;   // longer captions are refused as corrupt
};

CaptionDataset load_coco_captions(const std::filesystem::path& json_path, const DatasetOptions& options = {});
CaptionDataset load_flickr8k(const std::filesystem::path& token_file, const DatasetOptions& options = {});
CaptionDataset load_karpathy(const std::filesystem::path& json_path, const DatasetOptions& options = {});

// Detects the format from the content: a JSON object with "annotations" is COCO, one with
// images[].sentences is Karpathy, and tab-separated "name#n<TAB>caption" lines are Flickr8k.
CaptionDataset load_caption_file(const std::filesystem::path& path, const DatasetOptions& options = {});

}  // namespace captioner
