// Captioning one photo collection in N parts (N processes or machines): which photos part K
// takes, what its output file is called, and how the parts become one output again.
// Part K of N takes every N-th photo starting at the K-th (0-based) of the sorted list.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "datasets/caption_writer.h"

namespace captioner {

struct ShardSpec {
  int index = 0;  // K, 0-based
  int count = 1;  // N; 1: not sharded
  bool sharded() const { return count > 1; }
};

// "K/N" with 0 <= K < N; throws a one-line error otherwise.
ShardSpec parse_shard(const std::string& text);
// The shard torchrun's environment describes (RANK of WORLD_SIZE), or 0/1 outside torchrun.
ShardSpec shard_from_environment();

// out.json -> out.part-K-of-N.json (the part a sharded run writes instead of `output`).
std::filesystem::path shard_part_file(const std::filesystem::path& output, const ShardSpec& shard);

// What one part was asked to do, written beside it (<part>.manifest) when its run starts and again
// when it finishes: which run (every photo of the whole list, fingerprinted), which of its photos
// are this part's, and, once finished, which of them could not be read.
struct ShardManifest {
  ShardSpec shard;
  size_t total_photos = 0;              // in the whole run, all parts together
  std::string run_fingerprint;          // of the whole run's photo list, in order
  std::vector<std::string> photos;      // this part's, in the order of the whole list
  std::vector<std::string> unreadable;  // of those, the ones its run could not caption
  bool finished = false;                // false: the run stopped (or is still running)
};

std::filesystem::path shard_manifest_file(const std::filesystem::path& part);
// A fingerprint of the whole run's photo list, as stored in every part's manifest.
std::string photo_list_fingerprint(const std::vector<std::filesystem::path>& photos);
void write_shard_manifest(const std::filesystem::path& part, const ShardManifest& manifest);
// Throws a one-line error naming the part when its manifest is missing or malformed.
ShardManifest read_shard_manifest(const std::filesystem::path& part);

struct MergedCaptions {
  std::vector<CaptionRow> rows;         // every captioned photo of the run once, in path order
  std::vector<std::string> unreadable;  // photos the parts' runs could not read (not in rows)
};

// Joins the parts of one sharded run, trusting nothing: each part must carry its manifest, all
// must come from the same run (photo list, N) and together be parts 0..N-1 of it, each finished;
// each part's rows must be exactly its own photos, each once (or named unreadable). Throws a
// one-line error naming the part and the first thing that is wrong.
MergedCaptions merge_caption_parts(const std::vector<std::filesystem::path>& parts);

}  // namespace captioner
