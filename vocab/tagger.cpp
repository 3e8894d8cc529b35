#include "vocab/tagger.h"

#include <algorithm>
#include <functional>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace captioner {

namespace {

// Concepts so general that naming them tells a reader nothing ("an object is ..."): WordNet's top
// levels, whatever vocabulary words they have.
bool too_general(const WordNet::Synset& s) {
  static const std::unordered_set<std::string> kGeneral = {"entity",
                                                           "physical entity",
                                                           "object",
                                                           "whole",
                                                           "thing",
                                                           "matter",
                                                           "substance",
                                                           "artifact",
                                                           "abstraction",
                                                           "living thing",
                                                           "organism",
                                                           "being",
                                                           "unit",
                                                           "causal agent",
                                                           "part",
                                                           "instrumentality",
                                                           "material",
                                                           "structure",
                                                           "device",
                                                           "covering",
                                                           "container",
                                                           "commodity",
                                                           "equipment",
                                                           "implement",
                                                           "article",
                                                           "location",
                                                           "region",
                                                           "area",
                                                           "group",
                                                           "collection",
                                                           "food",
                                                           "solid",
                                                           "nutrient",
                                                           "produce",
                                                           "conveyance",
                                                           "attribute",
                                                           "relation",
                                                           "measure",
                                                           "psychological feature",
                                                           "geological formation",
                                                           "instrument",
                                                           "liquid"};
  return std::any_of(s.lemmas.begin(), s.lemmas.end(), [](const std::string& l) { return kGeneral.count(l) > 0; });
}

std::vector<std::string> split_label(const std::string& label) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= label.size()) {
    size_t comma = label.find(',', start);
    if (comma == std::string::npos) comma = label.size();
    std::string lemma = label.substr(start, comma - start);
    const size_t b = lemma.find_first_not_of(' '), e = lemma.find_last_not_of(" \r");
    if (b != std::string::npos) out.push_back(lemma.substr(b, e - b + 1));
    start = comma + 1;
  }
  return out;
}

}  // namespace

namespace {

// WordNet's synsets by offset, each read once.
class SynsetCache {
 public:
  explicit SynsetCache(const WordNet& wordnet) : wordnet_(wordnet) {}
  const WordNet::Synset& operator()(int64_t offset) {
    auto it = synsets_.find(offset);
    if (it == synsets_.end()) it = synsets_.emplace(offset, wordnet_.synset(offset)).first;
    return it->second;
  }

 private:
  const WordNet& wordnet_;
  std::unordered_map<int64_t, WordNet::Synset> synsets_;
};

// The synset of an ImageNet label: the one holding most of its lemmas, the first after the
// previous class's (labels are in WordNet order). 0 for "background" or a name WordNet lacks.
int64_t label_synset(const std::string& label, const WordNet& wordnet, int64_t previous) {
  if (label == "background") return 0;  // TF-slim's extra class 0
  std::unordered_map<int64_t, int> votes;
  for (const auto& lemma : split_label(label)) {
    for (int64_t offset : wordnet.synsets(lemma)) ++votes[offset];
  }
  int64_t best = 0;
  int best_votes = 0;
  for (const auto& [offset, n] : votes) {
    const bool in_order = offset > previous, best_in_order = best > previous;
    if (best == 0 || (in_order && !best_in_order) ||
        (in_order == best_in_order && (n > best_votes || (n == best_votes && offset < best)))) {
      best = offset;
      best_votes = n;
    }
  }
  return best;
}

// The vocabulary word that names a synset: the most frequent of its lemmas that is a content
// word whose most common sense this is ("toy" is a plaything before it is a toy dog, "piece" a
// part before a gun). Vocabulary::kUnk when none does.
int64_t naming_word(const WordNet::Synset& s, const WordNet& wordnet, const Vocabulary& vocab,
                    const std::function<bool(int64_t)>& is_content_word) {
  int64_t best = Vocabulary::kUnk;
  for (const auto& lemma : s.lemmas) {
    const int64_t id = vocab.id(lemma);
    if (id == Vocabulary::kUnk || !is_content_word(id)) continue;
    if (wordnet.synsets(lemma).front() != s.offset) continue;
    if (best == Vocabulary::kUnk || vocab.count(id) > vocab.count(best)) best = id;
  }
  return best;
}

// The most common noun sense of every content word of the vocabulary that has one: (word id,
// synset offset). Rarer senses would let "young" (offspring), "game" (hunted animals) and
// "jersey" (cattle) name an animal.
std::vector<std::pair<int64_t, int64_t>> first_noun_senses(const Vocabulary& vocab, const WordNet& wordnet,
                                                           const std::function<bool(int64_t)>& is_content_word) {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (int64_t id = Vocabulary::kNumSpecial; id < static_cast<int64_t>(vocab.size()); ++id) {
    if (!is_content_word(id)) continue;
    const auto senses = wordnet.noun_senses(vocab.token(id));
    if (!senses.empty()) out.emplace_back(id, senses.front());
  }
  return out;
}

// For every word of first_noun_senses, the concepts at or above its sense ("eagle" and "eagles"
// satisfy bird).
std::vector<std::pair<int64_t, std::vector<int64_t>>> concepts_of_words(
    const std::vector<std::pair<int64_t, int64_t>>& word_senses, SynsetCache& synset,
    const std::unordered_map<int64_t, int>& concept_of) {
  std::unordered_map<int64_t, std::vector<int64_t>> above;  // synset -> its concepts, itself included
  std::function<const std::vector<int64_t>&(int64_t)> concepts_above = [&](int64_t offset) -> const std::vector<int64_t>& {
    auto it = above.find(offset);
    if (it != above.end()) return it->second;
    std::vector<int64_t> out;
    if (auto c = concept_of.find(offset); c != concept_of.end()) out.push_back(c->second);
    for (int64_t h : synset(offset).hypernyms) {
      for (int64_t k : concepts_above(h)) {
        if (std::find(out.begin(), out.end(), k) == out.end()) out.push_back(k);
      }
    }
    return above[offset] = std::move(out);
  };
  std::vector<std::pair<int64_t, std::vector<int64_t>>> out;
  for (const auto& [id, sense] : word_senses) out.emplace_back(id, concepts_above(sense));
  return out;
}

// Whether a synset is at or below one of `roots` (WordNet's person and people, or animal), each
// synset walked once.
class BelowRoots {
 public:
  BelowRoots(SynsetCache& synset, const WordNet& wordnet, std::initializer_list<const char*> lemmas) : synset_(synset) {
    for (const char* lemma : lemmas) {
      const auto senses = wordnet.synsets(lemma);
      if (!senses.empty()) roots_.push_back(senses.front());
    }
  }
  bool operator()(int64_t offset) {
    if (auto it = memo_.find(offset); it != memo_.end()) return it->second;
    memo_[offset] = false;
    bool below = std::find(roots_.begin(), roots_.end(), offset) != roots_.end();
    for (int64_t h : synset_(offset).hypernyms) below = below || (*this)(h);
    return memo_[offset] = below;
  }

