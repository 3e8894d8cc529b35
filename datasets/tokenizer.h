// Caption tokenizer that reproduces coco-caption's evaluation tokenization: Stanford PTBTokenizer
// (CoreNLP 3.4.1, -preserveLines -lowerCase) followed by the toolkit's punctuation filter.
// Scores are only comparable with published ones if both sides are tokenized exactly this way.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace captioner {

struct TokenizerOptions {
  // coco-caption lower-cases after tokenizing, so PTB's "-LRB-" becomes "-lrb-", which its
  // upper-case filter list misses: evaluation keeps bracket tokens. Training drops them.
  bool keep_bracket_tokens = true;
};

// "A man's dog (brown) ." -> {"a", "man", "'s", "dog", "-lrb-", "brown", "-rrb-"}
std::vector<std::string> tokenize_caption(std::string_view caption, const TokenizerOptions& options = {});

// Tokens joined by single spaces: the form coco-caption's scorers receive.
std::string tokenize_caption_joined(std::string_view caption, const TokenizerOptions& options = {});

// True for the tokens coco-caption removes after tokenizing ('' ' `` ` . ? ! , : - -- ... ; and
// the upper-case bracket names).
bool is_removed_punctuation(std::string_view token);

}  // namespace captioner
