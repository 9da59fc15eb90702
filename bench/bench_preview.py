"""What the plug-ins' live preview costs in the editor's own Python (hairclip_shared.preview, no numpy).

For a 2048x2048 source and result layer (BGRA u8, the result's edit covering a disc with a soft edge), the
median of: shrinking both to the 256 px preview, laying the result over the source (once per render that
arrives), and the slider's cross-fade of two 256 px pictures (each drag step). The cross-fade's plain
reference, in the same run, is the same mix written as a per-byte Python loop.

    PYTHONPATH=backend:shared .venv/bin/python bench/bench_preview.py [--repeat 9]
"""

from __future__ import annotations

import argparse
import math
import os

from timing import median_s  # bench/timing.py: the script's folder is on sys.path

from hairclip_shared.pictures import crossfade, over, shrink, to_rgba8
from hairclip_shared.preview import PREVIEW_SIDE
from hairclip_shared.protocol import Image

SIDE = 2048


def layer_with_disc() -> Image:
    """Random colours; alpha 255 inside a disc, a 24 px soft ramp, 0 outside."""
    data = bytearray(os.urandom(SIDE * SIDE * 4))
    c, r = SIDE / 2, SIDE / 3
    for y in range(SIDE):
        dy = y - c
        row = bytearray(SIDE)
        span = r + 24
        if abs(dy) < span:
            for x in range(max(0, int(c - span)), min(SIDE, int(c + span) + 1)):
                d = math.hypot(x - c, dy)
                row[x] = 255 if d <= r else max(0, round(255 * (1 - (d - r) / 24)))
        data[y * SIDE * 4 + 3:(y + 1) * SIDE * 4:4] = row
    return Image(SIDE, SIDE, bytes(data), "BGRA", "u8")


def plain_crossfade(a: Image, b: Image, w: float) -> bytes:
    return bytes(round(x * (1 - w) + y * w) for x, y in zip(a.data, b.data, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=9)
    n = ap.parse_args().repeat
    source = Image(SIDE, SIDE, os.urandom(SIDE * SIDE * 4), "BGRA", "u8")
    result = layer_with_disc()
    t_shrink = median_s(lambda: (to_rgba8(shrink(source, PREVIEW_SIDE)), to_rgba8(shrink(result, PREVIEW_SIDE))), n)
    base, top = to_rgba8(shrink(source, PREVIEW_SIDE)), to_rgba8(shrink(result, PREVIEW_SIDE))
    t_over = median_s(lambda: over(base, top), n)
    a, b = over(base, top), base
    t_fade = median_s(lambda: crossfade(a, b, 0.3), n)
    t_plain = median_s(lambda: plain_crossfade(a, b, 0.3), max(3, n // 3))
    print(f"{SIDE}x{SIDE} layers -> {a.width}x{a.height} preview, median of {n} (shared machine: figures inflated)")
    print(f"  shrink source and result:   {t_shrink * 1000:7.1f} ms")
    print(f"  result over source:         {t_over * 1000:7.1f} ms  (once per render received)")
    print(f"  slider cross-fade:          {t_fade * 1000:7.1f} ms  (each drag step)")
    print(f"  plain per-byte cross-fade:  {t_plain * 1000:7.1f} ms  -> big-int cross-fade is "
          f"{t_fade / t_plain:.3f}x the plain one")


if __name__ == "__main__":
    main()
