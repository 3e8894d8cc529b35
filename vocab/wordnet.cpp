#include "vocab/wordnet.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <sstream>
#include <stdexcept>
#include <unordered_set>

#include "datasets/file_io.h"

namespace captioner {

namespace {

std::string_view lemma_of(std::string_view line) { return line.substr(0, line.find(' ')); }

std::string_view line_at(const std::string& text, size_t start) {
  const size_t end = text.find('\n', start);
  return std::string_view(text).substr(start, end == std::string::npos ? std::string::npos : end - start);
}

// "Bald eagle" / "bald_eagle" -> "bald_eagle", WordNet's spelling in its index.
std::string index_key(std::string_view lemma) {
  std::string key;
  for (char c : lemma) key += c == ' ' ? '_' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return key;
}

}  // namespace

WordNet WordNet::open(const std::filesystem::path& dir) {
  WordNet wn;
  wn.dir_ = dir;
  for (auto [name, text] : {std::pair{"index.noun", &wn.index_}, std::pair{"data.noun", &wn.data_}}) {
    const auto path = dir / name;
    if (!std::filesystem::exists(path)) {
      throw std::runtime_error(path.string() + ": WordNet is not installed there (apt-get install wordnet-base)");
    }
    *text = read_file(path);
  }
  // Both files start with the licence, each line indented by two spaces; then data lines.
  if (wn.index_.rfind("  1 This software", 0) != 0 || wn.data_.rfind("  1 This software", 0) != 0) {
    throw std::runtime_error((dir / "index.noun").string() + " or data.noun is not a WordNet 3.0 database");
  }
  // cntlist.rev: "sense_key sense_number tag_count", the key "word%pos:...", pos 1 noun, 3 and 5
  // adjective.
  const auto counts = dir / "cntlist.rev";
  if (!std::filesystem::exists(counts)) throw std::runtime_error(counts.string() + ": missing (apt-get install wordnet-base)");
  // Split by hand: 37,000 lines through an istringstream took a third of open()'s time.
  const std::string text = read_file(counts);
  for (size_t start = 0; start < text.size();) {
    const std::string_view line = line_at(text, start);
    start += line.size() + 1;
    const size_t pct = line.find('%'), space = line.find(' '), last = line.rfind(' ');
    if (pct == std::string_view::npos || space == std::string_view::npos || pct + 1 >= space || last == space) continue;
    int count = 0;
    const auto tail = line.substr(last + 1);
    if (std::from_chars(tail.data(), tail.data() + tail.size(), count).ec != std::errc()) continue;
    const char pos = line[pct + 1];
    if (pos != '1' && pos != '3' && pos != '5') continue;
    const std::string word(line.substr(0, pct));
    auto& c = wn.tag_counts_[word];
    (pos == '1' ? c.first : c.second) += count;
    int sense = 0;
    const auto number = line.substr(space + 1, last - space - 1);
    if (pos == '1' && count > 0 && std::from_chars(number.data(), number.data() + number.size(), sense).ec == std::errc()) {
      wn.tagged_noun_senses_[word].emplace_back(sense, count);
    }
  }
  // cntlist.rev is sorted by sense key; tagged_noun_senses answers in sense order.
  for (auto& [word, senses] : wn.tagged_noun_senses_) std::sort(senses.begin(), senses.end());
  // noun.exc: "inflected base" per line ("men man"); optional, the suffix rules work without it.
  if (const auto exceptions = dir / "noun.exc"; std::filesystem::exists(exceptions)) {
    std::istringstream exc(read_file(exceptions));
    std::string line;
    while (std::getline(exc, line)) {
      std::istringstream fields(line);
      std::string inflected, base;
      if (fields >> inflected >> base) wn.irregular_plurals_.emplace(inflected, base);
    }
  }
  return wn;
}

std::pair<std::string, std::vector<int64_t>> WordNet::noun_entry(std::string_view word) const {
  // An irregular plural first: "men" is also a lemma of its own (a workforce), rarely what a
  // caption means.
  const std::string w = index_key(word);
  if (auto it = irregular_plurals_.find(w); it != irregular_plurals_.end()) {
    if (auto base = synsets(it->second); !base.empty()) return {index_key(it->second), std::move(base)};
  }
  if (auto senses = synsets(w); !senses.empty()) return {w, std::move(senses)};
  // WordNet's morphy, nouns: the first rule whose base form WordNet knows.
  static const std::pair<const char*, const char*> kRules[] = {{"ses", "s"},   {"xes", "x"},   {"zes", "z"}, {"ches", "ch"},
                                                               {"shes", "sh"}, {"men", "man"}, {"ies", "y"}, {"s", ""}};
  for (const auto& [suffix, ending] : kRules) {
    const std::string_view sfx(suffix);
    if (w.size() <= sfx.size() || w.compare(w.size() - sfx.size(), sfx.size(), sfx) != 0) continue;
    std::string base = w.substr(0, w.size() - sfx.size()) + ending;
    if (auto senses = synsets(base); !senses.empty()) return {std::move(base), std::move(senses)};
  }
  return {};
}

std::vector<int64_t> WordNet::noun_senses(std::string_view word) const { return noun_entry(word).second; }

std::vector<int64_t> WordNet::tagged_noun_senses(std::string_view word, int min_count) const {
  const auto [lemma, senses] = noun_entry(word);
  auto it = tagged_noun_senses_.find(lemma);
  if (senses.empty() || it == tagged_noun_senses_.end()) return {};
  std::vector<int64_t> out;
  for (const auto& [n, count] : it->second) {
    if (count >= min_count && n >= 1 && static_cast<size_t>(n) <= senses.size())
      out.push_back(senses[static_cast<size_t>(n) - 1]);
  }
  return out;
}

std::vector<int64_t> WordNet::synsets(std::string_view lemma) const {
  const std::string key = index_key(lemma);
  // index.noun is sorted by lemma: bisect over byte positions, each probe moved to its line start.
  size_t lo = 0, hi = index_.size();
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    size_t start = index_.rfind('\n', mid);
    start = start == std::string::npos ? 0 : start + 1;
    const auto line = line_at(index_, start);
    if (line.rfind("  ", 0) == 0 || lemma_of(line) < key) {  // licence lines sort before every lemma
      lo = start + line.size() + 1;
    } else {
      if (lemma_of(line) == key) {
        // lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt synset_offset...
        std::istringstream in{std::string(line)};
        std::string word, pos, symbol;
        int synset_count = 0, pointer_count = 0, sense_count = 0, tagged = 0;
        in >> word >> pos >> synset_count >> pointer_count;
        for (int i = 0; i < pointer_count; ++i) in >> symbol;
        in >> sense_count >> tagged;
        std::vector<int64_t> out(static_cast<size_t>(std::max(synset_count, 0)));
        for (auto& offset : out) in >> offset;
        if (!in) throw std::runtime_error((dir_ / "index.noun").string() + ": malformed entry for \"" + key + "\"");
        return out;
      }
      hi = start;
    }
  }
  return {};
}

