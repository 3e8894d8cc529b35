#include "decoder/bundle/ensemble.h"

#include <stdexcept>

namespace captioner {

ModelBundle make_ensemble(std::vector<ModelBundle> parts, bool flip_tta) {
  if (parts.empty()) throw std::invalid_argument("an ensemble needs at least one model");
  ModelBundle out = std::move(parts.front());
  std::vector<BundleMember> decoders = std::move(out.members);
  for (size_t i = 1; i < parts.size(); ++i) {
    if (parts[i].vocab.fingerprint() != out.vocab.fingerprint()) {
      throw std::invalid_argument(
          "model " + std::to_string(i + 1) +
          " has another vocabulary: ensemble members must be trained on the same captions with the same --min-word-count");
    }
    if (!same_encoder(parts[i].encoder, out.encoder)) {
      throw std::invalid_argument("model " + std::to_string(i + 1) + " was trained with another encoder");
    }
    for (auto& m : parts[i].members) decoders.push_back(std::move(m));
  }
  for (const auto& m : decoders) {
    if (m.view == 0) out.members.push_back({m.decoder, 0, ""});
  }
  if (flip_tta) {
    for (const auto& m : decoders) {
      if (m.view == 0) out.members.push_back({m.decoder, 1, ""});
    }
  }
  out.training["ensemble"] = {{"members", decoders.size()}, {"flip_tta", flip_tta}};
  return out;
}

}  // namespace captioner
