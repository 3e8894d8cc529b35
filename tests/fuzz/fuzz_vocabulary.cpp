// vocab.json as found inside a model directory.
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "datasets/json_util.h"
#include "vocab/vocabulary.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto v = captioner::Vocabulary::from_json(
        captioner::parse_json_text(std::string(reinterpret_cast<const char*>(data), size), "fuzz"), "fuzz");
    // Whatever loads must round-trip.
    auto again = captioner::Vocabulary::from_json(v.to_json(), "again");
    if (again.fingerprint() != v.fingerprint()) __builtin_trap();
    v.decode(v.encode({"a", "b"}));
  } catch (const std::runtime_error&) {
  }
  return 0;
}
