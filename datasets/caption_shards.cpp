#include "datasets/caption_shards.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <stdexcept>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "datasets/file_io.h"
#include "datasets/json_util.h"

namespace captioner {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {
bool parse_int(const std::string& s, int& out) {
  if (s.empty() || s.size() > 9 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) return false;
  out = std::stoi(s);
  return true;
}
}  // namespace

ShardSpec parse_shard(const std::string& text) {
  ShardSpec s;
  auto slash = text.find('/');
  if (slash == std::string::npos || !parse_int(text.substr(0, slash), s.index) || !parse_int(text.substr(slash + 1), s.count) ||
      s.count < 1 || s.index >= s.count) {
    throw std::runtime_error("--shard \"" + text + "\": expected K/N with 0 <= K < N, e.g. 0/4 for the first of four parts");
  }
  return s;
}

ShardSpec shard_from_environment() {
  const char* rank = std::getenv("RANK");
  const char* world = std::getenv("WORLD_SIZE");
  if (!rank || !world) return {};
  return parse_shard(std::string(rank) + "/" + world);
}

fs::path shard_part_file(const fs::path& output, const ShardSpec& shard) {
  if (!shard.sharded()) return output;
  fs::path part = output;
  part.replace_filename(output.stem().string() + ".part-" + std::to_string(shard.index) + "-of-" + std::to_string(shard.count) +
                        output.extension().string());
  return part;
}

fs::path shard_manifest_file(const fs::path& part) { return fs::path(part.string() + ".manifest"); }

std::string photo_list_fingerprint(const std::vector<fs::path>& photos) {
  uint64_t h = fnv1a64("captioner-shards-v1");
  for (const auto& p : photos) h = fnv1a64(p.string() + '\0', h);
  return hex64(h);
}

void write_shard_manifest(const fs::path& part, const ShardManifest& m) {
  json doc{{"format", "captioner-shard"},    {"version", 1},
           {"part", m.shard.index},          {"of", m.shard.count},
           {"total_photos", m.total_photos}, {"run_fingerprint", m.run_fingerprint},
           {"finished", m.finished},         {"photos", m.photos},
           {"unreadable", m.unreadable}};
  write_file_atomic(shard_manifest_file(part), doc.dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
}

ShardManifest read_shard_manifest(const fs::path& part) {
  const fs::path file = shard_manifest_file(part);
  std::error_code ec;
  if (!fs::exists(file, ec)) {
    throw std::runtime_error(
        "merge: " + part.string() + " has no " + file.filename().string() +
        " beside it: merge joins only the parts `captioner caption --shard K/N` wrote (with their manifests)");
  }
  const json text = load_json_file(file);
  JsonView doc(text, file.string(), "");
  doc.expect_object();
  if (!doc.has("format") || doc.at("format").as_string() != "captioner-shard") doc.fail("not a captioner shard manifest");
  ShardManifest m;
  m.shard.index = static_cast<int>(doc.at("part").as_int());
  m.shard.count = static_cast<int>(doc.at("of").as_int());
  if (m.shard.count < 1 || m.shard.index < 0 || m.shard.index >= m.shard.count) doc.fail("part K of N needs 0 <= K < N");
  m.total_photos = static_cast<size_t>(doc.at("total_photos").as_int());
  m.run_fingerprint = doc.at("run_fingerprint").as_string();
  m.finished = doc.at("finished").as_bool();
  auto photos = doc.at("photos").expect_array();
  for (size_t i = 0; i < photos.array_size(); ++i) m.photos.push_back(photos.at(i).as_string());
  auto unreadable = doc.at("unreadable").expect_array();
  for (size_t i = 0; i < unreadable.array_size(); ++i) m.unreadable.push_back(unreadable.at(i).as_string());
  return m;
}

namespace {
std::string same_photo(const std::string& name) { return fs::path(name).lexically_normal().string(); }

// Every part is one of parts 0..N-1 of one run, given once, none missing.
std::vector<ShardManifest> check_parts_form_one_run(const std::vector<fs::path>& parts) {
  std::vector<ShardManifest> manifests;
  std::map<int, fs::path> given;  // K -> file
  for (const auto& p : parts) {
    ShardManifest m = read_shard_manifest(p);
    if (!manifests.empty()) {
      const ShardManifest& first = manifests.front();
      if (m.shard.count != first.shard.count || m.run_fingerprint != first.run_fingerprint ||
          m.total_photos != first.total_photos) {
        throw std::runtime_error("merge: " + p.string() + " is part " + std::to_string(m.shard.index) + " of another run than " +
                                 parts.front().string() + " (other photos or another number of parts)");
      }
    }
    auto [it, fresh] = given.emplace(m.shard.index, p);
    if (!fresh) {
      throw std::runtime_error("merge: part " + std::to_string(m.shard.index) + " is given twice (" + it->second.string() + ", " +
                               p.string() + ")");
    }
    if (!m.finished) {
      throw std::runtime_error("merge: " + p.string() + " is unfinished (its run stopped or is still running); finish it with " +
                               "`captioner caption ... --shard " + std::to_string(m.shard.index) + "/" +
                               std::to_string(m.shard.count) + " --resume`");
    }
    manifests.push_back(std::move(m));
  }
  const int count = manifests.front().shard.count;
  for (int k = 0; k < count; ++k) {
    if (!given.count(k)) {
      throw std::runtime_error("merge: part " + std::to_string(k) + " of " + std::to_string(count) +
                               " is missing; caption it with --shard " + std::to_string(k) + "/" + std::to_string(count));
    }
  }
  // Part K of N takes every N-th photo from the K-th: its share of the run's photo count.
  for (const auto& m : manifests) {
    const size_t n = static_cast<size_t>(count), k = static_cast<size_t>(m.shard.index);
    const size_t share = m.total_photos / n + (k < m.total_photos % n ? 1 : 0);
    if (m.photos.size() != share) {
      throw std::runtime_error("merge: " + given.at(m.shard.index).string() + "'s manifest lists " +
                               std::to_string(m.photos.size()) + " photos where part " + std::to_string(k) + " of " +
                               std::to_string(n) + " of " + std::to_string(m.total_photos) + " has " + std::to_string(share));
    }
  }
  return manifests;
}
}  // namespace

MergedCaptions merge_caption_parts(const std::vector<fs::path>& parts) {
  if (parts.empty()) throw std::runtime_error("merge: no part files given");
  const std::vector<ShardManifest> manifests = check_parts_form_one_run(parts);
  MergedCaptions out;
  for (size_t i = 0; i < parts.size(); ++i) {
    const fs::path& p = parts[i];
    const ShardManifest& m = manifests[i];
    // Each of this part's photos once: captioned, or named unreadable by its run.
    std::unordered_map<std::string, int> owed;  // photo -> 0 (not yet seen), 1 (captioned)
    for (const auto& photo : m.photos) owed.emplace(same_photo(photo), 0);
    for (auto& r : read_caption_file(p)) {
      auto it = owed.find(same_photo(r.file_name));
      if (it == owed.end()) {
        throw std::runtime_error("merge: " + p.string() + " has a caption for " + r.file_name +
                                 ", which is not one of its photos");
      }
      if (it->second++ > 0) throw std::runtime_error("merge: " + p.string() + " captions " + r.file_name + " twice");
      out.rows.push_back(std::move(r));
    }
    for (const auto& photo : m.unreadable) {
      auto it = owed.find(same_photo(photo));
      if (it == owed.end() || it->second > 0) {
        throw std::runtime_error("merge: " + p.string() + "'s manifest lists " + photo +
                                 " as unreadable, but it is not a photo of its own left uncaptioned");
      }
      it->second = 2;
      out.unreadable.push_back(photo);
    }
    for (const auto& photo : m.photos) {
      if (owed.at(same_photo(photo)) == 0) {
        throw std::runtime_error("merge: " + p.string() + " lacks the caption of " + photo +
                                 " (a row was removed?); caption that part again with --shard " + std::to_string(m.shard.index) +
                                 "/" + std::to_string(m.shard.count) + " --resume");
      }
    }
  }
  std::stable_sort(out.rows.begin(), out.rows.end(),
                   [](const CaptionRow& a, const CaptionRow& b) { return fs::path(a.file_name) < fs::path(b.file_name); });
  return out;
}

}  // namespace captioner
