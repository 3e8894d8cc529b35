#include "encoder/feature_cache.h"

#include <torch/torch.h>

#include <cstring>
#include <fstream>
#include <unordered_map>
#include <nlohmann/json.hpp>

#include "datasets/file_io.h"
#include "encoder/image_batcher.h"

namespace captioner {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {
constexpr char kMagic[8] = {'C', 'A', 'P', 'F', 'E', 'A', 'T', '1'};

uint64_t inputs_key(const Encoder& encoder, const std::vector<fs::path>& images, bool flipped) {
  uint64_t h = fnv1a64(encoder.info().fingerprint());
  h = fnv1a64(encoder.info().weights_hash, h);
  h = fnv1a64(flipped ? "flipped" : "plain", h);
  h = fnv1a64("jpeg-dct-reduced", h);  // large JPEGs are decoded reduced (ImageLoaderOptions) since 2026-12-07
  for (const auto& p : images) {
    std::error_code ec;
    fs::path abs = fs::absolute(p, ec);
    h = fnv1a64(abs.string(), h);
    auto size = fs::file_size(p, ec);
    h = fnv1a64(std::to_string(ec ? 0 : size), h);
    auto mtime = fs::last_write_time(p, ec);
    h = fnv1a64(std::to_string(ec ? 0 : mtime.time_since_epoch().count()), h);
  }
  return h;
}

// FNV-1a over the feature bytes (and the mirrored ones): detects damage, not forgery.
std::string features_checksum(const FeatureSet& f) {
  uint64_t h = fnv1a64("captioner-features");
  for (const auto* t : {&f.features, &f.flipped}) {
    if (!t->defined()) continue;
    auto c = t->contiguous();
    h = fnv1a64(std::string_view(reinterpret_cast<const char*>(c.data_ptr<float>()), c.numel() * sizeof(float)), h);
  }
  return hex64(h);
}

bool read_cache(const fs::path& file, const std::string& key, size_t n, int64_t dim, bool flipped, FeatureSet& out) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return false;
  char magic[8];
  uint64_t header_len = 0;
  if (!in.read(magic, 8) || std::memcmp(magic, kMagic, 8) != 0) return false;
  if (!in.read(reinterpret_cast<char*>(&header_len), 8) || header_len > (64u << 20)) return false;
  std::string header(header_len, '\0');
  if (!in.read(header.data(), static_cast<std::streamsize>(header_len))) return false;
  json h = json::parse(header, nullptr, false);
  if (h.is_discarded() || h.value("key", "") != key || h.value("count", size_t(0)) != n || h.value("dim", int64_t(0)) != dim ||
      h.value("flipped", false) != flipped) {
    return false;
  }
  out.features = torch::empty({static_cast<int64_t>(n), dim});
  size_t bytes = n * static_cast<size_t>(dim) * sizeof(float);
  if (!in.read(reinterpret_cast<char*>(out.features.data_ptr<float>()), static_cast<std::streamsize>(bytes))) return false;
  if (flipped) {
    out.flipped = torch::empty({static_cast<int64_t>(n), dim});
    if (!in.read(reinterpret_cast<char*>(out.flipped.data_ptr<float>()), static_cast<std::streamsize>(bytes))) return false;
  }
  // The numbers themselves are checked, not just the header: a flipped bit, a NaN or a block of
  // zeros written into the file would otherwise flow silently into training and captions.
  if (h.value("checksum", std::string()) != features_checksum(out)) return false;
  if (!torch::isfinite(out.features).all().item<bool>()) return false;
  if (flipped && !torch::isfinite(out.flipped).all().item<bool>()) return false;
  out.ok.assign(n, true);
  try {
    for (const auto& f : h.at("failed")) {
      if (!f.at(0).is_number_unsigned()) return false;  // a damaged header: recompute
      out.ok.at(f.at(0).get<size_t>()) = false;
      out.failures.push_back(f.at(1).get<std::string>());
    }
  } catch (const std::exception&) {
    return false;  // a damaged header: recompute
  }
  out.from_cache = true;
  return true;
}

void write_cache(const fs::path& file, const std::string& key, const FeatureSet& fs_) {
  json failed = json::array();
  for (size_t i = 0, k = 0; i < fs_.ok.size(); ++i) {
    if (!fs_.ok[i]) failed.push_back({i, fs_.failures.at(k++)});
  }
  json h{{"key", key},
         {"checksum", features_checksum(fs_)},
         {"count", fs_.ok.size()},
         {"dim", fs_.features.size(1)},
         {"flipped", fs_.flipped.defined()},
         {"failed", failed}};
  std::string header = h.dump(-1, ' ', false, json::error_handler_t::replace);
  uint64_t len = header.size();
  fs::create_directories(file.parent_path());
  AtomicFileWriter w(file);
  w.stream().write(kMagic, 8);
  w.stream().write(reinterpret_cast<const char*>(&len), 8);
  w.stream().write(header.data(), static_cast<std::streamsize>(len));
  auto write_tensor = [&](const torch::Tensor& t) {
    auto c = t.contiguous();
    w.stream().write(reinterpret_cast<const char*>(c.data_ptr<float>()), static_cast<std::streamsize>(c.numel() * sizeof(float)));
  };
  write_tensor(fs_.features);
  if (fs_.flipped.defined()) write_tensor(fs_.flipped);
  w.commit();
}
}  // namespace

