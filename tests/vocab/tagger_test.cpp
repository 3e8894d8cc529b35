// WordNet, the ImageNet-class -> caption-word tagger, and tag-guided captioning of real photos.
#include "vocab/tagger.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "decoder/pipeline/caption_pipeline.h"
#include "datasets/caption_writer.h"
#include "datasets/file_io.h"
#include "decoder/search/tag_guide.h"
#include "datasets/tokenizer.h"
#include "tests/test_util.h"

using namespace captioner;
namespace fs = std::filesystem;

namespace {

bool have_wordnet() { return fs::exists(fs::path(WordNet::kDefaultDir) / "data.noun"); }
#define REQUIRE_WORDNET() \
  if (!have_wordnet()) GTEST_SKIP() << WordNet::kDefaultDir << " missing: apt-get install wordnet-base (scripts/setup.sh does)"

std::vector<std::string> imagenet_labels() {
  std::vector<std::string> labels;
  std::ifstream in(test::shared_dir() / "models/mobilenet_v2_coral/imagenet_labels.txt");
  for (std::string line; std::getline(in, line);) labels.push_back(line);
  return labels;
}

size_t class_index(const std::vector<std::string>& labels, const std::string& label) {
  auto it = std::find(labels.begin(), labels.end(), label);
  return it == labels.end() ? labels.size() : static_cast<size_t>(it - labels.begin());
}

// A caption vocabulary with the words the tests look for, as Flickr8k's has them.
Vocabulary caption_vocabulary() {
  std::vector<std::vector<std::string>> captions;
  for (const char* w : {"bird", "eagle", "horse", "cat", "animal", "dog", "dogs", "puppy", "young", "man", "men", "toy", "kite",
                        "piece", "male", "female", "fish", "sheep"}) {
    for (int i = 0; i < 5; ++i) captions.push_back({"a", w, "is", "here"});
  }
  return Vocabulary::build(captions, 5);
}

}  // namespace

TEST(WordNet, FindsSynsetsAndWalksUpTheirHypernyms) {
  REQUIRE_WORDNET();
  auto wn = WordNet::open();
  const auto eagle = wn.synsets("bald eagle");
  ASSERT_EQ(eagle, std::vector<int64_t>{1614925});  // ImageNet's n01614925
  EXPECT_EQ(wn.synsets("Bald_Eagle"), eagle);
  EXPECT_TRUE(wn.synsets("no such lemma at all").empty());
  EXPECT_EQ(wn.synsets("crane").size(), 5u);  // the bird, the machine and three people
  std::vector<std::string> names;
  for (const auto& s : wn.ancestors(eagle[0])) names.push_back(s.lemmas.front());
  ASSERT_GE(names.size(), 5u);
  EXPECT_EQ(names[0], "bald eagle");
  EXPECT_EQ(names[1], "eagle");
  EXPECT_NE(std::find(names.begin(), names.end(), "bird"), names.end());
  EXPECT_EQ(names.back(), "entity");
  EXPECT_TRUE(wn.mostly_adjective("young"));
  EXPECT_FALSE(wn.mostly_adjective("dog"));
  EXPECT_THROW(wn.synset(12345), std::out_of_range);
}

TEST(WordNet, PluralsAsCaptionsWriteThemFindTheirSingularsSenses) {
  REQUIRE_WORDNET();
  auto wn = WordNet::open();
  EXPECT_EQ(wn.noun_senses("dog"), wn.synsets("dog"));
  EXPECT_EQ(wn.noun_senses("dogs"), wn.synsets("dog"));         // morphy: -s
  EXPECT_EQ(wn.noun_senses("men"), wn.synsets("man"));          // noun.exc
  EXPECT_EQ(wn.noun_senses("children"), wn.synsets("child"));   // noun.exc
  EXPECT_EQ(wn.noun_senses("puppies"), wn.synsets("puppy"));    // -ies
  EXPECT_EQ(wn.noun_senses("churches"), wn.synsets("church"));  // -ches
  EXPECT_EQ(wn.noun_senses("people"), wn.synsets("people"));    // a lemma of its own
  EXPECT_TRUE(wn.noun_senses("xqzzs").empty());
  // The senses the sense-tagged corpus uses: "male" the animal (6 times) and the man (4); of
  // "dog", only the animal (its "frump" and "cad" senses never occur).
  const auto male = wn.synsets("male");
  ASSERT_GE(male.size(), 2u);
  EXPECT_EQ(wn.tagged_noun_senses("males"), (std::vector<int64_t>{male[0], male[1]}));
  EXPECT_EQ(wn.tagged_noun_senses("dogs"), std::vector<int64_t>{wn.synsets("dog").front()});
  EXPECT_TRUE(wn.tagged_noun_senses("xqzzs").empty());
  // Counted: fish's Pisces person is tagged once, its food sense 3 times.
  const auto fish = wn.tagged_noun_senses("fish", 3);
  EXPECT_EQ(fish, (std::vector<int64_t>{wn.synsets("fish")[0], wn.synsets("fish")[1]}));
}

