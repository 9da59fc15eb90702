"""The HairCLIP Studio wire protocol (version 1): messages, their schema and the typed errors.

Both ends import this one module, so the schema cannot drift between the plug-ins and the server.
A message is a multipart ZeroMQ message: a small msgpack header, then one raw frame per image the
header declares. Pixels never go inside msgpack. Pure Python + msgpack: it runs in an editor's
embedded Python 3.10+. PROTOCOL.md beside this package is the prose version of the same rules.

Long because the protocol is defined once, in one file read top to bottom: every message, its field
checks, its images' frames and its wire form side by side, so a change to a message is one edit here and
one paragraph in PROTOCOL.md. The errors and the per-field checks are the parts both ends must agree on.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

import msgpack

from .conditions import condition_conflict

PROTOCOL_VERSION = 1
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5570"

CHANNELS = {"RGBA": 4, "BGRA": 4, "RGB": 3, "BGR": 3, "A": 1}  # memory order of a pixel's samples
DEPTHS = {"u8": 1, "u16": 2, "f32": 4}  # bytes per sample; f32 samples are 0..1
STRENGTH_RANGE = (0.0, 2.0)  # 1.0 is the trained edit, 0.0 the unedited inversion
FACES = ("all", "largest")
MAX_TEXT = 200  # characters; CLIP reads at most 77 tokens anyway
MAX_PREVIEW_SIDE = 512
SLIDER_STEP = 0.1  # the strengths an idle server renders ahead lie on this grid, around the last one asked


def slider_crossfade(strength: float, step: float = SLIDER_STEP) -> list[tuple[float, float]]:
    """The grid strengths to blend for a slider at ``strength``, with their weights: (strength, weight) pairs,
    one when it is on the grid. A plug-in asks `rerender` for both (renders the server made ahead come back
    at once) and shows them cross-faded (layer opacity ``weight``) until the exact render replaces them."""
    lo_s, hi_s = STRENGTH_RANGE
    strength = min(max(float(strength), lo_s), hi_s)
    k = strength / step
    lo = int(k + 1e-9)
    t = k - lo
    if t < 1e-6 or 1 - t < 1e-6:
        return [(round(round(k) * step, 6), 1.0)]
    return [(round(lo * step, 6), 1.0 - t), (round((lo + 1) * step, 6), t)]
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}\Z")
_RGB_HEX = re.compile(r"#?([0-9A-Fa-f]{6})\Z")
MiB = 1 << 20


# ---------------------------------------------------------------------------------------------- errors

class HairclipError(Exception):
    """An error with a stable `code` (for programs) and a `message` a plug-in can show as is."""

    code = "error"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.message} [{self.code}]"


class ServerNotRunning(HairclipError):
    """No server answers at the endpoint."""

    code = "not_running"


class AuthFailed(HairclipError):
    """The CURVE handshake between the client and the server failed."""

    code = "auth_failed"


class Timeout(HairclipError, TimeoutError):
    """An answer did not come in time."""

    code = "timeout"


class Busy(HairclipError):
    """The server has too many jobs waiting; try again later."""

    code = "busy"


class BadRequest(HairclipError):
    """The request cannot be edited as it is; the message says what to change."""

    code = "bad_request"


class Cancelled(HairclipError):
    """The job was cancelled, or its lease expired."""

    code = "cancelled"


class JobFailed(HairclipError):
    """The edit itself failed on the server."""

    code = "job_failed"


class ProtocolError(HairclipError):
    """A message does not follow the protocol (or another version of it)."""

    code = "protocol"


class NotReady(HairclipError):
    """A ``ready_only`` re-render: the server has not rendered that strength ahead (yet); nothing was queued."""

    code = "not_ready"


class BadImage(BadRequest):
    """Pixels that cannot be edited (NaN or infinite samples, a bad shape); the message names the layer."""

    code = "bad_image"


# Every code the server sends, and the exception a client raises for it. Codes the engine invents
# (no_face, model_missing, ...) are JobFailed.
ERROR_CODES: dict[str, type[HairclipError]] = {
    "busy": Busy,
    "cancelled": Cancelled, "lease_expired": Cancelled, "shutting_down": Cancelled,
    "bad_header": BadRequest, "bad_request": BadRequest, "unknown_field": BadRequest,
    "unknown_op": BadRequest, "bad_frames": BadRequest, "too_large": BadRequest,
    "unknown_job": BadRequest, "job_conflict": BadRequest, "bad_image": BadImage,
    "unsupported_version": ProtocolError, "protocol": ProtocolError,
    "internal": JobFailed, "job_failed": JobFailed, "not_ready": NotReady,
}


def error_from_wire(code: str, message: str) -> HairclipError:
    return ERROR_CODES.get(code, JobFailed)(message, code)


# ---------------------------------------------------------------------------------------------- limits

@dataclass(frozen=True)
class Limits:
    """What the server accepts; every check runs on the declared sizes before anything is allocated."""

    max_header_bytes: int = 64 * 1024
    max_frame_bytes: int = 256 * MiB  # also ZMQ_MAXMSGSIZE: libzmq drops a peer that sends more
    max_total_bytes: int = 512 * MiB
    max_pixels: int = 8192 * 8192
    max_frames: int = 8  # pixel frames after the header
    max_queue: int = 8  # jobs waiting behind the running one
    max_queued_bytes: int = 1024 * MiB
    lease_s: float = 10.0  # a job whose client is silent this long is cancelled

    def to_wire(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_wire(cls, d: dict) -> Limits:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})  # newer servers may add limits


# ---------------------------------------------------------------------------------------------- headers

def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError("msgpack extension types are not allowed")


def pack(header: dict) -> bytes:
    return msgpack.packb(header, use_bin_type=True)


def unpack_header(data: bytes | memoryview, max_bytes: int) -> dict:
    """Decode and sanity-check a header: size first, then msgpack, then version and op."""
    if len(data) > max_bytes:
        raise BadRequest(f"The message header is {len(data)} bytes; the limit is {max_bytes}.", "too_large")
    try:
        header = msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_no_ext, use_list=True)
    except Exception as e:
        raise BadRequest(f"The message header is not valid msgpack ({type(e).__name__}).",
                         "bad_header") from e
    if not isinstance(header, dict):
        raise BadRequest("The message header must be a msgpack map.", "bad_header")
    v = header.get("v")
    if type(v) is not int or v != PROTOCOL_VERSION:
        raise ProtocolError(f"This end speaks HairCLIP protocol {PROTOCOL_VERSION}; the message says {v!r}. "
                            "Update the plug-in and the server together.", "unsupported_version")
    if not isinstance(header.get("op"), str):
        raise BadRequest("The message header has no 'op' string.", "bad_header")
    return header


def _type_ok(value: Any, kind: type | tuple) -> bool:
    if isinstance(kind, tuple):
        return any(_type_ok(value, k) for k in kind)
    if kind is float:
        return type(value) in (int, float)
    if kind is int:
        return type(value) is int  # bool is an int subclass; never accept it as one
    return isinstance(value, kind)


def _kind_name(kind: type | tuple) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


def check_fields(d: Any, where: str, required: dict, optional: dict | None = None) -> dict:
    """An explicit schema: exact key set, exact types; an unknown key is an error, not ignored."""
    optional = optional or {}
    if not isinstance(d, dict):
        raise BadRequest(f"{where} must be a map.")
    for key in d:
        if key not in required and key not in optional:
            raise BadRequest(f"Unknown field {key!r} in {where}.", "unknown_field")
    for key, kind in {**required, **optional}.items():
        if key not in d:
            if key in required:
                raise BadRequest(f"Missing field {key!r} in {where}.")
        elif not _type_ok(d[key], kind):
            raise BadRequest(f"Field {key!r} in {where} must be {_kind_name(kind)}, "
                             f"not {type(d[key]).__name__}.")
    return d


def check_id(value: str, what: str) -> str:
    if not _ID.match(value):
        raise BadRequest(f"{what} {value[:80]!r} must be 1-64 characters of A-Z a-z 0-9 _ . : -")
    return value


# Header fields per op, besides "v" and "op" (client to server).
REQUESTS: dict[str, tuple[dict[str, type], dict[str, type]]] = {
    "hello": ({"req": str}, {"client": str}),
    "ping": ({}, {"req": str}),
    "echo": ({"req": str, "images": list}, {}),
    "edit": ({"job": str, "params": dict, "images": list}, {}),
    "rerender": ({"job": str, "base": str, "strength": float}, {"ready_only": bool}),
    "cancel": ({"job": str}, {}),
}
COMMON = {"v": int, "op": str}

# ---------------------------------------------------------------------------------------------- images

@dataclass(frozen=True)
class Image:
    """Raw pixels plus their declaration; `data` is any buffer (bytes, memoryview, a zmq frame's buffer).

    Rows are tightly packed, top row first, samples in `channels` order, little-endian for u16/f32.
    """

    width: int
    height: int
    data: Any = field(repr=False)
    channels: str = "RGBA"
    depth: str = "u8"

    def __post_init__(self) -> None:
        check_image_spec(self.spec("image"), "image")
        try:
            n = memoryview(self.data).nbytes
        except TypeError:
            raise BadRequest(f"Image data must be a bytes-like buffer, "
                             f"not {type(self.data).__name__}.") from None
        if n != self.nbytes:
            raise BadRequest(f"A {self.describe()} image needs {self.nbytes} bytes; its data has {n}.",
                             "bad_frames")

    @property
    def nbytes(self) -> int:
        return spec_nbytes(self.spec("image"))

    def describe(self) -> str:
        return f"{self.width}x{self.height} {self.channels} {self.depth}"

    def spec(self, role: str) -> dict:
        return {"role": role, "width": self.width, "height": self.height,
                "channels": self.channels, "depth": self.depth}

    def tobytes(self) -> bytes:
        return bytes(memoryview(self.data).cast("B"))


IMAGE_SPEC = {"role": str, "width": int, "height": int, "channels": str, "depth": str}


def check_image_spec(spec: Any, where: str) -> dict:
    check_fields(spec, where, IMAGE_SPEC)
    if spec["channels"] not in CHANNELS:
        raise BadRequest(f"{where}: channels must be one of {', '.join(CHANNELS)}, not {spec['channels']!r}.")
    if spec["depth"] not in DEPTHS:
        raise BadRequest(f"{where}: depth must be one of {', '.join(DEPTHS)}, not {spec['depth']!r}.")
    if spec["width"] < 1 or spec["height"] < 1:
        raise BadRequest(f"{where}: width and height must be at least 1.")
    return spec


def spec_nbytes(spec: dict) -> int:
    return spec["width"] * spec["height"] * CHANNELS[spec["channels"]] * DEPTHS[spec["depth"]]


def parse_images(specs: Any, frames: list, limits: Limits, roles: tuple[str, ...] | None = None,
                 ) -> dict[str, Image]:
    """Match declared images to pixel frames. All size limits are checked on the declarations first."""
    if not isinstance(specs, list):
        raise BadRequest("'images' must be a list of image declarations.")
    if len(specs) > limits.max_frames:
        raise BadRequest(f"{len(specs)} images declared; the limit is {limits.max_frames}.", "too_large")
    total, seen = 0, {}
    for i, spec in enumerate(specs):
        check_image_spec(spec, f"images[{i}]")
        role = spec["role"]
        if roles is not None and role not in roles:
            raise BadRequest(f"Unknown image role {role!r}; expected one of {', '.join(roles)}.")
        if role in seen:
            raise BadRequest(f"Image role {role!r} is declared twice.")
        pixels, n = spec["width"] * spec["height"], spec_nbytes(spec)
        if pixels > limits.max_pixels:
            raise BadRequest(f"Image {role!r} has {pixels} pixels; the limit is {limits.max_pixels}.",
                             "too_large")
        if n > limits.max_frame_bytes:
            raise BadRequest(f"Image {role!r} needs {n} bytes; the frame limit is {limits.max_frame_bytes}.",
                             "too_large")
        total += n
        seen[role] = spec
    if total > limits.max_total_bytes:
        raise BadRequest(f"The images need {total} bytes; the limit is {limits.max_total_bytes}.",
                         "too_large")
    if len(frames) != len(specs):
        raise BadRequest(f"The header declares {len(specs)} images but {len(frames)} pixel frames follow.",
                         "bad_frames")
    out = {}
    for (role, spec), frame in zip(seen.items(), frames, strict=True):
        n = memoryview(frame).nbytes
        if n != spec_nbytes(spec):
            raise BadRequest(f"Image {role!r} is declared {spec['width']}x{spec['height']} "
                             f"{spec['channels']} {spec['depth']} = {spec_nbytes(spec)} bytes, "
                             f"but its frame has {n}.", "bad_frames")
        out[role] = Image(spec["width"], spec["height"], frame, spec["channels"], spec["depth"])
    return out


def all_finite(image: Image) -> bool:
    """Whether an f32 image has no NaN or infinite sample (u8 and u16 always are).

    One float64 sum decides: NaN and +-inf survive it, and f32 values cannot overflow a float64 sum of
    any frame the limits allow. numpy does it where it is installed (the server); plain Python elsewhere.
    """
    if image.depth != "f32":
        return True
    try:
        import numpy as np
    except ImportError:
        return math.isfinite(sum(memoryview(image.data).cast("B").cast("f")))
    return bool(np.isfinite(np.frombuffer(image.data, "<f4").sum(dtype=np.float64)))


def check_finite(image: Image, layer: str) -> Image:
    """Refuse NaN and infinite samples: an edit would carry them back into the user's document."""
    if not all_finite(image):
        raise BadImage(f"The {layer} layer has NaN or infinite pixel values; HairCLIP needs finite samples "
                       "(0 to 1 in a float layer). Fix or convert the layer and try again.")
    return image


def pack_images(images: dict[str, Image]) -> tuple[list[dict], list]:
    return [im.spec(role) for role, im in images.items()], [im.data for im in images.values()]


# ---------------------------------------------------------------------------------------------- requests

@dataclass(frozen=True)
class Rect:
    """A rectangle in source pixels: x, y, width, height."""

    x: int
    y: int
    w: int
    h: int


RGB = tuple[int, int, int]
EDIT_PARAMS = {"hairstyle": str, "colour": str, "rgb": list, "strength": float, "faces": (str, int),
               "selection": list, "return_aligned": bool, "preview": bool, "out_channels": str,
               "out_depth": str, "aligned": list, "whole_hair": bool}
EDIT_ROLES = ("source", "hairstyle_ref", "colour_ref", "mask")
ALIGNABLE_ROLES = ("source", "hairstyle_ref", "colour_ref")  # images that may be marked as aligned face crops
LAYER_NAMES = {"source": "photo", "hairstyle_ref": "hairstyle reference", "colour_ref": "colour reference",
               "mask": "selection mask"}  # what the user calls each role, for error messages


def parse_rgb(value: Any) -> RGB:
    """'#RRGGBB', 'RRGGBB' or three ints 0..255."""
    if isinstance(value, str):
        m = _RGB_HEX.match(value.strip())
        if not m:
            raise BadRequest(f"Colour {value[:20]!r} is not #RRGGBB.")
        h = m.group(1)
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    if (isinstance(value, (list, tuple)) and len(value) == 3
            and all(type(c) is int and 0 <= c <= 255 for c in value)):
        return tuple(value)
    raise BadRequest("rgb must be '#RRGGBB' or three integers 0..255.")


def check_strength(value: Any) -> float:
    lo, hi = STRENGTH_RANGE
    if not _type_ok(value, float) or not math.isfinite(value) or not lo <= value <= hi:
        raise BadRequest(f"Strength must be a number from {lo} to {hi}, not {value!r}.")
    return float(value)


def _text(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"The {what} text must be a non-empty string.")
    if len(value) > MAX_TEXT:
        raise BadRequest(f"The {what} text is {len(value)} characters; the limit is {MAX_TEXT}.")
    return value.strip()


@dataclass(frozen=True)
class EditRequest:
    """One edit of one layer: built by a plug-in, sent over the wire and handed as it is to the engine.

    hairstyle/hairstyle_ref and colour/colour_ref/rgb are alternatives; at least one condition is needed.
    `selection` limits the edit to a rectangle or to an 'A' mask the size of the source.
    The result layer comes back in out_channels/out_depth (RGBA or BGRA; default: the source's).
    `aligned` names the images (of ALIGNABLE_ROLES) that are already FFHQ-aligned face crops: no detection
    runs on them, and an aligned 1024 px reference takes HairCLIP's own reference path.
    """

    source: Image
    hairstyle: str | None = None
    colour: str | None = None
    hairstyle_ref: Image | None = None
    colour_ref: Image | None = None
    rgb: RGB | str | None = None
    strength: float = 1.0
    faces: str | int = "all"
    selection: Rect | tuple | Image | None = None
    return_aligned: bool = False
    preview: bool = True
    out_channels: str | None = None
    out_depth: str | None = None
    aligned: tuple[str, ...] = ()
    whole_hair: bool | None = None  # recolour hair beyond the face crops too; None: the server's default

    def __post_init__(self) -> None:
        if not isinstance(self.source, Image) or self.source.channels == "A":
            raise BadRequest("The source must be a colour image (RGBA, BGRA, RGB or BGR).")
        set_ = object.__setattr__  # frozen: normalise once, here, so both ends see the same values
        set_(self, "hairstyle", _text(self.hairstyle, "hairstyle"))
        set_(self, "colour", _text(self.colour, "colour"))
        if self.rgb is not None:
            set_(self, "rgb", parse_rgb(self.rgb))
        set_(self, "strength", check_strength(self.strength))
        if isinstance(self.selection, (tuple, list)):
            if len(self.selection) != 4 or not all(type(v) is int for v in self.selection):
                raise BadRequest("A selection rectangle is four integers x, y, w, h.")
            set_(self, "selection", Rect(*self.selection))
        set_(self, "out_channels", self.out_channels or
             (self.source.channels if self.source.channels in ("RGBA", "BGRA") else "RGBA"))
        set_(self, "out_depth", self.out_depth or self.source.depth)
        set_(self, "aligned", _aligned_roles(self.aligned, self.images()))
        self._validate()

    def _validate(self) -> None:
        src = self.source
        for name in ("hairstyle_ref", "colour_ref"):
            ref = getattr(self, name)
            if ref is not None and (not isinstance(ref, Image) or ref.channels == "A"):
                raise BadRequest(f"{name} must be a colour image.")
        conditions = (self.hairstyle, self.hairstyle_ref, self.colour, self.colour_ref, self.rgb)
        if conflict := condition_conflict(*(x is not None for x in conditions)):
            raise BadRequest(conflict)
        if all(x is None for x in conditions):
            raise BadRequest("Nothing to edit: give a hairstyle or a hair colour "
                             "(text, reference image or RGB).")
        if not (self.faces in FACES or (type(self.faces) is int and self.faces >= 0)):
            raise BadRequest(f"faces must be 'all', 'largest' or a face index >= 0, not {self.faces!r}.")
        sel = self.selection
        if isinstance(sel, Rect):
            if not (sel.w > 0 and sel.h > 0 and sel.x >= 0 and sel.y >= 0
                    and sel.x + sel.w <= src.width and sel.y + sel.h <= src.height):
                raise BadRequest(f"The selection {sel.x},{sel.y} {sel.w}x{sel.h} is not inside the "
                                 f"{src.width}x{src.height} source.")
        elif isinstance(sel, Image):
            if sel.channels != "A" or (sel.width, sel.height) != (src.width, src.height):
                raise BadRequest("A selection mask must be a one-channel 'A' image the size of the source.")
        elif sel is not None:
            raise BadRequest("The selection must be a rectangle x, y, w, h or a mask image.")
        if self.out_channels not in ("RGBA", "BGRA"):
            raise BadRequest("out_channels must be RGBA or BGRA.")
        if self.out_depth not in DEPTHS:
            raise BadRequest(f"out_depth must be one of {', '.join(DEPTHS)}.")
        for name in ("return_aligned", "preview"):
            if not isinstance(getattr(self, name), bool):
                raise BadRequest(f"{name} must be true or false.")
        if self.whole_hair is not None and not isinstance(self.whole_hair, bool):
            raise BadRequest("whole_hair must be true or false (or left out).")

    def images(self) -> dict[str, Image]:
        sel = self.selection if isinstance(self.selection, Image) else None
        named = {"source": self.source, "hairstyle_ref": self.hairstyle_ref, "colour_ref": self.colour_ref,
                 "mask": sel}
        return {role: im for role, im in named.items() if im is not None}

    def to_wire(self) -> tuple[dict, list[dict], list]:
        """(params, image declarations, pixel buffers in declaration order)."""
        params: dict[str, Any] = {"strength": self.strength, "faces": self.faces,
                                  "return_aligned": self.return_aligned, "preview": self.preview,
                                  "out_channels": self.out_channels, "out_depth": self.out_depth}
        for key in ("hairstyle", "colour"):
            if getattr(self, key) is not None:
                params[key] = getattr(self, key)
        if self.rgb is not None:
            params["rgb"] = list(self.rgb)
        if self.aligned:  # absent when empty: such a request is the same bytes as before the field existed
            params["aligned"] = list(self.aligned)
        if self.whole_hair is not None:  # likewise absent when left to the server
            params["whole_hair"] = self.whole_hair
        if isinstance(self.selection, Rect):
            s = self.selection
            params["selection"] = [s.x, s.y, s.w, s.h]
        specs, buffers = pack_images(self.images())
        return params, specs, buffers

    @classmethod
    def from_wire(cls, params: Any, images: dict[str, Image]) -> EditRequest:
        check_fields(params, "params", {}, EDIT_PARAMS)
        if "source" not in images:
            raise BadRequest("An edit needs a 'source' image.")
        for role, image in images.items():
            check_finite(image, LAYER_NAMES.get(role, role))
        kw = dict(params)
        if "selection" in kw and "mask" in images:
            raise BadRequest("Give a selection rectangle or a mask image, not both.")
        if "mask" in images:
            kw["selection"] = images["mask"]
        elif "selection" in kw:
            kw["selection"] = tuple(kw["selection"])
        if "aligned" in kw:
            kw["aligned"] = tuple(kw["aligned"])
        return cls(source=images["source"], hairstyle_ref=images.get("hairstyle_ref"),
                   colour_ref=images.get("colour_ref"), **kw)


def _aligned_roles(roles: Any, images: dict[str, Image]) -> tuple[str, ...]:
    """The aligned flags as a tuple in ALIGNABLE_ROLES order; each must name an image of the request."""
    if isinstance(roles, str) or not isinstance(roles, (list, tuple, set, frozenset)):
        raise BadRequest("aligned must be a list of image roles, e.g. ['source', 'hairstyle_ref'].")
    for role in roles:
        if role not in ALIGNABLE_ROLES:
            raise BadRequest(f"aligned lists {str(role)[:40]!r}; only {', '.join(ALIGNABLE_ROLES)} can be aligned.")
        if role not in images:
            raise BadRequest(f"aligned lists {role!r}, but the request has no {role} image.")
    if len(set(roles)) != len(roles):
        raise BadRequest("aligned lists an image twice.")
    return tuple(r for r in ALIGNABLE_ROLES if r in roles)


@dataclass(frozen=True)
class RerenderRequest:
    """Re-render a finished edit at another strength from the engine's caches: no inversion, no encoding.

    ``ready_only``: only a render the idle server already made ahead, answered at once without queueing a job
    (so the renders ahead go on); otherwise the job ends with `NotReady`."""

    base: str
    strength: float
    ready_only: bool = False

    def __post_init__(self) -> None:
        check_id(self.base, "The base job id")
        object.__setattr__(self, "strength", check_strength(self.strength))


# ---------------------------------------------------------------------------------------------- events

@dataclass(frozen=True)
class Accepted:
    """The server took a job: its id, its place in the queue and its state."""

    job: str
    position: int  # jobs ahead of this one; 0 = running or next
    state: str  # queued | running | done


@dataclass(frozen=True)
class Progress:
    """How far a job is: its stage, the stage's fraction, and maybe a preview picture."""

    job: str
    stage: str
    fraction: float
    preview: Image | None = None


@dataclass(frozen=True)
class Face:
    """One face the server found: its box in source pixels and whether it was edited."""

    bbox: tuple[int, int, int, int]  # x, y, w, h in source pixels
    edited: bool


HAIR_OUTSIDE = "hair_outside"  # the result image role of the original hair an edit left outside the crops


@dataclass(frozen=True)
class EditResult:
    """The edited layer (same size as the source) and what happened; `aligned` when return_aligned.

    `hair_outside`, when the server sends it, is an 'A' u8 mask the size of the layer: the original's hair
    outside the face crops that the edit left as it was (not recoloured), for the user to paint over. It comes
    only when there is such hair; a client that predates it reads it as one more aligned image, which the
    plug-ins never asked for and ignore.
    """

    layer: Image
    faces: list[Face] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    aligned: list[Image] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    job: str = ""
    hair_outside: Image | None = None

    @property
    def faces_edited(self) -> int:
        return sum(f.edited for f in self.faces)

    def to_wire(self, job: str) -> tuple[dict, list]:
        if not isinstance(self.layer, Image) or self.layer.channels not in ("RGBA", "BGRA"):
            raise TypeError("EditResult.layer must be an RGBA or BGRA Image")
        images = {"layer": self.layer, **{f"aligned{i}": im for i, im in enumerate(self.aligned)}}
        if self.hair_outside is not None:
            _check_hair_outside(self.hair_outside, self.layer)
            images[HAIR_OUTSIDE] = self.hair_outside
        specs, frames = pack_images(images)
        header = {"v": PROTOCOL_VERSION, "op": "result", "job": job, "images": specs,
                  "faces": [{"bbox": [int(v) for v in f.bbox], "edited": bool(f.edited)} for f in self.faces],
                  "timings": {str(k): float(v) for k, v in self.timings.items()}, "meta": dict(self.meta)}
        return header, frames

    @classmethod
    def from_wire(cls, header: dict, frames: list, limits: Limits) -> EditResult:
        check_fields(header, "result", {**COMMON, "job": str, "images": list, "faces": list, "timings": dict,
                                        "meta": dict})
        images = parse_images(header["images"], frames, limits)
        if "layer" not in images:
            raise ProtocolError("The result has no 'layer' image.")
        faces = []
        for f in header["faces"]:
            check_fields(f, "result face", {"bbox": list, "edited": bool})
            faces.append(Face(tuple(f["bbox"]), f["edited"]))
        outside = images.get(HAIR_OUTSIDE)
        if outside is not None:
            _check_hair_outside(outside, images["layer"])
        aligned = [im for role, im in images.items() if role not in ("layer", HAIR_OUTSIDE)]
        return cls(images["layer"], faces, dict(header["timings"]), aligned, dict(header["meta"]),
                   header["job"], outside)


def _check_hair_outside(mask: Image, layer: Image) -> None:
    if mask.channels != "A" or mask.depth != "u8" or (mask.width, mask.height) != (layer.width, layer.height):
        raise ProtocolError(f"The result's {HAIR_OUTSIDE!r} mask is {mask.describe()}; it must be A u8 and "
                            f"{layer.width}x{layer.height}, the size of the layer.")


ServerEvent = Accepted | Progress | EditResult | HairclipError


def error_header(err: HairclipError, job: str | None = None, req: str | None = None) -> dict:
    header = {"v": PROTOCOL_VERSION, "op": "error", "code": err.code, "message": err.message}
    if job is not None:
        header["job"] = job
    if req is not None:
        header["req"] = req
    return header


@dataclass(frozen=True)
class ServerInfo:
    """The `hello` reply: who is serving, what it can do and what it accepts."""

    server: str
    protocol: int
    device: str
    models: dict[str, str]  # model name -> loaded | missing | not_loaded; 'detector' -> its name
    hairstyles: list[str]
    colours: list[str]
    limits: Limits
    weights: dict[str, dict[str, str]] = field(default_factory=dict)  # file role -> {"path", "sha256"}

    def to_wire(self, req: str) -> dict:
        h = {"v": PROTOCOL_VERSION, "op": "hello", "req": req, "server": self.server,
             "protocol": self.protocol, "device": self.device, "models": dict(self.models),
             "hairstyles": list(self.hairstyles), "colours": list(self.colours),
             "limits": self.limits.to_wire()}
        if self.weights:
            h["weights"] = {k: dict(v) for k, v in self.weights.items()}
        return h

    @classmethod
    def from_wire(cls, h: dict) -> ServerInfo:
        check_fields(h, "hello reply", {**COMMON, "req": str, "server": str, "protocol": int, "device": str,
                                        "models": dict, "hairstyles": list, "colours": list, "limits": dict},
                     {"weights": dict})
        weights = h.get("weights", {})
        for name, entry in weights.items():
            check_fields(entry, f"hello reply weights[{name!r}]", {"path": str, "sha256": str})
        return cls(h["server"], h["protocol"], h["device"], h["models"], h["hairstyles"], h["colours"],
                   Limits.from_wire(h["limits"]), weights)
