"""Small pictures for the live preview, in pure Python (no numpy, Qt or GTK), fast enough for a slider.

    shrink(image, side) -> Image              nearest-neighbour reduction (an integer step) to <= side px
    to_rgba8(image) -> Image                  any protocol image -> RGBA u8, for display
    over(base, layer) -> Image                a result layer (alpha = the edit) laid over the source, both RGBA u8
    crossfade(a, b, weight_b) -> Image        two same-sized RGBA u8 pictures mixed, in C-speed big-int steps
"""

from __future__ import annotations

import array
import math
import re

from .protocol import CHANNELS, DEPTHS, Image

_CAST = {1: "B", 2: "H", 4: "I", 8: "Q"}  # memoryview formats that take a whole pixel as one item


def shrink(image: Image, side: int) -> Image:
    """``image`` reduced by a whole step so its longer side is at most ``side`` (nearest neighbour, same format).

    A whole step keeps this to strided slices done in C: a 2048 px layer becomes a 256 px picture in
    milliseconds, which a preview needs more than a smooth filter."""
    w, h = image.width, image.height
    step = max(1, math.ceil(max(w, h) / max(1, side)))
    if step == 1:
        return image
    px = CHANNELS[image.channels] * DEPTHS[image.depth]
    row_bytes = w * px
    mv = memoryview(image.data).cast("B")
    fmt = _CAST.get(px)
    rows = []
    for y in range(0, h, step):
        row = mv[y * row_bytes:(y + 1) * row_bytes]
        if fmt is not None:
            rows.append(row.cast(fmt)[::step].tobytes())
        else:
            rows.append(b"".join(row[i:i + px] for i in range(0, row_bytes, px * step)))
    return Image(len(range(0, w, step)), len(rows), b"".join(rows), image.channels, image.depth)


def _samples_u8(image: Image) -> bytes:
    """Every sample as one byte (u16: the high byte; f32: clamped and rounded)."""
    raw = memoryview(image.data).cast("B")
    if image.depth == "u8":
        return bytes(raw)
    if image.depth == "u16":
        return bytes(raw[1::2])  # little-endian: the high byte is the second
    vals = array.array("f")
    vals.frombytes(raw)
    return bytes(0 if not v > 0 else 255 if v >= 1 else int(v * 255 + 0.5) for v in vals)


def to_rgba8(image: Image) -> Image:
    """Any protocol image as RGBA u8 (opaque when it has no alpha; an 'A' image as grey)."""
    if image.channels == "RGBA" and image.depth == "u8":
        return image
    s = _samples_u8(image)
    ch = image.channels
    n = image.width * image.height
    k = CHANNELS[ch]
    out = bytearray(b"\xff" * (4 * n))
    for i, c in enumerate("RGB"):
        out[i::4] = s[ch.index(c if c in ch else "A")::k]
    if "A" in ch and ch != "A":
        out[3::4] = s[ch.index("A")::k]
    return Image(image.width, image.height, bytes(out), "RGBA", "u8")


_PARTIAL = re.compile(rb"[\x01-\xfe]")
_SOME = re.compile(rb"[^\x00]+")


def over(base: Image, layer: Image) -> Image:
    """``layer`` composited over ``base`` (both RGBA u8, same size), in sRGB values as the editors' Normal mode
    and the backend mix; the picture keeps the base's alpha, as the result layer keeps the source's."""
    if (base.width, base.height) != (layer.width, layer.height):
        raise ValueError(f"over: {base.describe()} and {layer.describe()} differ in size")
    under = bytes(memoryview(to_rgba8(base).data).cast("B"))
    top = bytes(memoryview(to_rgba8(layer).data).cast("B"))
    out = bytearray(under)
    alpha = top[3::4]
    for run in _SOME.finditer(alpha):  # most of a layer is alpha 0 (the source shows) or 255: slices in C
        s, e = 4 * run.start(), 4 * run.end()
        out[s:e] = top[s:e]
        out[s + 3:e:4] = under[s + 3:e:4]
    for m in _PARTIAL.finditer(alpha):  # the soft edge: mixed pixel by pixel
        i, a = 4 * m.start(), alpha[m.start()]
        for c in range(i, i + 3):
            out[c] = (under[c] * (255 - a) + top[c] * a + 127) // 255
    return Image(base.width, base.height, bytes(out), "RGBA", "u8")


_HALVES: dict[int, int] = {}


def crossfade(a: Image, b: Image, weight_b: float) -> Image:
    """(1 - weight_b) * a + weight_b * b for two same-sized RGBA u8 pictures.

    Each byte becomes a 16-bit lane of one big integer, so the mix is two multiplications and an addition
    on the whole picture, in C: a 256 px cross-fade takes about a millisecond, well inside a slider's frame."""
    if (a.width, a.height, a.channels, a.depth) != (b.width, b.height, b.channels, b.depth) or a.depth != "u8":
        raise ValueError(f"crossfade: {a.describe()} and {b.describe()} differ")
    wb = min(256, max(0, round(weight_b * 256)))
    if wb == 0:
        return a
    if wb == 256:
        return b
    n = memoryview(a.data).nbytes
    lanes_a, lanes_b = bytearray(2 * n), bytearray(2 * n)
    lanes_a[0::2] = memoryview(a.data).cast("B")
    lanes_b[0::2] = memoryview(b.data).cast("B")
    if n not in _HALVES:
        _HALVES.clear()
        _HALVES[n] = int.from_bytes(b"\x80\x00" * n, "little")  # +0.5 per lane: round, not floor
    mixed = (int.from_bytes(lanes_a, "little") * (256 - wb) + int.from_bytes(lanes_b, "little") * wb
             + _HALVES[n])  # a lane holds at most 255 * 256 + 128 < 65536: no carry into the next
    return Image(a.width, a.height, mixed.to_bytes(2 * n, "little")[1::2], a.channels, "u8")
