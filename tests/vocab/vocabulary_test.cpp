#include "vocab/vocabulary.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/test_util.h"

using captioner::Vocabulary;
using captioner::test::expect_error_message;
using captioner::test::TempDir;
using captioner::test::write_text;

namespace {
std::vector<std::vector<std::string>> corpus() {
  return {{"a", "dog", "runs"}, {"a", "dog", "sits"}, {"a", "cat", "runs"}, {"the", "dog"}};
}
}  // namespace

TEST(Vocabulary, SpecialTokensHaveFixedIds) {
  Vocabulary v;
  EXPECT_EQ(v.size(), 4u);
  EXPECT_EQ(v.id("<pad>"), Vocabulary::kPad);
  EXPECT_EQ(v.id("<start>"), Vocabulary::kStart);
  EXPECT_EQ(v.id("<end>"), Vocabulary::kEnd);
  EXPECT_EQ(v.id("<unk>"), Vocabulary::kUnk);
}

TEST(Vocabulary, BuildAppliesMinCountAndOrdersByFrequency) {
  Vocabulary v = Vocabulary::build(corpus(), 2);
  // a:3 dog:3 runs:2 (cat, sits, the: 1) -> ties alphabetical
  ASSERT_EQ(v.size(), 7u);
  EXPECT_EQ(v.token(4), "a");
  EXPECT_EQ(v.token(5), "dog");
  EXPECT_EQ(v.token(6), "runs");
  EXPECT_EQ(v.count(4), 3);
  EXPECT_EQ(v.id("cat"), Vocabulary::kUnk);
  EXPECT_THROW(Vocabulary::build(corpus(), 0), std::invalid_argument);
}

TEST(Vocabulary, EncodeDecodeRoundTrip) {
  Vocabulary v = Vocabulary::build(corpus(), 1);
  auto ids = v.encode({"a", "dog", "zebra"});
  ASSERT_EQ(ids.size(), 5u);
  EXPECT_EQ(ids.front(), Vocabulary::kStart);
  EXPECT_EQ(ids[3], Vocabulary::kUnk);
  EXPECT_EQ(ids.back(), Vocabulary::kEnd);
  EXPECT_EQ(v.decode(ids), "a dog <unk>");
  // Decoding stops at <end> and skips padding.
  EXPECT_EQ(v.decode({v.id("a"), Vocabulary::kPad, v.id("cat"), Vocabulary::kEnd, v.id("dog")}), "a cat");
  EXPECT_THROW(v.token(999), std::out_of_range);
}

// Tag guidance can force a word after an article the model chose for another: "a animal" is
// written "an animal", "an dog" "a dog"; "a uniform", "a one" and "a european" keep theirs.
TEST(Vocabulary, CaptionTextMakesArticlesAgree) {
  auto v = Vocabulary::build(
      {{"a", "animal", "in", "a", "uniform", "and", "one", "eagle", "on", "an", "egg", "dog", "umbrella", "european", "ewe"}}, 1);
  auto ids = [&](std::initializer_list<const char*> words) {
    std::vector<int64_t> out{Vocabulary::kStart};
    for (const char* w : words) out.push_back(v.id(w));
    out.push_back(Vocabulary::kEnd);
    return out;
  };
  EXPECT_EQ(v.caption_text(ids({"a", "animal", "in", "a", "uniform"})), "an animal in a uniform");
  EXPECT_EQ(v.caption_text(ids({"a", "one", "a", "eagle", "on", "an", "egg"})), "a one an eagle on an egg");
  EXPECT_EQ(v.caption_text(ids({"an", "dog", "and", "a", "umbrella"})), "a dog and an umbrella");
  EXPECT_EQ(v.caption_text(ids({"a", "european", "and", "a", "ewe", "and", "a"})), "a european and a ewe and a");
  EXPECT_EQ(v.decode(ids({"a", "animal"})), "a animal");  // decode() stays the tokens' inverse
}

TEST(Vocabulary, SaveLoadRoundTrip) {
  TempDir tmp;
  Vocabulary v = Vocabulary::build(corpus(), 1);
  v.save(tmp / "vocab.json");
  Vocabulary w = Vocabulary::load(tmp / "vocab.json");
  ASSERT_EQ(w.size(), v.size());
  for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(w.token(static_cast<int64_t>(i)), v.token(static_cast<int64_t>(i)));
  EXPECT_EQ(w.fingerprint(), v.fingerprint());
  EXPECT_EQ(w.min_count(), 1);
  EXPECT_NE(Vocabulary::build(corpus(), 2).fingerprint(), v.fingerprint());
}

TEST(Vocabulary, LoadRejectsCorruptOrMismatchedFiles) {
  TempDir tmp;
  auto expect_error = [&](const std::string& text, const std::string& fragment) {
    write_text(tmp / "v.json", text);
    expect_error_message([&] { Vocabulary::load(tmp / "v.json"); }, {(tmp / "v.json").string(), fragment});
  };
  expect_error("{\"format\": \"captioner-vocabulary\", \"version\": 1, \"tokens\": [", "invalid JSON");
  expect_error("{\"tokens\": []}", "not a captioner vocabulary");
  expect_error(R"({"format":"captioner-vocabulary","version":7,"min_count":5,"tokens":[]})", "newer");
  expect_error(R"({"format":"captioner-vocabulary","version":1,"min_count":5,"tokens":["<pad>","<end>","<start>","<unk>"]})",
               "expected special token");
  expect_error(
      R"({"format":"captioner-vocabulary","version":1,"min_count":5,"tokens":["<pad>","<start>","<end>","<unk>","a","a"]})",
      "duplicate token");
  expect_error(R"({"format":"captioner-vocabulary","version":1,"min_count":5,"tokens":["<pad>","<start>","<end>","<unk>",3]})",
               "expected a string");
  expect_error(
      R"({"format":"captioner-vocabulary","version":1,"min_count":5,"tokens":["<pad>","<start>","<end>","<unk>"],"counts":[1]})",
      "entries but tokens has");
  EXPECT_THROW(Vocabulary::load(tmp / "missing.json"), std::runtime_error);
}

TEST(Vocabulary, UnrepresentableNumbersAreAnErrorNamingTheFile) {
  // Found by fuzz_vocabulary: nlohmann reports 1e9400 as out_of_range, not as a parse error.
  TempDir tmp;
  write_text(tmp / "v.json", R"({"format":"captioner-vocabulary","version":1e9400})");
  expect_error_message([&] { Vocabulary::load(tmp / "v.json"); }, {"v.json: invalid JSON: number overflow"});
}
