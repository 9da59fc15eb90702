"""The composite of one face on a 2048² photo, per warm edit: the fast path against the references it equals.

Three paths in the same run, on the same inputs:
- plain: `edit_mask`, `warp_face` (colour and alpha sampled apart, the grid built each time), `compose_layer`;
- warm reference (the path before the fast one): `edit_mask_warm` (the original's grown hair cached),
  `warp_face_warm` (one sampling pass over the cached grid over the whole face box), `compose_one`;
- fast (what the editor runs on the CPU): `edit_mask_fast` (numpy, only over the mask's reach) and
  `compose_face` (the warp sampled only in tiles the edit reaches, onto a copy of the cached clear layer).
The fast layer must equal the warm reference's byte for byte (printed). `prepare_warp` and `clear_layer`,
paid once per photo and face, are timed apart. Medians of process CPU time (all threads; the main figure,
less sensitive to other processes on a shared machine) and wall time.

Scenes: ``disks`` (the original's hair and the new hair two large discs, about 70% of the frame: a
worst case) and ``portrait`` (a drawn portrait's hair from tests/portraits.py, aligned by its landmarks,
and a longer style for the new hair: hair around the face, not over it).

    python bench/bench_composite.py [--size 2048] [--scene disks|portrait] [--face 0.6] [--runs 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hairclip.pipeline.align import FaceTransform, _photo_crop  # noqa: E402
from hairclip.pipeline.composite import (  # noqa: E402
    clear_layer,
    compose_face,
    compose_layer,
    compose_one,
    edit_mask,
    edit_mask_fast,
    edit_mask_warm,
    prepare_warp,
    warp_face,
    warp_face_warm,
)
from portraits import portrait  # noqa: E402


def _median(fn, runs: int) -> tuple[float, float]:
    cpu, wall = [], []
    for _ in range(runs):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return float(np.median(cpu)), float(np.median(wall))


def disks(n: int, face: float):
    half, angle = face * n / 2, 0.1
    x = (half * np.cos(angle), half * np.sin(angle))
    transform = FaceTransform((n / 2 - 13.7, n / 2 - 60.3), x, (-x[1], x[0]), (n, n))
    photo = np.random.default_rng(0).integers(0, 256, (n, n, 3), dtype=np.uint8)
    yy, xx = torch.meshgrid(torch.arange(1024), torch.arange(1024), indexing="ij")
    before = ((yy - 400) ** 2 + (xx - 512) ** 2) < 380 ** 2
    after = ((yy - 450) ** 2 + (xx - 512) ** 2) < 420 ** 2
    return photo, transform, before, after


def drawn(n: int, face: float):
    side = face * n / 1.45  # the drawn face's side; its FFHQ square is about 1.45 times that
    photo, hair, faces = portrait(n, n, [(n / 2, n * 0.42, side, n * 0.42 + 1.6 * side)])
    transform = FaceTransform.from_landmarks(faces[0].landmarks, (n, n))
    before = torch.from_numpy(_photo_crop(hair.astype(np.uint8) * 255, transform, 1024) > 127)
    longer = F.max_pool2d(before.float()[None, None], (61, 21), stride=1, padding=(30, 10))[0, 0] > 0
    return photo, transform, before, longer  # the new hair: the old grown down and out a little


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--scene", choices=["disks", "portrait"], default="disks")
    ap.add_argument("--face", type=float, default=0.6, help="the face square's side, as a fraction of the photo")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = args.size
    photo, transform, before, after = (disks if args.scene == "disks" else drawn)(n, args.face)
    edited = torch.rand(3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    warp = prepare_warp(transform, (n, n), before)
    base = clear_layer(photo)

    def plain():
        rgb, alpha, box = warp_face(edited, edit_mask(before, after), transform, (n, n))
        return compose_layer(photo, [(rgb, alpha, box)])

    def warm():
        return compose_one(photo, *warp_face_warm(edited, edit_mask_warm(warp, after), warp))

    def fast():
        return compose_face(photo, edited, edit_mask_fast(warp, after), warp, base)

    same = np.array_equal(warm(), fast())
    differ = np.abs(plain().astype(int) - warm().astype(int))
    cover = float(edit_mask_warm(warp, after).gt(0).float().mean())
    ref, old, new = _median(plain, args.runs), _median(warm, args.runs), _median(fast, args.runs)
    once = _median(lambda: prepare_warp(transform, (n, n), before), max(3, args.runs // 2))
    layer = _median(lambda: clear_layer(photo), max(3, args.runs // 2))
    print(f"{n}² photo, {args.scene} scene, face square {2 * np.hypot(*transform.x):.0f} px, edit mask on "
          f"{cover:.0%} of the frame, {args.runs} runs, {args.threads} thread(s); medians, CPU / wall")
    print(f"  plain composite           {ref[0] * 1000:7.1f} ms / {ref[1] * 1000:7.1f} ms")
    print(f"  warm reference composite  {old[0] * 1000:7.1f} ms / {old[1] * 1000:7.1f} ms")
    print(f"  fast composite            {new[0] * 1000:7.1f} ms / {new[1] * 1000:7.1f} ms"
          f"   {new[0] / old[0]:.2f} / {new[1] / old[1]:.2f} of the warm reference, "
          f"{new[0] / ref[0]:.2f} / {new[1] / ref[1]:.2f} of plain")
    print(f"  once per photo: prepare_warp {once[0] * 1000:.1f} ms / {once[1] * 1000:.1f} ms, "
          f"clear_layer {layer[0] * 1000:.1f} ms / {layer[1] * 1000:.1f} ms")
    print(f"  fast layer equals the warm reference's byte for byte: {same}")
    print(f"  plain and warm layers differ by at most {differ.max()} level(s) in {(differ > 0).mean():.4%} "
          "of the values")


if __name__ == "__main__":
    main()
