"""The live preview both plug-ins show before anything goes into the document.

Pure Python (no numpy, Qt or GTK), like the rest of hairclip_shared, so it runs in the editors' Pythons.

The pictures it mixes come from `hairclip_shared.pictures`.

State
    StrengthPreview                           which strength's picture to show while the slider moves, and
                                              which renders to ask for (cross-fade while dragging, exact on release)
    RenderSession                             a finished edit's renders at other strengths: it looks for the ones
                                              the idle server made ahead (`ready_only`, never queued) around the
                                              slider, and asks `Client.rerender` for the exact one on release
    History, HistoryEntry                     the last edits: conditions, strength, thumbnail; apply or drop
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .pictures import crossfade, over, shrink, to_rgba8
from .protocol import (
    SLIDER_STEP,
    STRENGTH_RANGE,
    Cancelled,
    EditResult,
    HairclipError,
    Image,
    NotReady,
    slider_crossfade,
)

PREVIEW_SIDE = 256  # px: the docker's and the GIMP dialog's preview, and what a cross-fade mixes
THUMB_SIDE = 64  # px: a history entry's thumbnail
LOOK_AGAIN_S = (0.25, 0.5, 1.0, 2.0)  # the waits before looking again at a strength not rendered ahead yet
LOOK_FOR_S = 60.0  # how long after the slider last moved a session keeps looking for renders ahead


# ---------------------------------------------------------------------------------------------- piider state

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

    Two ways to get a render. ``ready(strength)`` (the plug-in's ``Client.rerender(..., ready_only=True)``) looks
    for one the idle server made ahead, answered at once and never queued, so the server's renders ahead go on;
    the session looks at the grid strengths within ``reach`` steps of the slider, nearest first, again and again
    (waits of `LOOK_AGAIN_S`) for `LOOK_FOR_S` after the slider last moved, so that the first drag finds them
    here. ``rerender(strength)`` queues a real job: for the exact strength on release, and for everything when
    the server cannot be looked at (no ``ready``, or a server that predates it). `poll()` takes in what came back.
    Nothing here touches a document."""

    def __init__(self, rerender: Callable[[float], Any], source: Image, result: EditResult, strength: float,
                 side: int = PREVIEW_SIDE, max_jobs: int = 2, keep_results: int = 6,
                 ready: Callable[[float], Any] | None = None, reach: int = 2,
                 clock: Callable[[], float] = time.monotonic):
        self._rerender, self.side, self.max_jobs, self.keep_results = rerender, side, max_jobs, keep_results
        self._ready, self.reach, self.clock = ready, reach, clock
        self.base = to_rgba8(shrink(source, side))
        self.view = StrengthPreview(strength)
        self.results: OrderedDict[float, EditResult] = OrderedDict()
        self.jobs: dict[float, Any] = {}
        self.looks: dict[float, Any] = {}  # ready_only asks in flight
        self._tries: dict[float, tuple[int, float]] = {}  # strength -> (looks that found nothing, next look at)
        self._look_until = clock() + LOOK_FOR_S
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
        self._look_until = self.clock() + LOOK_FOR_S
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

    def looking_for(self) -> list[float]:
        """The grid strengths around the slider worth a look at the server's renders ahead, nearest first."""
        if self._ready is None or self.stale or self.error or self.clock() > self._look_until:
            return []
        t, step = self.view.target, self.view.step
        k = round(t / step)
        lo, hi = STRENGTH_RANGE
        grid = {strength_key(j * step) for j in range(k - self.reach, k + self.reach + 1)}
        return sorted((s for s in grid if lo <= s <= hi and s not in self.view.pictures and s not in self.jobs),
                      key=lambda s: (abs(s - t), s))

    def sync(self) -> None:
        wanted = [] if self.stale else self.view.wanted()
        if self._ready is not None and self.view.dragging:
            wanted = []  # while dragging, looks fetch the grid renders; a queued job would stop the renders ahead
        for s in [s for s in self.jobs if s not in wanted and s != self.view.target]:
            self.jobs.pop(s).cancel()
        for s in wanted:
            if s not in self.jobs and len(self.jobs) < self.max_jobs and not self.error:
                self._ask(s)
        now = self.clock()
        for s in self.looking_for():
            if s not in self.looks and self._tries.get(s, (0, now))[1] <= now:
                try:
                    self.looks[s] = self._ready(s)
                except HairclipError as e:
                    self.error = e.message
                    break

    def poll(self) -> bool:
        """Take in finished renders and looks; True when the frame may have changed."""
        changed = False
        for s, job in list(self.jobs.items()):
            for ev in job.poll():
                if isinstance(ev, EditResult):
                    self.jobs.pop(s, None)
                    self.add(s, ev)
                    changed = True
                elif isinstance(ev, HairclipError):
                    self.jobs.pop(s, None)
                    changed |= self._failed(ev)
        for s, look in list(self.looks.items()):
            for ev in look.poll():
                if isinstance(ev, EditResult):
                    self.looks.pop(s, None)
                    self._tries.pop(s, None)
                    if s not in self.view.pictures:
                        self.add(s, ev)
                        changed = True
                elif isinstance(ev, HairclipError):
                    self.looks.pop(s, None)
                    if isinstance(ev, NotReady):
                        n = self._tries.get(s, (0, 0.0))[0]
                        self._tries[s] = (n + 1, self.clock() + LOOK_AGAIN_S[min(n, len(LOOK_AGAIN_S) - 1)])
                    elif ev.code == "unknown_field":  # a server from before ready_only: queue jobs, as it expects
                        self._ready = None
                    else:
                        changed |= self._failed(ev)
        self.sync()
        return changed

    def _failed(self, ev: HairclipError) -> bool:
        if ev.code == "unknown_job":
            self.stale = True
            self.error = ("The server no longer holds this edit; its renders here can still be "
                          "applied. Generate it again to change the strength.")
        elif not isinstance(ev, Cancelled):
            self.error = ev.message
        return True

    @property
    def busy(self) -> bool:
        """A real render is on its way (what a 'rendering...' line says)."""
        return bool(self.jobs)

    @property
    def pending(self) -> bool:
        """Anything for `poll()` to do: renders or looks in flight, or strengths still to look at."""
        return bool(self.jobs or self.looks or self.looking_for())

    def frame(self) -> Frame:
        return self.view.frame()

    def rest(self) -> None:
        """Stop looking until the slider moves again: a session the user left must not steer the server's
        renders ahead away from the one in front of them."""
        self.looks.clear()  # answered at once on the server: nothing there to cancel
        self._look_until = -math.inf

    def cancel(self) -> None:
        for job in self.jobs.values():
            job.cancel()
        self.jobs.clear()
        self.rest()


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
