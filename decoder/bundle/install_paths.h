// Where the installation keeps what commands use by default: the shipped model, the encoders and
// the feature cache. Found next to the executable (build/ in the source tree, or an installed
// share/captioner), else under the current directory.
#pragma once

#include <filesystem>

namespace captioner {

// First of <exe>/../<rel>, <exe>/../share/captioner/<rel>, ./<rel> where <that>/<probe> exists;
// the first candidate when none does.
std::filesystem::path find_installed_file(const std::filesystem::path& rel, const std::filesystem::path& probe = {});

// The model `captioner caption` uses without --model: $CAPTIONER_MODEL, else models/default next
// to the executable's source tree or the current directory.
std::filesystem::path default_model_dir();

// The encoder `captioner train` uses without --encoder: models/encoders/mobilenet_v2.pt (what
// scripts/setup.sh builds), found like default_model_dir().
std::filesystem::path default_encoder_file();

// $XDG_CACHE_HOME/captioner, or ~/.cache/captioner.
std::filesystem::path default_cache_dir();

}  // namespace captioner
