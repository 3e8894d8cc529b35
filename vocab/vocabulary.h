// Word <-> id mapping built from training captions. Special tokens have fixed ids so that a
// decoder's output layer and any saved vocabulary agree on them; saved as versioned JSON.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <unordered_map>
#include <vector>

namespace captioner {

class Vocabulary {
 public:
  static constexpr int64_t kPad = 0;
  static constexpr int64_t kStart = 1;
  static constexpr int64_t kEnd = 2;
  static constexpr int64_t kUnk = 3;
  static constexpr int kNumSpecial = 4;
  static constexpr const char* kPadToken = "<pad>";
  static constexpr const char* kStartToken = "<start>";
  static constexpr const char* kEndToken = "<end>";
  static constexpr const char* kUnkToken = "<unk>";
  static constexpr int kFormatVersion = 1;

  Vocabulary();  // only the special tokens

  // Words seen at least `min_count` times, most frequent first (ties alphabetical, so builds are
  // reproducible).
  static Vocabulary build(const std::vector<std::vector<std::string>>& tokenized_captions, int min_count = 5);

  size_t size() const { return tokens_.size(); }
  int min_count() const { return min_count_; }
  bool contains(const std::string& token) const { return ids_.count(token) > 0; }
  int64_t id(const std::string& token) const;  // kUnk when unknown
  const std::string& token(int64_t id) const;  // throws std::out_of_range
  int64_t count(int64_t id) const { return counts_.at(static_cast<size_t>(id)); }

  // Ids of the English function words in this vocabulary (articles, prepositions, conjunctions,
  // pronouns, auxiliaries): words a caption may repeat ("a man in a red shirt on a bike").
  std::vector<int64_t> function_word_ids() const;

  // <start> w1 .. wn <end> when add_start_end.
  std::vector<int64_t> encode(const std::vector<std::string>& tokens, bool add_start_end = true) const;
  // Words up to the first <end>, specials skipped, joined by spaces.
  std::string decode(const std::vector<int64_t>& ids) const;
  // decode(), with "a" and "an" made to agree with the next word ("an animal", "a uniform"): a
  // caption made to name a word (tag guidance) can force it after an article chosen for another.
  std::string caption_text(const std::vector<int64_t>& ids) const;

  nlohmann::json to_json() const;
  static Vocabulary from_json(const nlohmann::json& j, const std::string& origin);
  void save(const std::filesystem::path& path) const;  // atomic
  static Vocabulary load(const std::filesystem::path& path);

  // Stable hash of the token list: a bundle records it so mismatched parts are refused.
  uint64_t fingerprint() const;

 private:
  void add(const std::string& token, int64_t count);

  std::vector<std::string> tokens_;
  std::vector<int64_t> counts_;
  std::unordered_map<std::string, int64_t> ids_;
  int min_count_ = 1;
};

}  // namespace captioner
