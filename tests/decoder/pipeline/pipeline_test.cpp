// The speed settings of `captioner caption` (batch size, loader threads, LibTorch threads, batched
// beams) must never change what it writes: same captions, same log-probabilities, same order.
#include "decoder/pipeline/caption_pipeline.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <random>
#include <sched.h>
#include <cstdlib>

#include "datasets/file_io.h"
#include "encoder/threading.h"
#include "tests/model_fixtures.h"
#include "tests/test_util.h"

using namespace captioner;
using captioner::test::TempDir;
namespace fs = std::filesystem;

namespace {
struct Setting {
  int batch, loaders, threads;
  int encoder_workers;  // 0: encoder and decoder take turns (ThreadPlan::choose(threads)); N: N
                        // concurrent single-threaded encoder workers beside the decoder
};

std::vector<CaptionedImage> caption_all(const ModelBundle& model, Encoder& encoder, const std::vector<fs::path>& files, Setting s,
                                        int beam) {
  ScopedTorchThreads threads(s.threads);
  CaptionPipelineOptions o;
  o.batch_size = s.batch;
  o.loader_threads = s.loaders;
  o.threads = ThreadPlan::choose(s.encoder_workers > 0 ? 0 : s.threads);
  if (s.encoder_workers > 0) {
    o.threads.overlap = true;
    o.threads.encoder_workers = s.encoder_workers;
  }
  o.search = model.search;
  o.search.beam_size = beam;
  std::vector<CaptionedImage> out;
  CaptionCallbacks cb;
  cb.on_caption = [&](const CaptionedImage& c) { out.push_back(c); };
  CaptionPipeline(model, encoder, o).run(files, cb);
  return out;
}

void expect_same(const std::vector<CaptionedImage>& a, const std::vector<CaptionedImage>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].index, b[i].index) << what << ": results out of order";
    EXPECT_EQ(a[i].caption, b[i].caption) << what << ": " << a[i].file;
    EXPECT_NEAR(a[i].log_prob, b[i].log_prob, 1e-4) << what << ": " << a[i].file;
  }
}

const std::vector<Setting> kSettings = {{1, 1, 1, 0}, {3, 1, 2, 0}, {8, 2, 1, 1}, {16, 3, 2, 3}, {5, 2, 1, 2}};
}  // namespace

TEST(CaptionPipeline, SpeedSettingsNeverChangeTheCaptions) {
  TempDir tmp;
  auto vocab = test::make_vocab({"a", "dog", "cat", "runs", "red", "blue", "ball", "on", "grass", "the"});
  auto model = test::make_bundle(test::make_tiny_encoder(tmp / "enc"), vocab, "lstm", 3, 32);
  auto encoder = Encoder::load(model.encoder_file);
  std::mt19937 rng(7);
  std::vector<fs::path> files;
  for (int i = 0; i < 21; ++i) {  // 21: batches that do not divide evenly
    cv::Mat img(20 + i, 30, CV_8UC3, cv::Scalar(rng() % 256, rng() % 256, rng() % 256));
    files.push_back(tmp / ("img" + std::to_string(i) + ".png"));
    cv::imwrite(files.back().string(), img);
  }
  for (int beam : {1, 3}) {
    auto reference = caption_all(model, encoder, files, kSettings[0], beam);
    ASSERT_EQ(reference.size(), files.size());
    std::set<std::string> distinct;
    for (const auto& c : reference) distinct.insert(c.caption);
    EXPECT_GT(distinct.size(), 1u) << "the check is only meaningful if the captions differ by image";
    for (size_t s = 1; s < kSettings.size(); ++s) {
      expect_same(reference, caption_all(model, encoder, files, kSettings[s], beam),
                  "beam " + std::to_string(beam) + ", setting " + std::to_string(s));
    }
  }
}

// True where oneDNN's int8 products accumulate exactly (VNNI); without it they saturate in 16-bit
// pairs, so the int8 encoder's features, and a few captions, differ between the two kinds of CPU.
namespace {
std::string hex_fnv1a64(const std::string& bytes) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(fnv1a64(bytes)));
  return text;
}

bool cpu_has_vnni() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    for (std::string w; words >> w;) {
      if (w == "avx512_vnni" || w == "avx_vnni" || w == "amx_int8") return true;
    }
    return false;
  }
  return false;
}
}  // namespace

