#!/usr/bin/python3
"""captioner vs. the same model in plain Python PyTorch, side by side on this machine.

Runs every measurement of bench/README (caption a folder at beam 1 and 3 on Flickr8k and COCO
photos, feature extraction, training throughput, peak memory as the folder grows, where the time
goes), C++ and Python one after the other in the same command so the ratios are fair on a noisy
machine, prints a table and writes it to bench/RESULTS.md. Start it with bench/run.sh.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = "/usr/bin/python3"
BASELINE = os.path.join(ROOT, "bench", "python_baseline.py")


def run(cmd):
    """Runs cmd; returns (wall seconds, stdout). Stops the benchmark with the command's error."""
    t0 = time.time()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        sys.exit("bench: %s failed (exit %d):\n%s" % (" ".join(cmd), p.returncode, p.stderr.decode()[-2000:]))
    return time.time() - t0, p.stdout.decode()


def run_measured(cmd):
    """Like run, but also the child's peak RSS (MiB) from wait4."""
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.time() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit("bench: %s failed (exit %d):\n%s" % (" ".join(cmd), code, err.decode()[-2000:]))
    return wall, usage.ru_maxrss / 1024.0, out.decode()


def link_folder(dst, files, repeat=1):
    os.makedirs(dst, exist_ok=True)
    for r in range(repeat):
        for f in files:
            name = os.path.basename(f) if repeat == 1 else "r%02d_%s" % (r, os.path.basename(f))
            os.symlink(os.path.abspath(f), os.path.join(dst, name))
    return dst