TEST(WordNet, AMissingDatabaseIsAClearError) {
  test::TempDir dir;
  test::expect_error_message([&] { WordNet::open(dir.path()); }, {"index.noun", "wordnet-base"});
}

TEST(Tagger, MapsImageNetClassesToTheCaptionWordsThatNameThem) {
  REQUIRE_SHARED();
  REQUIRE_WORDNET();
  const auto labels = imagenet_labels();
  ASSERT_EQ(labels.size(), 1001u);
  const auto vocab = caption_vocabulary();
  auto tagger = Tagger::build(labels, WordNet::open(), vocab);
  auto words_of = [&](const std::string& label) {
    const size_t c = class_index(labels, label);
    EXPECT_LT(c, labels.size()) << label;
    return c < labels.size() ? tagger.class_words(c) : std::vector<std::string>{};
  };
  auto has = [](const std::vector<std::string>& words, const std::string& w) {
    return std::find(words.begin(), words.end(), w) != words.end();
  };
  const auto eagle = words_of("bald eagle, American eagle, Haliaeetus leucocephalus");
  ASSERT_GE(eagle.size(), 2u);
  EXPECT_EQ(eagle[0], "eagle");  // nearest first
  EXPECT_TRUE(has(eagle, "bird"));
  EXPECT_TRUE(has(eagle, "animal"));
  EXPECT_EQ(words_of("sorrel").front(), "horse");
  EXPECT_EQ(words_of("tabby, tabby cat").front(), "cat");
  // ImageNet's order settles the ambiguous "crane": the bird comes before the machine.
  const size_t bird_crane = class_index(labels, "crane");
  ASSERT_LT(bird_crane, labels.size());
  EXPECT_TRUE(has(tagger.class_words(bird_crane), "bird"));
  // Only a word's common sense names a concept: a toy terrier is a dog, not a "toy".
  const auto toy_terrier = words_of("toy terrier");
  EXPECT_EQ(toy_terrier.front(), "dog");
  EXPECT_FALSE(has(toy_terrier, "toy"));
  EXPECT_TRUE(tagger.class_words(0).empty());  // "background"
}