fs::path feature_cache_file(const Encoder& encoder, const std::vector<fs::path>& images, const FeatureCacheOptions& options) {
  return options.cache_dir / ("features-" + hex64(inputs_key(encoder, images, options.with_flipped)) + ".bin");
}

std::vector<int64_t> FeatureSet::drop_unreadable() {
  std::vector<int64_t> kept;
  for (size_t i = 0; i < ok.size(); ++i) {
    if (ok[i]) kept.push_back(static_cast<int64_t>(i));
  }
  if (kept.size() == ok.size()) return kept;
  auto index = torch::tensor(kept);
  features = features.index_select(0, index);
  if (flipped.defined()) flipped = flipped.index_select(0, index);
  ok.assign(kept.size(), true);
  return kept;
}

namespace {

// The rows this process encodes: all of them, or under sharding every shard_count-th run of
// batch_size images (whole batches, so each process's batches stay full).
std::vector<size_t> rows_of_this_shard(size_t n, const FeatureCacheOptions& options) {
  std::vector<size_t> rows;
  const size_t run = static_cast<size_t>(std::max(1, options.batch_size));
  for (size_t i = 0; i < n; ++i) {
    if (options.shard_count <= 1 ||
        static_cast<int>((i / run) % static_cast<size_t>(options.shard_count)) == options.shard_index) {
      rows.push_back(i);
    }
  }
  return rows;
}

// Encodes images[rows] into their rows of `out` (zeros elsewhere). Failures go to
// out.failures, or under sharding to `problem` by file, to be put in row order once all shards
// are summed.
void encode_rows(Encoder& encoder, const std::vector<fs::path>& images, const std::vector<size_t>& rows,
                 const FeatureCacheOptions& options, FeatureSet& out, std::unordered_map<std::string, std::string>& problem) {
  const auto n = static_cast<int64_t>(images.size());
  const int64_t dim = encoder.info().feature_dim;
  out.features = torch::zeros({n, dim});
  if (options.with_flipped) out.flipped = torch::zeros({n, dim});
  out.ok.assign(images.size(), false);
  std::vector<fs::path> mine;
  for (size_t r : rows) mine.push_back(images[r]);
  ImageBatcherOptions bopt;
  bopt.batch_size = options.batch_size;
  bopt.workers = options.workers;
  bopt.with_flipped = options.with_flipped;
  ImageBatcher batcher(mine, ImageLoader(encoder.info().spec), bopt);
  ImageBatch batch;
  size_t done = 0;
  while (batcher.next(batch)) {
    done += batch.indices.size() + batch.failures.size();
    for (const auto& f : batch.failures) {
      if (options.shard_count > 1) {
        problem[f.file().string()] = f.what();
      } else {
        out.failures.push_back(f.what());
      }
    }
    if (!batch.indices.empty()) {
      std::vector<int64_t> batch_rows;
      for (size_t i : batch.indices) batch_rows.push_back(static_cast<int64_t>(rows[i]));
      auto idx = torch::tensor(batch_rows);
      out.features.index_copy_(0, idx, encoder.encode(batch.pixels));
      if (options.with_flipped) out.flipped.index_copy_(0, idx, encoder.encode(batch.flipped));
      for (int64_t r : batch_rows) out.ok[static_cast<size_t>(r)] = true;
    }
    if (options.progress) options.progress(done, mine.size());
  }
}

// Every row was encoded by exactly one process and is zero elsewhere: the sum is the whole. One
// failure line per failed row, in row order (the order the cache file pairs them with rows).
void sum_shards(const std::vector<fs::path>& images, const FeatureCacheOptions& options, FeatureSet& out,
                const std::unordered_map<std::string, std::string>& problem) {
  const size_t n = images.size();
  auto ok = torch::zeros({static_cast<int64_t>(n)});
  auto oa = ok.accessor<float, 1>();
  for (size_t i = 0; i < n; ++i) oa[static_cast<int64_t>(i)] = out.ok[i] ? 1.0f : 0.0f;
  std::vector<torch::Tensor> parts{out.features, ok};
  if (options.with_flipped) parts.push_back(out.flipped);
  options.sum(parts);
  for (size_t i = 0; i < n; ++i) {
    out.ok[i] = oa[static_cast<int64_t>(i)] > 0.5f;
    if (out.ok[i]) continue;
    auto it = problem.find(images[i].string());
    out.failures.push_back(it != problem.end() ? it->second : images[i].string() + ": could not be read (by another process)");
  }
}

}  // namespace

