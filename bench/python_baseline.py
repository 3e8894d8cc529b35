#!/usr/bin/python3
"""What a user would otherwise run: the same captioning model in plain PyTorch eager, for the
side-by-side benchmarks in bench/run.sh. Never used by captioner itself.

It loads a captioner model directory (config.json, vocab.json, decoder.pt) into the standard
PyTorch formulation of "the image enters every step": an nn.LSTMCell whose input is
[word embedding; image projection]. That is the same function as captioner's decoder (its
input and image weights side by side), so with the same weights both produce the same captions.

  python_baseline.py caption --model DIR --images DIR [--beam 3] [--naive]
  python_baseline.py encode  --encoder FILE --images DIR [--naive]
  python_baseline.py train   --model DIR --features CACHE.bin --captions captions_train.json [--epochs 1]

--naive: what a first script does (default threads, batch 32, no optimize_for_inference, no
loader worker). Without it, the tuned baseline: batch 4, optimize_for_inference, a DataLoader
worker decoding JPEGs beside the model, one thread for decoding and training (OpenBLAS still
splits each GEMM), all cores for the encoder. Prints one JSON line of measurements.
"""
import argparse
import json
import os
import re
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

PAD, START, END, UNK = 0, 1, 2, 3


class Decoder(nn.Module):
    def __init__(self, vocab, feature_dim, embed, hidden, image_dim):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed, padding_idx=PAD)
        self.image_in = nn.Linear(feature_dim, image_dim)
        self.lstm = nn.LSTMCell(embed + image_dim, hidden)
        self.output = nn.Linear(hidden, vocab)
        self.dropout = nn.Dropout(0.5)

    def image(self, v):
        return self.dropout(F.relu(self.image_in(v)))

    def step(self, tokens, img, state):
        h, c = self.lstm(torch.cat([self.dropout(self.embed(tokens)), img], 1), state)
        return F.log_softmax(self.output(self.dropout(h)), -1), (h, c)


class SequenceDecoder(Decoder):
    """Training form: nn.LSTM over whole (packed) sequences, weights shared with the cell."""

    def __init__(self, *a):
        super().__init__(*a)
        self.seq = nn.LSTM(self.lstm.input_size, self.lstm.hidden_size, batch_first=True)
        self.seq.weight_ih_l0, self.seq.weight_hh_l0 = self.lstm.weight_ih, self.lstm.weight_hh
        self.seq.bias_ih_l0, self.seq.bias_hh_l0 = self.lstm.bias_ih, self.lstm.bias_hh

    def loss(self, v, tokens, lengths):
        x = self.dropout(self.embed(tokens[:, :-1]))
        img = self.image(v).unsqueeze(1).expand(-1, x.size(1), -1)
        packed = nn.utils.rnn.pack_padded_sequence(torch.cat([x, img], 2), lengths - 1, batch_first=True,
                                                   enforce_sorted=False)
        out, _ = self.seq(packed)
        targets = nn.utils.rnn.pack_padded_sequence(tokens[:, 1:], lengths - 1, batch_first=True, enforce_sorted=False)
        return F.cross_entropy(self.output(self.dropout(out.data)), targets.data)


def load_model(model_dir, cls=Decoder):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    member = cfg["members"][0]
    d = member["decoder"]
    if d["cell"] != "lstm" or d["num_layers"] != 1 or not d["image_every_step"] or d["image_init_state"]:
        sys.exit("the baseline implements the default decoder only (1-layer LSTM, image in every step)")
    vocab = json.load(open(os.path.join(model_dir, "vocab.json")))["tokens"]
    dec = cls(d["vocab_size"], d["feature_dim"], d["embed_dim"], d["hidden_dim"], d["image_dim"])
    w = {k: v.float() for k, v in torch.jit.load(os.path.join(model_dir, member["weights"])).named_parameters()}
    H = d["hidden_dim"]

    def reorder(t):  # captioner's gate order (input, forget, output, cell) -> PyTorch's (i, f, g, o)
        i, f, o, g = t.split(H, 0)
        return torch.cat([i, f, g, o], 0)

    with torch.no_grad():
        dec.embed.weight.copy_(w["embed.weight"])
        dec.image_in.weight.copy_(w["image_in.weight"])
        dec.image_in.bias.copy_(w["image_in.bias"])
        dec.lstm.weight_ih.copy_(reorder(torch.cat([w["layers.0.input_proj.weight"], w["layers.0.image_proj.weight"]], 1)))
        dec.lstm.bias_ih.copy_(reorder(w["layers.0.input_proj.bias"]))
        dec.lstm.weight_hh.copy_(reorder(w["layers.0.hidden_proj.weight"]))
        dec.lstm.bias_hh.zero_()
        dec.output.weight.copy_(w["output.weight"])
        dec.output.bias.copy_(w["output.bias"])
    return dec.eval(), vocab, cfg


