#!/usr/bin/env bash
# Records what models/default writes for 24 Flickr8k dev photos, with its own decoder precision
# (int8) into tests/data/default_model_captions[.vnni].json and with --decoder-precision float32
# into tests/data/default_model_captions.float32[.vnni].json, which
# CaptionPipeline.DefaultModelStillWritesItsRecordedCaptions compares against. Run it only when
# models/default itself changes, never to make a speed-up pass.
# The int8 encoder's features depend on the CPU: with VNNI (avx512_vnni, avx_vnni, amx_int8) oneDNN
# accumulates exactly, without it in saturating 16-bit pairs. So there is one file per kind, and
# this records the kind of the machine it runs on (".vnni" on VNNI). On a VNNI machine the other
# kind can be recorded by emulation, which reproduces a real AVX2 machine's captions exactly:
#   RECORD_KIND=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 OPENBLAS_CORETYPE=Haswell scripts/record_default_captions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${CAPTIONER_SHARED:-../shared}
files=$(/usr/bin/python3 -c "
import json, sys
d = json.load(open('$SHARED/datasets/flickr8k/captions_val.json'))
print(' '.join('$SHARED/datasets/flickr8k/images/' + i['file_name'] for i in d['images'][7::41][:24]))")
kind=${RECORD_KIND:-}
if [ -z "$kind" ]; then
  if grep -m1 '^flags' /proc/cpuinfo | grep -qwE 'avx512_vnni|avx_vnni|amx_int8'; then kind=vnni; else kind=avx2; fi
fi
suffix=$([ "$kind" = vnni ] && echo .vnni || true)
tmpdir=$(mktemp -d)
trap 'rm -rf "$tmpdir"' EXIT
for precision in model float32; do
  name=tests/data/default_model_captions$([ $precision = float32 ] && echo .float32 || true)$suffix.json
  args=$([ $precision = float32 ] && echo "--decoder-precision float32" || true)
  tmp=$tmpdir/$precision.json
  build/captioner caption $files --model models/default --output "$tmp" --format json -q $args
  /usr/bin/python3 - "$tmp" "$name" models/default/decoder.pt <<'PY'
import json, os, sys
rows = json.load(open(sys.argv[1]))
h = 1469598103934665603  # FNV-1a 64 of the decoder's file: which model the captions belong to
for b in open(sys.argv[3], "rb").read():
    h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
out = {"decoder_fnv1a64": "%016x" % h,
       "captions": [{"file_name": os.path.basename(r["file_name"]), "caption": r["caption"],
                     "log_prob": round(r["log_prob"], 5)} for r in rows]}
json.dump(out, open(sys.argv[2] + ".tmp", "w"), indent=1)
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
print("recorded %d captions in %s" % (len(out["captions"]), sys.argv[2]))
PY
done
