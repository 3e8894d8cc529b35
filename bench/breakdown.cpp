// Where captioning time goes, stage by stage, on this machine: JPEG decode, resizing, the
// encoder, the decoder at beam 1 and beam 3, and the machine's matrix-multiply peak (the floor
// under the encoder). Prints one JSON object; bench/run.sh turns it into a table.
//   captioner_bench --model DIR --images DIR [--limit 200] [--batch 4] [--decoder-batch 32]
//                   [--encoder FILE (time another encoder, e.g. the float one)]
//   captioner_bench --startup --model DIR --images DIR: one photo's start-up, step by step, after
//                   LibTorch has loaded (what issue 33's 0.1 s counts), as `captioner caption` runs it
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include "decoder/pipeline/caption_pipeline.h"
#include "encoder/encoder.h"
#include "encoder/feature_cache.h"
#include "encoder/image_files.h"
#include "encoder/image_loader.h"
#include "encoder/threading.h"

using namespace captioner;
namespace fs = std::filesystem;

namespace {
double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Best GFLOP/s of a square float32 matrix product over a few repetitions.
double gemm_gflops(int64_t n, int threads) {
  ScopedTorchThreads scope(threads);
  ScopedBlasThreads blas(threads);
  auto a = torch::randn({n, n}), b = torch::randn({n, n});
  auto c = torch::mm(a, b);  // warm-up
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    double t0 = now();
    for (int k = 0; k < 4; ++k) c = torch::mm(a, b);
    best = std::max(best, 4 * 2.0 * n * n * n / (now() - t0) / 1e9);
  }
  return best;
}