FeatureSet compute_features(Encoder& encoder, const std::vector<fs::path>& images, const FeatureCacheOptions& options) {
  const size_t n = images.size();
  const std::string key = hex64(inputs_key(encoder, images, options.with_flipped));
  const fs::path file = feature_cache_file(encoder, images, options);
  const bool sharded = options.shard_count > 1;
  if (sharded && (!options.sum || options.shard_index < 0 || options.shard_index >= options.shard_count)) {
    throw std::invalid_argument("sharded feature extraction needs a shard index below the count and a sum");
  }
  FeatureSet out;
  bool hit = false;
  try {
    hit = !options.cache_dir.empty() && read_cache(file, key, n, encoder.info().feature_dim, options.with_flipped, out);
  } catch (const std::exception&) {
    hit = false;  // a damaged cache file is recomputed, never trusted
  }
  if (sharded) {  // one process without the cache makes all encode: the sums below need everyone
    auto misses = torch::tensor({hit ? 0.0f : 1.0f});
    options.sum({misses});
    hit = misses.item<float>() == 0;
  }
  if (hit) {
    if (options.progress) options.progress(n, n);
    return out;
  }
  out = FeatureSet{};
  std::unordered_map<std::string, std::string> problem;  // sharded: this process's failures by file
  encode_rows(encoder, images, rows_of_this_shard(n, options), options, out, problem);
  if (sharded) sum_shards(images, options, out, problem);
  if (!options.cache_dir.empty() && options.write_cache) {
    // A cache is only an optimisation: one that cannot be written (read-only, full, not a
    // folder) costs the next run the encoding, never this run its result.
    try {
      write_cache(file, key, out);
    } catch (const std::exception& e) {
      out.warnings.push_back(std::string("features not cached: ") + e.what() + " (they will be computed again next time)");
    }
  }
  return out;
}

}  // namespace captioner
