// Tests of the real default encoder (built by scripts/setup.sh) and of exported torchvision ones.
#include "encoder/encoder.h"

#include <gtest/gtest.h>

#include <fstream>
#include <limits>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <nlohmann/json.hpp>

#include "datasets/file_io.h"
#include "datasets/json_util.h"
#include "encoder/image_batcher.h"
#include "encoder/feature_cache.h"
#include "tests/model_fixtures.h"
#include "tests/test_util.h"

using namespace captioner;
using captioner::test::TempDir;
namespace fs = std::filesystem;

namespace {
fs::path default_encoder() { return fs::path(CAPTIONER_SOURCE_DIR) / "models/encoders/mobilenet_v2.pt"; }
fs::path int8_encoder() { return fs::path(CAPTIONER_SOURCE_DIR) / "models/encoders/mobilenet_v2_int8.pt"; }
// The float and the int8 conversion of the same network: every check below holds for both.
std::vector<fs::path> both_encoders() { return {default_encoder(), int8_encoder()}; }

#define REQUIRE_DEFAULT_ENCODER()                                        \
  do {                                                                   \
    if (!fs::exists(default_encoder()) || !fs::exists(int8_encoder()))   \
      GTEST_SKIP() << default_encoder()                                  \
                   << " not built: run scripts/setup.sh (it converts "   \
                      "the MobileNetV2 from ../shared or downloads it)"; \
  } while (0)
}  // namespace

TEST(Encoder, MatchesThePythonConversionOnAReferenceImage) {
  REQUIRE_DEFAULT_ENCODER();
  // The converter saved a PNG and the features PyTorch computed for it; the C++ path (OpenCV
  // decoding, preprocessing, optimize_for_inference) must give the same vector.
  for (const auto& file : both_encoders()) {
    SCOPED_TRACE(file.string());
    auto ref = load_json_file(file.string() + ".reference.json");
    Encoder enc = Encoder::load(file);
    EXPECT_EQ(enc.info().feature_dim, 1280);
    ImageLoader loader(enc.info().spec);
    auto x = torch::empty({1, 3, 224, 224});
    loader.load_into(file.parent_path() / ref["image"].get<std::string>(), x.data_ptr<float>());
    auto f = enc.encode(x)[0];
    auto expected = torch::tensor(ref["features"].get<std::vector<float>>());
    if (enc.info().precision == "float") {
      EXPECT_LT((f - expected).abs().max().item<double>(), 2e-3);
    } else {
      // Same kernels as in Python, but a pixel that preprocessing rounds differently can move an
      // activation by one quantization step (1/49 of one in the pooled feature, ~5e-4), and that
      // step can travel. The vectors still agree to within a few steps.
      EXPECT_EQ(enc.info().precision, "int8");
      EXPECT_LT((f - expected).abs().max().item<double>(), 2e-2);
      EXPECT_GT(torch::cosine_similarity(f, expected, 0).item<double>(), 0.999);
    }
  }
}

TEST(Encoder, Int8StaysCloseToFloatOnRealPhotos) {
  REQUIRE_DEFAULT_ENCODER();
  REQUIRE_SHARED();
  // int8 is the network's own precision (it was trained quantization-aware); float dequantizes
  // its weights. On real photos the two feature vectors point the same way (measured on 200
  // Flickr8k photos when converting: cosine 0.98 mean, 0.81 min; ImageNet top-1 agreement 85%).
  Encoder f32 = Encoder::load(default_encoder());
  Encoder i8 = Encoder::load(int8_encoder());
  EXPECT_NE(f32.info().fingerprint(), i8.info().fingerprint());
  EXPECT_NE(f32.info().weights_hash, i8.info().weights_hash);
  auto files = test::flickr8k_images(32);
  ASSERT_EQ(files.size(), 32u);
  ImageLoader loader(i8.info().spec);
  auto x = torch::empty({32, 3, 224, 224});
  for (int64_t i = 0; i < 32; ++i) loader.load_into(files[static_cast<size_t>(i)], x[i].data_ptr<float>());
  auto cos = torch::cosine_similarity(f32.encode(x), i8.encode(x), 1);
  EXPECT_GT(cos.mean().item<double>(), 0.95);
  EXPECT_GT(cos.min().item<double>(), 0.7);
}

