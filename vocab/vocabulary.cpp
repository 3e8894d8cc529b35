#include "vocab/vocabulary.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string_view>

#include "datasets/file_io.h"
#include "datasets/json_util.h"

namespace captioner {

using nlohmann::json;

Vocabulary::Vocabulary() {
  add(kPadToken, 0);
  add(kStartToken, 0);
  add(kEndToken, 0);
  add(kUnkToken, 0);
}

void Vocabulary::add(const std::string& token, int64_t count) {
  ids_.emplace(token, static_cast<int64_t>(tokens_.size()));
  tokens_.push_back(token);
  counts_.push_back(count);
}

Vocabulary Vocabulary::build(const std::vector<std::vector<std::string>>& captions, int min_count) {
  if (min_count < 1) throw std::invalid_argument("vocabulary min_count must be >= 1, got " + std::to_string(min_count));
  std::unordered_map<std::string, int64_t> counts;
  for (const auto& caption : captions) {
    for (const auto& t : caption) ++counts[t];
  }
  std::vector<std::pair<std::string, int64_t>> kept;
  for (auto& [token, n] : counts) {
    if (n >= min_count) kept.emplace_back(token, n);
  }
  std::sort(kept.begin(), kept.end(),
            [](const auto& a, const auto& b) { return a.second != b.second ? a.second > b.second : a.first < b.first; });
  Vocabulary vocab;
  vocab.min_count_ = min_count;
  for (auto& [token, n] : kept) {
    if (vocab.contains(token)) continue;  // a caption literally containing "<unk>" etc.
    vocab.add(token, n);
  }
  return vocab;
}

std::vector<int64_t> Vocabulary::function_word_ids() const {
  static const char* const kFunctionWords[] = {
      "a",    "an",   "the",   "and",  "or",    "but",  "of",   "in",   "on",    "at",  "to",      "with",   "by", "for",
      "from", "into", "onto",  "over", "under", "near", "up",   "down", "out",   "off", "through", "behind", "is", "are",
      "his",  "her",  "their", "its",  "he",    "she",  "they", "it",   "while", "as",  "that",    "who",    "'s"};
  std::vector<int64_t> out;
  for (const char* w : kFunctionWords) {
    auto it = ids_.find(w);
    if (it != ids_.end()) out.push_back(it->second);
  }
  return out;
}

int64_t Vocabulary::id(const std::string& token) const {
  auto it = ids_.find(token);
  return it == ids_.end() ? kUnk : it->second;
}

const std::string& Vocabulary::token(int64_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= tokens_.size()) {
    throw std::out_of_range("token id " + std::to_string(id) + " outside vocabulary of " + std::to_string(tokens_.size()));
  }
  return tokens_[static_cast<size_t>(id)];
}

std::vector<int64_t> Vocabulary::encode(const std::vector<std::string>& tokens, bool add_start_end) const {
  std::vector<int64_t> ids;
  ids.reserve(tokens.size() + 2);
  if (add_start_end) ids.push_back(kStart);
  for (const auto& t : tokens) ids.push_back(id(t));
  if (add_start_end) ids.push_back(kEnd);
  return ids;
}

std::string Vocabulary::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  for (int64_t i : ids) {
    if (i == kEnd) break;
    if (i == kPad || i == kStart) continue;
    if (!out.empty()) out += ' ';
    out += token(i);
  }
  return out;
}

namespace {

// Whether a word is said with a vowel sound first, by its spelling: "animal", "umbrella", but not
// "uniform", "european", "one" (a consonant sound) nor "hour" (rare in captions; "h" counts as a
// consonant).
bool vowel_sound(std::string_view w) {
  if (w.empty() || std::string_view("aeiou").find(w[0]) == std::string_view::npos) return false;
  for (std::string_view consonant_sound : {"uni", "use", "usu", "uti", "ure", "eu", "ewe", "one", "once"}) {
    if (w.substr(0, consonant_sound.size()) == consonant_sound) return false;
  }
  return true;
}

}  // namespace

std::string Vocabulary::caption_text(const std::vector<int64_t>& ids) const {
  std::vector<std::string_view> words;
  for (int64_t i : ids) {
    if (i == kEnd) break;
    if (i != kPad && i != kStart) words.push_back(token(i));
  }
  std::string out;
  for (size_t k = 0; k < words.size(); ++k) {
    std::string_view w = words[k];
    if ((w == "a" || w == "an") && k + 1 < words.size() && std::isalpha(static_cast<unsigned char>(words[k + 1][0]))) {
      w = vowel_sound(words[k + 1]) ? "an" : "a";
    }
    if (!out.empty()) out += ' ';
    out += w;
  }
  return out;
}

json Vocabulary::to_json() const {
  return json{{"format", "captioner-vocabulary"},
              {"version", kFormatVersion},
              {"min_count", min_count_},
              {"special", {{"pad", kPad}, {"start", kStart}, {"end", kEnd}, {"unk", kUnk}}},
              {"tokens", tokens_},
              {"counts", counts_}};
}

Vocabulary Vocabulary::from_json(const json& j, const std::string& origin) {
  JsonView root(j, origin, "");
  root.expect_object();
  if (!root.has("format") || root.at("format").as_string() != "captioner-vocabulary") {
    root.fail("not a captioner vocabulary (expected \"format\": \"captioner-vocabulary\")");
  }
  int64_t version = root.at("version").as_int();
  if (version > kFormatVersion) {
    root.fail("vocabulary format version " + std::to_string(version) + " is newer than this captioner understands (" +
              std::to_string(kFormatVersion) + "); upgrade captioner");
  }
  if (version < 1) root.fail("invalid vocabulary format version " + std::to_string(version));
  auto tokens = root.at("tokens");
  size_t n = tokens.array_size();
  const char* specials[] = {kPadToken, kStartToken, kEndToken, kUnkToken};
  if (n < kNumSpecial) tokens.fail("expected at least the 4 special tokens, found " + std::to_string(n));
  Vocabulary vocab;
  vocab.tokens_.clear();
  vocab.counts_.clear();
  vocab.ids_.clear();
  vocab.min_count_ = static_cast<int>(root.at("min_count").as_int());
  bool has_counts = root.has("counts");
  if (has_counts && root.at("counts").array_size() != n) {
    root.at("counts").fail("has " + std::to_string(root.at("counts").array_size()) + " entries but tokens has " +
                           std::to_string(n));
  }
  for (size_t i = 0; i < n; ++i) {
    std::string t = tokens.at(i).as_string();
    if (i < kNumSpecial && t != specials[i]) {
      tokens.at(i).fail("expected special token \"" + std::string(specials[i]) + "\" at id " + std::to_string(i) + ", found \"" +
                        t + "\"");
    }
    if (t.empty()) tokens.at(i).fail("empty token");
    if (vocab.ids_.count(t)) tokens.at(i).fail("duplicate token \"" + t + "\"");
    vocab.add(t, has_counts ? root.at("counts").at(i).as_int() : 0);
  }
  return vocab;
}

void Vocabulary::save(const std::filesystem::path& path) const { write_file_atomic(path, to_json().dump(1) + "\n"); }

Vocabulary Vocabulary::load(const std::filesystem::path& path) { return from_json(load_json_file(path), path.string()); }

uint64_t Vocabulary::fingerprint() const {
  uint64_t h = fnv1a64("captioner-vocabulary");
  for (const auto& t : tokens_) {
    h = fnv1a64(t, h);
    h = fnv1a64(std::string_view("\0", 1), h);
  }
  return h;
}

}  // namespace captioner
