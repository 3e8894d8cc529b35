#include "decoder/pipeline/caption_service.h"

#include <ATen/Parallel.h>
#include <malloc.h>

#include <algorithm>
#include <future>
#include <opencv2/core/utility.hpp>
#include <stdexcept>

namespace captioner {

struct CaptionService::Job {
  std::filesystem::path name;
  std::shared_ptr<const SearchOptions> search;
  torch::Tensor pixels, flipped;  // (3, H, W) uint8 planes; flipped only for models that read the mirror
  FeatureViews views;             // after encoding: (D) per view
  Clock::time_point encoded_at;
  std::promise<PhotoResult> done;
};

namespace {

std::unique_lock<std::mutex> lock_if(std::mutex* m) {
  return m ? std::unique_lock<std::mutex>(*m) : std::unique_lock<std::mutex>();
}

// What the decoder thread holds while it works: the C API's folder calls' mutex (both set
// OpenBLAS's process-wide thread count), the encoders' turn when stages do not overlap, and the
// decoder's OpenBLAS threads.
struct DecoderTurn {  // members taken in this order, released in reverse
  DecoderTurn(const CaptionServiceOptions& options, std::mutex& turns)
      : exclusive(lock_if(options.exclusive)),
        turn(lock_if(options.threads.overlap ? nullptr : &turns)),
        blas(options.threads.decoder_blas) {}
  std::unique_lock<std::mutex> exclusive, turn;
  ScopedBlasThreads blas;
};

// One line: a LibTorch message may run on over several.
std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

}  // namespace

CaptionService::CaptionService(const ModelBundle& model, Encoder& encoder, CaptionServiceOptions options)
    : model_(model),
      encoder_(encoder),
      options_(std::move(options)),
      loader_(encoder.info().spec, options_.image),
      with_flipped_(model.num_views() > 1) {
  check_same_encoder(model_.encoder, encoder_.info(), "the model");
  if (options_.max_batch < 1 || options_.encoder_batch < 1 || options_.max_waiting_pixels < 1 || options_.batch_wait_ms < 0) {
    throw std::invalid_argument("CaptionServiceOptions: batch sizes and limits must be positive");
  }
  if (options_.max_decoding < 1) throw std::invalid_argument("CaptionServiceOptions: max_decoding must be positive");
  // Callers decode whole photos each; OpenCV's own thread pool on top would oversubscribe.
  cv::setNumThreads(1);
  const int workers = std::max(1, options_.threads.encoder_workers);
  try {
    for (int w = 0; w < workers; ++w) {
      encoders_.emplace_back([this] { encode_loop(); });
      std::lock_guard<std::mutex> lock(mutex_);
      ++encoders_running_;
    }
    decoder_ = std::thread([this] { decode_loop(); });
  } catch (...) {  // a thread could not start: stop those that did
    stop();
    throw;
  }
}

CaptionService::~CaptionService() { stop(); }

void CaptionService::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  pixels_ready_.notify_all();
  encoded_ready_.notify_all();
  for (auto& t : encoders_) t.join();
  if (decoder_.joinable()) decoder_.join();
}

size_t CaptionService::in_flight() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return in_flight_;
}