// Large JPEGs are decoded reduced in the DCT (ImageLoaderOptions::reduced_jpeg_decode): the
// encoder then sees a slightly different 224x224 image than full decoding and area resizing give.
// The features must stay close; held-out captions did not move beyond noise (bench/RESULTS.md,
// 2026-12-07 21:02: 500 held-out photos upscaled 2x and 4x, BLEU-4 within 0.004).
TEST(Encoder, ReducedJpegDecodingKeepsFeaturesClose) {
  REQUIRE_DEFAULT_ENCODER();
  REQUIRE_SHARED();
  Encoder i8 = Encoder::load(int8_encoder());
  const PreprocessSpec& s = i8.info().spec;
  ImageLoaderOptions full_size;
  full_size.reduced_jpeg_decode = false;
  const ImageLoader reduced(s), full(s, full_size);
  auto files = test::flickr8k_images(16);
  ASSERT_EQ(files.size(), 16u);
  auto a = torch::empty({16, 3, s.input_height, s.input_width}, torch::kByte), b = torch::empty_like(a);
  for (int64_t i = 0; i < 16; ++i) {
    // Flickr8k's 224-pixel photos, made 2x and 4x larger, as a camera's photo would be.
    cv::Mat photo = full.decode(files[static_cast<size_t>(i)]), large;
    cv::resize(photo, large, {}, i % 2 ? 4 : 2, i % 2 ? 4 : 2, cv::INTER_CUBIC);
    cv::cvtColor(large, large, cv::COLOR_RGB2BGR);
    std::vector<uchar> jpeg;
    cv::imencode(".jpg", large, jpeg, {cv::IMWRITE_JPEG_QUALITY, 92});
    const std::string_view bytes(reinterpret_cast<const char*>(jpeg.data()), jpeg.size());
    const cv::Mat small = reduced.decode_bytes(bytes, "large.jpg");
    ASSERT_EQ(small.cols, photo.cols) << "decoded at 1/" << (i % 2 ? 4 : 2);
    reduced.resize_to_planes(small, a[i].data_ptr<uint8_t>());
    full.resize_to_planes(full.decode_bytes(bytes, "large.jpg"), b[i].data_ptr<uint8_t>());
  }
  auto cos = torch::cosine_similarity(i8.encode(a), i8.encode(b), 1);
  EXPECT_GT(cos.mean().item<double>(), 0.99) << cos;  // measured 0.9976 on AVX2 (int8 against float: 0.98)
  EXPECT_GT(cos.min().item<double>(), 0.98) << cos;   // measured 0.9959
}

// On AVX-512 CPUs a loaded int8 module failed with oneDNN's "could not create a primitive
// descriptor for a reorder primitive" once it met a second (threads, batch) shape: a last partial
// batch, or the decoder's thread count left in place. Every shape must run and give each photo
// the same features (integer sums; only the float tail may round differently).
TEST(Encoder, Int8RunsAtAnyBatchAndThreadCount) {
  REQUIRE_DEFAULT_ENCODER();
  Encoder i8 = Encoder::load(int8_encoder());
  torch::manual_seed(3);
  auto x = torch::rand({4, 3, 224, 224}) * 2 - 1;
  const int threads_before = at::get_num_threads();
  at::set_num_threads(1);
  const auto reference = i8.encode(x);
  for (int threads : {2, 1, 3, 2}) {
    at::set_num_threads(threads);
    for (int64_t batch : {1, 3, 4, 2}) {
      auto got = i8.encode(x.narrow(0, 0, batch));
      ASSERT_EQ(got.sizes(), reference.narrow(0, 0, batch).sizes());
      EXPECT_LT((got - reference.narrow(0, 0, batch)).abs().max().item<float>(), 1e-4f)
          << "batch " << batch << " at " << threads << " threads";
    }
  }
  at::set_num_threads(threads_before);
}

