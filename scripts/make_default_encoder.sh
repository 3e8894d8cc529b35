#!/usr/bin/env bash
# Builds the encoders from the public ImageNet MobileNetV2 TFLite file (taken from ../shared when
# present, otherwise downloaded from google-coral/test_data, Apache-2.0, and checked against its
# sha256): models/encoders/mobilenet_v2_int8.pt, the default (the network's native uint8
# precision on oneDNN), and mobilenet_v2.pt, the same weights in float32. Each has a .json sidecar.
# Skips work already done.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=models/encoders/mobilenet_v2.pt
OUT_INT8=models/encoders/mobilenet_v2_int8.pt
SHA256=7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776
COMMIT=104342d2d3480b3e66203073dac24f4e2dbb4c41
URL_BASE=https://github.com/google-coral/test_data/raw/$COMMIT
SHARED=${CAPTIONER_SHARED:-../shared}/models/mobilenet_v2_coral

up_to_date() { [ -f "$1" ] && [ -f "$1.json" ] && grep -q "$SHA256" "$1.json" && [ -f "$1.reference.json" ] && [ -f "$1.classifier.pt" ]; }
if up_to_date "$OUT" && up_to_date "$OUT_INT8" && grep -q '"precision": "int8"' "$OUT_INT8.json"; then
  echo "encoder: $OUT_INT8 and $OUT are up to date"
  exit 0
fi

if [ -f "$SHARED/mobilenet_v2_1.0_224_quant.tflite" ]; then
  TFLITE=$SHARED/mobilenet_v2_1.0_224_quant.tflite
  LABELS=$SHARED/imagenet_labels.txt
else
  mkdir -p .cache
  TFLITE=.cache/mobilenet_v2_1.0_224_quant.tflite
  LABELS=.cache/imagenet_labels.txt
  if [ ! -f "$TFLITE" ]; then
    echo "encoder: downloading the MobileNetV2 TFLite model (3.6 MB) from google-coral/test_data"
    curl -fsSL -o "$TFLITE.part" "$URL_BASE/mobilenet_v2_1.0_224_quant.tflite"
    mv "$TFLITE.part" "$TFLITE"
  fi
  [ -f "$LABELS" ] || curl -fsSL -o "$LABELS" "$URL_BASE/imagenet_labels.txt" || true
fi
echo "$SHA256  $TFLITE" | sha256sum -c --quiet - || { echo "encoder: $TFLITE has the wrong sha256" >&2; exit 1; }

CHECK=()
for f in dog eagle horses; do
  [ -f "/usr/share/darknet/data/$f.jpg" ] && CHECK+=("/usr/share/darknet/data/$f.jpg")
done
# int8 is checked against float on real photos (cosine, ImageNet top-1/top-5); the figures go
# into its sidecar.
AGREE=()
FLICKR=${CAPTIONER_SHARED:-../shared}/datasets/flickr8k/images
if [ -d "$FLICKR" ]; then
  mapfile -t AGREE < <(ls "$FLICKR" | sort | head -n 200 | sed "s|^|$FLICKR/|")
fi
for precision in float int8; do
  out=$OUT
  [ "$precision" = int8 ] && out=$OUT_INT8
  /usr/bin/python3 scripts/convert_tflite_mobilenet.py --tflite "$TFLITE" --output "$out" --precision "$precision" \
    ${LABELS:+$( [ -f "$LABELS" ] && echo --labels "$LABELS" )} \
    --reference-image "${CHECK[0]:-}" ${CHECK[@]:+--check "${CHECK[@]}"} \
    $( [ "$precision" = int8 ] && [ ${#AGREE[@]} -gt 0 ] && echo --agreement-photos "${AGREE[@]}" )
done
