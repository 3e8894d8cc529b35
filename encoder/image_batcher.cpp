#include "encoder/image_batcher.h"

#include <torch/torch.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "datasets/html_report.h"

namespace captioner {

ImageBatcher::ImageBatcher(std::vector<std::filesystem::path> files, ImageLoader loader, ImageBatcherOptions options,
                           std::vector<std::string_view> in_memory)
    : files_(std::move(files)), in_memory_(std::move(in_memory)), loader_(std::move(loader)), options_(options) {
  if (!in_memory_.empty() && in_memory_.size() != files_.size()) {
    throw std::invalid_argument("ImageBatcher: one name per in-memory photo");
  }
  if (options_.batch_size < 1) options_.batch_size = 1;
  if (options_.workers < 1) options_.workers = 1;
  if (options_.prefetch < 1) options_.prefetch = 1;
  num_batches_ = (files_.size() + options_.batch_size - 1) / options_.batch_size;
  // Each worker decodes whole images; OpenCV's own thread pool on top would oversubscribe.
  cv::setNumThreads(1);
  for (int i = 0; i < options_.workers; ++i) threads_.emplace_back([this] { work(); });
}

ImageBatcher::~ImageBatcher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  space_.notify_all();
  ready_.notify_all();
  for (auto& t : threads_) t.join();
}

ImageBatch ImageBatcher::load_batch(size_t number) const {
  const size_t begin = number * options_.batch_size;
  const size_t end = std::min(files_.size(), begin + options_.batch_size);
  const auto& s = loader_.spec();
  const int64_t n = static_cast<int64_t>(end - begin);
  ImageBatch batch;
  batch.number = number;
  auto pixels = torch::empty({n, 3, s.input_height, s.input_width}, torch::kByte);
  torch::Tensor flipped;
  if (options_.with_flipped) flipped = torch::empty_like(pixels);
  const int64_t stride = loader_.values_per_image();
  int64_t row = 0;
  for (size_t i = begin; i < end; ++i) {
    try {
      cv::Mat rgb = in_memory_.empty() ? loader_.decode(files_[i]) : loader_.decode_bytes(in_memory_[i], files_[i]);
      loader_.resize_to_planes(rgb, pixels.data_ptr<uint8_t>() + row * stride);
      if (flipped.defined()) loader_.resize_to_planes(rgb, flipped.data_ptr<uint8_t>() + row * stride, true);
      if (options_.thumbnail_size > 0) batch.thumbnails.push_back(make_thumbnail(rgb, options_.thumbnail_size));
      batch.indices.push_back(i);
      ++row;
    } catch (const ImageError& e) {
      batch.failures.push_back(e);
      batch.failed_indices.push_back(i);
    } catch (const std::exception& e) {  // e.g. out of memory on a pathological file
      batch.failures.emplace_back(files_[i], e.what());
      batch.failed_indices.push_back(i);
    }
  }
  batch.pixels = row == n ? pixels : pixels.narrow(0, 0, row).clone();
  if (flipped.defined()) batch.flipped = row == n ? flipped : flipped.narrow(0, 0, row).clone();
  return batch;
}

void ImageBatcher::work() {
  for (;;) {
    size_t number;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      space_.wait(lock, [&] {
        return stopping_ || next_to_load_ >= num_batches_ ||
               next_to_load_ < next_to_hand_out_ + static_cast<size_t>(options_.prefetch);
      });
      if (stopping_ || next_to_load_ >= num_batches_) return;
      number = next_to_load_++;
    }
    ImageBatch batch = load_batch(number);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_.emplace(number, std::move(batch));
    }
    ready_.notify_all();
  }
}

bool ImageBatcher::next(ImageBatch& batch) {
  std::unique_lock<std::mutex> lock(mutex_);
  // Several consumers may wait here: each takes the next batch in order, and one that finds the
  // last batch taken by another returns false.
  ready_.wait(lock, [&] { return next_to_hand_out_ >= num_batches_ || done_.count(next_to_hand_out_) > 0; });
  if (next_to_hand_out_ >= num_batches_) return false;
  auto it = done_.find(next_to_hand_out_);
  batch = std::move(it->second);
  done_.erase(it);
  ++next_to_hand_out_;
  lock.unlock();
  space_.notify_all();
  ready_.notify_all();  // the other consumers now wait for the following batch
  return true;
}

}  // namespace captioner
