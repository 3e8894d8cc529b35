#include "datasets/caption_dataset.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "datasets/metrics/caption_metrics.h"
#include "tests/test_util.h"

using namespace captioner;
using captioner::test::expect_error_message;
using captioner::test::shared_dir;
using captioner::test::TempDir;
using captioner::test::write_text;

namespace {

const char* kCoco = R"({
  "info": {"description": "test"}, "licenses": [],
  "images": [{"id": 7, "file_name": "a.jpg", "width": 4, "height": 4},
             {"id": 9, "file_name": "b.jpg"}],
  "annotations": [{"id": 1, "image_id": 7, "caption": "A dog."},
                  {"id": 2, "image_id": 9, "caption": "A cat."},
                  {"id": 3, "image_id": 7, "caption": "Another dog."}]
})";
}  // namespace

TEST(CocoLoader, LoadsImagesAndCaptions) {
  TempDir tmp;
  write_text(tmp / "c.json", kCoco);
  write_text(tmp / "a.jpg", "x");
  DatasetOptions opt;
  auto ds = load_coco_captions(tmp / "c.json", opt);
  ASSERT_EQ(ds.records.size(), 2u);
  EXPECT_EQ(ds.records[0].image_id, 7);
  EXPECT_EQ(ds.records[0].captions, (std::vector<std::string>{"A dog.", "Another dog."}));
  EXPECT_EQ(ds.records[0].image_path, tmp / "a.jpg");
  EXPECT_EQ(ds.num_captions(), 3u);
  // b.jpg is missing: a warning by default, an error when images are required.
  ASSERT_EQ(ds.warnings.size(), 1u);
  EXPECT_NE(ds.warnings[0].find("1 of 2 images not found"), std::string::npos) << ds.warnings[0];
  opt.require_images = true;
  expect_error_message([&] { load_coco_captions(tmp / "c.json", opt); }, {"c.json", "b.jpg"});
}

TEST(CocoLoader, AByteOrderMarkIsStillCocoJson) {
  TempDir tmp;
  write_text(tmp / "c.json", std::string("\xEF\xBB\xBF") + kCoco);
  write_text(tmp / "a.jpg", "x");
  auto ds = load_caption_file(tmp / "c.json", DatasetOptions{});
  EXPECT_EQ(ds.format, "coco");
  ASSERT_EQ(ds.records.size(), 2u);
  EXPECT_EQ(ds.records[0].image_id, 7);
}

TEST(CocoLoader, RejectsMalformedFilesNamingTheEntry) {
  TempDir tmp;
  auto path = tmp / "bad.json";
  auto check = [&](const std::string& text, const std::string& fragment) {
    write_text(path, text);
    DatasetOptions opt;
    opt.check_images = false;
    expect_error_message([&] { load_coco_captions(path, opt); }, {path.string(), fragment});
  };
  check("{\"images\": [", "invalid JSON");
  check("{\"images\": []\n,}", "bad.json:2:2");
  check(R"({"annotations": []})", "missing key 'images'");
  check(R"({"images": {}, "annotations": []})", "expected an array, found object");
  check(R"({"images": [{"id": 1}], "annotations": []})", "images[0]: missing key 'file_name'");
  check(R"({"images": [{"id": "1", "file_name": "a.jpg"}], "annotations": []})",
        "images[0].id: expected an integer, found string");
  check(R"({"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}], "annotations": []})",
        "images[1].id: duplicate image id 1");
  check(R"({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 1, "image_id": 2, "caption": "x"}]})",
        "annotations[0].image_id: caption refers to image id 2");
  check(R"({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 1, "image_id": 1, "caption": "  "}]})",
        "annotations[0].caption: empty caption");
  check(R"({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 1, "image_id": 1, "caption": 5}]})",
        "annotations[0].caption: expected a string, found integer");
  check(
      R"({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 1, "image_id": 1, "caption": "a"}, {"id": 1, "image_id": 1, "caption": "b"}]})",
      "duplicate annotation id 1");
  check("{\"images\": [{\"id\": 1, \"file_name\": \"a\xff.jpg\"}], \"annotations\": []}", "invalid JSON");
  check(R"({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 1, "image_id": 1, "caption": ")" +
            std::string(5000, 'x') + "\"}]}",
        "exceeds the limit");
}

TEST(CocoLoader, LoadsTheRealCocoFileUnchanged) {
  REQUIRE_SHARED();
  auto dir = shared_dir() / "datasets/coco_mini";
  DatasetOptions opt;
  opt.image_dir = dir / "train2017";
  opt.require_images = true;
  auto ds = load_coco_captions(dir / "captions_train2017.json", opt);
  EXPECT_EQ(ds.records.size(), 80u);
  EXPECT_EQ(ds.num_captions(), 400u);
  EXPECT_TRUE(ds.warnings.empty());
  const auto* r = ds.find(493652);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->file_name, "000000493652.jpg");
  EXPECT_EQ(r->captions.size(), 5u);
}

