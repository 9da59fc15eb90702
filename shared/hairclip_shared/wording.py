"""The words both dialogs show: mode names, field labels, server states, progress, hints. Defined once here.

Pure Python and cheap: the Krita and the GIMP plug-in import these tables and functions, so a retoucher who
uses both editors reads the same names for the same things.

API summary
-----------
HAIRSTYLE_MODE_LABELS, COLOUR_MODE_LABELS, FACE_LABELS   value -> label for the choice fields
FIELD_LABELS, FIELD_HELP       EditSettings field -> its label and tooltip
OLD_HAIR_NAME, OLD_HAIR_HINT   the selection of the hair an edit left outside the crop, and the words about it
SERVER_LABEL, SERVER_STATES    the server row's label and its states (idle, connecting, connected, ...)
STOP_EDIT                      the button that stops a running edit
active_fields(hairstyle_mode, colour_mode) -> frozenset   the EditSettings fields that apply to the modes
stage_text(stage, position=None) -> str                   a server/plug-in stage as a sentence
overall_fraction(stage, fraction) -> float               a stage's own 0..1 as the whole edit's 0..1 (< 1)
missing_input(settings, hairstyle_ref_ok, colour_ref_ok) -> str   why Apply cannot run yet ("" when it can)
NEED_*                         those reasons, also raised by editing.build_request
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # editing.py takes its messages from here, so no import at run time
    from .editing import EditSettings

HAIRSTYLE_MODE_LABELS = {"none": "Keep the hairstyle", "text": "Hairstyle in words",
                         "reference": "Hairstyle of a layer"}
COLOUR_MODE_LABELS = {"none": "Keep the colour", "text": "Colour in words", "rgb": "Exact colour (RGB)",
                      "reference": "Colour of a layer"}
FACE_LABELS = {"all": "All faces", "selection": "Faces inside the selection"}

FIELD_LABELS = {
    "hairstyle_mode": "Hairstyle", "hairstyle": "Hairstyle in words", "hairstyle_ref": "Hairstyle layer",
    "hairstyle_ref_aligned": "Hairstyle layer is", "colour_mode": "Colour", "colour": "Colour in words",
    "rgb": "Exact colour", "colour_ref": "Colour layer", "colour_ref_aligned": "Colour layer is",
    "strength": "Strength", "faces": "Faces", "endpoint": "Server", "whole_hair": "Long hair",
}
FIELD_HELP = {
    "hairstyle_mode": "How to choose the hairstyle", "hairstyle": "A hairstyle in words, or one from the list",
    "hairstyle_ref": "The layer whose hairstyle to copy", "colour_mode": "How to choose the hair colour",
    "colour": "A hair colour in words, or one from the list", "rgb": "The exact hair colour",
    "colour_ref": "The layer whose hair colour to copy",
    "strength": "1 is the edit as trained, 0 leaves the hair as it is, above 1 exaggerates",
    "faces": "Which faces to edit", "endpoint": "The HairCLIP server's address (hairclip serve --bind ...)",
    "whole_hair": "Hair beyond the face crop (below the chin, on the shoulders): automatic recolours it for "
                  "colour-only edits and leaves it for hairstyle edits, which then select it for you to paint over",
}
# The selection both plug-ins add when an edit leaves the original's hair outside the crop as it was
# (Krita: a selection mask on the new layer; GIMP: a channel).
OLD_HAIR_NAME = "HairCLIP: old hair outside the crop"
OLD_HAIR_HINT = f"The selection '{OLD_HAIR_NAME}' outlines it."

SERVER_LABEL = FIELD_LABELS["endpoint"]
SERVER_STATES = {"idle": "Not connected", "connecting": "Connecting...", "connected": "Connected",
                 "not_running": "Not running", "failed": "Connection failed"}
STOP_EDIT = "Stop edit"

NEED_SERVER = "The server is not answering: start it (the command is above), then press Retry."
NEED_CHANGE = "Nothing to change: choose a hairstyle, a hair colour, or both."
NEED_HAIRSTYLE_REF = "Choose the layer whose hairstyle to copy."
NEED_COLOUR_REF = "Choose the layer whose hair colour to copy."
NEED_HAIRSTYLE = "Type a hairstyle, or pick one of the trained hairstyles from the list."
NEED_COLOUR = "Type a hair colour, or pick one of the trained colours from the list."

# Server stages (hairclip.pipeline) and the plug-ins' own steps, in the order an edit goes through them,
# with the share of the whole edit each takes (a rough guide for the progress bar, not a timing).
STAGES: tuple[tuple[str, str, float], ...] = (
    ("connecting", "Connecting to the server", 0.02),
    ("sending", "Sending the layer", 0.03),
    ("queued", "Waiting for the server", 0.03),
    ("faces", "Finding the faces", 0.08),
    ("conditions", "Reading the hairstyle and colour", 0.04),
    ("invert", "Encoding the face", 0.25),
    ("first_picture", "Drawing a first picture", 0.05),
    ("synthesize", "Drawing the new hair", 0.2),
    ("parse", "Finding the hair", 0.1),
    ("composite", "Blending the hair into the layer", 0.15),
    ("done", "Finishing", 0.0),
    ("receiving", "Receiving the result", 0.05),
    ("inserting", "Adding the layer", 0.04),
)
STAGE_LABELS = {name: label for name, label, _ in STAGES}
_START: dict[str, tuple[float, float]] = {}
_t = 0.0
for _name, _, _share in STAGES:
    _START[_name] = (_t, _share)
    _t += _share
_TOTAL = _t


def stage_text(stage: str, position: int | None = None) -> str:
    """A stage as the user reads it; unknown stages (a newer server) in plain words."""
    if stage == "queued" and position:
        return f"Waiting for the server ({position} edit{'s' if position != 1 else ''} ahead)"
    return STAGE_LABELS.get(stage) or stage.replace("_", " ").capitalize()


def overall_fraction(stage: str, fraction: float) -> float:
    """The whole edit's progress from a stage's own fraction; full (1.0) only once the layer is in."""
    start, share = _START.get(stage, (0.0, 0.0))
    f = min(max(float(fraction), 0.0), 1.0)
    return min((start + share * f) / _TOTAL, 0.99)


def active_fields(hairstyle_mode: str, colour_mode: str) -> frozenset[str]:
    """The EditSettings fields a dialog shows (or enables) for these modes; the others do not apply."""
    on = {"hairstyle_mode", "colour_mode", "strength", "faces", "endpoint", "whole_hair"}
    if hairstyle_mode == "text":
        on.add("hairstyle")
    elif hairstyle_mode == "reference":
        on |= {"hairstyle_ref", "hairstyle_ref_aligned"}
    if colour_mode == "text":
        on.add("colour")
    elif colour_mode == "rgb":
        on.add("rgb")
    elif colour_mode == "reference":
        on |= {"colour_ref", "colour_ref_aligned"}
    return frozenset(on)


def missing_input(settings: EditSettings, hairstyle_ref_ok: bool = True, colour_ref_ok: bool = True) -> str:
    """What the user must still choose before Apply can run ("" when nothing): the dialogs show it as a hint
    and keep Apply disabled. The *_ref_ok flags say whether the chosen reference layer exists."""
    s = settings
    if s.hairstyle_mode == "none" and s.colour_mode == "none":
        return NEED_CHANGE
    if s.hairstyle_mode == "reference" and not (s.hairstyle_ref and hairstyle_ref_ok):
        return NEED_HAIRSTYLE_REF
    if s.colour_mode == "reference" and not (s.colour_ref and colour_ref_ok):
        return NEED_COLOUR_REF
    if s.hairstyle_mode == "text" and not s.hairstyle.strip():
        return NEED_HAIRSTYLE
    if s.colour_mode == "text" and not s.colour.strip():
        return NEED_COLOUR
    return ""
