// Ensembles: bundles trained on the same captions combined into one bundle whose decoders vote at
// every decoding step (EnsembleScorer averages their probabilities), optionally over the mirrored
// photo too. The result is an ordinary ModelBundle with several members.
#pragma once

#include <vector>

#include "decoder/bundle/model_bundle.h"

namespace captioner {

// Every part must share the vocabulary and the encoder; with flip_tta every decoder also reads
// the mirrored photo. Decoding defaults and the training record come from the first bundle.
ModelBundle make_ensemble(std::vector<ModelBundle> parts, bool flip_tta);

}  // namespace captioner
