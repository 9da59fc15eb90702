"""Editor pixel buffers to and from protocol images, for both plug-ins.

Pure Python (no numpy): it runs in an editor's embedded Python 3.10+. Krita and GIMP hand over raw
buffers in their own channel order, sample type and curve; the protocol wants sRGB-encoded RGBA.

    PixelLayout                          an editor buffer: channel order, sample type, curve (and babl)
    krita_layout(model, depth, profile) -> PixelLayout   Krita RGBA U8/U16 (BGRA), F16/F32 (RGBA); else error
    gimp_layout(precision, base_type) -> PixelLayout     GIMP RGB images, read and written with .babl via GEGL
    to_wire(data, width, height, layout) -> Image        editor bytes -> protocol image (8/16-bit sRGB: as is)
    from_wire(image, layout) -> bytes                    result layer -> editor bytes
    split_alpha(data, layout, alpha_from=None) -> (colour, mask)
                                         colour keeps `alpha_from`'s alpha (or opaque); mask is 1 byte/pixel
    apply_mask(data, layout, mask) -> bytes              alpha *= mask, where no editable mask can be made
    clip_rect(x, y, w, h, width, height) -> Rect | None  a layer's extent inside the canvas
    has_pixels(data, layout) -> bool                     any alpha above 0?
    check_has_pixels(data, layout, role, name)           BadRequest(empty_layer_message(...)) if not

Errors: BadRequest (hairclip_shared.protocol) and UnsupportedPixels (here, for other colour models and
formats), both HairclipError with a `.message` a plug-in shows as is.
"""

from __future__ import annotations

import array
import struct
import sys
from dataclasses import dataclass
from typing import Any

from .editing import empty_layer_message
from .protocol import BadRequest, HairclipError, Image, Rect


class UnsupportedPixels(HairclipError):
    """A layer the plug-in must not misread (another colour model, an unknown depth)."""

    code = "unsupported_pixels"


SAMPLE_BYTES = {"u8": 1, "u16": 2, "f16": 2, "f32": 4}
WIRE_DEPTH = {"u8": "u8", "u16": "u16", "f16": "f32", "f32": "f32"}  # the protocol has no f16


@dataclass(frozen=True)
class PixelLayout:
    """How an editor stores a layer's pixels in memory.

    order: the memory order of the four samples (BGRA or RGBA); sample: u8, u16, f16 or f32, little-endian
    (every host Krita and GIMP ship for); gamma: None for the sRGB curve, 1.0 for linear light, else a pure
    power law. The protocol wants sRGB-encoded values, so anything else is converted on the way out and back.
    """

    order: str
    sample: str
    gamma: float | None = None
    babl: str = ""  # GIMP: the babl format to read and write the drawable's buffer with
    note: str = ""  # a caveat worth showing (e.g. a wide-gamut profile read as sRGB)

    @property
    def bytes_per_pixel(self) -> int:
        return 4 * SAMPLE_BYTES[self.sample]

    @property
    def wire_depth(self) -> str:
        return WIRE_DEPTH[self.sample]

    @property
    def passthrough(self) -> bool:
        """True when the editor's bytes go on the wire as they are (no copy, no conversion)."""
        return self.sample in ("u8", "u16") and self.gamma is None


KRITA_DEPTHS = {"U8": ("BGRA", "u8"), "U16": ("BGRA", "u16"), "F16": ("RGBA", "f16"), "F32": ("RGBA", "f32")}
KRITA_MODELS = {"GRAYA": "grayscale", "CMYKA": "CMYK", "LABA": "L*a*b*", "XYZA": "XYZ", "YCbCrA": "YCbCr",
                "A": "alpha-only"}


def _profile_gamma(profile: str) -> float | None:
    p = profile.lower()
    if "g10" in p or "linear" in p or "scrgb" in p:
        return 1.0
    if "g22" in p:
        return 2.2
    if "g18" in p:
        return 1.8
    return None


