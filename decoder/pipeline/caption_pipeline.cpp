#include "decoder/pipeline/caption_pipeline.h"

#include <ATen/Parallel.h>
#include <malloc.h>

#include <condition_variable>
#include <map>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

#include "encoder/image_batcher.h"

namespace captioner {

namespace {

// A batch whose images have been encoded, waiting for the decoder.
struct EncodedBatch {
  ImageBatch batch;
  FeatureViews views;
};

// Hands encoded batches from the encoder threads to the decoder in input order. Encoders wait
// while `capacity` batches are ahead of the decoder, so memory stays flat; close() ends the
// stream from either side, and an encoder's failure travels to the decoder to be rethrown there.
class EncodedQueue {
 public:
  explicit EncodedQueue(size_t capacity) : capacity_(capacity) {}

  bool push(EncodedBatch item) {  // false once closed
    std::unique_lock<std::mutex> lock(mutex_);
    const size_t number = item.batch.number;
    space_.wait(lock, [&] { return closed_ || number < next_ + capacity_; });
    if (closed_) return false;
    items_.emplace(number, std::move(item));
    ready_.notify_all();
    return true;
  }
  void finish_producer() {  // one encoder thread has no more batches
    std::lock_guard<std::mutex> lock(mutex_);
    ++finished_producers_;
    ready_.notify_all();
  }
  // The next batch in input order; empty at the end of the stream.
  std::optional<EncodedBatch> pop(size_t producers) {
    std::unique_lock<std::mutex> lock(mutex_);
    ready_.wait(lock, [&] { return closed_ || items_.count(next_) || finished_producers_ == producers; });
    if (error_) std::rethrow_exception(error_);
    auto it = items_.find(next_);
    if (it == items_.end()) return std::nullopt;
    EncodedBatch item = std::move(it->second);
    items_.erase(it);
    ++next_;
    space_.notify_all();
    return item;
  }
  void close(std::exception_ptr error = nullptr) {
    std::lock_guard<std::mutex> lock(mutex_);
    closed_ = true;
    if (error && !error_) error_ = error;
    ready_.notify_all();
    space_.notify_all();
  }

