#include "datasets/caption_shards.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <regex>
#include <stdexcept>
#include <unordered_map>

namespace captioner {

namespace fs = std::filesystem;

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

std::vector<CaptionRow> merge_caption_parts(const std::vector<fs::path>& parts) {
  if (parts.empty()) throw std::runtime_error("merge: no part files given");
  // Parts named by shard_part_file (out.part-K-of-N.ext) must be one run's complete set.
  static const std::regex kPartName(R"((.*)\.part-(\d+)-of-(\d+)(\.[^.]*)?$)");
  std::string run;  // out.part-*-of-N.ext
  int count = 0;
  std::map<int, fs::path> given;  // K -> file
  for (const auto& p : parts) {
    std::smatch m;
    const std::string name = p.filename().string();
    if (!std::regex_match(name, m, kPartName)) continue;
    const std::string this_run = m[1].str() + ".part-*-of-" + m[3].str() + m[4].str();
    if (!run.empty() && this_run != run)
      throw std::runtime_error("merge: the parts come from different runs (" + run + ", " + this_run + ")");
    run = this_run;
    count = std::stoi(m[3].str());
    const int k = std::stoi(m[2].str());
    auto [it, fresh] = given.emplace(k, p);
    if (!fresh)
      throw std::runtime_error("merge: part " + std::to_string(k) + " is given twice (" + it->second.string() + ", " +
                               p.string() + ")");
  }
  for (int k = 0; k < count; ++k) {
    if (!given.count(k)) {
      throw std::runtime_error("merge: part " + std::to_string(k) + " of " + std::to_string(count) + " is missing (" + run +
                               "); caption it with --shard " + std::to_string(k) + "/" + std::to_string(count));
    }
  }
  std::vector<CaptionRow> rows;
  std::unordered_map<std::string, fs::path> seen;  // photo -> part that has it
  for (const auto& p : parts) {
    for (auto& r : read_caption_file(p)) {
      std::string key = fs::path(r.file_name).lexically_normal().string();
      auto [it, fresh] = seen.emplace(key, p);
      if (!fresh) {
        throw std::runtime_error("merge: " + r.file_name + " is captioned in both " + it->second.string() + " and " + p.string());
      }
      rows.push_back(std::move(r));
    }
  }
  std::stable_sort(rows.begin(), rows.end(),
                   [](const CaptionRow& a, const CaptionRow& b) { return fs::path(a.file_name) < fs::path(b.file_name); });
  return rows;
}

}  // namespace captioner
