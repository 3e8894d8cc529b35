#include "datasets/caption_dataset.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "datasets/file_io.h"
#include "datasets/json_util.h"

namespace captioner {

using nlohmann::json;

size_t CaptionDataset::num_captions() const {
  size_t n = 0;
  for (const auto& r : records) n += r.captions.size();
  return n;
}

std::vector<std::filesystem::path> CaptionDataset::image_paths() const {
  std::vector<std::filesystem::path> paths;
  paths.reserve(records.size());
  for (const auto& r : records) paths.push_back(r.image_path);
  return paths;
}

const CaptionRecord* CaptionDataset::find(int64_t image_id) const {
  for (const auto& r : records) {
    if (r.image_id == image_id) return &r;
  }
  return nullptr;
}

namespace {

fs::path image_root(const fs::path& source, const DatasetOptions& options) {
  if (!options.image_dir.empty()) return options.image_dir;
  return source.has_parent_path() ? source.parent_path() : fs::path(".");
}

// A photo named by a caption file lies inside the image folder: an absolute name, or one whose ".."
// climbs out of it, is refused (empty string: fine). A link the user placed inside the folder is
// the user's choice and is followed as usual.
std::string outside_image_folder(const fs::path& name) {
  if (name.has_root_path()) return "absolute path " + name.string() + " is outside the image folder";
  const fs::path normal = name.lexically_normal();
  if (!normal.empty() && *normal.begin() == "..") return "path " + name.string() + " climbs out of the image folder";
  return "";
}

bool is_blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isspace(c); });
}

// Caption text is checked the same way whatever the format.
void check_caption(const std::string& caption, const DatasetOptions& options, const std::string& where) {
  if (is_blank(caption)) throw std::runtime_error(where + ": empty caption");
  if (caption.size() > options.max_caption_bytes) {
    throw std::runtime_error(where + ": caption of " + std::to_string(caption.size()) + " bytes exceeds the limit of " +
                             std::to_string(options.max_caption_bytes));
  }
}

void check_images_on_disk(CaptionDataset& ds, const DatasetOptions& options) {
  if (!options.check_images) return;
  size_t missing = 0;
  std::string first;
  for (const auto& r : ds.records) {
    std::error_code ec;
    if (!fs::is_regular_file(r.image_path, ec)) {
      if (options.require_images) {
        throw std::runtime_error(ds.source.string() + ": image " + std::to_string(r.image_id) + " (" + r.file_name +
                                 ") not found at " + r.image_path.string());
      }
      if (missing++ == 0) first = r.image_path.string();
    }
  }
  if (missing > 0 && missing == ds.records.size()) {  // the wrong folder, not a few lost photos
    throw std::runtime_error("none of the " + std::to_string(missing) + " images of " + ds.source.string() +
                             " is on disk (first looked for: " + first + "); is the images folder the right one?");
  }
  if (missing > 0) {
    ds.warnings.push_back(ds.source.string() + ": " + std::to_string(missing) + " of " + std::to_string(ds.records.size()) +
                          " images not found on disk (first: " + first + ")");
  }
}

void drop_uncaptioned(CaptionDataset& ds) {
  size_t before = ds.records.size();
  ds.records.erase(
      std::remove_if(ds.records.begin(), ds.records.end(), [](const CaptionRecord& r) { return r.captions.empty(); }),
      ds.records.end());
  if (ds.records.size() != before) {
    ds.warnings.push_back(ds.source.string() + ": " + std::to_string(before - ds.records.size()) +
                          " images have no captions and were left out");
  }
}

}  // namespace

