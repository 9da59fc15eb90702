"""Does align.py's shrink shortcut matter? e4e's 256 px route on big photos, shortcut against the plain way.

When a face's square is over 1024 photo px, e4e shrinks the WHOLE photo with LANCZOS and then crops.
`_shrunk_region` gets the same bits by resampling only the crop, per axis, in the pass order it probes
Pillow for. The plain reference, in the same run, is e4e's own order: `photo.resize(size, LANCZOS)`, then
the crop. Both must give identical pixels (checked here too).

    PYTHONPATH=backend:shared .venv/bin/python bench/bench_align_shrink.py [--repeat 5]
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image
from timing import median_s  # bench/timing.py: the script's folder is on sys.path

from hairclip.pipeline import align


def plain_region(photo: np.ndarray, size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(photo).resize(size, Image.LANCZOS))[box[1]:box[3], box[0]:box[2]]


def route256(photo: np.ndarray, t: align.FaceTransform) -> np.ndarray:
    """What align_face does for the e4e input: shrink, crop, pad, then the quad warp."""
    src, quad, _ = align._e4e_source(photo, t.quad(), t.qsize, t.shrink)
    return align._quad_transform(src, quad, align.E4E_SIZE)




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    shortcut = align._shrunk_region
    rng = np.random.default_rng(0)
    # (photo W x H, side of the face's square in photo px): shrink = floor(side / 512)
    cases = [((4000, 3000), 1100), ((6000, 4000), 1100), ((6000, 4000), 1700)]
    print(f"{'photo':>10} {'shrink':>6} {'shortcut s':>11} {'plain s':>8} {'plain/shortcut':>15}")
    for (w, h), side in cases:
        photo = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        t = align.FaceTransform((w / 2, h / 2), (side / 2, 0.0), (0.0, side / 2), (w, h), side // 512)
        images, times = {}, {}
        for name, fn in (("shortcut", shortcut), ("plain", plain_region)):
            align._shrunk_region = fn
            try:
                images[name] = route256(photo, t)
                times[name] = median_s(lambda: route256(photo, t), args.repeat)  # noqa: B023
            finally:
                align._shrunk_region = shortcut
        assert np.array_equal(images["shortcut"], images["plain"]), "the two ways differ"
        print(f"{w}x{h:<5} {t.shrink:>6} {times['shortcut']:>11.3f} {times['plain']:>8.3f} "
              f"{times['plain'] / times['shortcut']:>15.2f}")

if __name__ == "__main__":
    main()