TEST(Flickr8kLoader, NativeFormatMatchesTheCocoStyleFile) {
  REQUIRE_SHARED();
  auto dir = shared_dir() / "datasets/flickr8k";
  DatasetOptions opt;
  opt.image_dir = dir / "images";
  opt.split_list = dir / "Flickr_8k.devImages.txt";
  opt.require_images = true;
  auto native = load_flickr8k(dir / "Flickr8k.token.txt", opt);
  DatasetOptions copt;
  copt.image_dir = dir / "images";
  auto coco = load_caption_file(dir / "captions_val.json", copt);
  EXPECT_EQ(coco.format, "coco");
  ASSERT_EQ(native.records.size(), 1000u);
  ASSERT_EQ(coco.records.size(), 1000u);
  for (size_t i = 0; i < native.records.size(); ++i) {
    EXPECT_EQ(native.records[i].image_id, coco.records[i].image_id);
    EXPECT_EQ(native.records[i].file_name, coco.records[i].file_name);
    EXPECT_EQ(native.records[i].captions, coco.records[i].captions);
  }
  auto train = load_caption_file(dir / "captions_train.json", copt);
  EXPECT_EQ(train.records.size(), 6000u);
  EXPECT_EQ(train.num_captions(), 30000u);
}

TEST(Flickr8kLoader, RejectsMalformedLines) {
  TempDir tmp;
  DatasetOptions opt;
  opt.check_images = false;
  write_text(tmp / "t.txt", "a.jpg#0\tA dog .\nb.jpg#0 no tab here\n");
  expect_error_message([&] { load_flickr8k(tmp / "t.txt", opt); }, {"t.txt:2", "expected"});
  write_text(tmp / "t.txt", "a.jpg#0\t \n");
  expect_error_message([&] { load_flickr8k(tmp / "t.txt", opt); }, {"t.txt:1", "empty caption"});
  write_text(tmp / "t.txt", "a.jpg#0\tA dog .\n");
  write_text(tmp / "split.txt", "a.jpg\nzzz.jpg\n");
  opt.split_list = tmp / "split.txt";
  expect_error_message([&] { load_flickr8k(tmp / "t.txt", opt); }, {"split.txt:2", "zzz.jpg has no captions"});
  write_text(tmp / "split.txt", "a.jpg\na.jpg\n");
  expect_error_message([&] { load_flickr8k(tmp / "t.txt", opt); }, {"split.txt:2", "duplicate image"});
}

TEST(KarpathyLoader, LoadsSplitsAndFilePaths) {
  TempDir tmp;
  write_text(tmp / "dataset_coco.json", R"({"dataset": "coco", "images": [
    {"filepath": "val2014", "filename": "x.jpg", "split": "val", "cocoid": 42, "imgid": 0,
     "sentences": [{"raw": "A man.", "tokens": ["a", "man"]}, {"tokens": ["a", "person"]}]},
    {"filepath": "train2014", "filename": "y.jpg", "split": "train", "cocoid": 43, "imgid": 1,
     "sentences": [{"raw": "A cat."}]},
    {"filepath": "val2014", "filename": "z.jpg", "split": "restval", "cocoid": 44, "imgid": 2,
     "sentences": [{"raw": "A bird."}]}]})");
  DatasetOptions opt;
  opt.check_images = false;
  opt.split = "val";
  auto ds = load_caption_file(tmp / "dataset_coco.json", opt);
  EXPECT_EQ(ds.format, "karpathy");
  ASSERT_EQ(ds.records.size(), 1u);
  EXPECT_EQ(ds.records[0].image_id, 42);
  EXPECT_EQ(ds.records[0].image_path, tmp / "val2014" / "x.jpg");
  EXPECT_EQ(ds.records[0].captions, (std::vector<std::string>{"A man.", "a person"}));
  opt.split = "train+restval";
  EXPECT_EQ(load_karpathy(tmp / "dataset_coco.json", opt).records.size(), 2u);
  opt.split = "test";
  expect_error_message([&] { load_karpathy(tmp / "dataset_coco.json", opt); }, {"dataset_coco.json", "no images in split"});
}

TEST(CaptionFile, UnrecognisedJsonIsAClearError) {
  TempDir tmp;
  write_text(tmp / "x.json", R"({"hello": 1})");
  expect_error_message([&] { load_caption_file(tmp / "x.json"); }, {"x.json", "unrecognised caption file"});
  expect_error_message([&] { load_caption_file(tmp / "nope.json"); }, {"nope.json", "not found"});
}

