#!/usr/bin/env bash
# Records what models/default writes for 24 Flickr8k dev photos into
# tests/data/default_model_captions.json, which CaptionPipeline.DefaultModelStillWritesItsRecordedCaptions
# compares against. Run it only when models/default itself changes, never to make a speed-up pass.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${CAPTIONER_SHARED:-../shared}
files=$(/usr/bin/python3 -c "
import json, sys
d = json.load(open('$SHARED/datasets/flickr8k/captions_val.json'))
print(' '.join('$SHARED/datasets/flickr8k/images/' + i['file_name'] for i in d['images'][7::41][:24]))")
tmp=$(mktemp)
build/captioner caption $files --model models/default --output "$tmp" --format json -q
/usr/bin/python3 - "$tmp" <<'PY'
import json, os, sys
rows = json.load(open(sys.argv[1]))
out = [{"file_name": os.path.basename(r["file_name"]), "caption": r["caption"], "log_prob": round(r["log_prob"], 5)} for r in rows]
tmp = "tests/data/default_model_captions.json.tmp"
json.dump(out, open(tmp, "w"), indent=1)
os.replace(tmp, "tests/data/default_model_captions.json")
print("recorded %d captions" % len(out))
PY
rm -f "$tmp"
