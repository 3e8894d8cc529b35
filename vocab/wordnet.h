// WordNet 3.0's noun hierarchy, read straight from the database files that Debian's wordnet-base
// installs (index.noun, data.noun): the synsets a lemma names, and each synset's hypernyms.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace captioner {

class WordNet {
 public:
  static constexpr const char* kDefaultDir = "/usr/share/wordnet";

  // A noun synset. Its offset is its byte position in data.noun, which is also its ImageNet id
  // ("n02084071" is offset 2084071, the synset {dog, domestic dog, Canis familiaris}).
  struct Synset {
    int64_t offset = 0;
    std::vector<std::string> lemmas;  // lower case, words joined by spaces ("bald eagle")
    std::vector<int64_t> hypernyms;   // '@' and instance '@i' pointers
  };

  // Reads <dir>/index.noun, data.noun and cntlist.rev (~20 MB, a few ms); a clear error naming
  // the file when one is missing ("apt-get install wordnet-base") or is not a WordNet database.
  static WordNet open(const std::filesystem::path& dir = kDefaultDir);

  // Offsets of the synsets `lemma` belongs to, most frequent sense first ("crane": the bird and
  // the machine). Any case; spaces or underscores between words. Empty when WordNet lacks it.
  std::vector<int64_t> synsets(std::string_view lemma) const;
  // The noun senses of a word as a caption writes it: an irregular plural's singular's (noun.exc:
  // "men" -> man, though "men" is also a lemma), else synsets(word), else, when WordNet lacks the
  // word, those of the singular by morphy's suffix rules ("dogs" -> dog, "puppies" -> puppy).
  std::vector<int64_t> noun_senses(std::string_view word) const;
  // Those of noun_senses(word) that the sense-tagged corpus uses at least `min_count` times
  // ("male": the animal, 6, and the male person, 4), in sense order. Empty when the corpus never
  // tagged the word as a noun that often.
  std::vector<int64_t> tagged_noun_senses(std::string_view word, int min_count = 1) const;
  Synset synset(int64_t offset) const;  // throws std::out_of_range for an offset not in data.noun
  // The synset, then its hypernyms breadth-first, nearest first, each once: bald eagle, eagle,
  // bird of prey, bird, vertebrate, ..., entity.
  std::vector<Synset> ancestors(int64_t offset) const;
  // Whether the sense-tagged corpus behind WordNet uses `word` more often as an adjective than as
  // a noun ("young", "blue", "human"): such a word in a caption is rarely the noun.
  bool mostly_adjective(std::string_view word) const;

 private:
  // The lemma noun_senses finds for `word` and its senses, looked up once; empty when none.
  std::pair<std::string, std::vector<int64_t>> noun_entry(std::string_view word) const;
  std::string index_;                                                // index.noun: one line per lemma, sorted
  std::string data_;                                                 // data.noun: one line per synset, at its offset
  std::unordered_map<std::string, std::pair<int, int>> tag_counts_;  // word -> (as noun, as adjective)
  std::unordered_map<std::string, std::vector<std::pair<int, int>>> tagged_noun_senses_;  // word -> (sense number, count), sorted
  std::unordered_map<std::string, std::string> irregular_plurals_;                        // noun.exc: "men" -> "man"
  std::filesystem::path dir_;
};

}  // namespace captioner