TEST(Tagger, TagsTheMostSpecificConceptTheClassifierIsSureOf) {
  REQUIRE_SHARED();
  REQUIRE_WORDNET();
  const auto labels = imagenet_labels();
  const auto vocab = caption_vocabulary();
  auto tagger = Tagger::build(labels, WordNet::open(), vocab);
  std::vector<float> p(labels.size(), 0.0f);
  // An eagle photo as the classifier saw it: bald eagle 0.72, kite (the bird) 0.27.
  p[class_index(labels, "bald eagle, American eagle, Haliaeetus leucocephalus")] = 0.72f;
  p[class_index(labels, "kite")] = 0.27f;
  auto tag = tagger.tag(p, 0.5);
  ASSERT_TRUE(tag);
  EXPECT_EQ(tag->word, "eagle");
  EXPECT_NEAR(tag->probability, 0.72, 1e-6);
  tag = tagger.tag(p, 0.9);  // only the two together are this sure: a bird
  ASSERT_TRUE(tag);
  EXPECT_EQ(tag->word, "bird");
  auto satisfies = [&](const Tag& t, const std::string& w) {
    return std::count(t.satisfied_by.begin(), t.satisfied_by.end(), vocab.id(w)) > 0;
  };
  EXPECT_TRUE(satisfies(*tag, "bird"));
  EXPECT_TRUE(satisfies(*tag, "eagle"));  // a kind of bird names it too
  EXPECT_FALSE(satisfies(*tag, "dog"));
  EXPECT_FALSE(tagger.tag(p, 0.999));
  // An animal: the caption's subject, and the words for people it must not put before it.
  const auto has_word = [&](const std::vector<int64_t>& ids, const std::string& w) {
    return std::count(ids.begin(), ids.end(), vocab.id(w)) > 0;
  };
  EXPECT_TRUE(tag->animal);
  EXPECT_TRUE(has_word(tag->people, "man"));
  EXPECT_TRUE(has_word(tag->people, "men"));
  EXPECT_FALSE(has_word(tag->people, "bird"));
  // "bird" is broader than the eagle tag: an unguided "a bird flies" needs no guide.
  tag = tagger.tag(p, 0.5);
  EXPECT_TRUE(has_word(tag->broader, "bird"));
  EXPECT_TRUE(has_word(tag->broader, "animal"));
  EXPECT_FALSE(has_word(tag->broader, "dog"));

  // Plurals name what their singulars name.
  std::fill(p.begin(), p.end(), 0.0f);
  p[class_index(labels, "Chihuahua")] = 0.9f;
  tag = tagger.tag(p, 0.5);
  ASSERT_TRUE(tag);
  EXPECT_TRUE(satisfies(*tag, "dogs"));

  // A broad tag is not met by kinds of it the classifier rules out, nor by adjectives.
  std::fill(p.begin(), p.end(), 0.0f);
  p[class_index(labels, "zebra")] = 0.6f;
  p[class_index(labels, "gazelle")] = 0.39f;
  p[class_index(labels, "Chihuahua")] = 0.01f;
  tag = tagger.tag(p, 0.9);
  ASSERT_TRUE(tag);
  EXPECT_EQ(tag->word, "animal");
  EXPECT_TRUE(satisfies(*tag, "animal"));
  EXPECT_FALSE(satisfies(*tag, "dog"));
  EXPECT_FALSE(satisfies(*tag, "puppy"));
  EXPECT_FALSE(satisfies(*tag, "young"));
  EXPECT_NE(std::find(tag->ruled_out.begin(), tag->ruled_out.end(), vocab.id("dog")), tag->ruled_out.end());
  // "male" is first an animal in WordNet, but a caption's "male" is mostly a man: a word for
  // people, which names no animal.
  EXPECT_FALSE(satisfies(*tag, "male"));
  EXPECT_FALSE(satisfies(*tag, "female"));
  EXPECT_TRUE(has_word(tag->people, "male"));
  EXPECT_TRUE(has_word(tag->people, "female"));
  // A person sense tagged once in WordNet's corpus (fish's Pisces, sheep's follower) does not count.
  EXPECT_FALSE(has_word(tag->people, "fish"));
  EXPECT_FALSE(has_word(tag->people, "sheep"));
  EXPECT_TRUE(has_word(tag->ruled_out, "sheep"));  // an animal word, ruled out here (no sheep classes)

  // A kind the classifier does not rule out meets the tag in a caption as the model wrote it, but
  // a caption made to name the tag names the tag's own word or a kind holding half of it.
  const auto named = [&](const Tag& t, const std::string& w) {
    return std::count(t.named_by.begin(), t.named_by.end(), vocab.id(w)) > 0;
  };
  EXPECT_TRUE(named(*tag, "animal"));
  std::fill(p.begin(), p.end(), 0.0f);
  p[class_index(labels, "zebra")] = 0.5f;
  p[class_index(labels, "gazelle")] = 0.3f;
  p[class_index(labels, "Chihuahua")] = 0.15f;  // 16% of the animal classes: possible, not likely
  tag = tagger.tag(p, 0.9);
  ASSERT_TRUE(tag);
  EXPECT_EQ(tag->word, "animal");
  EXPECT_TRUE(satisfies(*tag, "dog"));
  EXPECT_FALSE(named(*tag, "dog"));
  EXPECT_TRUE(named(*tag, "animal"));
  p[class_index(labels, "Chihuahua")] = 0.5f;  // now the likelier kind
  p[class_index(labels, "zebra")] = 0.15f;
  tag = tagger.tag(p, 0.9);
  ASSERT_TRUE(tag);
  EXPECT_TRUE(named(*tag, "dog"));
  EXPECT_TRUE(named(*tag, "dogs"));
  EXPECT_THROW(tagger.tag(std::vector<float>(10, 0.1f), 0.5), std::invalid_argument);
}

