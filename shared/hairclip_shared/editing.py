"""Editor-independent plug-in logic shared by the Krita and the GIMP plug-in.

Pure Python (no numpy, torch, Qt or GTK): it runs in an editor's embedded Python 3.10+, and every
function here is cheap to unit-test. The editors' own code only reads and writes pixels and layers.

API summary
-----------
Presets
    HAIRSTYLES, COLOURS                  the 44 trained hairstyles and 12 trained colours (offline fallback)
    presets(info) -> (hairstyles, colours)          the server's lists from `hello`, else the fallback
Dialog state and settings
    EditSettings                         what the dialog holds; .to_json() / EditSettings.from_json(text)
                                         (tolerant: unknown keys and bad values fall back to the defaults)
    HAIRSTYLE_MODES, COLOUR_MODES, FACE_MODES   the values of its *_mode and faces fields
    ALIGNED_MODES, ALIGNED_LABELS, ALIGNED_RULE  "is this reference layer an aligned face crop?" (auto/yes/no)
    reference_is_aligned(mode, width, height) -> bool   auto: yes for a square layer of ALIGNED_SIDE px
    build_request(settings, source, hairstyle_ref=None, colour_ref=None, selection=None) -> EditRequest
    layer_name(settings, hairstyle_ref_name="", colour_ref_name="") -> "HairCLIP: bob cut, purple"
    not_running_message(endpoint, cause="") -> str  the "not running" text, with the command that starts it
    WHOLE_HAIR_MODES, WHOLE_HAIR_LABELS  recolour long hair beyond the face crop? (auto: for colour-only edits)
    hair_outside_message(meta) -> str    the one-line warning on hair left outside the crop ("" if none)
    result_warning(meta, selection_added) -> str     that warning, naming the selection when one was added
    empty_layer_message(role, name) -> str           the sentence both plug-ins refuse an empty layer with
Pixels: editor buffers to and from protocol images live in `hairclip_shared.pixels`.
Errors: BadRequest (hairclip_shared.protocol), a HairclipError with a `.message` a plug-in shows as is.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .protocol import (
    DEFAULT_ENDPOINT,
    MAX_TEXT,
    STRENGTH_RANGE,
    BadRequest,
    EditRequest,
    Image,
    Rect,
    ServerInfo,
    parse_rgb,
)
from .wording import NEED_CHANGE, NEED_COLOUR, NEED_COLOUR_REF, NEED_HAIRSTYLE, NEED_HAIRSTYLE_REF, OLD_HAIR_HINT

# Official HairCLIP lists (mapper/hairstyle_list.txt without " hairstyle", and the 12 training colours);
# tests check them against the backend's copies.
HAIRSTYLES: tuple[str, ...] = (
    "afro", "bob cut", "bowl cut", "braid", "caesar cut", "chignon", "cornrows", "crew cut", "crown braid",
    "curtained hair", "dido flip", "dreadlocks", "extensions", "fade", "fauxhawk", "finger waves",
    "french braid", "frosted tips", "full crown", "harvard clip", "high and tight", "hime cut", "hi-top fade",
    "jewfro", "jheri curl", "liberty spikes", "marcel waves", "mohawk", "pageboy", "perm", "pixie cut",
    "psychobilly wedge", "quiff", "regular taper cut", "ringlets", "shingle bob", "short hair",
    "slicked-back", "spiky hair", "surfer hair", "taper cut", "the rachel", "undercut", "updo",
)
COLOURS: tuple[str, ...] = ("purple", "red", "orange", "yellow", "green", "blue", "gray", "brown", "black",
                            "white", "blond", "pink")


def presets(info: ServerInfo | None) -> tuple[list[str], list[str]]:
    """Hairstyle and colour presets: what the connected server was trained on, else the official lists."""
    hairstyles = list(info.hairstyles) if info is not None and info.hairstyles else list(HAIRSTYLES)
    colours = list(info.colours) if info is not None and info.colours else list(COLOURS)
    return hairstyles, colours


def not_running_message(endpoint: str, cause: str = "") -> str:
    """What to tell the user when the server is not there. `cause`, the client's own sentence, leads instead
    of the plain "not answering" when it says more (a connection lost mid-job), and is left out when it
    says the same."""
    first = f"No HairCLIP server is answering at {endpoint}."
    if cause and not cause.startswith("No HairCLIP server answered"):
        first = cause
    return (f"{first}\n"
            "Start it in a terminal with:\n\n    hairclip serve\n\n"
            "(the first start downloads the models; `hairclip serve --help` lists the options, "
            "`hairclip status` checks it).")


def empty_layer_message(role: str, name: str) -> str:
    """Both plug-ins refuse a layer without a single visible pixel with this sentence, before any upload."""
    return f"The {role} '{name}' has no pixels inside the canvas."


# ---------------------------------------------------------------------------------------------- settings

HAIRSTYLE_MODES = ("none", "text", "reference")
COLOUR_MODES = ("none", "text", "rgb", "reference")
FACE_MODES = ("all", "selection")
ALIGNED_MODES = ("auto", "yes", "no")
ALIGNED_SIDE = 1024  # HairCLIP's reference crops are 1024 x 1024 FFHQ-aligned faces
ALIGNED_LABELS = {"auto": f"Aligned face crop: automatic (yes for a square {ALIGNED_SIDE}x{ALIGNED_SIDE} px layer)",
                  "yes": "This layer is an aligned face crop", "no": "Not aligned: find and align the face"}
WHOLE_HAIR_MODES = ("auto", "yes", "no")
WHOLE_HAIR_LABELS = {"auto": "Long hair beyond the face crop: recolour it for colour-only edits",
                     "yes": "Long hair beyond the face crop: recolour it", "no": "Edit inside the face crop only"}
ALIGNED_RULE = (f"An aligned face crop (FFHQ-style, as HairCLIP's own references) is used as it is, with no face "
                f"detection. Automatic treats a square {ALIGNED_SIDE}x{ALIGNED_SIDE} px layer as one and any other "
                "layer as a photo whose face is found and aligned.")


def reference_is_aligned(mode: str, width: int, height: int) -> bool:
    """The one rule both plug-ins apply: "auto" means aligned exactly for a square ALIGNED_SIDE px layer."""
    return mode == "yes" or (mode == "auto" and width == height == ALIGNED_SIDE)


@dataclass(frozen=True)
class EditSettings:
    """The dialog's inputs, with reference layers as editor ids (Krita uniqueId strings, GIMP item ids)."""

    endpoint: str = DEFAULT_ENDPOINT
    hairstyle_mode: str = "text"
    hairstyle: str = "bob cut"
    hairstyle_ref: str = ""
    colour_mode: str = "text"
    colour: str = "purple"
    rgb: str = "#7f3fbf"
    colour_ref: str = ""
    strength: float = 1.0
    faces: str = "all"
    hairstyle_ref_aligned: str = "auto"  # one of ALIGNED_MODES
    colour_ref_aligned: str = "auto"
    whole_hair: str = "auto"  # one of WHOLE_HAIR_MODES

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> EditSettings:
        """Settings saved by any version: unknown keys are dropped, invalid values take the default."""
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        default, out = cls(), {}
        for f in fields(cls):
            value = data.get(f.name)
            if value is None:
                continue
            try:
                candidate = replace(default, **{f.name: value})
                candidate._check_field(f.name)
            except (BadRequest, TypeError, ValueError):
                continue
            out[f.name] = float(value) if f.name == "strength" else value
        return replace(default, **out)

    def _check_field(self, name: str) -> None:
        value = getattr(self, name)
        if name == "strength":
            if type(value) not in (int, float) or not math.isfinite(value):
                raise ValueError(name)
            lo, hi = STRENGTH_RANGE
            if not lo <= value <= hi:
                raise ValueError(name)
        elif not isinstance(value, str):
            raise TypeError(name)
        elif name == "hairstyle_mode" and value not in HAIRSTYLE_MODES:
            raise ValueError(name)
        elif name == "colour_mode" and value not in COLOUR_MODES:
            raise ValueError(name)
        elif name == "faces" and value not in FACE_MODES:
            raise ValueError(name)
        elif name in ("hairstyle_ref_aligned", "colour_ref_aligned") and value not in ALIGNED_MODES:
            raise ValueError(name)
        elif name == "whole_hair" and value not in WHOLE_HAIR_MODES:
            raise ValueError(name)
        elif name == "rgb":
            parse_rgb(value)
        elif name == "endpoint" and "://" not in value:
            raise ValueError(name)


