#!/usr/bin/python3
"""Converts the ImageNet MobileNetV2 TFLite model to a TorchScript image encoder for captioner.

  /usr/bin/python3 scripts/convert_tflite_mobilenet.py \
      --tflite ../shared/models/mobilenet_v2_coral/mobilenet_v2_1.0_224_quant.tflite \
      --labels ../shared/models/mobilenet_v2_coral/imagenet_labels.txt \
      --output models/encoders/mobilenet_v2.pt --check /usr/share/darknet/data/dog.jpg

--precision int8 (the default encoder) keeps the network in its native precision: uint8
activations with the scales and zero points TFLite trained it with (ReLU6 is the saturation of
its [0, 6] output range), int8 per-channel weights on the TFLite weight grid, run by LibTorch's
oneDNN quantized kernels. --precision float dequantises the weights (scale * (q - zero_point))
into float convolutions with float activations. Batch norm is already folded in the file. `forward` returns the 1280-d globally
pooled features (the classifier removed); the classifier stays available as `classify` so the
conversion can be proven right on real photos (--check prints ImageNet top-5 labels).
Writes <output> and its preprocessing sidecar <output>.json. Runs offline; never at caption time.
"""
import argparse
import hashlib
import json
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
    """One TFLite CONV_2D / DEPTHWISE_CONV_2D with TF 'SAME' padding and fused activation."""

    def __init__(self, conv: nn.Conv2d, relu6: bool, save_input: bool, add_residual: bool):
        super().__init__()
        self.conv = conv
        self.relu6 = relu6
        self.save_input = save_input
        self.add_residual = add_residual

    def forward(self, x):
        x = self.conv(x)
        if self.relu6:
            x = F.relu6(x)
        return x


def same_padding_conv(weight: torch.Tensor, stride: int, groups: int):
    """(weight, padding) of a PyTorch convolution equal to TF 'SAME' padding on inputs of even size.

    At stride 2, TF pads the odd extra pixel of a 'SAME' convolution at the bottom/right only,
    where PyTorch pads symmetrically. Padding explicitly at run time breaks oneDNN's fused graph
    (the float encoder ran 2x slower with it; a quantized pad is slower still), so the kernel
    grows by a leading zero row and column and pads symmetrically instead: windows [2i-1, 2i+k-1]
    with weight 0 on 2i-1 are TF's [2i, 2i+k-1], bit for bit. Inputs must then be multiples of 32.
    """
    k = weight.shape[2]
    if stride == 1:
        return weight, (k - 1) // 2
    grown = torch.zeros(weight.shape[0], weight.shape[1], k + 1, k + 1, dtype=weight.dtype)
    grown[:, :, 1:, 1:] = weight
    return grown, k // 2