 private:
  size_t capacity_;
  std::mutex mutex_;
  std::condition_variable ready_, space_;
  std::map<size_t, EncodedBatch> items_;
  size_t next_ = 0;
  size_t finished_producers_ = 0;
  bool closed_ = false;
  std::exception_ptr error_;
};

}  // namespace

CaptionPipeline::CaptionPipeline(const ModelBundle& model, Encoder& encoder, CaptionPipelineOptions options)
    : model_(model), encoder_(encoder), options_(std::move(options)) {
  check_same_encoder(model_.encoder, encoder_.info(), "the model");
  if (options_.search.tag_threshold > 0) {
    // Tags asked for: a missing classifier or WordNet fails here, before any photo is read.
    std::string unused;
    tag_guide_ = load_tag_guide(encoder_.info(), model_.vocab, options_.search, unused);
  } else if (uses_tags(options_.search)) {
    tag_guide_loading_ =
        std::async(std::launch::async, [info = encoder_.info(), &vocab = model_.vocab, search = options_.search] {
          std::string warning;
          auto guide = load_tag_guide(info, vocab, search, warning);
          return std::make_pair(std::move(guide), warning);
        });
  }
}

TagGuide* CaptionPipeline::tag_guide(const CaptionCallbacks& cb) {
  if (tag_guide_loading_.valid()) {
    auto [guide, warning] = tag_guide_loading_.get();
    tag_guide_ = std::move(guide);
    if (!warning.empty() && cb.on_warning) cb.on_warning(warning);
  }
  return tag_guide_ ? &*tag_guide_ : nullptr;
}

namespace {

// Encoder workers (one LibTorch thread each: a convolution scales better across photos than
// across the threads of one call) encode batches while this thread decodes earlier ones, all
// sharing the cores, in the batcher's order. LibTorch's thread count is per calling thread, so
// each worker sets its own. `prepare` runs on this thread while the first batch is encoded.
void encode_while_decoding(ImageBatcher& batcher, int workers, int threads_per_worker,
                           const std::function<FeatureViews(ImageBatch&)>& encode, const std::function<void()>& prepare,
                           const std::function<void(EncodedBatch&)>& decode, const std::function<bool()>& stop) {
  EncodedQueue queue(static_cast<size_t>(workers) + 1);
  std::vector<std::thread> encoders;
  for (int w = 0; w < workers; ++w) {
    encoders.emplace_back([&] {
      try {
        at::internal::lazy_init_num_threads();  // before setting ours, or the first op resets it
        at::set_num_threads(threads_per_worker);
        EncodedBatch item;
        while (batcher.next(item.batch)) {
          item.views = encode(item.batch);
          if (!queue.push(std::move(item))) break;
          item = EncodedBatch();
        }
        queue.finish_producer();
      } catch (...) {
        queue.close(std::current_exception());
      }
    });
  }
  auto join_all = [&] {
    queue.close();
    for (auto& t : encoders) t.join();
  };
  try {
    if (!stop()) prepare();  // nothing to prepare for when the run is already over
    while (!stop()) {
      auto item = queue.pop(encoders.size());
      if (!item) break;
      decode(*item);
    }
  } catch (...) {
    join_all();
    throw;
  }
  join_all();
}

}  // namespace

FeatureViews CaptionPipeline::encode_batch(ImageBatch& batch, bool with_flipped) {
  FeatureViews views;
  if (batch.indices.empty()) return views;
  views.push_back(encoder_.encode_in_batches(batch.pixels, options_.encoder_batch));
  if (with_flipped) views.push_back(encoder_.encode_in_batches(batch.flipped, options_.encoder_batch));
  // The pixels (4.8 MB a batch of 32) are not needed while the batch waits for the decoder.
  batch.pixels = torch::Tensor();
  batch.flipped = torch::Tensor();
  return views;
}

size_t CaptionPipeline::run(const std::vector<std::filesystem::path>& files, const CaptionCallbacks& cb,
                            const std::vector<std::string_view>& in_memory) {
  ImageBatcherOptions bo;
  bo.batch_size = options_.batch_size;
  bo.workers = options_.loader_threads;
  bo.prefetch = options_.prefetch;
  bo.with_flipped = model_.num_views() > 1;
  bo.thumbnail_size = options_.thumbnail_size;
  ImageBatcher batcher(files, ImageLoader(encoder_.info().spec, options_.image), bo, in_memory);
  auto scorer = model_.make_scorer(options_.search.mi_weight);
  size_t failed = 0, done = 0;

  auto decode = [&](EncodedBatch& item) {
    ImageBatch& batch = item.batch;
    for (size_t k = 0; k < batch.failures.size(); ++k) {
      ++failed;
      if (cb.on_failure) cb.on_failure(batch.failed_indices[k], batch.failures[k]);
    }
    if (!batch.indices.empty()) {
      std::vector<CaptionedImage> captioned;
      {
        ScopedTorchThreads threads(options_.threads.decoder);
        ScopedBlasThreads blas(options_.threads.decoder_blas);
        captioned = caption_encoded(model_, *scorer, tag_guide(cb), item.views, options_.search);
      }
      for (size_t i = 0; i < captioned.size(); ++i) {
        CaptionedImage& out = captioned[i];
        out.index = batch.indices[i];
        out.file = files[out.index];
        if (i < batch.thumbnails.size()) out.thumbnail_jpeg = std::move(batch.thumbnails[i]);
        if (cb.on_caption) cb.on_caption(out);
      }
    }
    done += batch.indices.size() + batch.failures.size();
#ifdef __GLIBC__
    // Tensors are freed on other threads than the ones that made them, so glibc's per-thread
    // arenas keep ever more freed pages: peak memory grew from 663 MB at 1,000 photos to 910 MB at
    // 7,000. Handing the free pages back once per batch keeps it flat (~530 MB) at no measured cost.
    malloc_trim(0);
#endif
    if (cb.on_progress) cb.on_progress(done, files.size());
  };
  const std::function<bool()> stop_requested = [&] { return cb.should_stop && cb.should_stop(); };
  // The decoder's tables (~2.5 GFLOP for the default model) are built while the first photos
  // are read and encoded, not after: a one-photo run waits ~0.1 s less.
  auto prepare = [&] {
    ScopedTorchThreads threads(options_.threads.decoder);
    ScopedBlasThreads blas(options_.threads.decoder_blas);
    scorer->prepare();
  };

  if (!options_.threads.overlap) {
    EncodedBatch item;
    while (!stop_requested() && batcher.next(item.batch)) {
      {
        ScopedTorchThreads threads(options_.threads.encoder);
        item.views = encode_batch(item.batch, bo.with_flipped);
      }
      decode(item);
    }
    return failed;
  }
  encode_while_decoding(
      batcher, std::max(1, options_.threads.encoder_workers), options_.threads.encoder,
      [&](ImageBatch& batch) { return encode_batch(batch, bo.with_flipped); }, prepare, decode, stop_requested);
  return failed;
}

std::vector<CaptionedImage> caption_encoded(const ModelBundle& model, SequenceScorer& scorer, TagGuide* tags,
                                            const FeatureViews& views, const SearchOptions& search) {
  ImageTags image_tags;
  if (tags && uses_tags(search)) image_tags = tags->tags(views.front(), search);
  const std::vector<Caption> captions = search_captions(scorer, views, search, word_guides(image_tags, search));
  std::vector<CaptionedImage> out(captions.size());
  for (size_t i = 0; i < captions.size(); ++i) {
    out[i].caption = model.vocab.caption_text(captions[i].tokens);
    out[i].log_prob = captions[i].log_prob;
    if (i < image_tags.size()) out[i].tag = image_tags[i];
  }
  return out;
}

std::vector<Caption> caption_features(SequenceScorer& scorer, const FeatureViews& views, const SearchOptions& search,
                                      int64_t chunk, const std::function<void(size_t, size_t)>& progress,
                                      const WordGuides& guides) {
  std::vector<Caption> captions;
  if (views.empty()) return captions;
  const int64_t n = views.front().size(0);
  if (!guides.empty() && static_cast<int64_t>(guides.size()) != n) {
    throw std::invalid_argument("caption_features: one word guide per image expected");
  }
  chunk = std::max<int64_t>(1, chunk);
  for (int64_t start = 0; start < n; start += chunk) {
    FeatureViews part;
    for (const auto& v : views) part.push_back(v.narrow(0, start, std::min(chunk, n - start)));
    WordGuides part_guides;
    if (!guides.empty()) part_guides.assign(guides.begin() + start, guides.begin() + start + part.front().size(0));
    for (auto& c : search_captions(scorer, part, search, part_guides)) captions.push_back(std::move(c));
    if (progress) progress(captions.size(), static_cast<size_t>(n));
  }
  return captions;
}

CaptionedFiles caption_files_cached(const ModelBundle& model, Encoder& encoder, const std::vector<std::filesystem::path>& files,
                                    const CachedCaptionOptions& options) {
  check_same_encoder(model.encoder, encoder.info(), "the model");
  FeatureCacheOptions fo = options.features;
  fo.with_flipped = model.num_views() > 1;
  FeatureSet feats;
  {
    ScopedTorchThreads threads(options.threads.encoder_alone);
    feats = compute_features(encoder, files, fo);
  }
  CaptionedFiles out;
  out.failures = std::move(feats.failures);
  out.warnings = std::move(feats.warnings);
  for (int64_t row : feats.drop_unreadable()) out.rows.push_back(static_cast<size_t>(row));
  FeatureViews views{feats.features};
  if (fo.with_flipped) views.push_back(feats.flipped);
  ScopedTorchThreads threads(options.threads.decoder);
  std::string warning;
  if (auto guide = load_tag_guide(encoder.info(), model.vocab, options.search, warning)) {
    out.tags = guide->tags(feats.features, options.search);
  }
  if (!warning.empty()) out.warnings.push_back(warning);
  auto scorer = model.make_scorer(options.search.mi_weight);
  out.captions = caption_features(*scorer, views, options.search, options.decode_chunk, options.decode_progress,
                                  word_guides(out.tags, options.search));
  return out;
}

}  // namespace captioner