TEST(Encoder, RecognisesRealPhotosWithItsClassifier) {
  REQUIRE_DEFAULT_ENCODER();
  REQUIRE_SHARED();
  if (!fs::exists("/usr/share/darknet/data/eagle.jpg")) GTEST_SKIP() << "darknet's sample photos not installed";
  std::vector<std::string> labels;
  std::ifstream in(test::shared_dir() / "models/mobilenet_v2_coral/imagenet_labels.txt");
  for (std::string l; std::getline(in, l);) labels.push_back(l);
  ASSERT_EQ(labels.size(), 1001u);
  for (const auto& file : both_encoders()) {
    SCOPED_TRACE(file.string());
    Encoder::load(file);  // selects the quantized engine the int8 file needs
    // The classifier is kept as a second method of the TorchScript module (forward drops it).
    auto module = torch::jit::load(file.string());
    module.eval();
    PreprocessSpec s = EncoderInfo::load_sidecar(file).spec;
    s.resize = PreprocessSpec::Resize::kShorterSideCrop;  // ImageNet's evaluation view
    s.resize_size = 256;
    ImageLoader loader(s);
    auto top1 = [&](const std::string& photo) {
      auto x = torch::empty({1, 3, 224, 224});
      loader.load_into(photo, x.data_ptr<float>());
      torch::NoGradGuard g;
      auto logits = module.get_method("classify")({x}).toTensor();
      return labels[logits.argmax(1).item<int64_t>()];
    };
    EXPECT_NE(top1("/usr/share/darknet/data/eagle.jpg").find("bald eagle"), std::string::npos);
    EXPECT_NE(top1("/usr/share/darknet/data/dog.jpg").find("malamute"), std::string::npos);
  }
}

TEST(Encoder, RefusesMissingOrInconsistentSidecars) {
  TempDir tmp;
  auto enc = test::make_tiny_encoder(tmp.path());
  EXPECT_NO_THROW(Encoder::load(enc));
  fs::remove(enc.string() + ".json");
  test::expect_error_message([&] { Encoder::load(enc); }, {"no preprocessing sidecar"});
  enc = test::make_tiny_encoder(tmp.path());
  auto j = load_json_file(enc.string() + ".json");
  j["feature_dim"] = 5;
  std::ofstream(enc.string() + ".json") << j.dump();
  // The width is checked on every batch.
  test::expect_error_message([&] { Encoder::load(enc).encode(torch::zeros({1, 3, 32, 32})); }, {"sidecar says 5-d"});
  test::write_text(tmp / "junk.pt", "not torchscript");
  std::ofstream(tmp / "junk.pt.json") << j.dump();
  EXPECT_THROW(Encoder::load(tmp / "junk.pt"), std::runtime_error);
}

// Batches wait for the encoder as 8-bit planes; the encoder normalises them itself, to exactly
// the floats ImageLoader::preprocess writes, so features (and captions) do not move.
TEST(Encoder, TakesEightBitPlanesAsItTakesTheirFloats) {
  TempDir tmp;
  Encoder enc = Encoder::load(test::make_tiny_encoder(tmp.path()));
  const PreprocessSpec& s = enc.info().spec;
  ImageLoader loader(s);
  const int64_t n = 3, per_image = loader.values_per_image();
  auto planes = torch::empty({n, 3, s.input_height, s.input_width}, torch::kByte);
  auto floats = torch::empty({n, 3, s.input_height, s.input_width});
  for (int64_t i = 0; i < n; ++i) {
    cv::Mat rgb(40 + 7 * i, 50, CV_8UC3);
    cv::randu(rgb, 0, 256);
    loader.resize_to_planes(rgb, planes.data_ptr<uint8_t>() + i * per_image);
    loader.preprocess(rgb, floats.data_ptr<float>() + i * per_image);
  }
  EXPECT_TRUE(torch::equal(enc.encode(planes), enc.encode(floats)));
  EXPECT_TRUE(torch::equal(enc.encode_in_batches(planes, 2), enc.encode(floats)));
  try {
    enc.encode(torch::zeros({1, 3, s.input_height + 1, s.input_width}, torch::kByte));
    ADD_FAILURE() << "planes of the wrong size were accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("expected (N, 3, 32, 32)"), std::string::npos) << e.what();
  }
}

