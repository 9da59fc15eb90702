"""Jobs per second through a real server with the small random networks (`hairclip serve --random-tiny`).

Measures the serving path end to end (socket, queue, worker, the whole pipeline at 1024 px in the aligned
frame, compositing) with networks small enough that the protocol and the non-network stages show.
Full edits and strength-only re-renders are timed separately.

    python bench/bench_jobs.py [--jobs 10] [--size 512]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from hairclip.engine import PipelineEngine
from hairclip.images import array_to_image
from hairclip.pipeline.models import Models
from hairclip.server import Server
from hairclip_shared.client import Client
from hairclip_shared.protocol import EditRequest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    yy, xx = np.mgrid[0:args.size, 0:args.size]
    with Server(PipelineEngine(Models.random_tiny("cpu")), "tcp://127.0.0.1:0") as server, \
            Client(server.endpoint) as client:
        photos = [np.stack([(xx + i) % 256, yy % 256, (xx * yy + i) % 256], -1).astype(np.uint8)
                  for i in range(args.jobs)]  # distinct photos: nothing is cached between jobs
        client.submit(EditRequest(source=array_to_image(photos[0]), hairstyle="afro")).result(timeout=300)  # warm-up
        edits, rerenders = [], []
        for i, photo in enumerate(photos):
            t0 = time.perf_counter()
            job = client.submit(EditRequest(source=array_to_image(photo), hairstyle="bob cut" if i % 2 else "afro"))
            job.result(timeout=300)
            edits.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            client.rerender(job, 0.5).result(timeout=300)
            rerenders.append(time.perf_counter() - t0)
    e, r = statistics.median(edits), statistics.median(rerenders)
    print(f"{args.jobs} jobs, {args.size}x{args.size} RGB photos, random tiny networks, CPU")
    print(f"full edit:            median {e * 1000:7.1f} ms  -> {1 / e:5.2f} jobs/s")
    print(f"strength re-render:   median {r * 1000:7.1f} ms  -> {1 / r:5.2f} jobs/s   (ratio {e / r:.2f}x)")


if __name__ == "__main__":
    main()
