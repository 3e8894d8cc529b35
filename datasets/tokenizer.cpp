#include "datasets/tokenizer.h"

#include <array>
#include <cctype>

namespace captioner {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Lower-cases ASCII and the Latin-1 letters (U+00C0..U+00DE) encoded as UTF-8; Java's
// toLowerCase(Locale.ENGLISH) does all of Unicode, which captions outside Latin-1 rarely need.
std::string lower(std::string_view s) {
  std::string out(s);
  for (size_t i = 0; i < out.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(out[i]);
    if (c >= 'A' && c <= 'Z') {
      out[i] = static_cast<char>(c - 'A' + 'a');
    } else if (c == 0xC3 && i + 1 < out.size()) {
      unsigned char d = static_cast<unsigned char>(out[i + 1]);
      if (d >= 0x80 && d <= 0x9E && d != 0x97) out[i + 1] = static_cast<char>(d + 0x20);
      ++i;
    }
  }
  return out;
}

// The multi-byte quotes, dashes and ellipsis PTB normalises, as their ASCII forms; "&amp;" as "&".
std::string ascii_punctuation(std::string_view in) {
  std::string s;
  s.reserve(in.size() + 16);
  for (size_t i = 0; i < in.size(); ++i) {
    if (i + 2 < in.size() && static_cast<unsigned char>(in[i]) == 0xE2 && static_cast<unsigned char>(in[i + 1]) == 0x80) {
      unsigned char c = static_cast<unsigned char>(in[i + 2]);
      if (c == 0x98 || c == 0x99) {
        s += '\'';
        i += 2;
        continue;
      }  // single quotes
      if (c == 0x9C || c == 0x9D) {
        s += ' ';
        i += 2;
        continue;
      }  // double quotes
      if (c == 0x93 || c == 0x94) {
        s += " -- ";
        i += 2;
        continue;
      }  // en/em dash
      if (c == 0xA6) {
        s += " ... ";
        i += 2;
        continue;
      }  // ellipsis
    }
    if (in.compare(i, 5, "&amp;") == 0) {
      s += '&';
      i += 4;
      continue;
    }
    s += in[i];
  }
  return s;
}

// Turns the punctuation that always becomes a token of its own, later removed, into spaces, and
// brackets into PTB's -lrb- tokens.
std::string separate_punctuation(std::string_view in) {
  const std::string s = ascii_punctuation(in);
  std::string out;
  out.reserve(s.size() + 16);
  auto between_digits = [&](size_t i) { return i > 0 && i + 1 < s.size() && is_digit(s[i - 1]) && is_digit(s[i + 1]); };
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    switch (c) {
      case '(':
        out += " -lrb- ";
        continue;
      case ')':
        out += " -rrb- ";
        continue;
      case '[':
        out += " -lsb- ";
        continue;
      case ']':
        out += " -rsb- ";
        continue;
      case '{':
        out += " -lcb- ";
        continue;
      case '}':
        out += " -rcb- ";
        continue;
      case '"':
      case ';':
      case '!':
      case '?':
        out += ' ';
        continue;
      case ',':
      case ':':
        out += between_digits(i) ? c : ' ';
        continue;
      case '-':
        if (i + 1 < s.size() && s[i + 1] == '-') {  // "--" and longer dashes
          while (i + 1 < s.size() && s[i + 1] == '-') ++i;
          out += ' ';
          continue;
        }
        break;
      case '.':
        if (i + 2 < s.size() && s[i + 1] == '.' && s[i + 2] == '.') {  // "..." and longer
          while (i + 1 < s.size() && s[i + 1] == '.') ++i;
          out += ' ';
          continue;
        }
        break;
      default:
        break;
    }
    out += c;
  }
  return out;
}

constexpr std::array<std::string_view, 6> kApostropheClitics = {"'s", "'re", "'ve", "'ll", "'d", "'m"};
constexpr std::array<std::string_view, 18> kAbbreviations = {"mr",  "mrs", "ms", "dr",   "st", "jr", "sr",   "vs",   "etc",
                                                             "inc", "ltd", "co", "corp", "mt", "ft", "prof", "capt", "sgt"};

bool is_clitic(std::string_view lowered) {
  if (lowered == "n't") return true;
  for (auto c : kApostropheClitics) {
    if (lowered == c) return true;
  }
  return false;
}

