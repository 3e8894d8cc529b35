// Captions photos that arrive a few at a time from many threads (a server's clients, an embedding
// program's threads): each caller decodes its own photos, encoder workers and one decoder thread
// take whatever is waiting, so calls are batched together and their stages overlap.
//
//   caller threads:  bytes -> RGB -> pixels (3, H, W)      (ImageLoader, on the calling thread)
//   encoder workers: up to encoder_batch pixels -> features (N, D)
//   decoder thread:  up to max_batch encoded photos sharing their SearchOptions -> captions
//
// A photo's caption does not depend on the photos it is batched with (the decoder's int8 products:
// decoder/kernels/int8_linear.h; tests compare the service with the folder pipeline), so every
// caller gets what `captioner caption` writes for the same photo and options.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "decoder/pipeline/caption_pipeline.h"

namespace captioner {

struct CaptionServiceOptions {
  int max_batch = 32;     // photos decoded together
  int batch_wait_ms = 0;  // once a photo is encoded, how long the decoder may wait for a fuller
                          // batch; 0: it takes what is waiting (more arrives while it decodes)
  int encoder_batch = 4;  // photos per encoder call (see CaptionPipelineOptions::encoder_batch)
  // Photos decoded to pixels (150 KB of 8-bit planes each at 224x224) and not yet encoded; a
  // caller beyond it waits, so memory stays bounded however many threads submit.
  int max_waiting_pixels = 128;
  // Photos being decoded from JPEG/PNG at once, across all callers: a full-size photo takes up to
  // ~1 GB while it is (ImageLoaderOptions::max_pixels), and a server may have a thousand callers.
  int max_decoding = 2;
  // ThreadPlan::choose(N > 0) (overlap false): encoders and decoder take turns, N threads each.
  ThreadPlan threads = ThreadPlan::choose(0);
  // Held while a batch is captioned, when set: work outside the service that sets process-wide
  // thread counts (OpenBLAS's) takes turns with it by holding the same mutex (the C API's folders).
  std::mutex* exclusive = nullptr;
  ImageLoaderOptions image;
  std::function<void(size_t photos)> on_batch;  // after each decoder batch (a server's metrics)
};

// One photo: its encoded bytes (a request's body), or, without them, the file `name`.
struct PhotoInput {
  std::filesystem::path name;             // the file, or what errors call the photo
  std::optional<std::string_view> bytes;  // valid until caption() returns; empty bytes are no photo
};

// A caption, or the one line that says why the photo has none.
struct PhotoResult {
  std::optional<CaptionedImage> captioned;
  std::string error;
};

class CaptionService {
 public:
  CaptionService(const ModelBundle& model, Encoder& encoder, CaptionServiceOptions options);
  ~CaptionService();  // captions everything already submitted, then stops its threads
  CaptionService(const CaptionService&) = delete;
  CaptionService& operator=(const CaptionService&) = delete;

  // Captions `photos` with `search`, returning when all are done, one result per photo in order.
  // Thread-safe: calls from many threads share batches.
  std::vector<PhotoResult> caption(const std::vector<PhotoInput>& photos, const SearchOptions& search);

  // Photos submitted and not yet answered (decoding, waiting, encoding or being captioned).
  size_t in_flight() const;

 private:
  struct Job;
  using Clock = std::chrono::steady_clock;

  void encode_loop();
  void decode_loop();
  void prepare();  // decoder thread, before its first batch: the decoding tables, the tag guide
  std::vector<PhotoResult> caption_batch(std::vector<std::unique_ptr<Job>>& batch);  // decoder thread only
  void stop();                                       // finishes what was submitted, joins the threads
  TagGuide* tag_guide(const SearchOptions& search);  // decoder thread only; loaded on first use; null: no tags
  SequenceScorer& scorer(double mi_weight);          // decoder thread only

  const ModelBundle& model_;
  Encoder& encoder_;
  CaptionServiceOptions options_;
  ImageLoader loader_;
  const bool with_flipped_;

  mutable std::mutex mutex_;
  std::condition_variable pixels_ready_, pixels_space_, encoded_ready_, decode_slot_;
  int decoding_ = 0;  // callers decoding a photo now (max_decoding)
  std::mutex turns_;  // encoders and decoder take turns with it when !threads.overlap
  std::deque<std::unique_ptr<Job>> to_encode_, to_decode_;
  size_t in_flight_ = 0;
  bool stopping_ = false;
  int encoders_running_ = 0;

  std::unique_ptr<TagGuide> tag_guide_;
  bool tag_guide_failed_ = false;  // animal subjects went without it (no WordNet or classifier)
  std::map<double, std::unique_ptr<SequenceScorer>> scorers_;

  std::vector<std::thread> encoders_;
  std::thread decoder_;  // last: the threads start once everything above is ready
};

}  // namespace captioner
