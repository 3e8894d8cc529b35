#include "datasets/tokenizer.h"

#include <gtest/gtest.h>

using captioner::tokenize_caption;
using captioner::tokenize_caption_joined;
using Tokens = std::vector<std::string>;

TEST(Tokenizer, LowercasesAndDropsFinalPeriod) {
  EXPECT_EQ(tokenize_caption("A dog runs through the Grass ."), (Tokens{"a", "dog", "runs", "through", "the", "grass"}));
}

TEST(Tokenizer, Flickr8kSpacedPeriodAndMissingPeriodAgree) {
  EXPECT_EQ(tokenize_caption_joined("A girl going into a wooden building ."), "a girl going into a wooden building");
  EXPECT_EQ(tokenize_caption_joined("A girl going into a wooden building."), "a girl going into a wooden building");
  EXPECT_EQ(tokenize_caption_joined("A girl going into a wooden building"), "a girl going into a wooden building");
}

TEST(Tokenizer, SplitsClitics) {
  EXPECT_EQ(tokenize_caption("The man's dog isn't here and they're gone."),
            (Tokens{"the", "man", "'s", "dog", "is", "n't", "here", "and", "they", "'re", "gone"}));
  EXPECT_EQ(tokenize_caption("I'm sure we'll go, you'd say, we've been"),
            (Tokens{"i", "'m", "sure", "we", "'ll", "go", "you", "'d", "say", "we", "'ve", "been"}));
  EXPECT_EQ(tokenize_caption("can't won't cannot gonna"), (Tokens{"ca", "n't", "wo", "n't", "can", "not", "gon", "na"}));
  // Flickr8k writes clitics already split: same result.
  EXPECT_EQ(tokenize_caption_joined("a boy 's shirt"), tokenize_caption_joined("a boy's shirt"));
}

TEST(Tokenizer, RemovesPunctuationTokens) {
  EXPECT_EQ(tokenize_caption("Wow! Dogs, cats; birds: fish? \"quoted\" -- and ... 'single' - `x`"),
            (Tokens{"wow", "dogs", "cats", "birds", "fish", "quoted", "and", "single", "x"}));
  // Plural possessive: the trailing apostrophe is its own token, then removed.
  EXPECT_EQ(tokenize_caption("the dogs' toys"), (Tokens{"the", "dogs", "toys"}));
}

TEST(Tokenizer, KeepsBracketTokensLikeCocoCaption) {
  // PTBTokenizer -lowerCase makes "-lrb-", which coco-caption's upper-case filter does not remove.
  EXPECT_EQ(tokenize_caption("a lens ( almost fish eye ) of a boy"),
            (Tokens{"a", "lens", "-lrb-", "almost", "fish", "eye", "-rrb-", "of", "a", "boy"}));
  captioner::TokenizerOptions training;
  training.keep_bracket_tokens = false;
  EXPECT_EQ(tokenize_caption("a lens (almost fish eye) of a boy", training),
            (Tokens{"a", "lens", "almost", "fish", "eye", "of", "a", "boy"}));
}

TEST(Tokenizer, KeepsWordInternalPunctuation) {
  EXPECT_EQ(tokenize_caption("a black-and-white dog at 10:30 with 1,000 sheep o'clock 3.5 u.s."),
            (Tokens{"a", "black-and-white", "dog", "at", "10:30", "with", "1,000", "sheep", "o'clock", "3.5", "u.s."}));
  EXPECT_EQ(tokenize_caption("costs $5 or 50%"), (Tokens{"costs", "$", "5", "or", "50", "%"}));
}

TEST(Tokenizer, CollapsesWhitespaceAndHandlesEmpty) {
  EXPECT_EQ(tokenize_caption_joined("  two\t\tdogs \n play  "), "two dogs play");
  EXPECT_TRUE(tokenize_caption("").empty());
  EXPECT_TRUE(tokenize_caption(" . , ! ").empty());
}

TEST(Tokenizer, NormalisesUnicodeQuotesAndLowercasesLatin1) {
  EXPECT_EQ(tokenize_caption("The man\xE2\x80\x99s \xE2\x80\x9C"
                             "big\xE2\x80\x9D caf\xC3\x89"),
            (Tokens{"the", "man", "'s", "big", "caf\xC3\xA9"}));
}
