"""Photos per second of a folder batch (`hairclip edit FOLDER -o OUT`) on the CPU: one process, and two
processes under torchrun (gloo), with the small random networks (the whole pipeline at 1024 px, tiny widths).

Two figures per setting, medians over --repeat runs: the wall clock of the whole command (process start,
imports and model set-up included), and the editing rate alone, from the report (photos over the busiest
rank's summed edit times). The ratio is against the single process of the same run.

    python bench/bench_batch.py [--photos 8] [--size 256] [--repeat 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from hairclip.images import save_image

ROOT = Path(__file__).resolve().parents[1]


def run(procs: int, photos: Path, out: Path, threads: int) -> tuple[float, float]:
    """Wall seconds of the command, and seconds of editing on its busiest rank."""
    edit = ["-m", "hairclip", "edit", str(photos), "-o", str(out), "--hairstyle", "afro", "--random-tiny",
            "--device", "cpu"]
    cmd = [sys.executable, *edit] if procs == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs), *edit]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "backend"), str(ROOT / "shared"), env.get("PYTHONPATH", "")])
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(res.stderr)
    busy: dict[int, float] = defaultdict(float)
    for line in (out / "hairclip-report.jsonl").read_text().splitlines():
        rec = json.loads(line)
        assert rec["status"] == "done", rec
        busy[rec["rank"]] += rec["seconds"]
    return wall, max(busy.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        yy, xx = np.mgrid[0:args.size, 0:args.size]
        for i in range(args.photos):
            save_image(photos / f"p{i:03d}.png",
                       np.stack([(xx + 7 * i) % 256, yy % 256, (xx * yy + i) % 256], -1).astype(np.uint8))
        results = {}
        for procs in (1, 2):
            walls, edits = [], []
            for r in range(args.repeat):
                wall, busy = run(procs, photos, Path(tmp) / f"out{procs}-{r}", args.threads)
                walls.append(args.photos / wall)
                edits.append(args.photos / busy)
            results[procs] = statistics.median(walls), statistics.median(edits)
    print(f"{args.photos} photos of {args.size}x{args.size}, random tiny networks, CPU, {args.threads} thread(s) "
          f"per process, {os.cpu_count()} cores, medians of {args.repeat}")
    w1, e1 = results[1]
    for procs, (w, e) in results.items():
        print(f"{procs} process(es): {w:6.3f} photos/s wall clock ({w / w1:4.2f}x)   "
              f"{e:6.3f} photos/s editing ({e / e1:4.2f}x)")


if __name__ == "__main__":
    main()