class MobileNetV2Encoder(nn.Module):
    pyramid: torch.jit.Final[bool]

    def __init__(self, layers: List[ConvLayer], classifier: nn.Linear, pyramid: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.classifier = classifier
        self.pyramid = pyramid

    def feature_map(self, x):
        """x: (N, 3, H, W) float RGB in [-1, 1], H and W multiples of 32 -> (N, 1280, H/32, W/32)."""
        if x.size(2) % 32 != 0 or x.size(3) % 32 != 0:
            raise ValueError("MobileNetV2 needs height and width that are multiples of 32")
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
            if o["padding"] != "SAME" or kh % 2 != 1 or stride not in (1, 2):
                raise ValueError("unsupported convolution geometry at %s" % t[op.outputs[0]].name)
            weight, padding = same_padding_conv(weight, stride, groups)
            conv = nn.Conv2d(weight.shape[1] * groups, out_c, weight.shape[2], stride=stride, padding=padding,
                             groups=groups, bias=b is not None)
            conv.weight.data = weight
            if b is not None:
                conv.bias.data = torch.from_numpy(b.copy())
            if o["activation"] not in (None, "RELU6"):
                raise ValueError("unsupported activation %s" % o["activation"])
            layers.append(ConvLayer(conv, o["activation"] == "RELU6", save_input=current in pending_save,
                                    add_residual=False))
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


class QuantLayer(nn.Module):
    """One TFLite convolution in int8: a oneDNN quantized convolution whose output scale and zero
    point are TFLite's; a residual ADD requantizes to the ADD's own output range."""
    save_input: torch.jit.Final[bool]
    add_residual: torch.jit.Final[bool]

    def __init__(self, conv: nn.Module, save_input: bool):
        super().__init__()
        self.conv = conv
        self.save_input = save_input
        self.add_residual = False
        self.add_scale = 1.0
        self.add_zero_point = 0


class MobileNetV2Int8Encoder(nn.Module):
    def __init__(self, layers: List[QuantLayer], input_scale: float, input_zero_point: int, classifier: nn.Linear):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.input_scale = input_scale
        self.input_zero_point = input_zero_point
        self.classifier = classifier

    def feature_map(self, x):
        """x: (N, 3, H, W) float RGB in [-1, 1], H and W multiples of 32 -> (N, 1280, H/32, W/32) quint8."""
        if x.size(2) % 32 != 0 or x.size(3) % 32 != 0:
            raise ValueError("the int8 MobileNetV2 needs height and width that are multiples of 32")
        q = torch.quantize_per_tensor(x, self.input_scale, self.input_zero_point, torch.quint8)
        residual = q
        for layer in self.layers:
            if layer.save_input:
                residual = q
            q = layer.conv(q)
            if layer.add_residual:
                q = torch.ops.quantized.add(q, residual, layer.add_scale, layer.add_zero_point)
        return q

    def forward(self, x):
        """(N, 3, H, W) -> (N, 1280) float32 globally pooled features."""
        return self.feature_map(x).dequantize().mean(dim=[2, 3])

    @torch.jit.export
    def classify(self, x):
        """(N, 3, H, W) -> (N, 1001) ImageNet logits, index 0 = background."""
        return self.classifier(self.forward(x))


def int8_weight(tensor: "tflite_reader.Tensor", depthwise: bool) -> torch.Tensor:
    """TFLite uint8 weights (one scale s, zero point z) as per-channel symmetric qint8 on the same
    grid: k = q - z is kept exactly with scale s wherever |k| <= 127; the few channels whose k
    reach further get scale m*s (m = ceil(max|k| / 127)) and lose that factor in resolution."""
    if tensor.scale.size != 1:
        raise ValueError("expected per-tensor weight quantisation at %s" % tensor.name)
    k = torch.from_numpy(tensor.data.astype(np.int64) - int(tensor.zero_point[0]))
    k = k.permute(3, 0, 1, 2) if depthwise else k.permute(0, 3, 1, 2)  # -> OIHW
    m = torch.ceil(k.abs().amax(dim=[1, 2, 3]).clamp_min(1).double() / 127)
    scales = m * float(tensor.scale[0])
    real = k.double() * float(tensor.scale[0])
    return torch.quantize_per_channel(real.float(), scales, torch.zeros_like(m, dtype=torch.long), 0, torch.qint8)


def build_int8(model: tflite_reader.Model) -> MobileNetV2Int8Encoder:
    """The same chain as build(), with TFLite's quantisation kept (see QuantLayer)."""
    from torch.nn.quantized import Conv2d as QuantConv2d
    from torch.nn.intrinsic.quantized import ConvReLU2d as QuantConvReLU2d
    torch.backends.quantized.engine = "onednn"
    t = model.tensors
    source = t[model.inputs[0]]
    if source.scale.size != 1:
        raise ValueError("the model input is not a per-tensor quantized uint8 image")
    pending_save = set()
    for op in model.operators:
        if op.type == "ADD":
            pending_save.update(op.inputs)
    layers: List[QuantLayer] = []
    classifier = None
    pooled = False
    for op in model.operators:
        o = op.options
        if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            depthwise = op.type == "DEPTHWISE_CONV_2D"
            weight = int8_weight(t[op.inputs[1]], depthwise)
            bias = torch.from_numpy(t[op.inputs[2]].dequantized().copy())
            out_c, in_per_group, kh, _ = weight.shape
            if pooled:
                classifier = nn.Linear(in_per_group, out_c)
                classifier.weight.data = weight.dequantize()[:, :, 0, 0].clone()
                classifier.bias.data = bias
                continue
            stride = o["stride_h"]
            if o["padding"] != "SAME" or kh % 2 != 1 or stride not in (1, 2):
                raise ValueError("unsupported convolution geometry at %s" % t[op.outputs[0]].name)
            groups = out_c if depthwise else 1
            # Zero weights stay exactly zero on the int8 grid, so growing the dequantized kernel
            # and quantizing it again with the same scales is exact.
            grown, padding = same_padding_conv(weight.dequantize(), stride, groups)
            weight = torch.quantize_per_channel(grown, weight.q_per_channel_scales(),
                                                weight.q_per_channel_zero_points(), 0, torch.qint8)
            kernel = grown.shape[2]
            cls = QuantConvReLU2d if o["activation"] == "RELU6" else QuantConv2d
            conv = cls(in_per_group * groups, out_c, kernel, stride=stride, padding=padding, groups=groups)
            conv.set_weight_bias(weight, bias)
            out = t[op.outputs[0]]
            conv.scale = float(out.scale[0])
            conv.zero_point = int(out.zero_point[0])
            layers.append(QuantLayer(conv, op.inputs[0] in pending_save))
        elif op.type == "ADD":
            out = t[op.outputs[0]]
            layers[-1].add_residual = True
            layers[-1].add_scale = float(out.scale[0])
            layers[-1].add_zero_point = int(out.zero_point[0])
        elif op.type == "AVERAGE_POOL_2D":
            pooled = True
    if classifier is None:
        raise ValueError("no classifier found after the pooling layer")
    return MobileNetV2Int8Encoder(layers, float(source.scale[0]), int(source.zero_point[0]), classifier)


def agreement(a, b, photos):
    """Feature cosine and ImageNet top-1 / top-5 agreement of two encoders on real photos."""
    cos, top1, top5 = [], 0, 0
    with torch.no_grad():
        for path in photos:
            x = load_image(path)
            cos.append(float(F.cosine_similarity(a(x), b(x))[0]))
            ta, tb = a.classify(x)[0].topk(5).indices.tolist(), b.classify(x)[0].topk(5).indices.tolist()
            top1 += ta[0] == tb[0]
            top5 += len(set(ta) & set(tb))
    n = max(len(photos), 1)
    return {"photos": len(photos), "cosine_mean": round(float(np.mean(cos)), 4), "cosine_min": round(float(np.min(cos)), 4),
            "top1_agreement": round(top1 / n, 4), "top5_overlap": round(top5 / n / 5, 4)}


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


class ImageNetHead(nn.Module):
    """The encoder's own ImageNet classifier, on its pooled features: what --tags reads."""
    labels: List[str]

    def __init__(self, classifier: nn.Linear, labels: List[str]):
        super().__init__()
        self.classifier = classifier
        self.labels = labels

    def forward(self, features):
        """(N, 1280) pooled features -> (N, 1001) ImageNet logits, index 0 = background."""
        return self.classifier(features)


def write_classifier(encoder, labels_file, output):
    """<output>.classifier.pt: the classifier and its class names, kept out of the encoder file so
    that the encoder's identity (the hash its models record) does not change."""
    labels = [l.strip() for l in open(labels_file)]
    if len(labels) != encoder.classifier.out_features:
        raise SystemExit("%s has %d lines, the classifier %d classes" % (labels_file, len(labels), encoder.classifier.out_features))
    head = torch.jit.script(ImageNetHead(encoder.classifier, labels).eval())
    tmp = output + ".classifier.pt.tmp"
    head.save(tmp)
    os.replace(tmp, output + ".classifier.pt")


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
    ap.add_argument("--labels", help="imagenet_labels.txt (1001 lines): writes <output>.classifier.pt, names --check's labels")
    ap.add_argument("--output", required=True)
    ap.add_argument("--check", nargs="*", default=[], help="photos whose top-5 ImageNet labels to print")
    ap.add_argument("--reference-image", default="", help="write <output>.reference.{png,json} from this photo for tests")
    ap.add_argument("--pooling", choices=["global", "pyramid"], default="global",
                    help="global: 1280-d average; pyramid: global + 2x2 quadrant averages (6400-d)")
    ap.add_argument("--precision", choices=["int8", "float"], default="int8",
                    help="int8: TFLite's own quantisation on oneDNN kernels (default); float: dequantised weights")
    ap.add_argument("--agreement-photos", nargs="*", default=[],
                    help="int8 only: photos on which to record feature cosine and top-1/top-5 agreement with float")
    args = ap.parse_args()
    if args.precision == "int8" and args.pooling != "global":
        ap.error("--precision int8 supports --pooling global only")

    digest = sha256(args.tflite)
    if digest != EXPECTED_SHA256:
        print("warning: %s has sha256 %s, not the expected %s" % (args.tflite, digest, EXPECTED_SHA256), file=sys.stderr)
    model = tflite_reader.Model(args.tflite)
    dim = 1280 * (5 if args.pooling == "pyramid" else 1)
    if args.precision == "int8":
        encoder = build_int8(model).eval()
        # Frozen: the packed int8 weights become constants of the graph, and the C++ side loads
        # it as is (optimize_for_inference has nothing to fold in a quantized graph).
        scripted = torch.jit.freeze(torch.jit.script(encoder), preserved_attrs=["classify"])
    else:
        encoder = build(model, args.pooling == "pyramid").eval()
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
        "name": "mobilenet_v2_1.0_224 (ImageNet, TF-slim QAT, converted from TFLite%s)" % (", int8" if args.precision == "int8" else ""),
        "arch": "mobilenet_v2" + ("_pyramid" if args.pooling == "pyramid" else ""),
        "precision": args.precision,
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
    if args.precision == "int8":
        sidecar["quantized_engine"] = "onednn"
        if args.agreement_photos:
            sidecar["agreement_with_float"] = agreement(torch.jit.script(build(model).eval()), scripted, args.agreement_photos)
            print("int8 vs float on %(photos)d photos: feature cosine mean %(cosine_mean).4f (min %(cosine_min).4f), "
                  "ImageNet top-1 agreement %(top1_agreement).3f, top-5 overlap %(top5_overlap).3f" % sidecar["agreement_with_float"])
    with open(args.output + ".json.tmp", "w") as f:
        json.dump(sidecar, f, indent=1)
        f.write("\n")
    os.replace(args.output + ".json.tmp", args.output + ".json")
    print("wrote %s (%d conv layers, %d-d features) and %s.json" % (args.output, len(encoder.layers), dim, args.output))

    if args.labels and os.path.exists(args.labels) and args.pooling == "global":
        write_classifier(encoder, args.labels, args.output)
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