def build_request(settings: EditSettings, source: Image, hairstyle_ref: Image | None = None,
                  colour_ref: Image | None = None, selection: Image | Rect | None = None) -> EditRequest:
    """The EditRequest for the dialog's inputs, or BadRequest with a message that says what to fix.

    `selection` is the editor's selection over the source's extent (an 'A' mask or a rectangle); it is
    required when settings.faces == "selection" and ignored otherwise. A reference is sent as an aligned face
    crop when `reference_is_aligned` says so for its setting and size.
    """
    kw: dict[str, Any] = {}
    if settings.hairstyle_mode == "text":
        if not settings.hairstyle.strip():
            raise BadRequest(NEED_HAIRSTYLE)
        kw["hairstyle"] = settings.hairstyle
    elif settings.hairstyle_mode == "reference":
        if hairstyle_ref is None:
            raise BadRequest(NEED_HAIRSTYLE_REF)
        kw["hairstyle_ref"] = hairstyle_ref
    if settings.colour_mode == "text":
        if not settings.colour.strip():
            raise BadRequest(NEED_COLOUR)
        kw["colour"] = settings.colour
    elif settings.colour_mode == "rgb":
        kw["rgb"] = settings.rgb
    elif settings.colour_mode == "reference":
        if colour_ref is None:
            raise BadRequest(NEED_COLOUR_REF)
        kw["colour_ref"] = colour_ref
    if not kw:
        raise BadRequest(NEED_CHANGE)
    if settings.faces == "selection":
        if selection is None:
            raise BadRequest("There is no selection. Select the faces to edit, or choose 'All faces'.")
        kw["selection"] = selection
    for key in ("hairstyle", "colour"):
        if key in kw and len(kw[key].strip()) > MAX_TEXT:
            raise BadRequest(f"The {key} text is longer than {MAX_TEXT} characters.")
    aligned = tuple(role for role, mode in (("hairstyle_ref", settings.hairstyle_ref_aligned),
                                            ("colour_ref", settings.colour_ref_aligned))
                    if role in kw and reference_is_aligned(mode, kw[role].width, kw[role].height))
    whole = {"yes": True, "no": False}.get(settings.whole_hair)  # auto: left out, the server's default
    return EditRequest(source=source, strength=settings.strength, faces="all", preview=True, aligned=aligned,
                       whole_hair=whole, **kw)


