"""The composite of one face on a 2048² photo: the plain path against the warm path a cached photo allows.

Plain reference: `edit_mask`, `warp_face` (colour and alpha sampled apart, the grid built each time) and
`compose_layer`. Warm: `edit_mask_warm` (the original's grown hair cached), `warp_face_warm` (one sampling
pass over a cached grid) and `compose_one`. `prepare_warp`, paid once per photo and face, is timed apart.
Medians of the worker thread's CPU time (what a quiet machine would show; this machine is shared) and wall.

    python bench/bench_composite.py [--size 2048] [--face 0.6] [--runs 7]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from hairclip.pipeline.align import FaceTransform
from hairclip.pipeline.composite import (
    compose_layer,
    compose_one,
    edit_mask,
    edit_mask_warm,
    prepare_warp,
    warp_face,
    warp_face_warm,
)


def _median(fn, runs: int) -> tuple[float, float]:
    cpu, wall = [], []
    for _ in range(runs):
        c0, w0 = time.thread_time(), time.perf_counter()
        fn()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    return float(np.median(cpu)), float(np.median(wall))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--face", type=float, default=0.6, help="the face square's side, as a fraction of the photo")
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(1)
    n = args.size
    half, angle = args.face * n / 2, 0.1
    x = (half * np.cos(angle), half * np.sin(angle))
    transform = FaceTransform((n / 2 - 13.7, n / 2 - 60.3), x, (-x[1], x[0]), (n, n))
    photo = np.random.default_rng(0).integers(0, 256, (n, n, 3), dtype=np.uint8)
    yy, xx = torch.meshgrid(torch.arange(1024), torch.arange(1024), indexing="ij")
    before = ((yy - 400) ** 2 + (xx - 512) ** 2) < 380 ** 2
    after = ((yy - 450) ** 2 + (xx - 512) ** 2) < 420 ** 2
    edited = torch.rand(3, 1024, 1024, generator=torch.Generator().manual_seed(0))

    def plain():
        rgb, alpha, box = warp_face(edited, edit_mask(before, after), transform, (n, n))
        return compose_layer(photo, [(rgb, alpha, box)])

    warp = prepare_warp(transform, (n, n), before)

    def warm():
        return compose_one(photo, *warp_face_warm(edited, edit_mask_warm(warp, after), warp))

    differ = np.abs(plain().astype(int) - warm().astype(int))
    ref = _median(plain, args.runs)
    new = _median(warm, args.runs)
    once = _median(lambda: prepare_warp(transform, (n, n), before), max(3, args.runs // 2))
    print(f"{n}² photo, face square {2 * half:.0f} px, {args.runs} runs, one thread (medians, CPU / wall)")
    print(f"  plain composite      {ref[0] * 1000:7.1f} ms / {ref[1] * 1000:7.1f} ms")
    print(f"  warm composite       {new[0] * 1000:7.1f} ms / {new[1] * 1000:7.1f} ms"
          f"   ratio {new[0] / ref[0]:.2f} of plain (CPU)")
    print(f"  prepare_warp (once)  {once[0] * 1000:7.1f} ms / {once[1] * 1000:7.1f} ms")
    print(f"  layers differ by at most {differ.max()} level(s) in {(differ > 0).mean():.4%} of the values")


if __name__ == "__main__":
    main()
