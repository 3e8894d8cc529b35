#!/usr/bin/python3
"""Splits a COCO-style caption file into a part to train on and a part to select with.

Model selection (epochs, settings, checkpoints) must never look at the split that is reported,
so the default model is chosen on photos held out of the training split, and Flickr8k dev is
only ever scored at the end. The held-out photos are a seeded random sample, the same on every
machine.

  /usr/bin/python3 scripts/make_selection_split.py --captions ../shared/datasets/flickr8k/captions_train.json \
      --holdout 500 --output-dir runs/selection
writes runs/selection/fit.json (the rest) and runs/selection/holdout.json. Generated data: it
stays out of the repository (runs/ is ignored).
"""
import argparse
import json
import os
import random


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", required=True, help="COCO-style caption JSON to split")
    ap.add_argument("--holdout", type=int, default=500, help="photos to hold out for selection")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output-dir", required=True)
    args = ap.parse_args()
    with open(args.captions) as f:
        data = json.load(f)
    ids = sorted(im["id"] for im in data["images"])
    if not 0 < args.holdout < len(ids):
        raise SystemExit("--holdout must be between 1 and %d" % (len(ids) - 1))
    held = set(random.Random(args.seed).sample(ids, args.holdout))
    os.makedirs(args.output_dir, exist_ok=True)
    for name, keep in (("fit", lambda i: i not in held), ("holdout", lambda i: i in held)):
        part = {k: v for k, v in data.items() if k not in ("images", "annotations")}
        part["images"] = [im for im in data["images"] if keep(im["id"])]
        part["annotations"] = [a for a in data["annotations"] if keep(a["image_id"])]
        path = os.path.join(args.output_dir, name + ".json")
        with open(path + ".tmp", "w") as f:
            json.dump(part, f)
        os.replace(path + ".tmp", path)
        print("%s: %d photos, %d captions" % (path, len(part["images"]), len(part["annotations"])))


if __name__ == "__main__":
    main()