namespace {

CaptionDataset coco_from_json(const json& doc, const fs::path& path, const DatasetOptions& options) {
  JsonView root(doc, path.string(), "");
  root.expect_object();
  CaptionDataset ds;
  ds.source = path;
  ds.format = "coco";
  fs::path root_dir = image_root(path, options);

  auto images = root.at("images").expect_array();
  std::unordered_map<int64_t, size_t> index;
  ds.records.reserve(images.array_size());
  for (size_t i = 0; i < images.array_size(); ++i) {
    auto img = images.at(i).expect_object();
    CaptionRecord r;
    r.image_id = img.at("id").as_int();
    r.file_name = img.at("file_name").as_string();
    if (r.file_name.empty()) img.at("file_name").fail("empty file name");
    if (auto why = outside_image_folder(r.file_name); !why.empty()) img.at("file_name").fail(why);
    if (!index.emplace(r.image_id, ds.records.size()).second) {
      img.at("id").fail("duplicate image id " + std::to_string(r.image_id));
    }
    r.image_path = root_dir / r.file_name;
    ds.records.push_back(std::move(r));
  }

  auto anns = root.at("annotations").expect_array();
  std::unordered_set<int64_t> ann_ids;
  for (size_t i = 0; i < anns.array_size(); ++i) {
    auto ann = anns.at(i).expect_object();
    int64_t image_id = ann.at("image_id").as_int();
    std::string caption = ann.at("caption").as_string();
    if (ann.has("id")) {
      int64_t id = ann.at("id").as_int();
      if (!ann_ids.insert(id).second) ann.at("id").fail("duplicate annotation id " + std::to_string(id));
    }
    auto it = index.find(image_id);
    if (it == index.end()) {
      ann.at("image_id").fail("caption refers to image id " + std::to_string(image_id) + ", which is not in \"images\"");
    }
    check_caption(caption, options, path.string() + ": " + ann.where() + ".caption");
    ds.records[it->second].captions.push_back(std::move(caption));
  }
  drop_uncaptioned(ds);
  check_images_on_disk(ds, options);
  return ds;
}

}  // namespace

CaptionDataset load_coco_captions(const fs::path& path, const DatasetOptions& options) {
  return coco_from_json(load_json_file(path), path, options);
}

CaptionDataset load_flickr8k(const fs::path& token_file, const DatasetOptions& options) {
  CaptionDataset ds;
  ds.source = token_file;
  ds.format = "flickr8k";
  fs::path root_dir = image_root(token_file, options);

  // Captions of every image in the token file, in file order.
  std::unordered_map<std::string, std::vector<std::string>> captions;
  std::vector<std::string> order;
  std::istringstream in(read_file(token_file));
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (is_blank(line)) continue;
    std::string where = token_file.string() + ":" + std::to_string(line_no);
    auto tab = line.find('\t');
    if (tab == std::string::npos) throw std::runtime_error(where + ": expected \"<image>#<n><TAB><caption>\"");
    std::string key = line.substr(0, tab);
    auto hash = key.rfind('#');
    if (hash == std::string::npos || hash == 0) {
      throw std::runtime_error(where + ": expected \"<image>#<n>\" before the tab, found \"" + key + "\"");
    }
    std::string name = key.substr(0, hash);
    std::string caption = line.substr(tab + 1);
    check_caption(caption, options, where);
    auto [it, inserted] = captions.try_emplace(name);
    if (inserted) order.push_back(name);
    it->second.push_back(std::move(caption));
  }

  // Image ids follow the split list's order (1-based), as in the COCO-style files made from it.
  std::vector<std::string> names;
  if (!options.split_list.empty()) {
    std::istringstream list(read_file(options.split_list));
    std::unordered_set<std::string> seen;
    size_t n = 0;
    while (std::getline(list, line)) {
      ++n;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (is_blank(line)) continue;
      if (!seen.insert(line).second) {
        throw std::runtime_error(options.split_list.string() + ":" + std::to_string(n) + ": duplicate image " + line);
      }
      if (!captions.count(line)) {
        throw std::runtime_error(options.split_list.string() + ":" + std::to_string(n) + ": image " + line +
                                 " has no captions in " + token_file.string());
      }
      names.push_back(line);
    }
  } else {
    names = order;
  }
  int64_t id = 1;
  for (const auto& name : names) {
    if (auto why = outside_image_folder(name); !why.empty()) {
      throw std::runtime_error(token_file.string() + ": image " + name + ": " + why);
    }
    CaptionRecord r;
    r.image_id = id++;
    r.file_name = name;
    r.image_path = root_dir / name;
    r.captions = captions[name];
    ds.records.push_back(std::move(r));
  }
  check_images_on_disk(ds, options);
  return ds;
}

