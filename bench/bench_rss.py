"""Server memory over many big jobs, with and without handing freed heap pages back after each job.

Starts a real server in a child process (the small random networks, a centred face filling `--face` of the
short side), sends `--jobs` edits of distinct `--size`² RGB photos one after another, and reads the child's
resident memory (VmRSS) after each job. The same run does it twice: once as shipped (`malloc_trim(0)` after
each job, `hairclip.server.release_freed_memory`) and once with that call replaced by a no-op, the plain
reference; the two servers run side by side, so both see the same machine load. The server legitimately
holds the engine's last 8 jobs (photo, layer, per-face tensors) and the replay window, so RSS grows over the
first jobs in both; what differs is the freed memory kept on top.

    python bench/bench_rss.py [--jobs 40] [--size 4096] [--face 0.25]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from hairclip.images import array_to_image
from hairclip_shared.client import Client
from hairclip_shared.protocol import EditRequest

MiB = 1 << 20


def serve(face: float, trim: bool) -> None:
    """The child: a real Server with the pipeline engine; prints its endpoint, serves until stdin closes."""
    import torch

    import hairclip.server as server_module
    from hairclip.engine import PipelineEngine
    from hairclip.pipeline.models import CentredFace, Models

    torch.set_num_threads(1)
    if not trim:
        server_module.release_freed_memory = lambda: None  # the reference: as before the fix
    engine = PipelineEngine(Models.random_tiny("cpu", detector=CentredFace(face)))
    with server_module.Server(engine, "tcp://127.0.0.1:0") as srv:
        print(srv.endpoint, flush=True)
        sys.stdin.read()  # the parent closes it when done


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


def run(args: argparse.Namespace, trim: bool) -> dict[str, float]:
    child = subprocess.Popen([sys.executable, __file__, "--serve", "--face", str(args.face)]
                             + ([] if trim else ["--no-trim"]), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        endpoint = child.stdout.readline().strip()
        base = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
        after, seconds = [], []
        with Client(endpoint, timeout=60) as client:
            start = rss_mib(child.pid)
            for i in range(args.jobs):
                photo = np.roll(base, 7 * i, axis=1)  # distinct photos: no cache hit between jobs
                request = EditRequest(source=array_to_image(photo), colour="red", preview=False)
                t0 = time.perf_counter()
                client.submit(request).result(timeout=600)
                seconds.append(time.perf_counter() - t0)
                time.sleep(0.3)  # the trim runs on the worker right after the result is posted
                after.append(rss_mib(child.pid))
                print(f"  {'trim' if trim else 'ref '} job {i + 1:2d}: RSS {after[-1]:7.0f} MiB "
                      f"({seconds[-1]:.1f} s)", flush=True)
            peak = rss_mib(child.pid, "VmHWM")
        tail = after[len(after) // 4:]  # past the warm-up, once the engine's 8-job cache is full
        return {"start": start, "median": statistics.median(tail), "last": after[-1], "max": max(after),
                "peak": peak, "job_s": statistics.median(seconds)}
    finally:
        child.stdin.close()
        child.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--face", type=float, default=0.25, help="face side as a fraction of the photo's short side")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-trim", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return serve(args.face, not args.no_trim)
    with ThreadPoolExecutor(2) as pool:  # side by side, so that both see the same machine load
        results = dict(zip((False, True), pool.map(lambda trim: run(args, trim), (False, True)), strict=True))
    print(f"\n{args.jobs} jobs of {args.size}x{args.size} RGB u8 photos (face {args.face:g} of the side), "
          "server RSS in MiB after each job:")
    print(f"{'':22} {'at start':>9} {'median*':>9} {'last':>9} {'max':>9} {'peak':>9} {'s/job':>7}")
    for trim, name in ((False, "reference (no trim)"), (True, "malloc_trim per job")):
        r = results[trim]
        print(f"{name:22} {r['start']:9.0f} {r['median']:9.0f} {r['last']:9.0f} {r['max']:9.0f} "
              f"{r['peak']:9.0f} {r['job_s']:7.2f}")
    ref, new = results[False], results[True]
    print(f"* median over jobs {args.jobs // 4 + 1}-{args.jobs}. Trim saves {ref['median'] - new['median']:.0f} MiB "
          f"(median), ratio {new['median'] / ref['median']:.2f}; job time ratio "
          f"{new['job_s'] / ref['job_s']:.2f}")


if __name__ == "__main__":
    main()