 private:
  SynsetCache& synset_;
  std::vector<int64_t> roots_;
  std::unordered_map<int64_t, bool> memo_;
};

}  // namespace

Tagger Tagger::build(const std::vector<std::string>& class_labels, const WordNet& wordnet, const Vocabulary& vocab) {
  Tagger tagger;
  tagger.class_concepts_.resize(class_labels.size());
  std::unordered_map<int64_t, int> concept_of;  // synset offset -> index into concepts_
  SynsetCache synset(wordnet);
  const auto function_words = vocab.function_word_ids();
  // A noun a caption can use: not a special token or function word, and not mostly an adjective.
  const std::function<bool(int64_t)> is_content_word = [&](int64_t id) {
    return id >= Vocabulary::kNumSpecial && std::find(function_words.begin(), function_words.end(), id) == function_words.end() &&
           !wordnet.mostly_adjective(vocab.token(id));
  };
  int64_t previous = 0;
  for (size_t c = 0; c < class_labels.size(); ++c) {
    const int64_t best = label_synset(class_labels[c], wordnet, previous);
    if (best == 0) continue;
    previous = std::max(previous, best);
    // Up the hypernyms, nearest first: each concept a vocabulary word can name.
    std::vector<int64_t> frontier{best};
    std::unordered_set<int64_t> seen{best};
    for (size_t i = 0; i < frontier.size(); ++i) {
      const auto& s = synset(frontier[i]);
      for (int64_t h : s.hypernyms) {
        if (seen.insert(h).second) frontier.push_back(h);
      }
      if (too_general(s)) continue;
      auto known = concept_of.find(s.offset);
      if (known == concept_of.end()) {
        const int64_t word = naming_word(s, wordnet, vocab, is_content_word);
        if (word == Vocabulary::kUnk) continue;
        Concept named{vocab.token(word), word, -static_cast<int>(wordnet.ancestors(s.offset).size()), {}, {}};
        known = concept_of.emplace(s.offset, static_cast<int>(tagger.concepts_.size())).first;
        tagger.concepts_.push_back(std::move(named));
      }
      tagger.class_concepts_[c].push_back(known->second);
    }
  }
  const auto word_senses = first_noun_senses(vocab, wordnet, is_content_word);
  // People words: a most common sense at or below WordNet's person or people ("men"; "crowd" is
  // not, it is a group), or a sense the tagged corpus uses for a person kPersonSenseInUse times:
  // "male" is first an animal, but "a male climbs a rock" is a man (4 of 10 tags); fish's Pisces
  // and sheep's and bull's people (one tag each) do not count. Animal concepts: at or below animal.
  BelowRoots is_people(synset, wordnet, {"person", "people"}), is_animal(synset, wordnet, {"animal"});
  for (const auto& [id, sense] : word_senses) {  // ids ascending: people_ stays sorted
    const auto tagged = wordnet.tagged_noun_senses(vocab.token(id), kPersonSenseInUse);
    if (is_people(sense) || std::any_of(tagged.begin(), tagged.end(), [&](int64_t s) { return is_people(s); })) {
      tagger.people_.push_back(id);
    }
  }
  const auto people_word = [&](int64_t id) { return std::binary_search(tagger.people_.begin(), tagger.people_.end(), id); };
  tagger.concept_is_people_.assign(tagger.concepts_.size(), false);
  tagger.concept_is_animal_.assign(tagger.concepts_.size(), false);
  for (const auto& [offset, k] : concept_of) {
    tagger.concept_is_people_[static_cast<size_t>(k)] = is_people(offset);
    tagger.concept_is_animal_[static_cast<size_t>(k)] = is_animal(offset);
  }
  // A word that may name a person names nothing else for certain: "a male" is no animal.
  for (auto& [id, concepts] : concepts_of_words(word_senses, synset, concept_of)) {
    for (int64_t k : concepts) {
      if (people_word(id) && !tagger.concept_is_people_[static_cast<size_t>(k)]) continue;
      tagger.concepts_[static_cast<size_t>(k)].satisfied_by.push_back(id);
      tagger.word_concepts_[id].push_back(static_cast<int>(k));
    }
  }
  for (auto& c : tagger.concepts_) std::sort(c.satisfied_by.begin(), c.satisfied_by.end());
  for (const auto& [id, sense] : word_senses) {
    if (concept_of.count(sense) && !(people_word(id) && !is_people(sense))) tagger.names_concept_.insert(id);
  }
  // Each concept's broader words (Tag::broader): the words whose nearest concept lies above it on
  // the chain of a class it gathers. below[f]: the concepts f lies above on some chain.
  std::vector<std::unordered_set<int>> below(tagger.concepts_.size());
  for (const auto& chain : tagger.class_concepts_) {
    for (size_t i = 0; i < chain.size(); ++i) {
      for (size_t j = i + 1; j < chain.size(); ++j) below[static_cast<size_t>(chain[j])].insert(chain[i]);
    }
  }
  for (const auto& [w, concepts] : tagger.word_concepts_) {
    if (concepts.empty()) continue;
    for (int k : below[static_cast<size_t>(concepts.front())]) tagger.concepts_[static_cast<size_t>(k)].broader.push_back(w);
  }
  for (auto& c : tagger.concepts_) std::sort(c.broader.begin(), c.broader.end());
  return tagger;
}

