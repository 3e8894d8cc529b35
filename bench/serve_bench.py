#!/usr/bin/python3
"""captioner serve under load: the 1,000 Flickr8k dev photos posted by 1, 8 and 32 concurrent
clients (throughput, p50/p99 latency), beside `captioner caption` on the same folder, and one
client's latency for a 224-px JPEG after warm-up. Prints a Markdown table.

    /usr/bin/python3 bench/serve_bench.py [--photos N]

Needs the build (scripts/setup.sh) and ../shared. Standard library only; traffic stays on 127.0.0.1.
"""
import argparse
import concurrent.futures
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "build", "captioner")  # --binary replaces it (e.g. an older build, side by side)
SHARED = os.environ.get("CAPTIONER_SHARED", os.path.join(ROOT, "..", "shared"))


def dev_photos(n):
    folder = os.path.join(SHARED, "datasets", "flickr8k", "images")
    with open(os.path.join(SHARED, "datasets", "flickr8k", "Flickr_8k.devImages.txt")) as f:
        names = [line.strip() for line in f if line.strip()]
    return [os.path.join(folder, name) for name in names[:n]]


def start_server(extra):
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    proc = subprocess.Popen([BINARY, "serve", "--port", "0"] + extra, stderr=log, stdout=subprocess.DEVNULL)
    for _ in range(600):
        with open(log.name) as f:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", f.read())
        if m:
            return proc, int(m.group(1))
        time.sleep(0.05)
    proc.kill()
    sys.exit("captioner serve did not start: " + open(log.name).read())


def post(port, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/captions", data=body, headers={"Content-Type": "image/jpeg"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        json.loads(r.read())
    return time.perf_counter() - t0


def run_clients(port, bodies, clients):
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(lambda b: post(port, b), bodies))
    seconds = time.perf_counter() - t0
    latencies.sort()
    return len(bodies) / seconds, latencies[len(latencies) // 2], latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]


def cli_rate(photos):
    with tempfile.TemporaryDirectory() as d:
        for p in photos:
            os.symlink(p, os.path.join(d, os.path.basename(p)))
        t0 = time.perf_counter()
        subprocess.run([BINARY, "caption", d, "-q", "-o", os.path.join(d, "out.json")], check=True)
        return len(photos) / (time.perf_counter() - t0)


def small_jpeg(path):
    from PIL import Image  # Debian's python3-pil, which python3-torchvision brings
    out = io.BytesIO()
    Image.open(path).convert("RGB").resize((224, 224)).save(out, "JPEG", quality=90)
    return out.getvalue()


def main():
    global BINARY
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--binary", help="the captioner to measure (default: build/captioner)")
    ap.add_argument("--server-args", default="--http-threads 40 --max-queue 256",
                    help="options for captioner serve")
    args = ap.parse_args()
    BINARY = args.binary or BINARY
    photos = dev_photos(args.photos)
    bodies = [open(p, "rb").read() for p in photos]
    rows = []
    rate_cli = cli_rate(photos)
    proc, port = start_server(args.server_args.split() + ["-q"])
    try:
        run_clients(port, bodies[:32], 8)  # warm-up
        for clients in (1, 8, 32):
            rate, p50, p99 = run_clients(port, bodies, clients)
            rows.append((clients, rate, p50, p99))
        try:
            small = small_jpeg(photos[0])
            for _ in range(5):
                post(port, small)
            single = sorted(post(port, small) for _ in range(50))
            small_p50 = single[len(single) // 2]
        except ImportError:
            small_p50 = None
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    # The folder command again, after the server: the best of the two, as the machine is shared.
    rate_cli = max(rate_cli, cli_rate(photos))
    cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"], capture_output=True, text=True).stdout.strip()
    print(f"captioner serve {args.server_args}, {len(photos)} Flickr8k dev photos, {cpu} ({os.cpu_count()} cores)\n")
    print("| clients | photos/s | vs `captioner caption` | p50 ms | p99 ms |")
    print("|---:|---:|---:|---:|---:|")
    for clients, rate, p50, p99 in rows:
        print(f"| {clients} | {rate:.1f} | {rate / rate_cli:.2f}x | {1000 * p50:.1f} | {1000 * p99:.1f} |")
    print(f"\n`captioner caption` on the same folder: {rate_cli:.1f} photos/s (whole process, best of 2: before and after).")
    if small_p50 is not None:
        print(f"One client, a 224-px JPEG after warm-up: p50 {1000 * small_p50:.1f} ms over 50 requests.")


if __name__ == "__main__":
    main()