WordNet::Synset WordNet::synset(int64_t offset) const {
  if (offset <= 0 || static_cast<size_t>(offset) >= data_.size() || data_[static_cast<size_t>(offset) - 1] != '\n') {
    throw std::out_of_range("no WordNet noun synset at offset " + std::to_string(offset));
  }
  const auto line = line_at(data_, static_cast<size_t>(offset));
  // synset_offset lex_filenum ss_type w_cnt(hex) word lex_id ... p_cnt ptr... | gloss
  std::istringstream in{std::string(line.substr(0, line.find(" | ")))};
  Synset s;
  std::string lex_file, type, word, lex_id, symbol, target, pos, source_target;
  int64_t own_offset = 0;
  int word_count = 0, pointer_count = 0;
  in >> own_offset >> lex_file >> type >> std::hex >> word_count >> std::dec;
  for (int i = 0; i < word_count && in >> word >> lex_id; ++i) {
    word = word.substr(0, word.find('('));  // adjective markers: "(a)", "(p)"
    std::replace(word.begin(), word.end(), '_', ' ');
    std::transform(word.begin(), word.end(), word.begin(), [](unsigned char c) { return std::tolower(c); });
    s.lemmas.push_back(word);
  }
  in >> pointer_count;
  for (int i = 0; i < pointer_count && in >> symbol >> target >> pos >> source_target; ++i) {
    if ((symbol == "@" || symbol == "@i") && pos == "n") s.hypernyms.push_back(std::stoll(target));
  }
  if (!in || own_offset != offset) {
    throw std::runtime_error((dir_ / "data.noun").string() + ": malformed synset at offset " + std::to_string(offset));
  }
  s.offset = offset;
  return s;
}

bool WordNet::mostly_adjective(std::string_view word) const {
  auto it = tag_counts_.find(index_key(word));
  return it != tag_counts_.end() && it->second.second > it->second.first;
}

std::vector<WordNet::Synset> WordNet::ancestors(int64_t offset) const {
  std::vector<Synset> out{synset(offset)};
  std::unordered_set<int64_t> seen{offset};
  for (size_t i = 0; i < out.size(); ++i) {
    for (int64_t h : std::vector<int64_t>(out[i].hypernyms)) {
      if (seen.insert(h).second) out.push_back(synset(h));
    }
  }
  return out;
}

}  // namespace captioner
