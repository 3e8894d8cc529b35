"""The reference's training benchmark (../shared/pyref/bench.py --only train) with one change: the
forward pass under torch.autocast("cpu", dtype=torch.bfloat16), the bf16 mixed precision a Python
user would reach for. It shows how much of captioner's bf16 training speed a Python user could
have for one line, so the comparison stays against the best Python, not the plain one.

Usage: /usr/bin/python3 bench/pyref_train_bf16.py --pyref ../shared/pyref   (prints one RESULT line)
"""
import argparse
import json
import os
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pyref", required=True)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    sys.path.insert(0, os.path.abspath(a.pyref))
    import torch
    import torch.nn.functional as F
    import ref

    # As bench.py's `train` child: 1 LibTorch thread, same seed, batches and optimizer.
    torch.set_num_threads(1)
    torch.manual_seed(0)
    vocab = ref.build_vocab(ref.SPLITS["train"][0])
    w2i = {w: i for i, w in enumerate(vocab)}
    feats, img, inp, tgt, lens = ref.make_caption_tensors("train", w2i)
    model = ref.Captioner(len(vocab)).train()
    opt = torch.optim.Adam(model.parameters(), lr=4e-4)
    perm = torch.randperm(len(img))

    def steps(b0, nb):
        for bi in range(b0, b0 + nb):
            sel = perm[bi * 64:(bi + 1) * 64]
            l = lens[sel]
            o = torch.argsort(l, descending=True)
            sel, l = sel[o], l[o]
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model.forward_packed(feats[img[sel]], inp[sel], l)
            loss = F.cross_entropy(logits.float(), ref.Captioner.packed_targets(tgt[sel], l))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()

    steps(0, 5)
    rates = []
    for r in range(a.runs):
        t = time.perf_counter()
        steps(5 + 100 * r, 100)
        rates.append(6400 / (time.perf_counter() - t))
    print("RESULT " + json.dumps({"task": "train_bf16_autocast", "runs": rates, "median": statistics.median(rates),
                                  "unit": "captions/s", "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