def krita_layout(model: str, depth: str, profile: str = "") -> PixelLayout:
    """Krita's memory layout for a node's colour space; other colour models are refused, never misread.

    Krita keeps 8- and 16-bit integer RGBA as B,G,R,A and half/float RGBA as R,G,B,A (checked against
    Krita 5.1 by the end-to-end test). Linear profiles (Krita's default for new 16-bit and float images)
    are converted to sRGB for the server and back.
    """
    if model != "RGBA":
        what = KRITA_MODELS.get(model, model)
        raise UnsupportedPixels(
            f"HairCLIP edits RGB layers, and this layer is {what} ({model}/{depth}). Convert it with "
            "Image > Convert Layer Color Space... to RGB/Alpha, or edit an RGB copy of it.")
    if depth not in KRITA_DEPTHS:
        raise UnsupportedPixels(f"HairCLIP cannot read RGBA layers of depth {depth!r}; convert the layer to "
                                "8-bit, 16-bit or 32-bit float RGBA first.")
    order, sample = KRITA_DEPTHS[depth]
    p = profile.lower()
    note = ""
    if profile and not any(k in p for k in ("srgb", "scrgb", "709")):
        note = (f"The layer's profile '{profile}' is not sRGB; its colours are sent to HairCLIP as sRGB, so "
                "hues in the result may shift slightly.")
    return PixelLayout(order, sample, _profile_gamma(profile), note=note)


GIMP_SAMPLES = {"u8": ("u8", "u8"), "u16": ("u16", "u16"), "u32": ("u16", "u16"), "half": ("f32", "float"),
                "float": ("f32", "float"), "double": ("f32", "float")}


def gimp_layout(precision: str, base_type: str = "rgb") -> PixelLayout:
    """How the GIMP plug-in reads and writes a drawable: perceptual R'G'B'A through GEGL, at enough depth.

    precision: a Gimp.Precision name in any spelling ("u8-non-linear", "GIMP_PRECISION_HALF_LINEAR", ...);
    base_type: the image's Gimp.ImageBaseType name (rgb, gray, indexed). GEGL converts to and from the
    drawable's own storage, so the plug-in never handles linear data or 32-bit integers itself.
    """
    base = base_type.lower().rsplit("_", 1)[-1]
    if base != "rgb":
        what = {"gray": "grayscale", "indexed": "indexed-colour"}.get(base, base)
        raise UnsupportedPixels(f"HairCLIP edits RGB images, and this image is {what}. "
                                "Use Image > Mode > RGB first.")
    name = precision.lower().replace("gimp_precision_", "").replace("_", "-")
    kind = name.split("-", 1)[0]
    if kind not in GIMP_SAMPLES:
        raise UnsupportedPixels(f"Unknown GIMP precision {precision!r}.")
    sample, babl_type = GIMP_SAMPLES[kind]
    return PixelLayout("RGBA", sample, None, babl=f"R'G'B'A {babl_type}")


# Transfer curves, on values in [0, 1].
def _encode(v: float, gamma: float | None) -> float:
    """Editor value -> sRGB-encoded, clamped (NaN -> 0): the server takes 0..1 only."""
    if not v > 0.0:  # also NaN
        return 0.0
    if v >= 1.0:
        return 1.0
    if gamma is None:
        return v
    lin = v ** gamma if gamma != 1.0 else v
    return 12.92 * lin if lin <= 0.0031308 else 1.055 * lin ** (1 / 2.4) - 0.055


def _decode(v: float, gamma: float | None) -> float:
    """sRGB-encoded -> the editor's curve."""
    v = 0.0 if not v > 0.0 else min(v, 1.0)
    if gamma is None:
        return v
    lin = v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4
    return lin if gamma == 1.0 else lin ** (1 / gamma)