def banned(logp, t, max_len, last):
    logp[:, [PAD, START, UNK]] = -float("inf")
    if t == 0:
        logp[:, END] = -float("inf")
    if t >= max_len:
        keep = logp[:, END].clone()
        logp.fill_(-float("inf"))
        logp[:, END] = keep
    elif last is not None:
        logp[torch.arange(logp.size(0)), last] = -float("inf")  # no word twice in a row
    return logp


def greedy(dec, feats, max_len):
    img = dec.image(feats)
    B = feats.size(0)
    state = None
    tokens = torch.full((B,), START, dtype=torch.long)
    out = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool)
    last = None
    for t in range(max_len + 1):
        logp, state = dec.step(tokens, img, state)
        tokens = banned(logp, t, max_len, last).argmax(1)
        for i in range(B):
            if not done[i]:
                if tokens[i].item() == END:
                    done[i] = True
                else:
                    out[i].append(tokens[i].item())
        last = tokens
        if done.all():
            break
    return out


def beam_search(dec, feat, k, max_len):
    """The usual per-image loop (e.g. sgrvinod's PyTorch captioning tutorial): k live beams,
    finished captions set aside, until k are finished or the length runs out."""
    img = dec.image(feat)  # (1, I)
    seqs = [[]]
    scores = torch.zeros(1)
    tokens = torch.tensor([START])
    state = None
    finished = []
    for t in range(max_len + 1):
        logp, state = dec.step(tokens, img.expand(len(seqs), -1), state)
        last = torch.tensor([s[-1] for s in seqs]) if t > 0 else None
        cand = (scores.unsqueeze(1) + banned(logp, t, max_len, last)).view(-1)
        top_scores, top = cand.topk(min(k, cand.numel()))
        beams, words = top // logp.size(1), top % logp.size(1)
        keep = []
        for s, b, w in zip(top_scores.tolist(), beams.tolist(), words.tolist()):
            if s == -float("inf"):
                continue
            if w == END:
                finished.append((s, seqs[b]))
            else:
                keep.append((s, b, w))
        if len(finished) >= k or not keep:
            break
        idx = torch.tensor([b for _, b, _ in keep])
        seqs = [seqs[b] + [w] for _, b, w in keep]
        scores = torch.tensor([s for s, _, _ in keep])
        tokens = torch.tensor([w for _, _, w in keep])
        state = (state[0][idx], state[1][idx])
    return max(finished)[1] if finished else seqs[0]


def preprocess(path, size=224):
    img = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1)
    return x / 127.5 - 1.0  # the default MobileNetV2's sidecar: mean 0.5, std 0.5


class Folder(torch.utils.data.Dataset):
    def __init__(self, files):
        self.files = files

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return preprocess(self.files[i])


def list_images(folder):
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith((".jpg", ".jpeg", ".png")))


def load_encoder(path, naive):
    enc = torch.jit.load(path).eval()
    return enc if naive else torch.jit.optimize_for_inference(enc)


def batches(files, batch, naive):
    loader = torch.utils.data.DataLoader(Folder(files), batch_size=batch, num_workers=0 if naive else 1)
    yield from loader


def cmd_caption(a):
    enc_threads, dec_threads = (torch.get_num_threads(),) * 2 if a.naive else (os.cpu_count(), 1)
    dec, vocab, cfg = load_model(a.model)
    enc_file = os.path.normpath(os.path.join(a.model, cfg["encoder"]["file"]))
    files = list_images(a.images)[: a.limit or None]
    t0 = time.time()
    encoder = load_encoder(enc_file, a.naive)
    results = []
    with torch.no_grad():
        for x in batches(files, 32 if a.naive else 4, a.naive):
            torch.set_num_threads(enc_threads)
            feats = encoder(x)
            torch.set_num_threads(dec_threads)
            if a.beam == 1:
                captions = greedy(dec, feats, a.max_len)
            else:
                captions = [beam_search(dec, feats[i:i + 1], a.beam, a.max_len) for i in range(feats.size(0))]
            results += [" ".join(vocab[t] for t in c) for c in captions]
    secs = time.time() - t0
    if a.output:
        json.dump([{"file_name": f, "caption": c} for f, c in zip(files, results)], open(a.output, "w"), indent=1)
    print(json.dumps({"images": len(files), "seconds": secs, "images_per_second": len(files) / secs}))