namespace {

CaptionDataset karpathy_from_json(const json& doc, const fs::path& path, const DatasetOptions& options) {
  JsonView root(doc, path.string(), "");
  CaptionDataset ds;
  ds.source = path;
  ds.format = "karpathy";
  fs::path root_dir = image_root(path, options);
  std::unordered_set<std::string> splits;
  if (!options.split.empty()) {
    std::string s = options.split;
    for (size_t start = 0;;) {
      auto plus = s.find('+', start);
      splits.insert(s.substr(start, plus == std::string::npos ? std::string::npos : plus - start));
      if (plus == std::string::npos) break;
      start = plus + 1;
    }
  }
  auto images = root.at("images").expect_array();
  std::unordered_set<int64_t> ids;
  for (size_t i = 0; i < images.array_size(); ++i) {
    auto img = images.at(i).expect_object();
    std::string split = img.has("split") ? img.at("split").as_string() : "";
    if (!splits.empty() && !splits.count(split)) continue;
    CaptionRecord r;
    // Karpathy's files carry "imgid" (index) and, for COCO, "cocoid"; the COCO id is what
    // results files use.
    r.image_id = img.has("cocoid")  ? img.at("cocoid").as_int()
                 : img.has("imgid") ? img.at("imgid").as_int()
                                    : static_cast<int64_t>(i);
    if (!ids.insert(r.image_id).second) img.fail("duplicate image id " + std::to_string(r.image_id));
    r.file_name = img.at("filename").as_string();
    if (r.file_name.empty()) img.at("filename").fail("empty file name");
    std::string sub = img.has("filepath") ? img.at("filepath").as_string() : "";
    if (auto why = outside_image_folder(fs::path(sub) / r.file_name); !why.empty()) {
      img.at(sub.empty() || outside_image_folder(sub).empty() ? "filename" : "filepath").fail(why);
    }
    r.image_path = sub.empty() ? root_dir / r.file_name : root_dir / sub / r.file_name;
    auto sentences = img.at("sentences").expect_array();
    for (size_t k = 0; k < sentences.array_size(); ++k) {
      auto sent = sentences.at(k).expect_object();
      std::string raw;
      if (sent.has("raw")) {
        raw = sent.at("raw").as_string();
      } else {  // some files carry only tokens
        auto toks = sent.at("tokens").expect_array();
        for (size_t t = 0; t < toks.array_size(); ++t) raw += (t ? " " : "") + toks.at(t).as_string();
      }
      check_caption(raw, options, path.string() + ": " + sent.where());
      r.captions.push_back(std::move(raw));
    }
    ds.records.push_back(std::move(r));
  }
  if (!splits.empty() && ds.records.empty()) {
    throw std::runtime_error(path.string() + ": no images in split \"" + options.split + "\"");
  }
  drop_uncaptioned(ds);
  check_images_on_disk(ds, options);
  return ds;
}

}  // namespace

CaptionDataset load_karpathy(const fs::path& path, const DatasetOptions& options) {
  return karpathy_from_json(load_json_file(path), path, options);
}

CaptionDataset load_caption_file(const fs::path& path, const DatasetOptions& options) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw std::runtime_error("caption file not found: " + path.string());
  // Peek at the first non-space byte after any UTF-8 byte-order mark (editors on Windows write
  // one; the JSON parser skips it too): JSON files start with '{'.
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  char bom[3] = {};
  in.read(bom, 3);
  if (!(in.gcount() == 3 && bom[0] == '\xEF' && bom[1] == '\xBB' && bom[2] == '\xBF')) {
    in.clear();
    in.seekg(0);
  }
  char c = 0;
  while (in.get(c) && std::isspace(static_cast<unsigned char>(c))) {
  }
  if (c != '{' && c != '[') return load_flickr8k(path, options);
  in.close();
  json doc = load_json_file(path);
  if (doc.is_object() && doc.contains("annotations")) return coco_from_json(doc, path, options);
  if (doc.is_object() && doc.contains("images") && doc["images"].is_array() && !doc["images"].empty() &&
      doc["images"][0].is_object() && doc["images"][0].contains("sentences")) {
    return karpathy_from_json(doc, path, options);
  }
  throw std::runtime_error(path.string() +
                           ": unrecognised caption file: expected COCO caption JSON (with \"images\" and "
                           "\"annotations\"), Karpathy's dataset JSON (images[].sentences) or a Flickr8k token file");
}

}  // namespace captioner
