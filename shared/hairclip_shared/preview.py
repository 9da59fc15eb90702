"""The live preview both plug-ins show before anything goes into the document.

Pure Python (no numpy, Qt or GTK), like the rest of hairclip_shared, so it runs in the editors' Pythons.

Pictures
    shrink(image, side) -> Image              nearest-neighbour reduction (an integer step) to <= side px
    to_rgba8(image) -> Image                  any protocol image -> RGBA u8, for display
    over(base, layer) -> Image                a result layer (alpha = the edit) laid over the source, both RGBA u8
    crossfade(a, b, weight_b) -> Image        two same-sized RGBA u8 pictures mixed, in C-speed big-int steps
State
    StrengthPreview                           which strength's picture to show while the slider moves, and
                                              which renders to ask for (cross-fade while dragging, exact on release)
    RenderSession                             a finished edit's renders at other strengths, fetched with
                                              `Client.rerender` (renders the idle server made ahead come back at once)
    History, HistoryEntry                     the last edits: conditions, strength, thumbnail; apply or drop
"""

from __future__ import annotations

import array
import math
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .protocol import (
    CHANNELS,
    DEPTHS,
    SLIDER_STEP,
    STRENGTH_RANGE,
    Cancelled,
    EditResult,
    HairclipError,
    Image,
    slider_crossfade,
)

PREVIEW_SIDE = 256  # px: the docker's and the GIMP dialog's preview, and what a cross-fade mixes
THUMB_SIDE = 64  # px: a history entry's thumbnail
_CAST = {1: "B", 2: "H", 4: "I", 8: "Q"}  # memoryview formats that take a whole pixel as one item


# ---------------------------------------------------------------------------------------------- pictures

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


# ---------------------------------------------------------------------------------------------- slider state

def strength_key(strength: float) -> float:
    """The one spelling of a strength (the server keys its renders ahead the same way)."""
    lo, hi = STRENGTH_RANGE
    return round(min(max(float(strength), lo), hi), 6)


@dataclass(frozen=True)
class Frame:
    """What to show: the picture, how it was made, and from which strengths with which weights."""

    image: Image | None
    kind: str  # exact | crossfade | nearest | first | none
    strength: float
    parts: tuple[tuple[float, float], ...] = ()


class StrengthPreview:
    """The slider's state machine, which says what picture to show for the strength the user is at.

    While dragging: the two nearest grid renders cross-faded; on release: the exact render. Between those, the
    nearest render there is (or the edit's first picture).
    """

    def __init__(self, strength: float, step: float = SLIDER_STEP, keep: int = 24):
        self.target = strength_key(strength)
        self.dragging = False
        self.step, self.keep = step, keep
        self.pictures: OrderedDict[float, Image] = OrderedDict()
        self.first: Image | None = None
        self._mixed: tuple[tuple, Frame] | None = None  # the last cross-fade, keyed by position and pictures

    def add(self, strength: float, picture: Image) -> None:
        key = strength_key(strength)
        self.pictures.pop(key, None)
        self.pictures[key] = picture
        while len(self.pictures) > self.keep:
            self.pictures.popitem(last=False)

    def move(self, strength: float) -> None:
        self.target, self.dragging = strength_key(strength), True

    def release(self, strength: float) -> None:
        self.target, self.dragging = strength_key(strength), False

    def wanted(self) -> list[float]:
        """The renders the frame still needs, most useful first."""
        if self.target in self.pictures:
            return []
        grid = [s for s, _ in slider_crossfade(self.target, self.step) if s not in self.pictures]
        return grid if self.dragging else [self.target]

    def frame(self) -> Frame:
        t = self.target
        if t in self.pictures:
            return Frame(self.pictures[t], "exact", t, ((t, 1.0),))
        parts = slider_crossfade(t, self.step)
        if len(parts) == 2 and all(s in self.pictures for s, _ in parts):
            (s0, _), (s1, w1) = parts
            a, b = self.pictures[s0], self.pictures[s1]
            key = (t, id(a), id(b))
            if self._mixed is None or self._mixed[0] != key:  # a view redraws often; mix once per position
                self._mixed = (key, Frame(crossfade(a, b, w1), "crossfade", t, tuple(parts)))
            return self._mixed[1]
        if self.pictures:
            near = min(self.pictures, key=lambda s: (abs(s - t), s))
            return Frame(self.pictures[near], "nearest", t, ((near, 1.0),))
        if self.first is not None:
            return Frame(self.first, "first", t)
        return Frame(None, "none", t)