// The default model guides animals alone, at its subject_threshold (0.9): a caption whose animal
// the classifier rules out is made again about the animal it is sure of ("a brown and white dog"
// for darknet's giraffe becomes an animal), and a caption about people is left as it is.
TEST(DefaultModel, AnimalSubjectsReplaceAnAnimalTheClassifierRulesOut) {
  REQUIRE_WORDNET();
  const fs::path dir = fs::path(CAPTIONER_SOURCE_DIR) / "models/default";
  auto model = ModelBundle::load(dir);
  if (!fs::exists(model.encoder_file.string() + ".classifier.pt")) {
    GTEST_SKIP() << model.encoder_file << ".classifier.pt missing: run scripts/setup.sh";
  }
  const fs::path giraffe = "/usr/share/darknet/data/giraffe.jpg";
  if (!fs::exists(giraffe)) GTEST_SKIP() << giraffe << " missing: apt-get install darknet (scripts/setup.sh does)";
  ASSERT_GE(model.search.subject_threshold, 0.5);
  ASSERT_EQ(model.search.tag_threshold, 0.0);
  auto encoder = Encoder::load(model.encoder_file);
  std::vector<CaptionedImage> out(2);
  for (double subjects : {0.0, model.search.subject_threshold}) {
    CaptionPipelineOptions o;
    o.search = model.search;
    o.search.subject_threshold = subjects;
    CaptionCallbacks cb;
    cb.on_caption = [&](const CaptionedImage& c) { out[subjects > 0 ? 1 : 0] = c; };
    ASSERT_EQ(CaptionPipeline(model, encoder, o).run({giraffe}, cb), 0u);
  }
  const auto& [plain, guided] = std::tie(out[0], out[1]);
  SCOPED_TRACE("\"" + plain.caption + "\" -> \"" + guided.caption + "\"");
  EXPECT_FALSE(plain.tag);
  ASSERT_TRUE(guided.tag);
  EXPECT_TRUE(guided.tag->animal);
  const auto words = tokenize_caption(guided.caption);
  const auto said = [&](const std::vector<int64_t>& ids) {
    return std::any_of(words.begin(), words.end(),
                       [&](const std::string& w) { return std::find(ids.begin(), ids.end(), model.vocab.id(w)) != ids.end(); });
  };
  EXPECT_TRUE(said(guided.tag->named_by));
  EXPECT_FALSE(said(guided.tag->ruled_out));

  // A cat the classifier is all but certain of (skimage's chelsea, 0.996) is the subject even of
  // a caption the model began with a man; the eagle (bird 0.97) keeps its "little girl".
  const fs::path chelsea = "/usr/lib/python3/dist-packages/skimage/data/chelsea.png";
  const fs::path eagle = "/usr/share/darknet/data/eagle.jpg";
  if (!fs::exists(chelsea)) GTEST_SKIP() << chelsea << " missing: apt-get install python3-skimage (scripts/setup.sh does)";
  CaptionPipelineOptions o;
  o.search = model.search;
  CaptionCallbacks cb;
  cb.on_caption = [&](const CaptionedImage& c) { out[c.index] = c; };
  ASSERT_EQ(CaptionPipeline(model, encoder, o).run({chelsea, eagle}, cb), 0u);
  ASSERT_TRUE(out[0].tag);
  EXPECT_EQ(out[0].tag->word, "cat");
  ASSERT_GE(out[0].tag->probability, kOverridesPeople);
  const auto cat_words = tokenize_caption(out[0].caption);
  const auto cat = std::find(cat_words.begin(), cat_words.end(), "cat");
  ASSERT_NE(cat, cat_words.end()) << out[0].caption;
  EXPECT_LT(cat - cat_words.begin(), kSubjectWithin) << out[0].caption;
  if (out[1].tag && out[1].tag->probability < kOverridesPeople) {
    const auto& people = out[1].tag->people;
    const auto first = tokenize_caption(out[1].caption);
    EXPECT_TRUE(std::any_of(
        first.begin(), first.begin() + std::min<size_t>(first.size(), kSubjectWithin),
        [&](const std::string& w) { return std::find(people.begin(), people.end(), model.vocab.id(w)) != people.end(); }))
        << "a caption led by a person was overridden below kOverridesPeople: " << out[1].caption;
  }
}