std::vector<PhotoResult> CaptionService::caption(const std::vector<PhotoInput>& photos, const SearchOptions& search) {
  std::vector<PhotoResult> results(photos.size());
  std::vector<std::pair<size_t, std::future<PhotoResult>>> pending;
  const auto& s = loader_.spec();
  const auto shared_search = std::make_shared<const SearchOptions>(search);
  for (size_t i = 0; i < photos.size(); ++i) {
    auto job = std::make_unique<Job>();
    job->name = photos[i].name;
    job->search = shared_search;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      ++in_flight_;
      decode_slot_.wait(lock, [&] { return decoding_ < options_.max_decoding; });
      ++decoding_;
    }
    std::string error;
    try {
      const cv::Mat rgb =
          photos[i].bytes ? loader_.decode_bytes(*photos[i].bytes, photos[i].name) : loader_.decode(photos[i].name);
      job->pixels = torch::empty({3, s.input_height, s.input_width}, torch::kByte);
      loader_.resize_to_planes(rgb, job->pixels.data_ptr<uint8_t>());
      if (with_flipped_) {
        job->flipped = torch::empty_like(job->pixels);
        loader_.resize_to_planes(rgb, job->flipped.data_ptr<uint8_t>(), true);
      }
    } catch (const std::exception& e) {  // ImageError names the photo; anything else (out of memory) is said so
      error =
          first_line(dynamic_cast<const ImageError*>(&e) ? e.what() : printable_name(photos[i].name.string()) + ": " + e.what());
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      --decoding_;
      if (!error.empty()) --in_flight_;
    }
    decode_slot_.notify_one();
    if (!error.empty()) {
      results[i].error = std::move(error);
      continue;
    }
    pending.emplace_back(i, job->done.get_future());
    {
      std::unique_lock<std::mutex> lock(mutex_);
      pixels_space_.wait(lock, [&] { return to_encode_.size() < static_cast<size_t>(options_.max_waiting_pixels); });
      to_encode_.push_back(std::move(job));
    }
    pixels_ready_.notify_one();
  }
  for (auto& [i, done] : pending) results[i] = done.get();
  return results;
}

void CaptionService::encode_loop() {
  at::internal::lazy_init_num_threads();  // before setting ours, or the first op resets it
  at::set_num_threads(std::max(1, options_.threads.encoder));
  for (;;) {
    std::vector<std::unique_ptr<Job>> batch;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      pixels_ready_.wait(lock, [&] { return stopping_ || !to_encode_.empty(); });
      if (to_encode_.empty()) break;  // stopping, and nothing left
      while (!to_encode_.empty() && batch.size() < static_cast<size_t>(options_.encoder_batch)) {
        batch.push_back(std::move(to_encode_.front()));
        to_encode_.pop_front();
      }
    }
    pixels_space_.notify_all();
    try {
      std::unique_lock<std::mutex> turn(turns_, std::defer_lock);
      if (!options_.threads.overlap) turn.lock();
      std::vector<torch::Tensor> pixels, flipped;
      for (auto& job : batch) {
        pixels.push_back(std::move(job->pixels));
        if (with_flipped_) flipped.push_back(std::move(job->flipped));
      }
      FeatureViews views{encoder_.encode(torch::stack(pixels))};
      if (with_flipped_) views.push_back(encoder_.encode(torch::stack(flipped)));
      for (size_t k = 0; k < batch.size(); ++k) {
        for (const auto& v : views) batch[k]->views.push_back(v[static_cast<int64_t>(k)]);
      }
    } catch (const std::exception& e) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        in_flight_ -= batch.size();
      }
      for (auto& job : batch) {
        job->done.set_value(PhotoResult{std::nullopt, printable_name(job->name.string()) + ": " + first_line(e.what())});
      }
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const auto now = Clock::now();
      for (auto& job : batch) {
        job->encoded_at = now;
        to_decode_.push_back(std::move(job));
      }
    }
    encoded_ready_.notify_one();
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    --encoders_running_;
  }
  encoded_ready_.notify_one();
}