class RenderSession:
    """One finished edit: its renders at the strengths the slider visits, and the full layers for Apply.

    ``rerender(strength)`` starts a server job (the plug-in's `Client.rerender` on the edit's job); `poll()`
    picks up what came back and asks for what the frame still needs, at most ``max_jobs`` at a time, and
    cancels asks the slider has moved away from. Nothing here touches a document."""

    def __init__(self, rerender: Callable[[float], Any], source: Image, result: EditResult, strength: float,
                 side: int = PREVIEW_SIDE, max_jobs: int = 2, keep_results: int = 6):
        self._rerender, self.side, self.max_jobs, self.keep_results = rerender, side, max_jobs, keep_results
        self.base = to_rgba8(shrink(source, side))
        self.view = StrengthPreview(strength)
        self.results: OrderedDict[float, EditResult] = OrderedDict()
        self.jobs: dict[float, Any] = {}
        self.error = ""
        self.stale = False  # the server no longer holds this edit: only what is here can be shown or applied
        self.add(strength, result)

    def picture(self, layer: Image) -> Image:
        small = shrink(layer, self.side)
        if (small.width, small.height) != (self.base.width, self.base.height):
            raise ValueError(f"the result ({layer.describe()}) and the source differ in size")
        return over(self.base, small)

    def add(self, strength: float, result: EditResult) -> None:
        key = strength_key(strength)
        self.view.add(key, self.picture(result.layer))
        self.results.pop(key, None)
        self.results[key] = result
        while len(self.results) > self.keep_results:
            self.results.popitem(last=False)

    def result_at(self, strength: float) -> EditResult | None:
        return self.results.get(strength_key(strength))

    def move(self, strength: float) -> None:
        self.view.move(strength)
        self._retry()

    def release(self, strength: float) -> None:
        self.view.release(strength)
        self._retry()

    def _retry(self) -> None:
        if not self.stale:
            self.error = ""  # a new position: try the server again
        self.sync()

    def want(self, strength: float) -> None:
        """Ask for the exact render at ``strength`` (for Apply) without moving the slider."""
        key = strength_key(strength)
        if key not in self.results and key not in self.jobs and not self.stale:
            self._ask(key)

    def _ask(self, strength: float) -> None:
        try:
            self.jobs[strength] = self._rerender(strength)
        except HairclipError as e:  # the server went away: say so, keep what is here
            self.error = e.message

    def sync(self) -> None:
        wanted = [] if self.stale else self.view.wanted()
        for s in [s for s in self.jobs if s not in wanted and s != self.view.target]:
            self.jobs.pop(s).cancel()
        for s in wanted:
            if s not in self.jobs and len(self.jobs) < self.max_jobs and not self.error:
                self._ask(s)

    def poll(self) -> bool:
        """Take in finished renders; True when the frame may have changed."""
        changed = False
        for s, job in list(self.jobs.items()):
            for ev in job.poll():
                if isinstance(ev, EditResult):
                    self.jobs.pop(s, None)
                    self.add(s, ev)
                    changed = True
                elif isinstance(ev, HairclipError):
                    self.jobs.pop(s, None)
                    if ev.code == "unknown_job":
                        self.stale = True
                        self.error = ("The server no longer holds this edit; its renders here can still be "
                                      "applied. Generate it again to change the strength.")
                    elif not isinstance(ev, Cancelled):
                        self.error = ev.message
                    changed = True
        self.sync()
        return changed

    @property
    def busy(self) -> bool:
        return bool(self.jobs)

    def frame(self) -> Frame:
        return self.view.frame()

    def cancel(self) -> None:
        for job in self.jobs.values():
            job.cancel()
        self.jobs.clear()


# ---------------------------------------------------------------------------------------------- history

@dataclass
class HistoryEntry:
    """One edit in the preview's history: what it asked for, the strength chosen, a thumbnail of it."""

    id: int
    conditions: str
    strength: float
    thumbnail: Image
    payload: Any = field(default=None, repr=False)  # the plug-in's own (its RenderSession, the source ...)


class History:
    """The last edits, newest first, none of them in a document until applied.

    The oldest falls off beyond ``limit``.
    """

    def __init__(self, limit: int = 6):
        self.limit = limit
        self.entries: list[HistoryEntry] = []
        self._next = 1

    def add(self, conditions: str, strength: float, thumbnail: Image, payload: Any = None) -> HistoryEntry:
        entry = HistoryEntry(self._next, conditions, strength_key(strength), thumbnail, payload)
        self._next += 1
        self.entries.insert(0, entry)
        del self.entries[self.limit:]
        return entry

    def get(self, entry_id: int) -> HistoryEntry | None:
        return next((e for e in self.entries if e.id == entry_id), None)

    def drop(self, entry_id: int) -> HistoryEntry | None:
        entry = self.get(entry_id)
        if entry is not None:
            self.entries.remove(entry)
        return entry

    def __len__(self) -> int:
        return len(self.entries)
