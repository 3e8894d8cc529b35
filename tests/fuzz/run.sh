#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 30), seeded from real files: the COCO and
# Flickr8k caption files in ../shared (when present), this repository's models and test images.
#   tests/fuzz/run.sh BUILD_DIR [SECONDS]     (FUZZ_SEED=N: another seed; CI uses 1 so its runs repeat)
set -euo pipefail
BUILD=${1:?usage: run.sh BUILD_DIR [SECONDS]}
SECONDS_EACH=${2:-30}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHARED=${CAPTIONER_SHARED:-$ROOT/../shared}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

mkdir -p "$WORK"/{caption_file,vocabulary,results,caption_text,image}
if [ -d "$SHARED/datasets" ]; then
  head -c 60000 "$SHARED/datasets/coco_mini/captions_train2017.json" > "$WORK/caption_file/coco_prefix.json"
  /usr/bin/python3 - "$SHARED" "$WORK" <<'PY'
import json, sys
shared, work = sys.argv[1], sys.argv[2]
coco = json.load(open(shared + "/datasets/coco_mini/captions_train2017.json"))
ids = {i["id"] for i in coco["images"][:3]}
small = dict(coco, images=coco["images"][:3], annotations=[a for a in coco["annotations"] if a["image_id"] in ids])
json.dump(small, open(work + "/caption_file/coco_small.json", "w"))
karpathy = {"images": [{"filename": i["file_name"], "filepath": "train2017", "split": "val", "cocoid": i["id"],
            "sentences": [{"raw": a["caption"], "tokens": a["caption"].lower().split()} for a in small["annotations"] if a["image_id"] == i["id"]]}
            for i in small["images"]]}
json.dump(karpathy, open(work + "/caption_file/karpathy.json", "w"))
json.dump([{"image_id": a["image_id"], "caption": a["caption"]} for a in small["annotations"][:3]], open(work + "/results/results.json", "w"))
for n, a in enumerate(small["annotations"][:20]):
    open(work + "/caption_text/%d" % n, "w").write(a["caption"] + "\n" + small["annotations"][-1 - n]["caption"])
PY
  head -n 40 "$SHARED/datasets/flickr8k/Flickr8k.token.txt" > "$WORK/caption_file/flickr8k.txt"
fi
for v in "$ROOT"/models/*/vocab.json; do [ -f "$v" ] && head -c 20000 "$v" > "$WORK/vocabulary/$(basename "$(dirname "$v")").json"; done
echo '{"format":"captioner-vocabulary","version":1,"min_count":1,"tokens":["<pad>","<start>","<end>","<unk>","a","dog"],"counts":[0,0,0,0,2,1]}' > "$WORK/vocabulary/tiny.json"
printf '\x00[{"file_name": "a.jpg", "image_id": 1, "caption": "a dog", "log_prob": -3.5}]' > "$WORK/results/caption_json"
printf '\x02file_name,image_id,caption,log_prob\na.jpg,1,"a dog, running",-2.0\n' > "$WORK/results/caption_csv"
printf "A man's dog (brown) runs.\nthe dog's ball -- isn't red" > "$WORK/caption_text/ptb"
cp "$ROOT/tests/data/"*.jpg "$WORK/image/"
/usr/bin/python3 - "$WORK/image" <<'PY'
import sys
from PIL import Image
out = sys.argv[1]
img = Image.new("RGB", (24, 16), (200, 30, 40))
for fmt, ext in [("PNG", "png"), ("JPEG", "jpg"), ("BMP", "bmp"), ("WEBP", "webp"), ("TIFF", "tif")]:
    img.save("%s/seed.%s" % (out, ext), fmt)
Image.new("LA", (9, 7), (100, 50)).save(out + "/gray_alpha.png")
Image.new("I;16", (5, 5), 40000).save(out + "/deep.png")
PY

status=0
ARTIFACTS="$ROOT/build-fuzz-crashes"
mkdir -p "$ARTIFACTS"
for target in caption_file vocabulary results caption_text image; do
  echo "fuzz_$target: ${SECONDS_EACH}s from $(ls "$WORK/$target" | wc -l) seeds"
  if ! "$BUILD/fuzz_$target" "$WORK/$target" -max_total_time="$SECONDS_EACH" -seed="${FUZZ_SEED:-1}" -timeout=10 -rss_limit_mb=2048 \
       -artifact_prefix="$ARTIFACTS/$target-" -print_final_stats=1 > "$WORK/$target.log" 2>&1; then
    status=1
    grep -v "^#" "$WORK/$target.log" | tail -n 30
    echo "fuzz_$target FAILED; the input that broke it is in $ARTIFACTS"
  fi
  grep -E "stat::number_of_executed_units|cov:" "$WORK/$target.log" | tail -n 2
done
rm -f /tmp/captioner-fuzz-*
exit $status
