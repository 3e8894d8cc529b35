#!/usr/bin/python3
"""Exports a torchvision ImageNet CNN, classifier removed, as a TorchScript encoder for captioner.

  /usr/bin/python3 scripts/export_encoder.py --arch resnet50 --output models/encoders/resnet50.pt
  /usr/bin/python3 scripts/export_encoder.py --arch vgg16 --weights vgg16.pth --output models/encoders/vgg16.pt
  /usr/bin/python3 scripts/export_encoder.py --arch resnet152 --pretrained --output ...   (needs internet)

Weights: --pretrained downloads torchvision's ImageNet weights (online only); --weights loads a
local state_dict (.pth) such as one downloaded earlier; neither gives random weights, which is
only useful to test the plumbing (the sidecar then says so). Writes <output> and <output>.json
with the preprocessing torchvision's weights expect (shorter side 256, centre crop 224, ImageNet
mean/std). Runs offline except with --pretrained; never at caption time.
"""
import argparse
import json
import os
import sys

import torch
import torch.nn as nn
import torchvision

ARCHS = {
    # name: (constructor, feature dim, how to remove the classifier)
    "resnet18": (torchvision.models.resnet18, 512, "fc"),
    "resnet34": (torchvision.models.resnet34, 512, "fc"),
    "resnet50": (torchvision.models.resnet50, 2048, "fc"),
    "resnet101": (torchvision.models.resnet101, 2048, "fc"),
    "resnet152": (torchvision.models.resnet152, 2048, "fc"),
    "vgg16": (torchvision.models.vgg16, 4096, "vgg"),
    "vgg19": (torchvision.models.vgg19, 4096, "vgg"),
    "mobilenet_v2": (torchvision.models.mobilenet_v2, 1280, "mobilenet"),
    "densenet121": (torchvision.models.densenet121, 1024, "densenet"),
}


class Encoder(nn.Module):
    """(N, 3, H, W) normalised RGB -> (N, D) features: the network up to its last hidden layer."""

    def __init__(self, body: nn.Module, head: nn.Module):
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, x):
        return self.head(self.body(x))


def strip_classifier(model: nn.Module, how: str) -> nn.Module:
    if how == "fc":  # ResNets: everything but the final fully connected layer
        body = nn.Sequential(*list(model.children())[:-1])
        return Encoder(body, nn.Flatten(1))
    if how == "vgg":  # VGG: conv features + classifier without its last Linear (fc7, 4096-d)
        head = nn.Sequential(nn.Flatten(1), *list(model.classifier.children())[:-1])
        return Encoder(nn.Sequential(model.features, model.avgpool), head)
    if how == "mobilenet":
        return Encoder(model.features, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1)))
    if how == "densenet":
        return Encoder(model.features, nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1)))
    raise ValueError(how)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", required=True, choices=sorted(ARCHS))
    ap.add_argument("--output", required=True)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--weights", help="local state_dict (.pth) of the torchvision model")
    src.add_argument("--pretrained", action="store_true", help="download torchvision's ImageNet weights (internet)")
    ap.add_argument("--allow-random", action="store_true", help="export random weights (tests only)")
    args = ap.parse_args()

    ctor, dim, how = ARCHS[args.arch]
    if args.pretrained:
        model = ctor(weights="DEFAULT")
        origin = "torchvision %s ImageNet weights (downloaded)" % args.arch
    else:
        model = ctor(weights=None)
        if args.weights:
            state = torch.load(args.weights, map_location="cpu")
            model.load_state_dict(state, strict=True)
            origin = "torchvision %s, weights from %s" % (args.arch, os.path.basename(args.weights))
        elif args.allow_random:
            origin = "RANDOM WEIGHTS (plumbing tests only)"
        else:
            sys.exit("error: give --weights FILE.pth or --pretrained (or --allow-random for tests)")
    encoder = strip_classifier(model, how).eval()
    with torch.no_grad():
        out = encoder(torch.zeros(2, 3, 224, 224))
    if tuple(out.shape) != (2, dim):
        sys.exit("error: %s gives features of shape %s, expected (2, %d)" % (args.arch, tuple(out.shape), dim))
    scripted = torch.jit.trace(encoder, torch.zeros(1, 3, 224, 224))
    os.makedirs(os.path.dirname(os.path.abspath(args.output)) or ".", exist_ok=True)
    scripted.save(args.output + ".tmp")
    os.replace(args.output + ".tmp", args.output)
    sidecar = {"format": "captioner-encoder", "version": 1, "name": origin, "arch": args.arch, "feature_dim": dim,
               "input_size": [224, 224], "resize": "shorter_side_crop", "resize_size": 256,
               "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "channel_order": "RGB"}
    with open(args.output + ".json.tmp", "w") as f:
        json.dump(sidecar, f, indent=1)
        f.write("\n")
    os.replace(args.output + ".json.tmp", args.output + ".json")
    print("wrote %s (%s, %d-d features) and %s.json" % (args.output, args.arch, dim, args.output))


if __name__ == "__main__":
    main()
