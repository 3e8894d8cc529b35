#!/usr/bin/python3
"""Converts the ImageNet MobileNetV2 TFLite model to a TorchScript image encoder for captioner.

  /usr/bin/python3 scripts/convert_tflite_mobilenet.py \
      --tflite ../shared/models/mobilenet_v2_coral/mobilenet_v2_1.0_224_quant.tflite \
      --labels ../shared/models/mobilenet_v2_coral/imagenet_labels.txt \
      --output models/encoders/mobilenet_v2.pt --check /usr/share/darknet/data/dog.jpg

The quantisation-aware-trained weights are dequantised (scale * (q - zero_point)) into float
convolutions; batch norm is already folded in the file. `forward` returns the 1280-d globally
pooled features (the classifier removed); the classifier stays available as `classify` so the
conversion can be proven right on real photos (--check prints ImageNet top-5 labels).
Writes <output> and its preprocessing sidecar <output>.json. Runs offline; never at caption time.
"""
import argparse
import hashlib
import json
import math
import os
import sys
from typing import List

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tflite_reader  # noqa: E402

EXPECTED_SHA256 = "7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776"


class ConvLayer(nn.Module):
    """One TFLite CONV_2D / DEPTHWISE_CONV_2D with TF 'SAME' padding and fused activation.

    TF pads the odd extra pixel of a stride-2 'SAME' convolution at the bottom/right, unlike
    PyTorch's symmetric padding, so such layers pad explicitly at run time."""

    def __init__(self, conv: nn.Conv2d, kernel: int, stride: int, same: bool, relu6: bool,
                 save_input: bool, add_residual: bool):
        super().__init__()
        self.conv = conv
        self.kernel = kernel
        self.stride = stride
        self.dynamic_pad = same and stride > 1
        self.relu6 = relu6
        self.save_input = save_input
        self.add_residual = add_residual

    def forward(self, x):
        if self.dynamic_pad:
            ph = max((int(math.ceil(x.size(2) / self.stride)) - 1) * self.stride + self.kernel - x.size(2), 0)
            pw = max((int(math.ceil(x.size(3) / self.stride)) - 1) * self.stride + self.kernel - x.size(3), 0)
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        x = self.conv(x)
        if self.relu6:
            x = F.relu6(x)
        return x