std::optional<Tag> Tagger::tag(const std::vector<float>& class_probabilities, double threshold) const {
  if (class_probabilities.size() != class_concepts_.size()) {
    throw std::invalid_argument("tagger: " + std::to_string(class_probabilities.size()) + " class probabilities for " +
                                std::to_string(class_concepts_.size()) + " classes");
  }
  std::vector<double> mass(concepts_.size(), 0.0);
  for (size_t c = 0; c < class_concepts_.size(); ++c) {
    for (int k : class_concepts_[c]) mass[static_cast<size_t>(k)] += class_probabilities[c];
  }
  int best = -1;
  for (size_t k = 0; k < concepts_.size(); ++k) {
    if (mass[k] < threshold) continue;
    // The least probable concept is the most specific; at equal mass (an eagle photo's "bird"
    // and "animal") the one with more ancestors.
    const auto key = [&](size_t i) { return std::make_pair(mass[i], concepts_[i].generality); };
    if (best < 0 || key(k) < key(static_cast<size_t>(best))) best = static_cast<int>(k);
  }
  if (best < 0) return std::nullopt;
  const Concept& c = concepts_[static_cast<size_t>(best)];
  Tag tag{c.word, c.word_id, mass[static_cast<size_t>(best)], {}, {}, {}, {}, {}, false};
  if (!concept_is_people_[static_cast<size_t>(best)]) tag.people = people_;
  tag.animal = concept_is_animal_[static_cast<size_t>(best)];
  tag.broader = c.broader;
  // A broad tag is not met by a kind of it that the classifier rules out: "animal" for a photo
  // of a giraffe is not met by "dog", nor by "puppy", when the dog classes together score below
  // kRuledOut. A caption made to name the tag names it, or a kind the classifier thinks more
  // likely present than not (the tag's word for the giraffe, not "bird" at 8% of its animal
  // classes): ImageNet's classes often miss Flickr8k's jumping dogs, so only a caption's own
  // words are judged at kRuledOut.
  for (int64_t w : c.satisfied_by) {
    double least = 1;
    for (int k : word_concepts_.at(w)) least = std::min(least, mass[static_cast<size_t>(k)]);
    if (least < kRuledOut) {
      tag.ruled_out.push_back(w);
      continue;
    }
    tag.satisfied_by.push_back(w);
    if (w == c.word_id || (least >= kKindShare * tag.probability && names_concept_.count(w))) tag.named_by.push_back(w);
  }
  if (tag.named_by.empty()) tag.named_by = tag.satisfied_by;  // the tag's own word is ruled out elsewhere
  return tag;
}

std::vector<std::string> Tagger::class_words(size_t c) const {
  std::vector<std::string> out;
  for (int k : class_concepts_.at(c)) out.push_back(concepts_[static_cast<size_t>(k)].word);
  return out;
}

}  // namespace captioner
