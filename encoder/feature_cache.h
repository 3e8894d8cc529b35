// Encodes a dataset's images once and keeps the features on disk, so training epochs and later
// runs reuse them. The cache file is keyed by the encoder's fingerprint and by every image's path,
// size and modification time: a different encoder or image set can never be mixed in.
#pragma once

#include <torch/types.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "encoder/encoder.h"

namespace captioner {

struct FeatureSet {
  torch::Tensor features;             // (N, D) float32; rows of failed images are zero
  torch::Tensor flipped;              // (N, D) features of the mirrored images, when asked for
  std::vector<bool> ok;               // ok[i]: image i was read and encoded
  std::vector<std::string> failures;  // one line per unreadable image
  std::vector<std::string> warnings;  // e.g. the cache could not be written (the features are fine)
  bool from_cache = false;

  // Keeps only the rows of images that were read (features, flipped and ok shrink alike) and
  // returns the input positions kept, in order.
  std::vector<int64_t> drop_unreadable();
};

struct FeatureCacheOptions {
  std::filesystem::path cache_dir;  // empty: compute without caching
  bool with_flipped = false;
  int batch_size = 8;
  int workers = 2;
  std::function<void(size_t done, size_t total)> progress;  // called after each batch
  // Several processes sharing the work: this one encodes every shard_count-th run of batch_size
  // images, starting at run shard_index (so each batch is the one a single process would form).
  // `sum` adds tensors over the processes in place: it decides whether all found the cache (else
  // all encode) and fills in the rows the others encoded (zero here). Only the process with
  // write_cache writes the cache file.
  int shard_index = 0;
  int shard_count = 1;
  std::function<void(const std::vector<torch::Tensor>&)> sum;
  bool write_cache = true;
};

FeatureSet compute_features(Encoder& encoder, const std::vector<std::filesystem::path>& images,
                            const FeatureCacheOptions& options);

// The cache file that compute_features would use for these inputs.
std::filesystem::path feature_cache_file(const Encoder& encoder, const std::vector<std::filesystem::path>& images,
                                         const FeatureCacheOptions& options);

}  // namespace captioner
