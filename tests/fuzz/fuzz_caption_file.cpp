// Caption files of every format (detected from the content): COCO, Karpathy, Flickr8k tokens.
#include <stdexcept>

#include "datasets/caption_dataset.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  captioner::DatasetOptions o;
  o.check_images = false;
  try {
    auto ds = captioner::load_caption_file(fuzz_file(data, size, ".captions"), o);
    for (const auto& r : ds.records) {
      if (r.captions.empty()) __builtin_trap();  // loaders never return uncaptioned images
    }
  } catch (const std::runtime_error&) {
  }
  return 0;
}