// "u.s" / "a.m" (single letters joined by periods) or a known title before a period.
bool is_abbreviation(std::string_view word_lower) {
  for (auto a : kAbbreviations) {
    if (word_lower == a) return true;
  }
  if (word_lower.size() >= 3) {
    bool pattern = true;
    for (size_t i = 0; i < word_lower.size(); ++i) {
      bool letter = std::isalpha(static_cast<unsigned char>(word_lower[i])) != 0;
      if ((i % 2 == 0 && !letter) || (i % 2 == 1 && word_lower[i] != '.')) {
        pattern = false;
        break;
      }
    }
    if (pattern) return true;
  }
  return false;
}

void emit(std::vector<std::string>& out, std::string token, const TokenizerOptions& options) {
  if (token.empty() || is_removed_punctuation(token)) return;
  if (!options.keep_bracket_tokens && token.size() == 5 && token.front() == '-' && token.back() == '-') {
    return;  // "-lrb-" and friends
  }
  out.push_back(std::move(token));
}

// Splits one whitespace-free chunk (already lower-cased) into PTB tokens.
void split_chunk(std::string w, std::vector<std::string>& out, const TokenizerOptions& options) {
  if (is_clitic(w) || (w.size() == 5 && w.front() == '-' && w.back() == '-')) {
    emit(out, std::move(w), options);
    return;
  }
  // Opening quotes and currency symbols come off the front.
  std::vector<std::string> prefix;
  while (!w.empty()) {
    if (w[0] == '\'' || w[0] == '`') {
      if (is_clitic(w)) break;
      w.erase(0, 1);
    } else if ((w[0] == '$' || w[0] == '#') && w.size() > 1) {
      prefix.emplace_back(1, w[0]);
      w.erase(0, 1);
    } else {
      break;
    }
  }
  // Closing quotes, sentence-final periods (not of abbreviations) and percent signs come off the back.
  std::vector<std::string> suffix;
  for (bool changed = true; changed && !w.empty();) {
    changed = false;
    char last = w.back();
    if (last == '\'' || last == '`') {
      w.pop_back();
      changed = true;
    } else if (last == '.' && w.size() > 1) {
      std::string stem = w.substr(0, w.size() - 1);
      if (!is_abbreviation(stem)) {
        w = std::move(stem);
        changed = true;
      }
    } else if (last == '.' && w.size() == 1) {
      w.clear();
    } else if (last == '%' && w.size() > 1) {
      suffix.insert(suffix.begin(), "%");
      w.pop_back();
      changed = true;
    }
  }
  // Clitics: "man's" -> "man 's", "don't" -> "do n't", "cannot" -> "can not", "gonna" -> "gon na".
  std::string clitic;
  if (w.size() > 3 && w.compare(w.size() - 3, 3, "n't") == 0) {
    clitic = "n't";
  } else {
    for (auto c : kApostropheClitics) {
      if (w.size() > c.size() && w.compare(w.size() - c.size(), c.size(), c) == 0) {
        clitic = std::string(c);
        break;
      }
    }
  }
  if (!clitic.empty()) {
    w.resize(w.size() - clitic.size());
    suffix.insert(suffix.begin(), clitic);
  } else if (w == "cannot") {
    w = "can";
    suffix.insert(suffix.begin(), "not");
  } else if (w == "gonna" || w == "gotta" || w == "wanna" || w == "gimme" || w == "lemme") {
    suffix.insert(suffix.begin(), w.substr(3));
    w.resize(3);
  }
  for (auto& p : prefix) emit(out, std::move(p), options);
  emit(out, std::move(w), options);
  for (auto& s : suffix) emit(out, std::move(s), options);
}

}  // namespace

bool is_removed_punctuation(std::string_view t) {
  static constexpr std::array<std::string_view, 17> kRemoved = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".",
                                                                "?",  "!", ",",  ":", "-",     "--",    "...",   ";"};
  for (auto r : kRemoved) {
    if (t == r) return true;
  }
  return false;
}

std::vector<std::string> tokenize_caption(std::string_view caption, const TokenizerOptions& options) {
  std::string text = lower(separate_punctuation(caption));
  std::vector<std::string> tokens;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && is_space(text[i])) ++i;
    size_t start = i;
    while (i < text.size() && !is_space(text[i])) ++i;
    if (i > start) split_chunk(text.substr(start, i - start), tokens, options);
  }
  return tokens;
}

std::string tokenize_caption_joined(std::string_view caption, const TokenizerOptions& options) {
  std::string joined;
  for (const auto& t : tokenize_caption(caption, options)) {
    if (!joined.empty()) joined += ' ';
    joined += t;
  }
  return joined;
}

}  // namespace captioner
