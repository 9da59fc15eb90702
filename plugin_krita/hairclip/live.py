"""The HairCLIP docker's state and actions, without widgets: generate -> preview -> history -> Apply.

As in krita-ai-diffusion, an edit first lands in the docker only: its first picture, then the result laid
over the photo, a strength slider that cross-fades renders the server made ahead and then shows the exact
one, and a history of the last edits. Nothing goes into the document until Apply, which inserts the layer
and its mask through the same EditTask and ResultWriter steps as the dialog's Apply. The docker view calls
tick() from a timer while `pending`, and redraws when a subscriber is called.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from hairclip_shared.editing import EditSettings, layer_name
from hairclip_shared.pictures import shrink
from hairclip_shared.pixels import to_wire
from hairclip_shared.preview import PREVIEW_SIDE, THUMB_SIDE, Frame, History, HistoryEntry, RenderSession
from hairclip_shared.protocol import Image
from hairclip_shared.wording import overall_fraction, stage_text

from . import kritadoc
from .jobs import CallLater, Connection, EditTask, error_text
from .model import Observed, SettingsStore

HISTORY = 6  # edits kept; each holds a few full-size layers for Apply
_SHRINK_AS = {"u8": "u8", "u16": "u16", "f16": "u16", "f32": "f32"}  # same bytes per sample, for shrink only


def source_picture(px: kritadoc.LayerPixels, side: int = PREVIEW_SIDE) -> Image:
    """The source layer as a small protocol image: shrunk in Krita's own bytes, then converted (cheap)."""
    small = shrink(Image(px.rect.w, px.rect.h, px.data, px.layout.order, _SHRINK_AS[px.layout.sample]), side)
    return to_wire(small.data, small.width, small.height, px.layout)


def conditions_text(settings: EditSettings, ref_names: tuple[str, str]) -> str:
    """What an edit asked for, without the strength (the history shows that on its own)."""
    return layer_name(replace(settings, strength=1.0), *ref_names).removeprefix("HairCLIP: ")


@dataclass
class Edit:
    """A history entry's payload: where the edit came from and its renders."""

    doc: object
    source: kritadoc.LayerPixels
    settings: EditSettings
    ref_names: tuple[str, str]
    session: RenderSession


