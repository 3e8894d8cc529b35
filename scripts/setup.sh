#!/usr/bin/env bash
# One-step set-up on a fresh Debian 12 machine: installs the packages captioner needs (idempotent),
# builds it, and produces the default MobileNetV2 encoder. Run as root or with sudo available.
#   scripts/setup.sh            install + build + encoder
#   SKIP_APT=1 scripts/setup.sh  build only (packages already there)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-2}

PACKAGES=(
  build-essential cmake pkg-config
  libtorch-dev libopenblas0-pthread          # LibTorch; OpenBLAS instead of the ~6x slower reference BLAS
  libopencv-dev nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev
  libgloo-dev                                # c10d's Gloo backend headers: multi-process training and captioning
  libsleef-dev                               # SLEEF's header: the fused LSTM decoding step calls LibTorch's exp/tanh
  libdnnl-dev                                # oneDNN's headers: training's bf16 matrix products
  libjpeg-dev libexif-dev                    # JPEG decoding that refuses damaged photos; EXIF orientation
  libpng-dev                                 # PNG decoding whose messages name the file
  libgoogle-glog-dev                         # LibTorch's logger, quieted where c10d repeats its errors
  libcpp-httplib-dev                         # captioner serve
  fonts-dejavu-core                          # captioner plot's text (OpenCV's freetype module draws it)
  python3-torch python3-torchvision python3-numpy   # scripts/ only: converting and exporting encoders
  darknet                                    # its sample photos (dog, eagle, horses...) for the README demo
  wordnet-base                               # WordNet 3.0 nouns: ImageNet classes -> caption words (--tag-confidence)
  python3-skimage                            # its sample photos (astronaut, chelsea the cat...) for the demo
  chromium                                   # tests open the HTML report in a real headless browser
  clang libclang-rt-14-dev                   # libFuzzer targets (tests/fuzz) and the sanitizer runtime
  clang-format                               # the house style (.clang-format), checked in CI
)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ -z "${SKIP_APT:-}" ]; then
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: all Debian packages present"
  fi
fi

echo "setup: building in $BUILD_DIR"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j"$JOBS"

if [ -x scripts/make_default_encoder.sh ]; then
  scripts/make_default_encoder.sh
fi
echo "setup: done. Try: $BUILD_DIR/captioner --help"
