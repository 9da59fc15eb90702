"""The dialog's state and actions, without widgets: the UI only displays this and forwards clicks.

The view calls tick() from a timer while `pending` is true and redraws when a subscriber is called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from hairclip_shared.editing import EditSettings, presets
from hairclip_shared.wording import NEED_SERVER, missing_input, overall_fraction, stage_text

from . import kritadoc
from .jobs import CallLater, Connection, EditTask, error_text

RERENDER_DELAY_MS = 250  # slider drags: re-render once the hand rests


class SettingsStore:
    """Krita's own settings file (kritarc, group [hairclip]) holds the last inputs as one JSON value."""

    def __init__(self, krita):
        self.krita = krita

    def load(self) -> EditSettings:
        return EditSettings.from_json(self.krita.readSetting("hairclip", "settings", ""))

    def save(self, settings: EditSettings) -> None:
        self.krita.writeSetting("hairclip", "settings", settings.to_json())


class Observed:
    """Lets widgets follow a model: they subscribe a callback, and the model calls them all after a change."""

    _listeners: list[Callable[[], None]]

    def subscribe(self, fn: Callable[[], None]) -> None:
        self._listeners.append(fn)

    def _changed(self) -> None:
        for fn in list(self._listeners):
            fn()


class EditModel(Observed):
    """Inputs (saved in Krita's settings), the server connection, the running edit and its outcome."""

    def __init__(self, krita, store: SettingsStore, call_later: CallLater,
                 connection_factory: Callable[[str], Connection] = Connection):
        self.krita, self.store, self.call_later = krita, store, call_later
        self._connection_factory = connection_factory
        self.settings = store.load()
        self.connection = connection_factory(self.settings.endpoint)
        self.task: EditTask | None = None
        self.last: EditTask | None = None  # the finished edit the strength slider re-renders
        self.error = ""
        self.note = ""
        self.warning = ""  # the last edit left hair outside the face crop (editing.result_warning)
        self._listeners: list[Callable[[], None]] = []
        self._rerender_token = 0

    @property
    def presets(self) -> tuple[list[str], list[str]]:
        return presets(self.connection.info)

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.finished

    @property
    def pending(self) -> bool:
        return self.busy or self.connection.pending

    @property
    def server_state(self) -> str:
        return self.connection.state

    @property
    def status(self) -> str:
        t = self.task
        if t is None or t.finished:
            return self.note
        return stage_text(t.stage or t.state, t.position)

    @property
    def progress(self) -> float:
        """The whole edit's progress, 0..1; it reaches 1 only once the edit is done (the bar then hides)."""
        return overall_fraction(self.task.stage, self.task.fraction) if self.busy else 0.0

    @property
    def apply_hint(self) -> str:
        """Why Apply cannot run now ("" when it can): the dialog disables Apply and shows this instead."""
        if self.server_state in ("not_running", "failed"):
            return NEED_SERVER
        s = self.settings
        ids = {nid for nid, _ in self.layers()} if "reference" in (s.hairstyle_mode, s.colour_mode) else set()
        return missing_input(s, s.hairstyle_ref in ids, s.colour_ref in ids)

    def layers(self) -> list[tuple[str, str]]:
        return kritadoc.list_layers(self.krita.activeDocument())

    def active_layer_name(self) -> str:
        doc = self.krita.activeDocument()
        node = doc.activeNode() if doc is not None else None
        return node.name() if node is not None else ""

    # ------------------------------------------------------------------------------------------ actions

    def update(self, **changes) -> None:
        """Change inputs; the endpoint reconnects, the strength re-renders the last result."""
        new = replace(self.settings, **changes)
        if new == self.settings:
            return
        old, self.settings = self.settings, new
        self.store.save(new)
        if new.endpoint != old.endpoint:
            # Another server: what the last one said (the outcome line, its result to re-render) is stale.
            self.note, self.error, self.warning, self.last = "", "", "", None
            self.connection.close()
            self.connection = self._connection_factory(new.endpoint)
            self.connect()
        if not only_strength_changed(old, new):
            self.last = None  # other inputs changed: the next Apply is a new edit
        elif self.last is not None:
            self._schedule_rerender()
        self._changed()

    def connect(self) -> None:
        self.connection.connect()
        self._changed()

    def apply(self) -> None:
        """Edit the active layer of the active document."""
        if self.busy:
            return
        doc = self.krita.activeDocument()
        self.error, self.note, self.warning = "", "", ""
        if doc is None:
            self.error = "Open an image first."
            return self._changed()
        self._run(EditTask(self.connection, doc, doc.activeNode(), self.settings, self.call_later))

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self._changed()

    def _schedule_rerender(self) -> None:
        self._rerender_token += 1
        token = self._rerender_token

        def fire() -> None:
            if token == self._rerender_token and self.last is not None and not self.busy:
                self._run(self.last.with_strength(self.settings.strength))

        self.call_later(RERENDER_DELAY_MS, fire)

    def _run(self, task: EditTask) -> None:
        self.task = task
        task.on_done.append(self._finished)
        task.start()
        self._changed()

    def _finished(self, task: EditTask) -> None:
        if task is not self.task:
            return
        if task.state == "done":
            self.last = task
            o = task.outcome
            self.error = ""
            faces = f"{o.faces_edited} face(s) edited" if o.faces else ""
            self.note = "; ".join(x for x in (f"Added '{o.layer_name}'" if o.undo_steps else
                                              f"Updated '{o.layer_name}'", faces, o.note) if x)
            self.warning = o.warning
        elif task.state == "failed":
            self.error = error_text(task.error)
        else:
            self.note = "Cancelled."
        self._changed()

    def tick(self) -> None:
        changed = self.connection.poll()
        if self.task is not None and not self.task.finished:
            before = (self.task.state, self.task.stage, self.task.fraction, self.task.position)
            self.task.tick()
            changed |= before != (self.task.state, self.task.stage, self.task.fraction, self.task.position)
        if changed:
            self._changed()


def only_strength_changed(a: EditSettings, b: EditSettings) -> bool:
    return replace(a, strength=b.strength) == b
