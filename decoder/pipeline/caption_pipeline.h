// "Caption these images", in one home. CaptionPipeline: files in, captions out, loader threads,
// encoder and decoder overlapped and results handed back in input order, in constant memory (the
// caption command). caption_files_cached: a dataset's images through the feature cache (eval,
// benchmarks). caption_features: already-encoded images (all of them, and the trainer's validation).
#pragma once

#include <filesystem>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "decoder/bundle/model_bundle.h"
#include "decoder/search/tag_guide.h"
#include "encoder/encoder.h"
#include "encoder/feature_cache.h"
#include "encoder/image_loader.h"
#include "encoder/threading.h"

namespace captioner {

struct ImageBatch;

struct CaptionedImage {
  size_t index = 0;  // position in the input list
  std::filesystem::path file;
  std::string caption;
  double log_prob = 0;
  std::optional<Tag> tag;      // the tag the caption was checked against (uses_tags(search))
  std::string thumbnail_jpeg;  // when CaptionPipelineOptions::thumbnail_size > 0
};

struct CaptionPipelineOptions {
  int batch_size = 32;    // images per decoder batch (beams of all of them in one tensor)
  int encoder_batch = 4;  // images per encoder call: MobileNetV2 ran ~3x faster per image at
                          // batch 4 than at 32 on 2 cores (its activations stay in cache)
  int loader_threads = 2;
  // Decoded batches waiting for an encoder worker (4.8 MB of 8-bit planes each at batch 32). The
  // loaders outrun the encoder, so 2 keep it fed: 1,000 photos took the same time as with 4 and
  // peaked ~35 MB lower (float pixels then; bench/RESULTS.md).
  int prefetch = 2;
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
  std::function<bool()> should_stop;                   // checked between batches: true ends the run early
  std::function<void(const std::string&)> on_warning;  // something the run goes on without, in one line
};

class CaptionPipeline {
 public:
  CaptionPipeline(const ModelBundle& model, Encoder& encoder, CaptionPipelineOptions options);
  // Captions `files` in order; returns how many failed to load. `in_memory`: the photos' encoded
  // bytes, one per file, when they are in memory (`files` then only name them; nothing is read).
  size_t run(const std::vector<std::filesystem::path>& files, const CaptionCallbacks& callbacks,
             const std::vector<std::string_view>& in_memory = {});

 private:
  FeatureViews encode_batch(ImageBatch& batch, bool with_flipped);  // frees the batch's pixels
  TagGuide* tag_guide(const CaptionCallbacks& cb);  // waits for it; null without tags (or, warned, without WordNet)

  const ModelBundle& model_;
  Encoder& encoder_;
  CaptionPipelineOptions options_;
  // With tags asked for (tag_threshold > 0), loaded by the constructor; with animal subjects
  // alone, beside the first photos' reading and encoding (the classifier, WordNet and the tagger
  // take ~0.1 s; a failure is a warning), then kept.
  std::future<std::pair<std::optional<TagGuide>, std::string>> tag_guide_loading_;  // the guide, a warning
  std::optional<TagGuide> tag_guide_;
};

// Captions of already-encoded images (views (N, D) each), decoded `chunk` images at a time with
// all their beams in one tensor; progress after each chunk. One Caption per row. `guides`: one
// per row, or none (see search_captions).
std::vector<Caption> caption_features(SequenceScorer& scorer, const FeatureViews& views, const SearchOptions& search,
                                      int64_t chunk = 100, const std::function<void(size_t done, size_t total)>& progress = {},
                                      const WordGuides& guides = {});

// One batch of encoded photos (views (N, D) each) to captions: tags from `tags` when
// uses_tags(search) and it is given, the search, the words. What the folder pipeline and
// CaptionService both do with a decoder batch; index, file and thumbnail are left to the caller.
std::vector<CaptionedImage> caption_encoded(const ModelBundle& model, SequenceScorer& scorer, TagGuide* tags,
                                            const FeatureViews& views, const SearchOptions& search);

struct CachedCaptionOptions {
  FeatureCacheOptions features;  // cache folder, encoder batch, loader threads, encoding progress
  SearchOptions search;
  ThreadPlan threads = ThreadPlan::choose(0);
  int64_t decode_chunk = 100;
  std::function<void(size_t done, size_t total)> decode_progress;
};

struct CaptionedFiles {
  std::vector<size_t> rows;           // input positions of the images that were read, in order
  std::vector<Caption> captions;      // one per entry of rows
  ImageTags tags;                     // one per entry of rows, with uses_tags(search)
  std::vector<std::string> failures;  // one line per unreadable image
  std::vector<std::string> warnings;  // e.g. the feature cache could not be written
};

// Encodes `files` through the feature cache (so several decoding settings encode them once), then
// captions every image that could be read. Checks that the encoder is the model's.
CaptionedFiles caption_files_cached(const ModelBundle& model, Encoder& encoder, const std::vector<std::filesystem::path>& files,
                                    const CachedCaptionOptions& options);

}  // namespace captioner
