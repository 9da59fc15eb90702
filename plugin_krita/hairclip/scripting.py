"""Scripting entry point: run a HairCLIP edit on a given document and layer, without the dialog.

From Krita's Scripter (Tools > Scripts > Scripter) or another plug-in, on Krita's GUI thread:

    from hairclip.scripting import start_edit, run_edit

    def done(task):
        if task.error is not None:
            print("failed:", task.error.message)
        else:
            print(task.outcome.layer_name, task.outcome.faces_edited, task.outcome.undo_steps)

    start_edit(hairstyle="bob cut", colour="purple", on_done=done)          # the active layer
    start_edit(doc, doc.nodeByName("photo"), rgb="#7f3fbf", strength=1.5, faces="selection", on_done=done)

    out = run_edit(hairstyle="afro", colour="blond")                        # blocks, returns EditOutcome

start_edit returns at once; the edit runs from Krita's main event loop and calls on_done(task) when the
layer is in (task.outcome) or the edit failed (task.error). run_edit waits in a nested event loop, which
keeps Krita responsive, but Krita 5.1 registers new layers only from its main loop, so there the blocking
call cannot add the editable mask: the edit's alpha is baked into the layer (Krita 5.2+ gets the mask
either way). Errors are hairclip_shared errors such as ServerNotRunning, BadRequest, JobFailed, Timeout and
UnsupportedPixels, each with a `.message` to show; run_edit raises them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from krita import Krita

from hairclip_shared.conditions import condition_conflict
from hairclip_shared.editing import FACE_MODES, WHOLE_HAIR_MODES, EditSettings
from hairclip_shared.protocol import BadRequest, Cancelled, Timeout

from . import kritadoc
from .jobs import Connection, EditOutcome, EditTask
from .model import SettingsStore

__all__ = ["EditOutcome", "EditTask", "run_edit", "start_edit"]
_connections: dict[str, Connection] = {}


def _ref_id(ref) -> str:
    if ref is None or isinstance(ref, str):
        return ref or ""
    return kritadoc.node_id(ref)


def _whole_hair(value: str | bool | None) -> str:
    """True/False/None or one of WHOLE_HAIR_MODES -> the setting ("auto": the server's default)."""
    mode = {True: "yes", False: "no", None: "auto"}.get(value, value) if not isinstance(value, str) else value
    if mode not in WHOLE_HAIR_MODES:
        raise BadRequest(f"whole_hair must be True, False, None or one of {', '.join(WHOLE_HAIR_MODES)}.")
    return mode


def _settings(hairstyle, colour, rgb, hairstyle_ref, colour_ref, strength, faces, endpoint,
              whole_hair=None) -> EditSettings:
    conflict = condition_conflict(hairstyle is not None, hairstyle_ref is not None, colour is not None,
                                  colour_ref is not None, rgb is not None, reference="reference layer")
    if conflict:
        raise BadRequest(conflict)
    if faces not in FACE_MODES:
        raise BadRequest(f"faces must be {' or '.join(map(repr, FACE_MODES))}.")
    if isinstance(rgb, (tuple, list)):
        rgb = "#{:02x}{:02x}{:02x}".format(*rgb)
    saved = SettingsStore(Krita.instance()).load()
    return EditSettings(
        endpoint=endpoint or saved.endpoint,
        hairstyle_mode=("text" if hairstyle is not None else "reference" if hairstyle_ref is not None
                        else "none"),
        hairstyle=hairstyle or "", hairstyle_ref=_ref_id(hairstyle_ref),
        colour_mode=("text" if colour is not None else "rgb" if rgb is not None
                     else "reference" if colour_ref is not None else "none"),
        colour=colour or "", rgb=rgb or "#000000", colour_ref=_ref_id(colour_ref),
        strength=float(strength), faces=faces, whole_hair=_whole_hair(whole_hair))


def _connection(endpoint: str) -> Connection:
    conn = _connections.get(endpoint)
    if conn is None:
        conn = _connections[endpoint] = Connection(endpoint)
    return conn


def start_edit(document=None, layer=None, *, hairstyle: str | None = None, colour: str | None = None,
               rgb: str | tuple[int, int, int] | None = None, hairstyle_ref=None, colour_ref=None,
               strength: float = 1.0, faces: str = "all", endpoint: str | None = None, mask: bool = True,
               on_done: Callable[[EditTask], None] | None = None, _main_loop: bool = True,
               whole_hair: str | bool | None = None) -> EditTask:
    """Start an edit and return at once; on_done(task) runs when it ends. See run_edit for the parameters.

    GUI thread only. The task's state is in task.state (done, failed, cancelled), its result in
    task.outcome (EditOutcome) and its error in task.error; task.cancel() stops it.
    """
    doc = document if document is not None else Krita.instance().activeDocument()
    if doc is None:
        raise BadRequest("There is no document to edit.")
    node = layer if layer is not None else doc.activeNode()
    from .qt import QTimer, call_later

    settings = _settings(hairstyle, colour, rgb, hairstyle_ref, colour_ref, strength, faces, endpoint,
                         whole_hair)
    task = EditTask(_connection(settings.endpoint), doc, node, settings, call_later, want_mask=mask,
                    main_loop=_main_loop)
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: task.tick() or timer.stop())
    task._timer = timer  # keep it alive as long as the task
    if on_done is not None:
        task.on_done.append(on_done)
    task.start()
    if not task.finished:
        timer.start()
    return task


