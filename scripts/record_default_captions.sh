#!/usr/bin/env bash
# Records what models/default writes for 24 Flickr8k dev photos into
# tests/data/default_model_captions.json, which CaptionPipeline.DefaultModelStillWritesItsRecordedCaptions
# compares against. Run it only when models/default itself changes, never to make a speed-up pass.
# The int8 encoder's features depend on the CPU: with VNNI (avx512_vnni, avx_vnni, amx_int8) oneDNN
# accumulates exactly, without it in saturating 16-bit pairs. So there is one file per kind, and
# this records the kind of the machine it runs on (default_model_captions.vnni.json on VNNI).
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
flags = set()
for line in open("/proc/cpuinfo"):
    if line.startswith("flags"):
        flags = set(line.split(":", 1)[1].split())
        break
vnni = bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
name = "tests/data/default_model_captions" + (".vnni" if vnni else "") + ".json"
json.dump(out, open(name + ".tmp", "w"), indent=1)
os.replace(name + ".tmp", name)
print("recorded %d captions in %s" % (len(out), name))
PY
rm -f "$tmp"
