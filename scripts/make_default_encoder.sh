#!/usr/bin/env bash
# Builds the default encoder, models/encoders/mobilenet_v2.pt (+ .json sidecar), from the public
# ImageNet MobileNetV2 TFLite file: taken from ../shared when present, otherwise downloaded from
# google-coral/test_data (Apache-2.0) and checked against its sha256. Skips work already done.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=models/encoders/mobilenet_v2.pt
SHA256=7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776
COMMIT=104342d2d3480b3e66203073dac24f4e2dbb4c41
URL_BASE=https://github.com/google-coral/test_data/raw/$COMMIT
SHARED=${CAPTIONER_SHARED:-../shared}/models/mobilenet_v2_coral

if [ -f "$OUT" ] && [ -f "$OUT.json" ] && grep -q "$SHA256" "$OUT.json" && [ -f "$OUT.reference.json" ]; then
  echo "encoder: $OUT is up to date"
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
/usr/bin/python3 scripts/convert_tflite_mobilenet.py --tflite "$TFLITE" --output "$OUT" \
  ${LABELS:+$( [ -f "$LABELS" ] && echo --labels "$LABELS" )} \
  --reference-image "${CHECK[0]:-}" ${CHECK[@]:+--check "${CHECK[@]}"}