class LiveModel(Observed):
    """The docker's state and actions, with no widgets, so the mock Krita tests can drive it.

    The inputs are the dialog's (Krita's settings); the docker adds the strength.
    """

    def __init__(self, krita, store: SettingsStore, call_later: CallLater,
                 connection_factory: Callable[[str], Connection] = Connection, pool: ThreadPoolExecutor | None = None):
        self.krita, self.store, self.call_later, self.pool = krita, store, call_later, pool
        self._connection_factory = connection_factory
        self.connection: Connection | None = None
        self.history = History(HISTORY)
        self.current: HistoryEntry | None = None
        self.task: EditTask | None = None  # the edit being generated (never inserted)
        self.applying: EditTask | None = None  # an Apply putting a layer into the document
        self._apply_when_ready: HistoryEntry | None = None
        self.error, self.note = "", ""
        self._listeners: list[Callable[[], None]] = []

    @property
    def settings(self) -> EditSettings:
        return self.store.load()

    @property
    def generating(self) -> bool:
        return self.task is not None and not self.task.finished

    @property
    def pending(self) -> bool:
        """Is there anything for tick() to do?"""
        return (self.generating or (self.applying is not None and not self.applying.finished)
                or self._apply_when_ready is not None or any(e.payload.session.pending for e in self.history.entries))

    @property
    def session(self) -> RenderSession | None:
        return self.current.payload.session if self.current is not None else None

    @property
    def strength(self) -> float:
        return self.current.strength if self.current is not None else self.settings.strength

    @property
    def status(self) -> str:
        if self.generating:
            return stage_text(self.task.stage or self.task.state, self.task.position)
        if self.applying is not None and not self.applying.finished:
            return "Adding the layer..."
        s = self.session
        if s is not None and s.busy:
            return "Rendering the strength..."
        return self.note

    @property
    def progress(self) -> float:
        return overall_fraction(self.task.stage, self.task.fraction) if self.generating else 0.0

    def frame(self) -> Frame:
        """What the docker shows: the edit's first picture while it runs, else the chosen entry at its strength."""
        if self.generating:
            first = self.task.preview
            return Frame(shrink(first, PREVIEW_SIDE) if first is not None else None,
                         "first" if first is not None else "none", self.settings.strength)
        s = self.session
        return s.frame() if s is not None else Frame(None, "none", self.strength)

    # ------------------------------------------------------------------------------------------ actions

    def _connection(self, endpoint: str) -> Connection:
        if self.connection is None or self.connection.endpoint != endpoint:
            if self.connection is not None:
                self.connection.close()
            self.connection = self._connection_factory(endpoint)
        return self.connection

    def generate(self) -> None:
        """Edit the active layer with the dialog's inputs, into the docker only."""
        if self.generating:
            return
        self.error, self.note = "", ""
        doc = self.krita.activeDocument()
        if doc is None:
            self.error = "Open an image first."
            return self._changed()
        settings = self.settings
        conn = self._connection(settings.endpoint)
        self.task = EditTask(conn, doc, doc.activeNode(), settings, self.call_later, self.pool, insert=False)
        self.task.on_done.append(self._generated)
        self.task.start()
        self._changed()

    def _generated(self, task: EditTask) -> None:
        if task is not self.task:
            return
        if task.state != "done":
            self.error = error_text(task.error) if task.state == "failed" else ""
            self.note = "Cancelled." if task.state == "cancelled" else ""
            return self._changed()
        base, conn = task.job.id, task.connection

        def rerender(strength: float):
            return conn.client().rerender(base, strength)

        def look(strength: float):  # a render the idle server made ahead, or not_ready; never queued
            return conn.client().rerender(base, strength, ready_only=True)

        try:
            session = RenderSession(rerender, source_picture(task.source), task.result, task.settings.strength,
                                    ready=look)
        except Exception as e:  # noqa: BLE001 - a result the preview cannot show is still an error to see
            self.error = error_text(e)
            return self._changed()
        thumb = shrink(session.frame().image, THUMB_SIDE)
        edit = Edit(task.doc, task.source, task.settings, task.ref_names, session)
        for old in self.history.entries[self.history.limit - 1:]:  # about to fall off the history
            old.payload.session.cancel()
        if self.current is not None:
            self.current.payload.session.rest()  # the server's renders ahead are for the new edit now
        self.current = self.history.add(conditions_text(task.settings, task.ref_names), task.settings.strength,
                                         thumb, edit)
        self.note = f"Previewing '{self.current.conditions}': Apply adds it as a layer."
        self._changed()

    def cancel(self) -> None:
        if self.generating:
            self.task.cancel()
        self._changed()

    def select(self, entry_id: int) -> None:
        entry = self.history.get(entry_id)
        if entry is not None and entry is not self.current:
            if self.current is not None:
                self.current.payload.session.rest()
            self.current = entry
            entry.payload.session.release(entry.strength)
            self._changed()

    def drop(self, entry_id: int | None = None) -> None:
        entry = self.history.drop(self.current.id if entry_id is None and self.current else entry_id)
        if entry is None:
            return
        entry.payload.session.cancel()
        if self._apply_when_ready is entry:
            self._apply_when_ready = None
        if entry is self.current:
            self.current = self.history.entries[0] if self.history.entries else None
        self._changed()

    def drag(self, strength: float) -> None:
        """The slider is moving: cross-fade the nearest renders; the entry keeps its strength until release."""
        if self.session is not None:
            self.session.move(strength)
            self._changed()

    def release(self, strength: float) -> None:
        """The slider rests: the entry takes this strength, and its exact render replaces the cross-fade."""
        if self.current is not None:
            self.session.release(strength)
            self.current.strength = self.session.view.target
            self._changed()

    def apply(self, entry_id: int | None = None) -> None:
        """Add a history entry (the current one by default) to its document as a new layer with a mask."""
        entry = self.current if entry_id is None else self.history.get(entry_id)
        if entry is None or (self.applying is not None and not self.applying.finished):
            return
        self.error = ""
        result = entry.payload.session.result_at(entry.strength)
        if result is None:  # the exact render is on its way (or must be asked for): apply it when it lands
            entry.payload.session.want(entry.strength)
            self._apply_when_ready = entry
            return self._changed()
        e: Edit = entry.payload
        settings = replace(e.settings, strength=entry.strength)
        task = EditTask(self._connection(e.settings.endpoint), e.doc, None, settings, self.call_later, self.pool)
        self.applying = task
        task.on_done.append(self._applied)
        task.insert_result(e.source, e.ref_names, result)
        self._changed()

    def _applied(self, task: EditTask) -> None:
        if task is not self.applying:
            return
        if task.state == "done":
            self.note = f"Added '{task.outcome.layer_name}'" + (f"; {task.outcome.note}" if task.outcome.note else "")
        else:
            self.error = error_text(task.error)
        self._changed()

    def tick(self) -> None:
        changed = self.connection.poll() if self.connection is not None else False
        for t in (self.task, self.applying):
            if t is not None and not t.finished:
                before = (t.state, t.stage, t.fraction, t.preview is not None)
                t.tick()
                changed |= before != (t.state, t.stage, t.fraction, t.preview is not None)
        for entry in self.history.entries:
            s = entry.payload.session
            if s.pending and s.poll():
                changed = True
                if entry is self.current and s.frame().kind == "exact" and not s.view.dragging:
                    entry.thumbnail = shrink(s.frame().image, THUMB_SIDE)
        ready = self._apply_when_ready
        if ready is not None:
            s = ready.payload.session
            if s.result_at(ready.strength) is not None:
                self._apply_when_ready = None
                self.apply(ready.id)
            elif not s.busy:  # the exact render could not be had
                self._apply_when_ready = None
                self.error = s.error or "The exact render did not arrive; move the slider and try again."
                changed = True
        if changed:
            self._changed()

    def close(self) -> None:
        for entry in self.history.entries:
            entry.payload.session.cancel()
        if self.connection is not None:
            self.connection.close()