def cmd_encode(a):
    files = list_images(a.images)[: a.limit or None]
    encoder = load_encoder(a.encoder, a.naive)
    t0 = time.time()
    with torch.no_grad():
        n = sum(encoder(x).size(0) for x in batches(files, 32 if a.naive else 4, a.naive))
    secs = time.time() - t0
    print(json.dumps({"images": n, "seconds": secs, "images_per_second": n / secs}))


def read_feature_cache(path):
    """captioner's feature cache: 'CAPFEAT1', u64 header length, JSON header, float32 rows."""
    with open(path, "rb") as f:
        if f.read(8) != b"CAPFEAT1":
            sys.exit("%s is not a captioner feature cache" % path)
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = np.frombuffer(f.read(header["count"] * header["dim"] * 4), dtype=np.float32)
    return torch.from_numpy(data.copy()).view(header["count"], header["dim"])


def cmd_train(a):
    torch.set_num_threads(torch.get_num_threads() if a.naive else 1)
    torch.manual_seed(1)
    dec, vocab, cfg = load_model(a.model, SequenceDecoder)
    dec.train()
    ids = {w: i for i, w in enumerate(vocab)}
    feats = read_feature_cache(a.features)
    data = json.load(open(a.captions))
    row = {img["id"]: i for i, img in enumerate(data["images"])}
    caps = []
    for ann in data["annotations"]:
        words = re.sub(r"[^a-z0-9' ]", " ", ann["caption"].lower()).split()[:30]
        if words:
            caps.append((row[ann["image_id"]], [START] + [ids.get(w, UNK) for w in words] + [END]))
    if feats.size(0) != len(row):
        sys.exit("feature cache has %d rows but %s has %d images" % (feats.size(0), a.captions, len(row)))
    opt = torch.optim.Adam(dec.parameters(), lr=5e-4)
    t0 = time.time()
    n = 0
    for _ in range(a.epochs):
        order = torch.randperm(len(caps)).tolist()
        for s in range(0, len(order), a.batch):
            chunk = [caps[i] for i in order[s:s + a.batch]]
            lengths = torch.tensor([len(c) for _, c in chunk])
            tokens = torch.zeros(len(chunk), int(lengths.max()), dtype=torch.long)
            for j, (_, c) in enumerate(chunk):
                tokens[j, :len(c)] = torch.tensor(c)
            v = feats[[i for i, _ in chunk]]
            opt.zero_grad()
            loss = dec.loss(v, tokens, lengths)
            loss.backward()
            nn.utils.clip_grad_norm_(dec.parameters(), 5.0)
            opt.step()
            n += len(chunk)
            if a.max_batches and s // a.batch + 1 >= a.max_batches:
                break
    secs = time.time() - t0
    print(json.dumps({"captions": n, "seconds": secs, "captions_per_second": n / secs,
                      "seconds_per_epoch": secs / n * len(caps), "final_loss": float(loss)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("caption")
    c.add_argument("--model", required=True)
    c.add_argument("--images", required=True)
    c.add_argument("--beam", type=int, default=3)
    c.add_argument("--max-len", type=int, default=20)
    c.add_argument("--limit", type=int, default=0)
    c.add_argument("--output")
    e = sub.add_parser("encode")
    e.add_argument("--encoder", required=True)
    e.add_argument("--images", required=True)
    e.add_argument("--limit", type=int, default=0)
    t = sub.add_parser("train")
    t.add_argument("--model", required=True, help="model whose sizes and vocabulary to use")
    t.add_argument("--features", required=True)
    t.add_argument("--captions", required=True)
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--max-batches", type=int, default=0)
    for p in (c, e, t):
        p.add_argument("--naive", action="store_true")
    a = ap.parse_args()
    {"caption": cmd_caption, "encode": cmd_encode, "train": cmd_train}[a.cmd](a)


if __name__ == "__main__":
    main()