void CaptionService::decode_loop() {
  at::internal::lazy_init_num_threads();
  at::set_num_threads(std::max(1, options_.threads.decoder));
  prepare();
  const size_t max_batch = static_cast<size_t>(options_.max_batch);
  size_t since_trim = 0;
  for (;;) {
    std::vector<std::unique_ptr<Job>> batch;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      encoded_ready_.wait(lock, [&] { return !to_decode_.empty() || (stopping_ && encoders_running_ == 0); });
      if (to_decode_.empty()) break;  // stopped, and nothing left
      // The first photo waits up to batch_wait for others to fill its batch.
      const auto deadline = to_decode_.front()->encoded_at + std::chrono::milliseconds(options_.batch_wait_ms);
      encoded_ready_.wait_until(lock, deadline, [&] { return stopping_ || to_decode_.size() >= max_batch; });
      const auto search = to_decode_.front()->search;
      for (auto it = to_decode_.begin(); it != to_decode_.end() && batch.size() < max_batch;) {
        if (same_decoding(*(*it)->search, *search)) {
          batch.push_back(std::move(*it));
          it = to_decode_.erase(it);
        } else {
          ++it;
        }
      }
    }
    std::vector<PhotoResult> results = caption_batch(batch);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      in_flight_ -= batch.size();
    }
    if (options_.on_batch) options_.on_batch(batch.size());
    // Answered last: a caller that returns sees its photos counted out and its batch reported.
    for (size_t i = 0; i < batch.size(); ++i) batch[i]->done.set_value(std::move(results[i]));
#ifdef __GLIBC__
    // As in CaptionPipeline::run: tensors freed on other threads than made them leave glibc's
    // per-thread arenas holding ever more free pages unless they are handed back now and then.
    if ((since_trim += batch.size()) >= 64) {
      malloc_trim(0);
      since_trim = 0;
    }
#endif
  }
}

void CaptionService::prepare() {
  // The decoder's tables (and the tag guide, when the model's decoding uses tags) before the
  // first photo arrives rather than on its time. A failure here is the first batch's to report:
  // it builds them again and answers each caller with the error.
  try {
    DecoderTurn turn(options_, turns_);
    scorer(model_.search.mi_weight).prepare();
    tag_guide(model_.search);
  } catch (const std::exception&) {
    // Not lost: the scorer stays without its tables, so the first batch builds them again and
    // answers every caller with this error.
  }
}

std::vector<PhotoResult> CaptionService::caption_batch(std::vector<std::unique_ptr<Job>>& batch) {
  const SearchOptions& search = *batch.front()->search;
  std::vector<PhotoResult> results(batch.size());
  try {
    DecoderTurn turn(options_, turns_);
    FeatureViews views;
    for (size_t v = 0; v < batch.front()->views.size(); ++v) {
      std::vector<torch::Tensor> rows;
      for (const auto& job : batch) rows.push_back(job->views[v]);
      views.push_back(torch::stack(rows));
    }
    TagGuide* guide = tag_guide(search);
    std::vector<CaptionedImage> captioned = caption_encoded(model_, scorer(search.mi_weight), guide, views, search);
    for (size_t i = 0; i < batch.size(); ++i) {
      captioned[i].file = batch[i]->name;
      results[i].captioned = std::move(captioned[i]);
    }
  } catch (const std::exception& e) {
    for (size_t i = 0; i < batch.size(); ++i) {
      results[i] = PhotoResult{std::nullopt, printable_name(batch[i]->name.string()) + ": " + first_line(e.what())};
    }
  }
  return results;
}

TagGuide* CaptionService::tag_guide(const SearchOptions& search) {
  if (!uses_tags(search)) return nullptr;
  // Loaded once; animal subjects alone go without it (load_tag_guide), tried once.
  if (!tag_guide_ && !(tag_guide_failed_ && search.tag_threshold == 0)) {
    std::string warning;
    auto guide = load_tag_guide(encoder_.info(), model_.vocab, search, warning);
    if (guide) tag_guide_ = std::make_unique<TagGuide>(std::move(*guide));
    tag_guide_failed_ = !guide;
  }
  return tag_guide_.get();
}

SequenceScorer& CaptionService::scorer(double mi_weight) {
  auto it = scorers_.find(mi_weight);
  if (it == scorers_.end()) {
    if (scorers_.size() >= 8) scorers_.clear();
    it = scorers_.emplace(mi_weight, model_.make_scorer(mi_weight)).first;
  }
  return *it->second;
}

}  // namespace captioner
