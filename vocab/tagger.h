// From an image classifier's class probabilities to the one caption word the caption should
// contain ("bird" for a photo the ImageNet head calls "bald eagle 0.72, kite 0.27"), via WordNet.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "vocab/vocabulary.h"
#include "vocab/wordnet.h"

namespace captioner {

// A concept the caption must name: one WordNet synset, the caption word that names it, and every
// vocabulary word that names it or a kind of it ("bird": bird, eagle, duck, seagull, ...).
struct Tag {
  std::string word;
  int64_t word_id = 0;
  double probability = 0;  // summed over the classes that are kinds of it
  std::vector<int64_t> satisfied_by;
  std::vector<int64_t> ruled_out;  // kinds of it the classifier gives less than 2% together
  // Those of satisfied_by a caption made to name the tag may use: the tag's own words and kinds
  // holding at least half of its probability.
  std::vector<int64_t> named_by;
  // Vocabulary words for people ("man", "girls", "people"), which the ImageNet classes cannot
  // vouch for: a caption led by one of them invents a person. Empty when the tag is itself a person.
  std::vector<int64_t> people;
  // Words for broader concepts the classifier is as sure of ("dog" and "dogs" for a golden
  // retriever, "animal"): a caption that uses one is right, if less specific.
  std::vector<int64_t> broader;
  bool animal = false;  // the concept is an animal (WordNet's animal.n.01 or below)
};

class Tagger {
 public:
  // class_labels: one line per class as in ImageNet label files ("bald eagle, American eagle,
  // Haliaeetus leucocephalus"); "background" (or any line WordNet cannot place) maps to nothing.
  // Classes are taken to be in ImageNet's order (ascending synset offset), which settles lemmas
  // with several senses ("crane" the bird, then "crane" the machine).
  static Tagger build(const std::vector<std::string>& class_labels, const WordNet& wordnet, const Vocabulary& vocab);

  // The most specific concept whose classes' probabilities sum to at least `threshold` (> 0.5
  // keeps the candidates on one line of descent) and that the vocabulary can name; none when no
  // concept is that sure, or only ones too general to help ("object", "whole", "organism").
  // Kinds of the concept that the classifier itself rules out do not satisfy it.
  std::optional<Tag> tag(const std::vector<float>& class_probabilities, double threshold) const;

  size_t num_classes() const { return class_concepts_.size(); }
  // The caption words naming class c and its broader concepts, nearest first: "tabby, tabby cat"
  // -> cat, animal. For tests and inspection.
  std::vector<std::string> class_words(size_t c) const;

 private:
  struct Concept {
    std::string word;  // the most frequent vocabulary word naming it
    int64_t word_id = 0;
    int generality = 0;                 // minus its number of WordNet ancestors
    std::vector<int64_t> satisfied_by;  // vocabulary words with a sense that is it or below it
    std::vector<int64_t> broader;       // Tag::broader when it is the tag, sorted
  };
  static constexpr double kRuledOut = 0.02;
  static constexpr int kPersonSenseInUse = 3;     // tags in WordNet's corpus that make a sense of a word a person
  static constexpr double kKindShare = 0.5;       // Tag::named_by: a kind's least share of the tag's probability
  std::vector<std::vector<int>> class_concepts_;  // per class: indices into concepts_, nearest first
  std::vector<Concept> concepts_;
  std::unordered_map<int64_t, std::vector<int>> word_concepts_;  // word id -> concepts at or above its sense
  std::vector<int64_t> people_;                                  // sorted word ids (Tag::people)
  // Words whose sense is a concept: the classifier can vouch for "dog", not for "deer", which
  // no class lies under (Tag::named_by).
  std::unordered_set<int64_t> names_concept_;
  std::vector<bool> concept_is_people_;  // per concept: a person or people
  std::vector<bool> concept_is_animal_;
};

}  // namespace captioner
