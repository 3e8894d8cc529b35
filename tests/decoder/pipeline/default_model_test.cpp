// The shipped model (models/default) captions real Flickr8k dev photos sensibly: each caption is
// English-shaped (no <unk>, not empty, no word three times) and most share content words with
// what people wrote about the photo.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "datasets/caption_dataset.h"
#include "decoder/pipeline/caption_pipeline.h"
#include "tests/test_util.h"
#include "datasets/tokenizer.h"

using namespace captioner;
namespace fs = std::filesystem;

namespace {
const std::set<std::string> kFunctionWords = {"a",   "an",    "the",  "is",      "are",     "in",   "on",    "of",    "with",
                                              "and", "at",    "to",   "its",     "his",     "her",  "their", "while", "for",
                                              "by",  "from",  "into", "through", "up",      "down", "out",   "over",  "some",
                                              "two", "three", "one",  "other",   "another", "near", "next",  "front", "'s",
                                              "it",  "being", "has",  "wearing", "there",   "this", "that"};

std::set<std::string> content_words(const std::string& sentence) {
  std::set<std::string> out;
  for (auto& w : tokenize_caption(sentence)) {
    if (!kFunctionWords.count(w)) out.insert(w);
  }
  return out;
}
}  // namespace

TEST(DefaultModel, CaptionsDevPhotosWithTheirContentWords) {
  REQUIRE_SHARED();
  const fs::path dir = fs::path(CAPTIONER_SOURCE_DIR) / "models/default";
  ASSERT_TRUE(fs::exists(dir / "config.json")) << "models/default is missing from the checkout";
  auto model = ModelBundle::load(dir);
  if (!fs::exists(model.encoder_file)) GTEST_SKIP() << model.encoder_file << " missing: run scripts/setup.sh";
  auto encoder = Encoder::load(model.encoder_file);

  const fs::path flickr = test::shared_dir() / "datasets/flickr8k";
  DatasetOptions dopt;
  dopt.image_dir = flickr / "images";
  auto dev = load_caption_file(flickr / "captions_val.json", dopt);
  ASSERT_GE(dev.records.size(), 1000u);
  std::vector<fs::path> files;
  std::map<fs::path, const CaptionRecord*> records;
  for (size_t i = 0; i < dev.records.size(); i += 50) {  // 20 photos spread over the split
    files.push_back(dev.records[i].image_path);
    records[files.back()] = &dev.records[i];
  }
  CaptionPipelineOptions o;
  o.search = model.search;
  std::vector<CaptionedImage> captions;
  CaptionCallbacks cb;
  cb.on_caption = [&](const CaptionedImage& c) {
    SCOPED_TRACE(c.file.string() + ": \"" + c.caption + "\"");
    auto words = tokenize_caption(c.caption);
    ASSERT_FALSE(words.empty());
    // Articles and prepositions recur in fluent English ("a man in a red shirt on a bench");
    // a content word three times, or any word twice in a row, is a decoding failure.
    std::map<std::string, int> count;
    for (size_t i = 0; i < words.size(); ++i) {
      EXPECT_NE(words[i], "<unk>");
      if (i > 0) {
        EXPECT_NE(words[i], words[i - 1]) << "a word twice in a row";
      }
      if (!kFunctionWords.count(words[i])) {
        EXPECT_LT(++count[words[i]], 3) << "a content word three times";
      }
    }
    captions.push_back(c);
  };
  ASSERT_EQ(CaptionPipeline(model, encoder, o).run(files, cb), 0u);
  ASSERT_EQ(captions.size(), files.size());
  // Words shared with the photo's own references, against those shared with another photo's: a
  // model that ignored the image would score about the same on both.
  auto shares = [&](const CaptionedImage& c, const fs::path& refs_of) {
    std::set<std::string> ref_words;
    for (const auto& r : records.at(refs_of)->captions) {
      for (const auto& w : content_words(r)) ref_words.insert(w);
    }
    for (const auto& w : content_words(c.caption)) {
      if (ref_words.count(w)) return true;
    }
    return false;
  };
  int own = 0, other = 0;
  std::string report;
  for (size_t i = 0; i < captions.size(); ++i) {
    bool s = shares(captions[i], files[i]);
    own += s;
    other += shares(captions[i], files[(i + files.size() / 2) % files.size()]);
    report += (s ? "  ok  " : "  --  ") + files[i].filename().string() + ": " + captions[i].caption + "\n";
  }
  EXPECT_GE(own, 13) << "of 20 dev photos, fewer than 13 captions share a content word with their references:\n" << report;
  EXPECT_GE(own, other + 6) << "captions match other photos' references about as well as their own (" << other << "):\n"
                            << report;
}
