// Loads images on worker threads and hands out preprocessed batches in input order, so JPEG
// decoding overlaps the encoder's forward pass. At most `prefetch` batches wait in memory, so
// memory use stays flat however many images there are.
#pragma once

#include <torch/types.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>
#include <string_view>
#include <vector>

#include "encoder/image_loader.h"

namespace captioner {

struct ImageBatch {
  size_t number = 0;                    // 0-based batch number
  std::vector<size_t> indices;          // inputs that loaded, in input order
  torch::Tensor pixels;                 // (indices.size(), 3, H, W) uint8, see ImageLoader::resize_to_planes
  torch::Tensor flipped;                // same, mirrored left-right; defined only when asked for
  std::vector<ImageError> failures;     // inputs of this batch that did not load
  std::vector<size_t> failed_indices;   // their positions in the input list
  std::vector<std::string> thumbnails;  // JPEG thumbnails of the loaded images, when asked for
};

struct ImageBatcherOptions {
  int batch_size = 8;
  int workers = 2;
  int prefetch = 4;           // batches loaded ahead of the consumer
  bool with_flipped = false;  // also produce mirrored copies (test-time augmentation, training)
  int thumbnail_size = 0;     // > 0: also a JPEG thumbnail whose longer side is this many pixels
};

class ImageBatcher {
 public:
  // `in_memory`: the photos' encoded bytes (JPEG, PNG...), one per file, when they are already in
  // memory; `files` then only name them (in errors). The bytes must outlive the batcher.
  ImageBatcher(std::vector<std::filesystem::path> files, ImageLoader loader, ImageBatcherOptions options,
               std::vector<std::string_view> in_memory = {});
  ~ImageBatcher();
  ImageBatcher(const ImageBatcher&) = delete;
  ImageBatcher& operator=(const ImageBatcher&) = delete;

  size_t num_batches() const { return num_batches_; }
  // Blocks until the next batch is ready; false after the last one. Safe to call from several
  // threads: each call gets the next batch in input order.
  bool next(ImageBatch& batch);

 private:
  void work();
  ImageBatch load_batch(size_t number) const;

  std::vector<std::filesystem::path> files_;
  std::vector<std::string_view> in_memory_;
  ImageLoader loader_;
  ImageBatcherOptions options_;
  size_t num_batches_ = 0;

  std::mutex mutex_;
  std::condition_variable ready_;  // a batch was finished
  std::condition_variable space_;  // the consumer took one
  std::map<size_t, ImageBatch> done_;
  size_t next_to_load_ = 0;
  size_t next_to_hand_out_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace captioner