TEST(DefaultModel, TagsMakeItNameTheSubjectOfPhotosOutsideItsTrainingWorld) {
  REQUIRE_WORDNET();
  const fs::path dir = fs::path(CAPTIONER_SOURCE_DIR) / "models/default";
  auto model = ModelBundle::load(dir);
  if (!fs::exists(model.encoder_file.string() + ".classifier.pt")) {
    GTEST_SKIP() << model.encoder_file << ".classifier.pt missing: run scripts/setup.sh";
  }
  const std::vector<std::pair<fs::path, std::string>> photos = {
      {"/usr/share/darknet/data/eagle.jpg", "bird"},
      {"/usr/share/darknet/data/dog.jpg", "dog"},
      {"/usr/lib/python3/dist-packages/skimage/data/chelsea.png", "cat"}};
  std::vector<fs::path> files;
  for (const auto& [file, word] : photos) {
    if (!fs::exists(file)) GTEST_SKIP() << file << " missing: apt-get install darknet python3-skimage (scripts/setup.sh does)";
    files.push_back(file);
  }
  auto encoder = Encoder::load(model.encoder_file);
  CaptionPipelineOptions o;
  o.search = model.search;
  o.search.tag_threshold = 0.5;
  std::vector<CaptionedImage> out(files.size());
  CaptionCallbacks cb;
  cb.on_caption = [&](const CaptionedImage& c) { out[c.index] = c; };
  ASSERT_EQ(CaptionPipeline(model, encoder, o).run(files, cb), 0u);
  for (size_t i = 0; i < photos.size(); ++i) {
    SCOPED_TRACE(files[i].string() + ": \"" + out[i].caption + "\"");
    ASSERT_TRUE(out[i].tag);
    EXPECT_EQ(out[i].tag->word, photos[i].second);
    // The caption names the tag or a kind of it ("bird", "eagle", "seagull" for a bird).
    const auto& kinds = out[i].tag->satisfied_by;
    const auto words = tokenize_caption(out[i].caption);
    const auto names_it = [&](const std::string& w) {
      return std::find(kinds.begin(), kinds.end(), model.vocab.id(w)) != kinds.end();
    };
    const auto at = std::find_if(words.begin(), words.end(), names_it);
    ASSERT_NE(at, words.end());
    // An animal is the subject: named within kSubjectWithin words, after no person.
    EXPECT_LT(at - words.begin(), kSubjectWithin);
    const auto& people = out[i].tag->people;
    EXPECT_TRUE(std::none_of(words.begin(), at, [&](const std::string& w) {
      return std::find(people.begin(), people.end(), model.vocab.id(w)) != people.end();
    }));
  }
}

// Animal subjects are a model's default, not a request: without the classifier (or WordNet) they
// are off with a one-line warning; asked for with --tag-confidence, the same is an error.
TEST(TagGuide, AnimalSubjectsAloneGoWithoutAMissingClassifierAndSaySo) {
  test::TempDir dir;
  EncoderInfo encoder;
  encoder.model_file = (dir / "encoder.pt").string();
  encoder.feature_dim = 1280;
  const auto vocab = caption_vocabulary();
  SearchOptions search;
  std::string warning;
  EXPECT_FALSE(load_tag_guide(encoder, vocab, search, warning));  // no tags asked for
  EXPECT_EQ(warning, "");
  search.subject_threshold = 0.9;
  EXPECT_FALSE(load_tag_guide(encoder, vocab, search, warning));
  EXPECT_NE(warning.find("animal subjects are off: "), std::string::npos) << warning;
  EXPECT_NE(warning.find("encoder.pt"), std::string::npos) << warning;
  EXPECT_EQ(warning.find('\n'), std::string::npos) << warning;
  search.tag_threshold = 0.7;
  EXPECT_THROW(load_tag_guide(encoder, vocab, search, warning), std::exception);
}

TEST(CaptionOutputTags, JsonRowsCarryTheTagAndReadBack) {
  test::TempDir dir;
  for (auto format : {CaptionFormat::kJson, CaptionFormat::kJsonl}) {
    const fs::path file = dir / (format == CaptionFormat::kJson ? "c.json" : "c.jsonl");
    {
      CaptionWriter writer(file, format);
      writer.write({"a.jpg", 1, "a small bird is flying", -3.5, "bird", 0.97771});
      writer.write({"b.jpg", 2, "a dog runs", -2.0, "", 0});
      writer.finish();
    }
    const std::string text = read_file(file);
    EXPECT_NE(text.find("\"tag\":{\"probability\":0.9777,\"word\":\"bird\"}"), std::string::npos) << text;
    EXPECT_EQ(text.find("b.jpg\",\"image_id\":2,\"log_prob\":-2.0,\"tag\""), std::string::npos) << text;
    auto rows = read_caption_file(file);
    ASSERT_EQ(rows.size(), 2u);
    EXPECT_EQ(rows[0].tag, "bird");
    EXPECT_NEAR(rows[0].tag_probability, 0.9777, 1e-9);
    EXPECT_EQ(rows[1].tag, "");
  }
}