class MobileNetV2Encoder(nn.Module):
    pyramid: torch.jit.Final[bool]

    def __init__(self, layers: List[ConvLayer], classifier: nn.Linear, pyramid: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.classifier = classifier
        self.pyramid = pyramid

    def feature_map(self, x):
        """x: (N, 3, H, W) float RGB in [-1, 1] -> (N, 1280, H/32, W/32), before pooling."""
        residual = x
        for layer in self.layers:
            if layer.save_input:
                residual = x
            x = layer(x)
            if layer.add_residual:
                x = x + residual
        return x

    def forward(self, x):
        """(N, 3, H, W) -> (N, 1280) globally pooled features; with pyramid pooling also the
        averages of the 2x2 quadrants: (N, 1280 * 5), global first."""
        fmap = self.feature_map(x)
        pooled = fmap.mean(dim=[2, 3])
        if self.pyramid:
            # Quadrants as adaptive pooling to 2x2 would cut them (overlapping by the middle row
            # and column when the map is odd-sized), sliced by hand: the frozen graph
            # optimiser rejects adaptive pooling to sizes that do not divide the input.
            h, w = fmap.size(2), fmap.size(3)
            hs, ws = (h + 1) // 2, (w + 1) // 2
            top, bottom = fmap[:, :, :hs], fmap[:, :, h - hs:]
            quads = [top[:, :, :, :ws], top[:, :, :, w - ws:], bottom[:, :, :, :ws], bottom[:, :, :, w - ws:]]
            return torch.cat([pooled] + [q.mean(dim=[2, 3]) for q in quads], dim=1)
        return pooled

    @torch.jit.export
    def classify(self, x):
        """(N, 3, H, W) -> (N, 1001) ImageNet logits, index 0 = background."""
        return self.classifier(self.feature_map(x).mean(dim=[2, 3]))


def build(model: tflite_reader.Model, pyramid: bool = False) -> MobileNetV2Encoder:
    ops = model.operators
    t = model.tensors
    const = lambda i: t[i].data is not None  # noqa: E731
    layers: List[ConvLayer] = []
    current = model.inputs[0]
    pending_save = set()  # tensors an upcoming ADD will need
    adds = [op for op in ops if op.type == "ADD"]
    for op in adds:
        pending_save.update(op.inputs)
    classifier = None
    pooled = False
    for op in ops:
        data_inputs = [i for i in op.inputs if i >= 0 and not const(i)]
        if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            if data_inputs != [current]:
                raise ValueError("graph is not a chain at %s: inputs %s, current %d" % (t[op.outputs[0]].name, data_inputs, current))
            w = t[op.inputs[1]].dequantized()
            b = t[op.inputs[2]].dequantized() if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
            o = op.options
            if op.type == "CONV_2D":  # OHWI -> OIHW
                weight = torch.from_numpy(np.ascontiguousarray(w.transpose(0, 3, 1, 2)))
                groups = 1
            else:  # 1HWC -> C1HW
                weight = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 0, 1, 2)))
                groups = weight.shape[0]
                if o["depth_multiplier"] != 1:
                    raise ValueError("depth_multiplier %d not supported" % o["depth_multiplier"])
            out_c, _, kh, kw = weight.shape
            if kh != kw or o["stride_h"] != o["stride_w"] or o["dilation_h"] != 1 or o["dilation_w"] != 1:
                raise ValueError("unsupported convolution geometry at %s" % t[op.outputs[0]].name)
            if pooled:  # the 1x1 convolution after global pooling is the classifier
                classifier = nn.Linear(weight.shape[1], out_c)
                classifier.weight.data = weight[:, :, 0, 0].clone()
                classifier.bias.data = torch.from_numpy(b.copy())
                current = op.outputs[0]
                continue
            stride = o["stride_h"]
            same = o["padding"] == "SAME"
            # Stride 1 'SAME' with an odd kernel pads symmetrically: let the convolution do it.
            static_pad = (kh - 1) // 2 if same and stride == 1 else 0
            conv = nn.Conv2d(weight.shape[1] * groups, out_c, kh, stride=stride, padding=static_pad,
                             groups=groups, bias=b is not None)
            conv.weight.data = weight
            if b is not None:
                conv.bias.data = torch.from_numpy(b.copy())
            if o["activation"] not in (None, "RELU6"):
                raise ValueError("unsupported activation %s" % o["activation"])
            layers.append(ConvLayer(conv, kh, stride, same, o["activation"] == "RELU6",
                                    save_input=current in pending_save, add_residual=False))
            current = op.outputs[0]
        elif op.type == "ADD":
            if current not in op.inputs or not layers:
                raise ValueError("ADD does not follow the chain")
            other = [i for i in op.inputs if i != current][0]
            # The residual is the input of the block whose last layer we just built; the layer
            # that consumed `other` carries save_input.
            if op.options.get("activation") is not None:
                raise ValueError("ADD with fused activation not supported")
            layers[-1].add_residual = True
            if not any(l.save_input for l in layers):
                raise ValueError("ADD without a saved residual (%s)" % t[other].name)
            current = op.outputs[0]
        elif op.type == "AVERAGE_POOL_2D":
            pooled = True  # replaced by a global mean, so other input sizes work too
            current = op.outputs[0]
        elif op.type in ("RESHAPE", "SOFTMAX"):
            current = op.outputs[0]
        else:
            raise ValueError("unsupported operator %s" % op.type)
    if classifier is None:
        raise ValueError("no classifier found after the pooling layer")
    return MobileNetV2Encoder(layers, classifier, pyramid)


def load_image(path, size=224):
    """ImageNet evaluation view: shorter side to 256, centre 224x224 crop, RGB scaled to [-1, 1]."""
    from PIL import Image
    img = Image.open(path).convert("RGB")
    scale = 256.0 / min(img.size)
    img = img.resize((round(img.size[0] * scale), round(img.size[1] * scale)), Image.BILINEAR)
    left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return to_tensor(img)