def run_edit(document=None, layer=None, *, hairstyle: str | None = None, colour: str | None = None,
             rgb: str | tuple[int, int, int] | None = None, hairstyle_ref=None, colour_ref=None,
             strength: float = 1.0, faces: str = "all", endpoint: str | None = None, mask: bool = True,
             timeout: float = 600.0, whole_hair: str | bool | None = None) -> EditOutcome:
    """Edit the hair in `layer` of `document` (default: the active ones) and return the new layer's facts.

    hairstyle / hairstyle_ref: a hairstyle in words ("bob cut"), or a layer (Node or uniqueId string) to
    copy it from. colour / rgb / colour_ref: a colour in words, "#RRGGBB" or (r, g, b), or a layer.
    strength: 0..2 (1 = as trained). faces: "all", or "selection" for the faces inside the selection.
    endpoint: the server (default: the dialog's setting). mask: put the edit's alpha into a transparency
    mask (False: bake it into the layer). whole_hair: recolour long hair beyond the face crop (True), leave
    it (False), or None: the server's default (on for colour-only edits). The new layer goes directly above
    `layer`; when the edit leaves the original's hair outside the crop, the outcome's `warning` says so and
    the layer gets a selection mask of that hair (outcome.old_hair).
    """
    task = start_edit(document, layer, hairstyle=hairstyle, colour=colour, rgb=rgb,
                      hairstyle_ref=hairstyle_ref, colour_ref=colour_ref, strength=strength, faces=faces,
                      endpoint=endpoint, mask=mask, _main_loop=False, whole_hair=whole_hair)
    from .qt import QEventLoop, QTimer, exec_

    deadline = time.monotonic() + timeout
    loop = QEventLoop()
    task.on_done.append(lambda t: loop.quit())
    watchdog = QTimer()
    watchdog.setInterval(100)
    watchdog.timeout.connect(lambda: loop.quit() if time.monotonic() > deadline else None)
    watchdog.start()
    while not task.finished and time.monotonic() <= deadline:
        exec_(loop)
    watchdog.stop()
    if not task.finished:
        task.cancel()
        raise Timeout(f"The edit did not finish within {timeout:g} s.")
    if task.state == "cancelled":
        raise Cancelled("The edit was cancelled.")
    if task.error is not None:
        raise task.error
    return task.outcome