TEST(Results, ValidatesAgainstReferences) {
  TempDir tmp;
  write_text(tmp / "c.json", kCoco);
  DatasetOptions opt;
  opt.check_images = false;
  auto refs = load_coco_captions(tmp / "c.json", opt);
  write_text(tmp / "r.json", R"([{"image_id": 7, "caption": "a dog"}, {"image_id": 9, "caption": "a cat"}])");
  auto scores = evaluate_results(load_coco_results(tmp / "r.json"), refs, "r.json");
  EXPECT_EQ(scores.images, 2u);
  EXPECT_GT(scores.bleu[0], 0.5);

  write_text(tmp / "r.json", R"([{"image_id": 7, "caption": "a dog"}])");
  expect_error_message([&] { evaluate_results(load_coco_results(tmp / "r.json"), refs, "r.json"); },
                       {"r.json", "no result for 1 of 2 images"});
  write_text(tmp / "r.json",
             R"([{"image_id": 7, "caption": "a"}, {"image_id": 9, "caption": "b"}, {"image_id": 5, "caption": "c"}])");
  expect_error_message([&] { evaluate_results(load_coco_results(tmp / "r.json"), refs, "r.json"); },
                       {"r.json", "image ids not in"});
  write_text(tmp / "r.json", R"([{"image_id": 7, "caption": "a"}, {"image_id": 7, "caption": "b"}])");
  expect_error_message([&] { load_coco_results(tmp / "r.json"); }, {"r.json", "more than one caption"});
  write_text(tmp / "r.json", R"({"image_id": 7})");
  expect_error_message([&] { load_coco_results(tmp / "r.json"); }, {"r.json", "expected an array"});
  // Found by fuzz_results: ids beyond int64 arrive as doubles and were cast with undefined behaviour.
  for (const char* id : {"5355555555555555555555555555555555506", "1e300", "18446744073709551615", "7.5"}) {
    write_text(tmp / "r.json", std::string(R"([{"image_id": )") + id + R"(, "caption": "a"}])");
    expect_error_message([&] { load_coco_results(tmp / "r.json"); }, {"r.json", "expected an integer"});
  }
  write_text(tmp / "r.json", R"([{"image_id": 7.0, "caption": "a dog"}, {"image_id": 9, "caption": "a cat"}])");
  EXPECT_EQ(load_coco_results(tmp / "r.json").size(), 2u) << "a whole number written as 7.0 is still an id";
}

TEST(EvalCli, ScoresAResultsFileAsJson) {
  TempDir tmp;
  write_text(tmp / "c.json", kCoco);
  write_text(tmp / "r.json", R"([{"image_id": 7, "caption": "A dog."}, {"image_id": 9, "caption": "A cat."}])");
  auto r = captioner::test::run_cli("eval --results " + (tmp / "r.json").string() + " --annotations " +
                                    (tmp / "c.json").string() + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["images"], 2);
  EXPECT_NEAR(j["BLEU-1"].get<double>(), 1.0, 1e-9);
  for (const char* k : {"BLEU-2", "BLEU-3", "BLEU-4", "CIDEr-D", "ROUGE-L"}) EXPECT_TRUE(j.contains(k)) << k;

  write_text(tmp / "r.json", R"([{"image_id": 8, "caption": "x"}])");
  r = captioner::test::run_cli("eval --results " + (tmp / "r.json").string() + " --annotations " + (tmp / "c.json").string());
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("error: "), std::string::npos);
  EXPECT_NE(r.err.find("r.json"), std::string::npos) << r.err;
}

// Issue 27 C: every loader refuses an entry that leaves the image folder, naming the entry.
TEST(CaptionFile, EntriesThatLeaveTheImageFolderAreRefused) {
  TempDir tmp;
  DatasetOptions opt;
  opt.check_images = false;
  write_text(tmp / "coco.json",
             R"({"images":[{"id":1,"file_name":"/etc/passwd"}],"annotations":[{"image_id":1,"caption":"x"}]})");
  expect_error_message([&] { load_caption_file(tmp / "coco.json", opt); }, {"images[0].file_name", "absolute path /etc/passwd"});
  write_text(tmp / "coco.json",
             R"({"images":[{"id":1,"file_name":"a/../../x.jpg"}],"annotations":[{"image_id":1,"caption":"x"}]})");
  expect_error_message([&] { load_caption_file(tmp / "coco.json", opt); }, {"coco.json", "climbs out of the image folder"});
  write_text(tmp / "k.json", R"({"images":[{"filepath":"/tmp","filename":"x.jpg","sentences":[{"raw":"x"}]}]})");
  expect_error_message([&] { load_caption_file(tmp / "k.json", opt); }, {"images[0].filepath", "absolute path"});
  write_text(tmp / "k.json", R"({"images":[{"filepath":"val","filename":"../../x.jpg","sentences":[{"raw":"x"}]}]})");
  expect_error_message([&] { load_caption_file(tmp / "k.json", opt); }, {"images[0].filename", "climbs out"});
  write_text(tmp / "t.txt", "../x.jpg#0\ta dog\n");
  expect_error_message([&] { load_caption_file(tmp / "t.txt", opt); }, {"t.txt", "climbs out"});
  // Inside the folder, however spelled, is fine.
  write_text(tmp / "coco.json",
             R"({"images":[{"id":1,"file_name":"a/../b/./x.jpg"}],"annotations":[{"image_id":1,"caption":"x"}]})");
  EXPECT_EQ(load_caption_file(tmp / "coco.json", opt).records.at(0).image_path, tmp / "a/../b/./x.jpg");
}
