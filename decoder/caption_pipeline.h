// Files in, captions out: loader threads decode and preprocess batches while the encoder and the
// decoder run, and results are handed back in input order as soon as each batch is done, so a
// folder of any size is captioned in constant memory.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "decoder/model_bundle.h"
#include "encoder/encoder.h"
#include "encoder/image_loader.h"
#include "encoder/threading.h"

namespace captioner {

struct ImageBatch;

struct CaptionedImage {
  size_t index = 0;  // position in the input list
  std::filesystem::path file;
  std::string caption;
  double log_prob = 0;
  std::string thumbnail_jpeg;  // when CaptionPipelineOptions::thumbnail_size > 0
};

struct CaptionPipelineOptions {
  int batch_size = 32;    // images per decoder batch (beams of all of them in one tensor)
  int encoder_batch = 4;  // images per encoder call: MobileNetV2 ran ~3x faster per image at
                          // batch 4 than at 32 on 2 cores (its activations stay in cache)
  int loader_threads = 2;
  int prefetch = 4;
  SearchOptions search;    // usually the bundle's defaults with command-line overrides
  int thumbnail_size = 0;  // > 0: hand back a JPEG thumbnail with each caption (HTML report)
  ImageLoaderOptions image;
  // Threads per stage; by default the encoder and the decoder run concurrently, the decoder on
  // one core and the encoder on the others (see ThreadPlan).
  ThreadPlan threads = ThreadPlan::choose(0);
};

struct CaptionCallbacks {
  std::function<void(const CaptionedImage&)> on_caption;
  std::function<void(size_t index, const ImageError&)> on_failure;
  std::function<void(size_t done, size_t total)> on_progress;
  std::function<bool()> should_stop;  // checked between batches: true ends the run early
};

class CaptionPipeline {
 public:
  CaptionPipeline(const ModelBundle& model, Encoder& encoder, CaptionPipelineOptions options);
  // Captions `files` in order; returns how many failed to load.
  size_t run(const std::vector<std::filesystem::path>& files, const CaptionCallbacks& callbacks);

 private:
  torch::Tensor encode_in_chunks(const torch::Tensor& pixels);
  FeatureViews encode_batch(const ImageBatch& batch, bool with_flipped);

  const ModelBundle& model_;
  Encoder& encoder_;
  CaptionPipelineOptions options_;
};

}  // namespace captioner
