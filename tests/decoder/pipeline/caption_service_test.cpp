// CaptionService: photos from many threads are captioned in shared batches, each getting what the
// folder pipeline (`captioner caption`) writes for it; a bad photo fails alone with one line naming
// it; bytes are never taken for a file name; everything submitted is answered before it stops.
#include "decoder/pipeline/caption_service.h"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <opencv2/imgcodecs.hpp>
#include <random>
#include <set>
#include <thread>

#include "datasets/file_io.h"
#include "tests/model_fixtures.h"
#include "tests/test_util.h"

using namespace captioner;
using captioner::test::TempDir;
namespace fs = std::filesystem;

namespace {

struct Photos {
  std::vector<fs::path> files;
  std::vector<std::string> bytes;  // the files' contents
};

Photos make_photos(const fs::path& dir, int n) {
  Photos p;
  std::mt19937 rng(11);
  fs::create_directories(dir);
  for (int i = 0; i < n; ++i) {
    cv::Mat img(24 + i, 32, CV_8UC3, cv::Scalar(rng() % 256, rng() % 256, rng() % 256));
    std::vector<uchar> buf;
    cv::imencode(".png", img, buf);
    p.bytes.emplace_back(buf.begin(), buf.end());
    p.files.push_back(dir / ("photo" + std::to_string(i) + ".png"));
    test::write_text(p.files.back(), p.bytes.back());
  }
  return p;
}

// What `captioner caption` writes for each file.
std::vector<CaptionedImage> pipeline_captions(const ModelBundle& model, Encoder& encoder, const std::vector<fs::path>& files,
                                              const SearchOptions& search) {
  CaptionPipelineOptions o;
  o.search = search;
  std::vector<CaptionedImage> out(files.size());
  CaptionCallbacks cb;
  cb.on_caption = [&](const CaptionedImage& c) { out[c.index] = c; };
  CaptionPipeline(model, encoder, o).run(files, cb);
  return out;
}

}  // namespace

TEST(CaptionService, ThreadsShareBatchesAndGetThePipelinesCaptions) {
  TempDir tmp;
  auto model = test::make_bundle(test::make_tiny_encoder(tmp / "enc"),
                                 test::make_vocab({"a", "dog", "cat", "runs", "red", "blue", "ball", "on", "grass", "the"}),
                                 "lstm", 3, 32);
  auto encoder = Encoder::load(model.encoder_file);
  const Photos photos = make_photos(tmp / "photos", 24);
  SearchOptions beam1 = model.search;
  beam1.beam_size = 1;
  const auto expected3 = pipeline_captions(model, encoder, photos.files, model.search);
  const auto expected1 = pipeline_captions(model, encoder, photos.files, beam1);
  std::set<std::string> distinct;
  for (const auto& c : expected3) distinct.insert(c.caption);
  ASSERT_GT(distinct.size(), 1u) << "the check is only meaningful if the captions differ by photo";

  std::vector<size_t> batches;
  std::mutex batches_mutex;
  CaptionServiceOptions so;
  so.max_batch = 8;
  so.batch_wait_ms = 20;  // so that batches surely form on a loaded machine
  so.on_batch = [&](size_t n) {
    std::lock_guard<std::mutex> lock(batches_mutex);
    batches.push_back(n);
  };
  std::atomic<int> wrong{0};
  {
    CaptionService service(model, encoder, so);
    std::vector<std::thread> callers;
    for (int t = 0; t < 6; ++t) {
      callers.emplace_back([&, t] {
        for (size_t i = static_cast<size_t>(t); i < photos.files.size(); i += 6) {
          // Bytes or the file, beam 3 or 1: requests with other options share the service, not a batch.
          const bool from_file = i % 2 == 0, greedy = i % 3 == 0;
          PhotoInput in{photos.files[i], from_file ? std::nullopt : std::optional<std::string_view>(photos.bytes[i])};
          const auto r = service.caption({in}, greedy ? beam1 : model.search);
          const CaptionedImage& want = (greedy ? expected1 : expected3)[i];
          if (r.size() != 1 || !r[0].captioned || r[0].captioned->caption != want.caption ||
              std::abs(r[0].captioned->log_prob - want.log_prob) > 1e-4) {
            ++wrong;
          }
        }
      });
    }
    for (auto& t : callers) t.join();
    EXPECT_EQ(service.in_flight(), 0u);
  }
  EXPECT_EQ(wrong, 0);
  size_t total = 0, largest = 0;
  for (size_t n : batches) {
    total += n;
    largest = std::max(largest, n);
    EXPECT_LE(n, 8u);
  }
  EXPECT_EQ(total, photos.files.size());
  EXPECT_GT(largest, 1u) << "no batch held photos of two calls";
}

TEST(CaptionService, ABadPhotoFailsAloneAndBytesAreNeverAFileName) {
  TempDir tmp;
  auto model = test::make_bundle(test::make_tiny_encoder(tmp / "enc"), test::make_vocab({"a", "dog", "runs"}));
  auto encoder = Encoder::load(model.encoder_file);
  const Photos photos = make_photos(tmp / "photos", 2);
  CaptionService service(model, encoder, CaptionServiceOptions{});
  // A photo named like a real file but given (empty, or garbage) bytes: the bytes are what is
  // read, never the file of that name.
  const std::string garbage = "not a photo at all";
  const auto r = service.caption(
      {PhotoInput{photos.files[0], std::string_view(photos.bytes[1])}, PhotoInput{photos.files[1], std::string_view()},
       PhotoInput{"upload.jpg", std::string_view(garbage)}, PhotoInput{tmp / "missing.png", std::nullopt}},
      model.search);
  ASSERT_EQ(r.size(), 4u);
  ASSERT_TRUE(r[0].captioned) << r[0].error;
  EXPECT_EQ(r[0].captioned->file, photos.files[0]);
  for (size_t i = 1; i < 4; ++i) {
    EXPECT_FALSE(r[i].captioned) << i;
    EXPECT_EQ(r[i].error.find('\n'), std::string::npos) << r[i].error;
  }
  EXPECT_EQ(r[1].error.rfind(photos.files[1].string() + ": ", 0), 0u) << r[1].error;
  EXPECT_EQ(r[2].error.rfind("upload.jpg: ", 0), 0u) << r[2].error;
  EXPECT_NE(r[3].error.find("missing.png"), std::string::npos) << r[3].error;
  // The photo given photo 1's bytes gets photo 1's caption, as a file.
  const auto direct = service.caption({PhotoInput{photos.files[1], std::nullopt}}, model.search);
  ASSERT_TRUE(direct[0].captioned) << direct[0].error;
  EXPECT_EQ(r[0].captioned->caption, direct[0].captioned->caption);
  EXPECT_EQ(service.in_flight(), 0u);
}