def _int_lut(maxval: int, fn) -> list[int]:
    return [min(maxval, max(0, round(fn(i / maxval) * maxval))) for i in range(maxval + 1)]


_LUTS: dict[tuple, Any] = {}


def _lut(kind: str, maxval: int, gamma: float | None) -> Any:
    key = (kind, maxval, gamma)
    if key not in _LUTS:
        fn = (lambda v: _encode(v, gamma)) if kind == "enc" else (lambda v: _decode(v, gamma))
        table = _int_lut(maxval, fn)
        _LUTS[key] = bytes(table) if maxval == 255 else table
    return _LUTS[key]


# The editors' buffers and the wire are both little-endian, so array's native order is the right one.
def _floats(data: Any, sample: str) -> list[float]:
    raw = memoryview(data).cast("B")
    if sample == "f16":
        return list(struct.unpack(f"<{len(raw) // 2}e", raw))
    a = array.array("f")
    a.frombytes(raw)
    return a.tolist()


def _pack_floats(values: list[float], sample: str) -> bytes:
    if sample == "f16":
        return struct.pack(f"<{len(values)}e", *values)
    return array.array("f", values).tobytes()


def _u16(data: Any) -> array.array:
    a = array.array("H")
    a.frombytes(memoryview(data).cast("B"))
    return a


def _u16_bytes(a: array.array) -> bytes:
    return a.tobytes()


def _check_size(data: Any, width: int, height: int, layout: PixelLayout) -> None:
    if sys.byteorder != "little":
        raise UnsupportedPixels("HairCLIP's plug-ins support little-endian machines only.")
    n = memoryview(data).nbytes
    if n != width * height * layout.bytes_per_pixel:
        raise BadRequest(f"A {width}x{height} {layout.order} {layout.sample} buffer needs "
                         f"{width * height * layout.bytes_per_pixel} bytes; got {n}.")


def to_wire(data: Any, width: int, height: int, layout: PixelLayout) -> Image:
    """Editor bytes -> a protocol Image (sRGB-encoded u8, u16 or f32 in the editor's channel order)."""
    _check_size(data, width, height, layout)
    if layout.passthrough:
        return Image(width, height, data, layout.order, layout.sample)
    g = layout.gamma
    if layout.sample == "u8":
        raw = bytes(memoryview(data).cast("B"))
        out = bytearray(raw.translate(_lut("enc", 255, g)))
        out[3::4] = raw[3::4]  # alpha is never a colour: no curve
        return Image(width, height, bytes(out), layout.order, "u8")
    if layout.sample == "u16":
        a = _u16(data)
        lut = _lut("enc", 65535, g)
        out = array.array("H", map(lut.__getitem__, a))
        out[3::4] = a[3::4]
        return Image(width, height, _u16_bytes(out), layout.order, "u16")
    vals = _floats(data, layout.sample)
    enc = [_encode(v, g) for v in vals]
    enc[3::4] = [_encode(v, None) for v in vals[3::4]]
    return Image(width, height, _pack_floats(enc, "f32"), layout.order, "f32")


def from_wire(image: Image, layout: PixelLayout) -> bytes:
    """A result layer (requested in layout.order and layout.wire_depth) -> the editor's bytes."""
    if image.channels != layout.order or image.depth != layout.wire_depth:
        raise BadRequest(f"The result is {image.channels} {image.depth}; the layer needs "
                         f"{layout.order} {layout.wire_depth}.")
    if layout.passthrough:
        return image.tobytes()
    g = layout.gamma
    if layout.sample == "u8":
        raw = image.tobytes()
        out = bytearray(raw.translate(_lut("dec", 255, g)))
        out[3::4] = raw[3::4]
        return bytes(out)
    if layout.sample == "u16":
        a = _u16(image.data)
        lut = _lut("dec", 65535, g)
        out = array.array("H", map(lut.__getitem__, a))
        out[3::4] = a[3::4]
        return _u16_bytes(out)
    vals = _floats(image.data, "f32")
    dec = [_decode(v, g) for v in vals]
    dec[3::4] = [_decode(v, None) for v in vals[3::4]]
    return _pack_floats(dec, layout.sample)