// The shipped model on real photos, against captions recorded when it was trained: a speed-up
// that changes any caption of the default model fails here. One recording per kind of int8
// arithmetic and per decoder precision (scripts/record_default_captions.sh): the model's own
// (int8) and float32, whose captions int8 may change only a little.
TEST(CaptionPipeline, DefaultModelStillWritesItsRecordedCaptions) {
  REQUIRE_SHARED();
  const fs::path dir = fs::path(CAPTIONER_SOURCE_DIR) / "models/default";
  if (!fs::exists(dir / "config.json")) GTEST_SKIP() << "models/default is not in this checkout";
  auto model = ModelBundle::load(dir);
  if (!fs::exists(model.encoder_file)) GTEST_SKIP() << model.encoder_file << " missing: run scripts/setup.sh";
  ASSERT_EQ(model.decoder_precision, "int8");
  auto encoder = Encoder::load(model.encoder_file);
  // Each recording names the decoder it was made with. Only a machine of one kind can record its
  // own kind, so when models/default changes on one kind, the other kind's files still hold the
  // old model's captions: that kind is skipped, saying so, as long as this kind's are current.
  const std::string decoder_id = hex_fnv1a64(read_file(dir / "decoder.pt"));
  auto recording = [&](const std::string& precision, bool vnni) {
    const fs::path file =
        fs::path(CAPTIONER_SOURCE_DIR) / (std::string("tests/data/default_model_captions") +
                                          (precision == "float32" ? ".float32" : "") + (vnni ? ".vnni" : "") + ".json");
    std::ifstream in(file);
    if (!in) return std::make_pair(std::string(), nlohmann::json::array());
    auto doc = nlohmann::json::parse(in);
    if (doc.is_array()) return std::make_pair(std::string("(recorded before recordings named their decoder)"), doc);
    return std::make_pair(doc.at("decoder_fnv1a64").get<std::string>(), doc.at("captions"));
  };
  if (recording("int8", cpu_has_vnni()).first != decoder_id) {
    ASSERT_EQ(recording("int8", !cpu_has_vnni()).first, decoder_id)
        << "no recording of the current models/default (decoder " << decoder_id << "): run scripts/record_default_captions.sh";
    GTEST_SKIP() << "models/default was recorded only on " << (cpu_has_vnni() ? "an AVX2" : "a VNNI")
                 << " CPU; record this kind on this machine with scripts/record_default_captions.sh";
  }
  std::map<std::string, std::vector<CaptionedImage>> by_precision;
  for (const std::string precision : {"int8", "float32"}) {
    const auto [recorded_for, recorded] = recording(precision, cpu_has_vnni());
    ASSERT_EQ(recorded_for, decoder_id) << precision << " recording is of another decoder";
    ASSERT_FALSE(recorded.empty());
    std::vector<fs::path> files;
    for (const auto& r : recorded)
      files.push_back(test::shared_dir() / "datasets/flickr8k/images" / r.at("file_name").get<std::string>());
    model.decoder_precision = precision;
    for (const auto& s : {kSettings[0], kSettings[3], Setting{32, 2, 1, 2}}) {
      auto got = caption_all(model, encoder, files, s, model.search.beam_size);
      ASSERT_EQ(got.size(), recorded.size());
      for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(got[i].caption, recorded[i].at("caption").get<std::string>()) << precision << " " << files[i];
        EXPECT_NEAR(got[i].log_prob, recorded[i].at("log_prob").get<double>(), 1e-3) << precision << " " << files[i];
      }
      by_precision[precision] = std::move(got);
    }
  }
  // The bound on int8's effect (measured: 1 caption of 24 differs, log-probs of the others within 0.04).
  const auto& q = by_precision["int8"];
  const auto& f = by_precision["float32"];
  int differ = 0;
  for (size_t i = 0; i < q.size(); ++i) {
    if (q[i].caption != f[i].caption) {
      ++differ;
    } else {
      EXPECT_NEAR(q[i].log_prob, f[i].log_prob, 0.1) << q[i].file;
    }
  }
  EXPECT_LE(differ, 3) << "int8 decoding changed " << differ << " of " << q.size() << " captions";
}

// torchrun --nproc_per_node K starts K processes on one machine: each plans for its share of the
// cores it may run on, never for all of them.
TEST(ThreadPlan, ProcessesOnOneMachineShareItsCores) {
  const char* saved = std::getenv("LOCAL_WORLD_SIZE");
  const std::string previous = saved ? saved : "";
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  ASSERT_EQ(sched_getaffinity(0, sizeof allowed, &allowed), 0);
  const int affinity = CPU_COUNT(&allowed);

  unsetenv("LOCAL_WORLD_SIZE");
  EXPECT_EQ(usable_cores(), affinity);
  EXPECT_EQ(ThreadPlan::choose(0).encoder_workers, affinity);
  setenv("LOCAL_WORLD_SIZE", "2", 1);
  EXPECT_EQ(usable_cores(), std::max(1, affinity / 2));
  EXPECT_EQ(ThreadPlan::choose(0).encoder_alone, std::max(1, affinity / 2));
  EXPECT_EQ(ThreadPlan::choose(3).encoder_alone, 3) << "--threads N is taken as given";
  setenv("LOCAL_WORLD_SIZE", std::to_string(affinity * 4).c_str(), 1);
  EXPECT_EQ(usable_cores(), 1);
  setenv("LOCAL_WORLD_SIZE", "two", 1);
  EXPECT_EQ(usable_cores(), affinity) << "a value that is not a number is ignored";

  if (saved) {
    setenv("LOCAL_WORLD_SIZE", previous.c_str(), 1);
  } else {
    unsetenv("LOCAL_WORLD_SIZE");
  }
}