// One photo through a fresh process's first steps, each timed: what a one-photo `captioner
// caption` pays after LibTorch has loaded. Nothing is warmed up first; the steps run one after
// the other here, while the command builds the decoder's tables during the encoder's first pass.
nlohmann::json startup_steps(const fs::path& model_dir, const fs::path& photo) {
  const double start = now();
  double t0 = start;
  nlohmann::json steps = nlohmann::json::object();
  auto lap = [&](const char* name) {
    const double t = now();
    steps[name] = 1e3 * (t - t0);
    t0 = t;
  };
  // One after the other, as the commands load them: side by side, the encoder's load took as long
  // again (160-200 ms against 82 alone; both go through LibTorch's TorchScript import).
  auto model = ModelBundle::load(model_dir);
  lap("load_model_ms");
  auto encoder = Encoder::load(model.encoder_file);
  lap("load_encoder_ms");
  ImageLoader loader(encoder.info().spec);
  const auto& s = encoder.info().spec;
  auto planes = torch::empty({1, 3, s.input_height, s.input_width}, torch::kByte);
  loader.resize_to_planes(loader.decode(photo), planes.data_ptr<uint8_t>());
  lap("read_photo_ms");
  auto features = encoder.encode(planes);
  lap("first_encoder_forward_ms");
  auto scorer = model.make_scorer(model.search.mi_weight);
  {
    ScopedTorchThreads threads(1);
    scorer->prepare();
    lap("decoder_tables_ms");
    caption_features(*scorer, {features}, model.search, 1);
    lap("first_decoding_ms");
    caption_features(*scorer, {encoder.encode(planes)}, model.search, 1);
    lap("second_photo_encode_and_decode_ms");
  }
  steps["total_ms"] = 1e3 * (t0 - start) - steps["second_photo_encode_and_decode_ms"].get<double>();
  return steps;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Per-stage timings of the captioning pipeline"};
  fs::path model_dir, image_dir, encoder_file;
  int limit = 200, batch = 4, decoder_batch = 32, decoder_repeats = 1;
  double mi_probe = 0.1;
  app.add_option("--model", model_dir)->required()->check(CLI::ExistingDirectory);
  app.add_option("--images", image_dir)->required()->check(CLI::ExistingDirectory);
  app.add_option("--limit", limit, "Images to time");
  app.add_option("--batch", batch, "Encoder batch size");
  app.add_option("--decoder-batch", decoder_batch, "Images per decoder batch (all their beams in one tensor)");
  app.add_option("--decoder-repeats", decoder_repeats, "Decode this many times at each beam width (for profilers)")
      ->check(CLI::PositiveNumber);
  app.add_option("--encoder", encoder_file, "Encoder to time instead of the model's own");
  app.add_option("--mi-weight", mi_probe, "Also time beam 3 with this mutual-information weight (0: not)")
      ->check(CLI::Range(0.0, 0.99));
  bool startup = false;
  app.add_flag("--startup", startup, "Time one photo's start-up step by step instead (a fresh process each time)");
  CLI11_PARSE(app, argc, argv);
  try {
    if (startup) {
      auto files = collect_images({image_dir.string()}, false).images;
      if (files.empty()) throw std::runtime_error("no images in " + image_dir.string());
      std::cout << startup_steps(model_dir, files.front()).dump() << std::endl;
      return 0;
    }
    const int cores = usable_cores();
    auto model = ModelBundle::load(model_dir);
    auto encoder = Encoder::load(encoder_file.empty() ? model.encoder_file : encoder_file);
    ImageLoader loader(encoder.info().spec);
    auto files = collect_images({image_dir.string()}, false).images;
    if (files.size() > static_cast<size_t>(limit)) files.resize(static_cast<size_t>(limit));
    const auto n = static_cast<int64_t>(files.size());
    if (n == 0) throw std::runtime_error("no images in " + image_dir.string());

    // Files -> features as feature extraction does it: loader threads feeding the encoder.
    double extract_s = 0, t0 = 0;
    {
      ScopedTorchThreads scope(cores);
      FeatureCacheOptions fo;
      fo.batch_size = batch;
      t0 = now();
      compute_features(encoder, files, fo);
      extract_s = now() - t0;
    }
    // Stage 1: decode (one thread, as one loader thread does it).
    std::vector<cv::Mat> decoded;
    t0 = now();
    for (const auto& f : files) decoded.push_back(loader.decode(f));
    const double decode_s = now() - t0;
    // Stage 2: resize into 8-bit planes, as a loader thread does (the encoder normalises them).
    auto pixels = torch::empty({n, 3, encoder.info().spec.input_height, encoder.info().spec.input_width}, torch::kByte);
    t0 = now();
    for (int64_t i = 0; i < n; ++i) loader.resize_to_planes(decoded[static_cast<size_t>(i)], pixels[i].data_ptr<uint8_t>());
    const double preprocess_s = now() - t0;
    decoded.clear();
    // Stage 3: the encoder (normalising each call's planes), all cores, in batches.
    torch::Tensor features;
    double encode_s = 0;
    {
      ScopedTorchThreads scope(cores);
      encoder.encode(pixels.narrow(0, 0, std::min<int64_t>(batch, n)));  // warm-up (oneDNN primitives)
      t0 = now();
      features = encoder.encode_in_batches(pixels, batch);
      encode_s = now() - t0;
    }
    // Stage 4: the decoder, one thread, in batches as `captioner caption` decodes.
    // As `captioner caption` decodes: with the model's mutual-information weight (0 unless set).
    const double mi_weight = model.search.mi_weight;
    auto scorer = model.make_scorer(mi_weight);
    auto decode_time = [&](int beam) {
      ScopedTorchThreads scope(1);
      ScopedBlasThreads blas(1);
      SearchOptions so = model.search;
      so.beam_size = beam;
      double t = now();
      for (int r = 0; r < decoder_repeats; ++r) caption_features(*scorer, {features}, so, decoder_batch);
      return (now() - t) / decoder_repeats;
    };
    decode_time(1);  // warm-up
    const double greedy_s = decode_time(1), beam3_s = decode_time(3), beam5_s = decode_time(5);
    // Beam 3 with --mi-weight (the model's image prior as the mean photo), when the model has one.
    double mi_beam3_s = 0;
    if (mi_probe > 0 && model.image_prior.defined()) {
      scorer = model.make_scorer(mi_probe);
      decode_time(3);  // warm-up
      mi_beam3_s = decode_time(3);
    }
    // The same at beam 3 in float32, for comparison when the model decodes in int8.
    const std::string precision = model.decoder_precision;
    model.decoder_precision = "float32";
    scorer = model.make_scorer(mi_weight);
    decode_time(3);  // warm-up
    const double float_beam3_s = decode_time(3);

    nlohmann::json out{{"images", n},
                       {"cores", cores},
                       {"encoder_batch", batch},
                       {"encoder", encoder.info().model_file.filename().string()},
                       {"encoder_precision", encoder.info().precision},
                       {"decoder_batch", decoder_batch},
                       {"extract_images_per_second", n / extract_s},
                       {"decode_ms", 1e3 * decode_s / n},
                       {"preprocess_ms", 1e3 * preprocess_s / n},
                       {"encoder_ms", 1e3 * encode_s / n},
                       {"decoder_beam1_ms", 1e3 * greedy_s / n},
                       {"decoder_beam3_ms", 1e3 * beam3_s / n},
                       {"decoder_beam5_ms", 1e3 * beam5_s / n},
                       {"decoder_precision", precision},
                       {"decoder_mi_weight", mi_weight},
                       {"decoder_beam3_mi_weight", mi_probe},
                       {"decoder_beam3_mi_ms", 1e3 * mi_beam3_s / n},
                       {"decoder_float32_beam3_ms", 1e3 * float_beam3_s / n},
                       {"gemm_gflops_all_cores", gemm_gflops(1024, cores)},
                       {"gemm_gflops_one_core", gemm_gflops(1024, 1)}};
    std::cout << out.dump() << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "captioner_bench: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