_OPAQUE = {"u8": b"\xff", "u16": b"\xff\xff", "f16": struct.pack("<e", 1.0), "f32": struct.pack("<f", 1.0)}


def _alpha_u8(data: Any, layout: PixelLayout) -> bytes:
    if layout.sample == "u8":
        return bytes(memoryview(data).cast("B")[3::4])
    if layout.sample == "u16":
        return bytes((v * 255 + 32767) // 65535 for v in _u16(data)[3::4])
    return bytes(round(_encode(v, None) * 255) for v in _floats(data, layout.sample)[3::4])


def split_alpha(data: Any, layout: PixelLayout, alpha_from: Any = None) -> tuple[bytes, bytes]:
    """Result pixels -> (the layer: result colour with `alpha_from`'s alpha, or opaque; the mask: 1 byte/px).

    The result's alpha says where the edit applies; it goes into an editable mask, while the layer keeps
    the source layer's own transparency (`alpha_from`, same layout and size).
    """
    mask = _alpha_u8(data, layout)
    out = bytearray(memoryview(data).cast("B"))
    bps, stride = SAMPLE_BYTES[layout.sample], layout.bytes_per_pixel
    if alpha_from is not None:
        src = memoryview(alpha_from).cast("B")
        if src.nbytes != len(out):
            raise BadRequest("The source and the result differ in size.")
        for k in range(3 * bps, stride):
            out[k::stride] = src[k::stride]
    else:
        opaque = _OPAQUE[layout.sample]
        for k in range(bps):
            out[3 * bps + k::stride] = opaque[k:k + 1] * (len(out) // stride)
    return bytes(out), mask


def apply_mask(data: Any, layout: PixelLayout, mask: Any) -> bytes:
    """Multiply the layer's alpha by an 8-bit mask: the edit baked in where no mask can be added."""
    m = bytes(memoryview(mask).cast("B"))
    n = memoryview(data).nbytes // layout.bytes_per_pixel
    if len(m) != n:
        raise BadRequest(f"The mask has {len(m)} pixels; the layer has {n}.")
    if layout.sample == "u8":
        out = bytearray(memoryview(data).cast("B"))
        out[3::4] = bytes((a * k + 127) // 255 for a, k in zip(out[3::4], m, strict=True))
        return bytes(out)
    if layout.sample == "u16":
        a = _u16(data)
        a[3::4] = array.array("H", ((v * k + 127) // 255 for v, k in zip(a[3::4], m, strict=True)))
        return _u16_bytes(a)
    vals = _floats(data, layout.sample)
    vals[3::4] = [v * k / 255 for v, k in zip(vals[3::4], m, strict=True)]
    return _pack_floats(vals, layout.sample)


def clip_rect(x: int, y: int, w: int, h: int, width: int, height: int) -> Rect | None:
    """The part of a layer's extent inside a width x height canvas; None when nothing is inside."""
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, width), min(y + h, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return Rect(x0, y0, x1 - x0, y1 - y0)


def has_pixels(data: bytes, layout: PixelLayout) -> bool:
    """Is any pixel's alpha above 0? (Cheap: one strided slice per alpha byte, compared in C.)"""
    size = SAMPLE_BYTES[layout.sample]
    step, first = 4 * size, layout.order.index("A") * size
    view = memoryview(data).cast("B")
    return any(view[first + k::step].tobytes().strip(b"\0") for k in range(size))


def check_has_pixels(data: bytes, layout: PixelLayout, role: str, name: str) -> None:
    """Refuse a fully transparent layer on the spot; the server could only answer that it found no face or hair."""
    if not has_pixels(data, layout):
        raise BadRequest(empty_layer_message(role, name))