TEST(ImageBatcher, KeepsInputOrderAndReportsFailures) {
  TempDir tmp;
  PreprocessSpec s;
  s.input_height = s.input_width = 4;
  std::vector<fs::path> files;
  for (int i = 0; i < 23; ++i) {
    auto p = tmp / ("img" + std::to_string(i) + ".png");
    if (i % 7 == 3) {
      test::write_text(p, "broken");
    } else {
      cv::Mat m(5, 5, CV_8UC3, cv::Scalar(i, i, i));
      cv::imwrite(p.string(), m);
    }
    files.push_back(p);
  }
  ImageBatcherOptions o;
  o.batch_size = 4;
  o.workers = 3;
  o.prefetch = 2;
  ImageBatcher batcher(files, ImageLoader(s), o);
  ImageBatch b;
  std::vector<size_t> seen, failed;
  while (batcher.next(b)) {
    for (size_t k = 0; k < b.indices.size(); ++k) {
      seen.push_back(b.indices[k]);
      // The pixel value identifies the image; batches carry 8-bit planes.
      ASSERT_EQ(b.pixels.scalar_type(), torch::kByte);
      EXPECT_EQ(b.pixels[static_cast<int64_t>(k)][0][0][0].item<int>(), static_cast<int>(b.indices[k]));
    }
    failed.insert(failed.end(), b.failed_indices.begin(), b.failed_indices.end());
  }
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  EXPECT_EQ(seen.size() + failed.size(), files.size());
  EXPECT_EQ(failed, (std::vector<size_t>{3, 10, 17}));
}

TEST(FeatureCache, ReusesFeaturesAndNoticesChanges) {
  TempDir tmp;
  auto enc_file = test::make_tiny_encoder(tmp / "enc");
  Encoder enc = Encoder::load(enc_file);
  std::vector<fs::path> files;
  for (int i = 0; i < 5; ++i) {
    files.push_back(tmp / ("i" + std::to_string(i) + ".png"));
    cv::imwrite(files.back().string(), cv::Mat(6, 6, CV_8UC3, cv::Scalar(10 * i, 20, 30)));
  }
  test::write_text(tmp / "bad.png", "nope");
  files.push_back(tmp / "bad.png");
  FeatureCacheOptions o;
  o.cache_dir = tmp / "cache";
  o.with_flipped = true;
  auto a = compute_features(enc, files, o);
  EXPECT_FALSE(a.from_cache);
  EXPECT_EQ(a.features.sizes(), (std::vector<int64_t>{6, 3}));
  EXPECT_EQ(a.failures.size(), 1u);
  EXPECT_FALSE(a.ok[5]);
  auto b = compute_features(enc, files, o);
  EXPECT_TRUE(b.from_cache);
  EXPECT_TRUE(torch::equal(a.features, b.features));
  EXPECT_TRUE(torch::equal(a.flipped, b.flipped));
  EXPECT_EQ(b.failures, a.failures);
  // A changed image is a different cache entry.
  cv::imwrite(files[0].string(), cv::Mat(6, 6, CV_8UC3, cv::Scalar(200, 20, 30)));
  auto c = compute_features(enc, files, o);
  EXPECT_FALSE(c.from_cache);
  EXPECT_FALSE(torch::equal(a.features[0], c.features[0]));
}