def hair_outside_message(meta: dict) -> str:
    """A result's one-line warning when hair beyond the face crop was left as it was ("" when there is none).

    `meta` is the result's; a server without the long-hair stage sends no ``hair_outside_crop``: no warning."""
    share = meta.get("hair_outside_crop")
    if not isinstance(share, (int, float)) or share < 0.05 or meta.get("whole_hair"):
        return ""
    return (f"{share:.0%} of the hair lies outside the face crop and was left as it was: recolour it with "
            "'Long hair beyond the face crop', or paint over it.")


def result_warning(meta: dict, selection_added: bool = False) -> str:
    """The line both plug-ins show after an edit: `hair_outside_message`, plus where the plug-in selected that
    hair (`selection_added`: it added the result's ``hair_outside`` mask as OLD_HAIR_NAME)."""
    text = hair_outside_message(meta)
    return f"{text} {OLD_HAIR_HINT}" if text and selection_added else text


def layer_name(settings: EditSettings, hairstyle_ref_name: str = "", colour_ref_name: str = "") -> str:
    """The result layer's name, so the layer stack says what each edit was."""
    parts = []
    if settings.hairstyle_mode == "text":
        parts.append(settings.hairstyle.strip())
    elif settings.hairstyle_mode == "reference":
        parts.append(f"hairstyle of {hairstyle_ref_name or 'reference'}")
    if settings.colour_mode == "text":
        parts.append(settings.colour.strip())
    elif settings.colour_mode == "rgb":
        r, g, b = parse_rgb(settings.rgb)
        parts.append(f"#{r:02x}{g:02x}{b:02x}")
    elif settings.colour_mode == "reference":
        parts.append(f"colour of {colour_ref_name or 'reference'}")
    name = "HairCLIP: " + ", ".join(p for p in parts if p)
    if settings.strength != 1.0:
        name += f" (strength {round(settings.strength, 2):g})"
    return name
