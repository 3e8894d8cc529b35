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

// The rows of all parts as one output: every photo exactly once (a photo in two parts is an
// error naming both), in path order (the order a single run over a folder writes). Throws when
// the parts are named part-K-of-N and some K is missing or N differs.
std::vector<CaptionRow> merge_caption_parts(const std::vector<std::filesystem::path>& parts);

}  // namespace captioner