TEST(ExportEncoder, TorchvisionEncodersLoadWithTheirClassifierRemoved) {
  if (std::system("/usr/bin/python3 -c 'import torchvision' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "/usr/bin/python3 with torchvision not installed (scripts/setup.sh installs it)";
  }
  TempDir tmp;
  // Only random weights can be had offline: enough to check the plumbing and the output width.
  for (auto [arch, dim] : {std::pair<std::string, int64_t>{"resnet50", 2048}, {"vgg16", 4096}}) {
    auto out = tmp / (arch + ".pt");
    auto r = test::run_shell("/usr/bin/python3 " + std::string(CAPTIONER_SOURCE_DIR) + "/scripts/export_encoder.py --arch " +
                             arch + " --allow-random --output " + out.string());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    Encoder enc = Encoder::load(out);
    EXPECT_EQ(enc.info().feature_dim, dim);
    EXPECT_EQ(enc.info().spec.resize, PreprocessSpec::Resize::kShorterSideCrop);
    auto f = enc.encode(torch::randn({2, 3, 224, 224}));
    EXPECT_EQ(f.sizes(), (std::vector<int64_t>{2, dim})) << arch << ": classifier not removed";
    fs::remove(out);
  }
}

TEST(FeatureCache, DamagedCacheFilesAreRecomputed) {
  TempDir tmp;
  Encoder enc = Encoder::load(test::make_tiny_encoder(tmp / "enc"));
  std::vector<fs::path> files{tmp / "a.png"};
  cv::imwrite(files[0].string(), cv::Mat(6, 6, CV_8UC3, cv::Scalar(10, 20, 30)));
  FeatureCacheOptions o;
  o.cache_dir = tmp / "cache";
  auto good = compute_features(enc, files, o);
  auto file = feature_cache_file(enc, files, o);
  // A header whose fields have the wrong types, then a file cut short.
  std::string bad = std::string("CAPFEAT1") + std::string("\x0d\0\0\0\0\0\0\0", 8) + R"({"key": 5}  )";
  test::write_text(file, bad);
  auto again = compute_features(enc, files, o);
  EXPECT_FALSE(again.from_cache);
  EXPECT_TRUE(torch::equal(again.features, good.features));
  auto bytes = read_file(file);
  test::write_text(file, bytes.substr(0, bytes.size() - 4));
  EXPECT_FALSE(compute_features(enc, files, o).from_cache);
}

TEST(FeatureCache, PoisonedNumbersAreRecomputedNotTrusted) {
  TempDir tmp;
  Encoder enc = Encoder::load(test::make_tiny_encoder(tmp / "enc"));
  std::vector<fs::path> files{tmp / "a.png", tmp / "b.png"};
  cv::imwrite(files[0].string(), cv::Mat(6, 6, CV_8UC3, cv::Scalar(10, 20, 30)));
  cv::imwrite(files[1].string(), cv::Mat(6, 6, CV_8UC3, cv::Scalar(200, 100, 0)));
  FeatureCacheOptions o;
  o.cache_dir = tmp / "cache";
  auto good = compute_features(enc, files, o);
  ASSERT_TRUE(compute_features(enc, files, o).from_cache);
  auto file = feature_cache_file(enc, files, o);
  const std::string bytes = read_file(file);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // The header stays intact; only the numbers at the end of the file change: a NaN, then zeros.
  for (const std::string& tail : {std::string(reinterpret_cast<const char*>(&nan), 4), std::string(4, '\0')}) {
    test::write_text(file, bytes.substr(0, bytes.size() - 4) + tail);
    auto again = compute_features(enc, files, o);
    EXPECT_FALSE(again.from_cache);
    EXPECT_TRUE(torch::equal(again.features, good.features));
  }
}

TEST(Encoder, SameSidecarOtherWeightsIsAnotherEncoder) {
  // A re-export (random vs. pretrained, a fixed converter) keeps the sidecar but not the weights:
  // cached features and trained models must not be mixed up across them.
  TempDir tmp;
  auto make = [&](const std::string& sub, float scale) {
    auto file = captioner::test::make_tiny_encoder(tmp / sub, "scaled");
    torch::jit::Module m("scaled");
    m.register_parameter("scale", torch::full({3}, scale), false);
    m.define(R"(
    def forward(self, x):
        return x.mean(dim=[2, 3]) * self.scale
    )");
    m.save(file.string());
    return file;
  };
  auto a = Encoder::load(make("a", 1.0f)), b = Encoder::load(make("b", 2.0f)), a2 = Encoder::load(make("a2", 1.0f));
  EXPECT_EQ(a.info().fingerprint(), b.info().fingerprint()) << "same sidecar";
  EXPECT_NE(a.info().weights_hash, b.info().weights_hash);
  EXPECT_EQ(a.info().weights_hash, a2.info().weights_hash) << "same weights, another file";
  std::vector<std::filesystem::path> images = {tmp / "x.png"};
  FeatureCacheOptions o;
  o.cache_dir = tmp / "cache";
  EXPECT_NE(feature_cache_file(a, images, o), feature_cache_file(b, images, o));
  EXPECT_EQ(feature_cache_file(a, images, o), feature_cache_file(a2, images, o));
  EXPECT_THROW(check_same_encoder(a.info(), b.info(), "model m"), std::runtime_error);
  EXPECT_NO_THROW(check_same_encoder(a.info(), a2.info(), "model m"));
}

TEST(FeatureCache, DroppingUnreadableRowsKeepsFeaturesAndMirrorsAligned) {
  FeatureSet set;
  set.features = torch::arange(8, torch::kFloat).reshape({4, 2});
  set.flipped = -set.features;
  set.ok = {true, false, true, false};
  EXPECT_EQ(set.drop_unreadable(), (std::vector<int64_t>{0, 2}));
  ASSERT_EQ(set.features.size(0), 2);
  EXPECT_TRUE(torch::equal(set.features[1], torch::tensor({4.f, 5.f})));
  EXPECT_TRUE(torch::equal(set.flipped, -set.features));
  EXPECT_EQ(set.ok, (std::vector<bool>{true, true}));
  EXPECT_EQ(set.drop_unreadable(), (std::vector<int64_t>{0, 1}));  // nothing more to drop
}