def mobilenet_v2_macs():
    """Multiply-accumulates of one 224x224 MobileNetV2 1.0 forward pass without the classifier,
    counted layer by layer (the architecture of the default encoder; weights do not matter)."""
    import torch
    import torchvision
    model = torchvision.models.mobilenet_v2().eval()
    total = [0]

    def hook(m, inp, out):
        if isinstance(m, torch.nn.Conv2d):
            total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    for m in model.modules():
        m.register_forward_hook(hook)
    with torch.no_grad():
        model.features(torch.zeros(1, 3, 224, 224))
    return total[0]


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "default"))
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    ap.add_argument("--images", type=int, default=1000, help="Flickr8k photos per captioning run")
    ap.add_argument("--repeat", type=int, default=10, help="the memory run captions the folder this many times over")
    ap.add_argument("--train-batches", type=int, default=150, help="batches the Python trainer is timed on")
    ap.add_argument("--quick", action="store_true", help="100 photos, 3x repeat, 30 training batches: checks the plumbing")
    ap.add_argument("--output", default=os.path.join(ROOT, "bench", "RESULTS.md"))
    a = ap.parse_args()
    if a.quick:
        a.images, a.repeat, a.train_batches = 100, 3, 30

    captioner = os.path.join(a.build, "captioner")
    bench_bin = os.path.join(a.build, "captioner_bench")
    flickr = os.path.join(a.shared, "datasets", "flickr8k")
    coco = os.path.join(a.shared, "datasets", "coco_mini")
    for path, what in [(captioner, "the CLI (run scripts/setup.sh)"), (bench_bin, "captioner_bench (run scripts/setup.sh)"),
                       (os.path.join(a.model, "config.json"), "the model"), (flickr, "../shared's Flickr8k"), (coco, "../shared's COCO photos")]:
        if not os.path.exists(path):
            sys.exit("bench: %s is missing: %s" % (path, what))
    cores = os.cpu_count()
    work = tempfile.mkdtemp(prefix="captioner-bench-")
    rows = []  # (measure, C++, tuned Python, naive Python, unit)

    def ratio(c, p):
        return "%.2fx" % (c / p) if p else "-"

    try:
        val = json.load(open(os.path.join(flickr, "captions_val.json")))
        val_files = sorted(os.path.join(flickr, "images", i["file_name"]) for i in val["images"])[: a.images]
        f1k = link_folder(os.path.join(work, "flickr"), val_files)
        coco_files = sorted(os.path.join(coco, "train2017", f) for f in os.listdir(os.path.join(coco, "train2017")))
        cfold = link_folder(os.path.join(work, "coco"), coco_files)
        big = link_folder(os.path.join(work, "repeat"), val_files, a.repeat)
        print("bench: %d cores, %s; %d Flickr8k photos, %d COCO photos, model %s" % (
            cores, cpu_name(), len(val_files), len(coco_files), os.path.relpath(a.model, ROOT)), flush=True)

        def caption_cpp(folder, beam, n):
            out = os.path.join(work, "cpp.json")
            wall, rss, _ = run_measured([captioner, "caption", folder, "--model", a.model, "--beam", str(beam), "-q", "--output", out])
            return n / wall, rss

        def caption_py(folder, beam, n, naive):
            cmd = [PY, BASELINE, "caption", "--model", a.model, "--images", folder, "--beam", str(beam)]
            wall, rss, _ = run_measured(cmd + (["--naive"] if naive else []))
            return n / wall, rss

        # (1) Caption a folder, files -> captions, whole process timed (start-up included).
        rss_small = {}
        for label, folder, n in [("Flickr8k", f1k, len(val_files)), ("COCO (full-size)", cfold, len(coco_files))]:
            for beam in (1, 3):
                c, c_rss = caption_cpp(folder, beam, n)
                p, p_rss = caption_py(folder, beam, n, False)
                q, _ = caption_py(folder, beam, n, True)
                rows.append(("caption %d %s photos, beam %d" % (n, label, beam), c, p, q, "images/s"))
                print("  %-45s C++ %7.1f  Python %7.1f  naive %7.1f images/s" % (rows[-1][0], c, p, q), flush=True)
                if label == "Flickr8k" and beam == 3:
                    rss_small = {"cpp": c_rss, "py": p_rss}
        cpp_b1 = next(r[1] for r in rows if "Flickr8k" in r[0] and r[0].endswith("beam 1"))
        cpp_b3 = next(r[1] for r in rows if "Flickr8k" in r[0] and r[0].endswith("beam 3"))
        beam_cost = cpp_b1 / cpp_b3 - 1

        # (2) Feature extraction, files -> features, and (5) where the time goes.
        _, out = run([bench_bin, "--model", a.model, "--images", f1k, "--limit", str(min(a.images, 400))])
        stages = json.loads(out)
        cfg = json.load(open(os.path.join(a.model, "config.json")))
        enc_file = os.path.normpath(os.path.join(a.model, cfg["encoder"]["file"])) if not os.path.isabs(cfg["encoder"]["file"]) \
            else cfg["encoder"]["file"]
        if not os.path.exists(enc_file):
            enc_file = os.path.join(ROOT, "models", "encoders", "mobilenet_v2.pt")
        _, out = run([PY, BASELINE, "encode", "--encoder", enc_file, "--images", f1k, "--limit", str(min(a.images, 400))])
        py_enc = json.loads(out)["images_per_second"]
        _, out = run([PY, BASELINE, "encode", "--encoder", enc_file, "--images", f1k, "--limit", str(min(a.images, 400)), "--naive"])
        py_enc_naive = json.loads(out)["images_per_second"]
        rows.append(("feature extraction (files -> features)", stages["extract_images_per_second"], py_enc, py_enc_naive, "images/s"))
        print("  %-45s C++ %7.1f  Python %7.1f  naive %7.1f images/s" % (rows[-1][0], *rows[-1][1:4]), flush=True)

        # (3) Training on cached features: one C++ epoch on Flickr8k train, the Python loop timed
        # on its first batches (same batch size, vocabulary, sizes, clipping, Adam).
        train_dir, cache_dir = os.path.join(work, "train"), os.path.join(work, "cache")
        train_cmd = [captioner, "train", "--train-captions", os.path.join(flickr, "captions_train.json"),
                     "--val-captions", os.path.join(flickr, "captions_val.json"), "--train-images", os.path.join(flickr, "images"),
                     "--output", train_dir, "--cache-dir", cache_dir, "--epochs", "1", "--max-val-images", "50", "-q"]
        if a.quick:
            train_cmd += ["--max-train-images", "500"]
        run(train_cmd)
        epoch = [json.loads(l) for l in open(os.path.join(train_dir, "metrics.jsonl")) if '"epoch"' in l and '"type":"epoch"' in l][-1]
        cache = max((os.path.join(cache_dir, f) for f in os.listdir(cache_dir)), key=os.path.getsize)
        train_caps = os.path.join(flickr, "captions_train.json")
        if a.quick:  # the same 500 images' captions as the C++ run
            data = json.load(open(train_caps))
            keep = {i["id"] for i in data["images"][:500]}
            data = {"images": data["images"][:500], "annotations": [x for x in data["annotations"] if x["image_id"] in keep]}
            train_caps = os.path.join(work, "train500.json")
            json.dump(data, open(train_caps, "w"))
        py_train = {}
        for naive in (False, True):
            _, out = run([PY, BASELINE, "train", "--model", train_dir, "--features", cache, "--captions", train_caps,
                          "--max-batches", str(a.train_batches)] + (["--naive"] if naive else []))
            py_train[naive] = json.loads(out)
        rows.append(("training throughput (cached features)", epoch["captions_per_second"], py_train[False]["captions_per_second"],
                     py_train[True]["captions_per_second"], "captions/s"))
        rows.append(("training, seconds per Flickr8k epoch", epoch["seconds"], py_train[False]["seconds_per_epoch"],
                     py_train[True]["seconds_per_epoch"], "s (Python extrapolated)"))
        for r in rows[-2:]:
            print("  %-45s C++ %7.1f  Python %7.1f  naive %7.1f %s" % r, flush=True)

        # (4) Peak memory as the folder grows (beam 3).
        nbig = len(val_files) * a.repeat
        c_big, c_big_rss = caption_cpp(big, 3, nbig)
        p_big, p_big_rss = caption_py(big, 3, nbig, False)
        print("  peak RSS %d -> %d photos: C++ %.0f -> %.0f MiB, Python %.0f -> %.0f MiB" % (
            len(val_files), nbig, rss_small["cpp"], c_big_rss, rss_small["py"], p_big_rss), flush=True)

        macs = mobilenet_v2_macs()
        enc_gflops = 2 * macs / (stages["encoder_ms"] / 1e3) / 1e9
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # The report.
    import torch
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    L = []
    L.append("# Benchmarks: captioner (C++) vs. the same model in Python PyTorch")
    L.append("")
    L.append("Written by `bench/run.sh%s` on %s. Machine: %s, %d cores, Python torch %s (Debian), LibTorch 1.13.1 (Debian)." % (
        " --quick" if a.quick else "", date, cpu_name(), cores, torch.__version__))
    L.append("Model: `%s` (%s). Same machine, same photos, same beam width, one after the other in one command." % (
        os.path.relpath(a.model, ROOT), ", ".join("%s %s" % (k, v) for k, v in cfg["members"][0]["decoder"].items()
                                                if k in ("cell", "hidden_dim", "vocab_size"))))
    L.append("Threads: captioner uses its defaults (all %d cores for the encoder, one LibTorch thread for the decoder); "
             "the tuned Python baseline the same split with batch-4 `optimize_for_inference` and a DataLoader worker; "
             "the naive one PyTorch's defaults (batch 32, no optimisation, no worker)." % cores)
    L.append("")
    L.append("| measure | captioner | Python tuned | Python naive | unit | vs tuned | vs naive |")
    L.append("|---|---:|---:|---:|---|---:|---:|")
    for name, c, p, q, unit in rows:
        lower_better = unit.startswith("s")
        L.append("| %s | %.1f | %.1f | %.1f | %s | %s | %s |" % (
            name, c, p, q, unit, ratio(p, c) if lower_better else ratio(c, p), ratio(q, c) if lower_better else ratio(c, q)))
    L.append("| peak RSS, caption %d photos (beam 3) | %.0f | %.0f | | MiB | | |" % (len(val_files), rss_small["cpp"], rss_small["py"]))
    L.append("| peak RSS, caption %d photos (beam 3) | %.0f | %.0f | | MiB | | |" % (nbig, c_big_rss, p_big_rss))
    L.append("| caption %d photos (beam 3), images/s | %.1f | %.1f | | images/s | %s | |" % (nbig, c_big, p_big, ratio(c_big, p_big)))
    L.append("")
    L.append("Beam 3 costs captioner %.0f%% over beam 1, end to end on the Flickr8k photos (target: at most 25%%)." % (100 * beam_cost))
    L.append("")
    L.append("## Where the time goes (captioner, per image, %d Flickr8k photos)" % stages["images"])
    L.append("")
    L.append("| stage | ms/image | threads |")
    L.append("|---|---:|---|")
    L.append("| JPEG decode (OpenCV) | %.2f | 1 loader thread |" % stages["decode_ms"])
    L.append("| resize + normalise | %.2f | 1 loader thread |" % stages["preprocess_ms"])
    L.append("| encoder (MobileNetV2, batch %d) | %.2f | %d |" % (stages["encoder_batch"], stages["encoder_ms"], cores))
    L.append("| decoder, beam 1 | %.2f | 1 |" % stages["decoder_beam1_ms"])
    L.append("| decoder, beam 3 | %.2f | 1 |" % stages["decoder_beam3_ms"])
    L.append("")
    L.append("Loader threads decode and preprocess the next batches while the encoder runs, so end to end a photo costs "
             "about the encoder's time plus the decoder's. The encoder does %.2f GMAC per image (%.2f GFLOP), i.e. %.1f GFLOP/s; "
             "the machine's float32 matrix-multiply peak measured through LibTorch is %.1f GFLOP/s on %d cores "
             "(%.1f on one), so the encoder runs at %.0f%% of it. Depthwise convolutions cannot reach GEMM speed; "
             "the GEMM peak is the floor no implementation can beat." % (
                 macs / 1e9, 2 * macs / 1e9, enc_gflops, stages["gemm_gflops_all_cores"], cores,
                 stages["gemm_gflops_one_core"], 100 * enc_gflops / stages["gemm_gflops_all_cores"]))
    L.append("")
    L.append("Commands: `captioner caption DIR --beam N -q --output FILE`, `captioner train ... --epochs 1`, "
             "`bench/python_baseline.py caption|encode|train [--naive]`, `captioner_bench` (stage timings). "
             "Wall time of the whole process, start-up included; peak RSS from wait4.")
    text = "\n".join(L) + "\n"
    tmp = a.output + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, a.output)
    print()
    print(text)
    print("bench: written to %s" % os.path.relpath(a.output, os.getcwd()))


if __name__ == "__main__":
    main()
