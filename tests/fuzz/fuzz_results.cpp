// COCO results files (eval --results) and caption outputs read back by caption --resume.
#include <stdexcept>

#include "datasets/caption_writer.h"
#include "datasets/metrics/caption_metrics.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const char* ext[] = {".json", ".jsonl", ".csv", ".txt"};
  try {
    captioner::read_caption_file(fuzz_file(data + 1, size - 1, ext[data[0] % 4]));
  } catch (const std::exception&) {
  }
  try {
    captioner::load_coco_results(fuzz_file(data, size, ".results.json"));
  } catch (const std::runtime_error&) {
  }
  return 0;
}