def to_tensor(img):
    x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1) / 127.5 - 1.0
    return x.unsqueeze(0)


def write_reference(scripted, photo, output):
    """Saves a 224x224 crop of `photo` as PNG (lossless, so C++ decodes the same pixels) with the
    features and logits this script computes for it: tests check the C++ path against them."""
    from PIL import Image
    img = Image.open(photo).convert("RGB")
    w, h = img.size
    side = min(w, h)
    img = img.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)).resize((224, 224), Image.BILINEAR)
    png = output + ".reference.png"
    img.save(png)
    with torch.no_grad():
        x = to_tensor(img)
        feats = scripted(x)[0]
        logits = scripted.classify(x)[0]
    ref = {"image": os.path.basename(png), "features": [round(float(v), 6) for v in feats],
           "top5": torch.topk(logits, 5).indices.tolist(), "logits_top5": [round(float(v), 5) for v in torch.topk(logits, 5).values]}
    with open(output + ".reference.json.tmp", "w") as f:
        json.dump(ref, f)
    os.replace(output + ".reference.json.tmp", output + ".reference.json")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tflite", required=True)
    ap.add_argument("--labels", help="imagenet_labels.txt (1001 lines) for --check")
    ap.add_argument("--output", required=True)
    ap.add_argument("--check", nargs="*", default=[], help="photos whose top-5 ImageNet labels to print")
    ap.add_argument("--reference-image", default="", help="write <output>.reference.{png,json} from this photo for tests")
    ap.add_argument("--pooling", choices=["global", "pyramid"], default="global",
                    help="global: 1280-d average; pyramid: global + 2x2 quadrant averages (6400-d)")
    args = ap.parse_args()

    digest = sha256(args.tflite)
    if digest != EXPECTED_SHA256:
        print("warning: %s has sha256 %s, not the expected %s" % (args.tflite, digest, EXPECTED_SHA256), file=sys.stderr)
    model = tflite_reader.Model(args.tflite)
    encoder = build(model, args.pooling == "pyramid").eval()
    dim = 1280 * (5 if args.pooling == "pyramid" else 1)
    scripted = torch.jit.script(encoder)

    with torch.no_grad():
        feats = scripted(torch.zeros(2, 3, 224, 224))
        if tuple(feats.shape) != (2, dim):
            raise SystemExit("unexpected feature shape %s" % (tuple(feats.shape),))

    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tmp = args.output + ".tmp"
    scripted.save(tmp)
    os.replace(tmp, args.output)
    sidecar = {
        "format": "captioner-encoder",
        "version": 1,
        "name": "mobilenet_v2_1.0_224 (ImageNet, TF-slim QAT, converted from TFLite)",
        "arch": "mobilenet_v2" + ("_pyramid" if args.pooling == "pyramid" else ""),
        "feature_dim": dim,
        "input_size": [224, 224],
        "resize": "stretch",
        "resize_size": 224,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "channel_order": "RGB",
        "source": {"file": os.path.basename(args.tflite), "sha256": digest,
                   "origin": "google-coral/test_data (Apache-2.0)"},
    }
    with open(args.output + ".json.tmp", "w") as f:
        json.dump(sidecar, f, indent=1)
        f.write("\n")
    os.replace(args.output + ".json.tmp", args.output + ".json")
    print("wrote %s (%d conv layers, %d-d features) and %s.json" % (args.output, len(encoder.layers), dim, args.output))

    if args.reference_image:
        write_reference(scripted, args.reference_image, args.output)
    if args.check:
        labels = [l.strip() for l in open(args.labels)] if args.labels else None
        with torch.no_grad():
            for path in args.check:
                probs = torch.softmax(scripted.classify(load_image(path)), dim=1)[0]
                top = torch.topk(probs, 5)
                names = ["%s %.2f" % (labels[i] if labels else i, p) for p, i in zip(top.values.tolist(), top.indices.tolist())]
                print("%s: %s" % (os.path.basename(path), ", ".join(names)))


if __name__ == "__main__":
    main()
