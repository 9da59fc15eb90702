"""Reading and writing photos at their own depth, and compositing a result layer over its photo.

Pillow reads most formats but turns 16-bit colour PNGs into 8 bits, so 16-bit PNGs go through pypng.
Photos come upright (their EXIF orientation applied, as phones expect), and an output keeps its source's ICC
profile and EXIF data (`PhotoInfo`, orientation reset to 1) in the formats that carry them.
Writes are atomic: a failed or interrupted edit never leaves a half-written output file.
"""

from __future__ import annotations

import io
import os
import stat
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import png
from PIL import Image, UnidentifiedImageError

from hairclip_shared.protocol import BadImage

MAX_PIXELS = 200_000_000  # far above any camera, well below what would exhaust memory


def all_finite(a: np.ndarray) -> bool:
    """No NaN or inf sample. A float64 sum propagates both and cannot overflow for float32 or narrower
    samples, so it needs no [H,W,C] boolean temporary; wider floats get the exact elementwise test."""
    if not np.issubdtype(a.dtype, np.floating):
        return True
    if a.dtype.itemsize <= 4:
        return bool(np.isfinite(a.sum(dtype=np.float64)))
    return bool(np.isfinite(a).all())


def check_photo(photo: np.ndarray, what: str = "image") -> np.ndarray:
    """[H,W] or [H,W,1..4] in uint8, uint16 or float in [0, 1]; refused with a clear message otherwise."""
    photo = np.asarray(photo)
    if photo.ndim == 2:
        photo = photo[..., None]
    if photo.ndim != 3 or photo.shape[2] not in (1, 2, 3, 4):
        raise BadImage(f"the {what} has shape {photo.shape}; expected height x width x 1-4 channels")
    if photo.shape[0] == 0 or photo.shape[1] == 0:
        raise BadImage(f"the {what} is empty ({photo.shape[1]}x{photo.shape[0]})")
    if photo.shape[0] * photo.shape[1] > MAX_PIXELS:
        raise BadImage(f"the {what} is {photo.shape[1]}x{photo.shape[0]}, over the {MAX_PIXELS:,} pixel limit")
    if photo.dtype not in (np.uint8, np.uint16) and not np.issubdtype(photo.dtype, np.floating):
        raise BadImage(f"the {what} has samples of type {photo.dtype}; use 8/16-bit integers or floats")
    if not all_finite(photo):
        raise BadImage(f"the {what} has NaN or infinite pixel values; HairCLIP needs finite samples "
                       "(0 to 1 in a float image)")
    return photo


EXIF_ORIENTATION = 0x0112
# Formats whose Pillow writer takes icc_profile= and exif=.
_KEEPS_INFO = {"JPEG", "PNG", "TIFF", "WEBP"}


@dataclass(frozen=True)
class PhotoInfo:
    """What an output keeps of its source file: the ICC profile and the EXIF block (orientation reset to 1,
    since the pixels are stored upright)."""

    icc_profile: bytes | None = None
    exif: bytes | None = None  # as Pillow's Exif.tobytes() writes it ("Exif\0\0" + TIFF header)


def upright(a: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels as they are meant to be seen: what ``PIL.ImageOps.exif_transpose`` does for EXIF ``orientation``
    1-8, on an array of any depth (16-bit PNGs are read without Pillow)."""
    if orientation in (5, 6, 7, 8):
        a = np.swapaxes(a, 0, 1)  # 5 is the transpose itself; 6, 7, 8 add a flip to it
    if orientation in (2, 3, 6, 7):
        a = a[:, ::-1]
    if orientation in (3, 4, 7, 8):
        a = a[::-1]
    return np.ascontiguousarray(a)


def _photo_info(im: Image.Image) -> tuple[PhotoInfo, int]:
    exif = im.getexif()
    orientation = exif.get(EXIF_ORIENTATION, 1)
    orientation = orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1
    if EXIF_ORIENTATION in exif:
        exif[EXIF_ORIENTATION] = 1
    return PhotoInfo(im.info.get("icc_profile") or None, exif.tobytes() if len(exif) else None), orientation


def load_image(path: str | Path) -> np.ndarray:
    """A photo as [H,W,C] at its own depth: uint8, uint16 (16-bit PNG, 16-bit greyscale TIFF) or float32,
    upright (its EXIF orientation applied).

    Pillow reduces 16-bit colour TIFFs to 8 bits; they are read, but at 8 bits.
    """
    return read_photo(path)[0]


def read_photo(path: str | Path) -> tuple[np.ndarray, PhotoInfo]:
    """`load_image`, and the ICC profile and EXIF data for `save_image` to keep on the output."""
    path = Path(path)
    if not path.is_file():
        raise BadImage(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise BadImage(f"{path}: the file is empty")
    try:
        with Image.open(path) as im:
            im.load()
            info, orientation = _photo_info(im)
            a = None
            if im.format == "PNG":
                w, h, rows, meta = png.Reader(filename=str(path)).asDirect()
                if meta["bitdepth"] == 16:
                    a = np.vstack([np.asarray(r, np.uint16) for r in rows]).reshape(h, w, meta["planes"])
            if a is not None:
                pass
            elif im.mode in ("I;16", "I;16B", "I;16L"):
                a = np.array(im).astype(np.uint16)
            elif im.mode in ("I", "F"):
                a = check_photo(np.array(im, dtype=np.float32), str(path))  # NaN would hide in max()
                a = a / max(float(a.max()), 1.0)
            else:
                if im.mode not in ("L", "LA", "RGB", "RGBA"):
                    im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
                a = np.array(im)
        return check_photo(upright(a, orientation), str(path)), info
    except (UnidentifiedImageError, png.Error, OSError, SyntaxError) as exc:
        raise BadImage(f"{path}: cannot be decoded as an image ({exc})") from exc


def _new_file_mode(path: Path) -> int:
    """The mode ``cp`` gives: an existing file keeps its own, a new one gets 0666 less the umask.

    mkstemp makes its file 0600, which would leave every output unreadable to other users.
    """
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0o022)  # reading the umask means setting it; put it straight back
        os.umask(umask)
        return 0o666 & ~umask


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _new_file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_image(path: str | Path, image: np.ndarray, info: PhotoInfo | None = None) -> None:
    """Write in the format of the extension. PNG keeps 16 bits; other formats get 8 bits, and JPEG no alpha.

    ``info``'s ICC profile and EXIF data go into JPEG, PNG, TIFF and WebP files (other formats have no place
    for them). A profile for another colour model than the output's (a grey or CMYK source written as RGB) is
    left out, as is EXIF over JPEG's 64 KB segment."""
    path = Path(path)
    info = info or PhotoInfo()
    image = check_photo(image)
    ext = path.suffix.lower()
    if np.issubdtype(image.dtype, np.floating):
        image = (np.clip(image, 0, 1) * 65535 + 0.5).astype(np.uint16)
    if image.shape[2] in (1, 2) and ext not in (".png", ".tif", ".tiff"):
        image = np.concatenate([np.repeat(image[..., :1], 3, 2), image[..., 1:]], 2)
    if ext == ".png" and image.dtype == np.uint16:
        h, w, c = image.shape
        writer = png.Writer(w, h, greyscale=c < 3, alpha=c in (2, 4), bitdepth=16)
        info = PhotoInfo(_fitting_icc(info.icc_profile, "L" if c < 3 else "RGB"), info.exif)
        _atomic(path, lambda tmp: _write_png(writer, tmp, image.reshape(h, w * c), info))
        return
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if ext in (".jpg", ".jpeg") and image.shape[2] in (2, 4):
        image = image[..., :-1]
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[image.shape[2]]
    pil = Image.fromarray(image[..., 0] if mode == "L" else image, mode)
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise BadImage(f"{path}: unknown image format {ext!r}; use .png, .jpg, .tif or .webp")
    keep = {}
    if fmt in _KEEPS_INFO:
        keep = {k: v for k, v in (("icc_profile", _fitting_icc(info.icc_profile, mode)), ("exif", info.exif)) if v}
        if fmt == "JPEG" and len(keep.get("exif", b"")) > 65533:
            del keep["exif"]
    _atomic(path, lambda tmp: pil.save(tmp, format=fmt, **keep))


def _fitting_icc(icc: bytes | None, mode: str) -> bytes | None:
    """``icc`` if its colour space (header bytes 16-19) is the output mode's, else None."""
    want = b"GRAY" if mode in ("L", "LA") else b"RGB "
    return icc if icc and icc[16:20] == want else None


def _write_png(writer: png.Writer, tmp: str, rows: np.ndarray, info: PhotoInfo) -> None:
    """pypng writes the pixels; the ICC profile (iCCP) and EXIF (eXIf) chunks go in right after the header."""
    buf = io.BytesIO()
    writer.write(buf, rows)
    chunks = list(png.Reader(bytes=buf.getvalue()).chunks())
    extra = []
    if info.icc_profile:
        extra.append((b"iCCP", b"ICC profile\0\0" + zlib.compress(info.icc_profile)))
    if info.exif:
        extra.append((b"eXIf", info.exif[6:] if info.exif.startswith(b"Exif\0\0") else info.exif))
    with open(tmp, "wb") as f:
        png.write_chunks(f, chunks[:1] + extra + chunks[1:])


def composite(photo: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """``layer`` (RGBA, the photo's dtype) over ``photo``; where alpha is 0 the photo comes back unchanged."""
    photo = check_photo(photo)
    scale = 255.0 if photo.dtype == np.uint8 else 65535.0 if photo.dtype == np.uint16 else 1.0
    alpha = layer[..., 3:4].astype(np.float32) / scale
    colour = photo[..., :3] if photo.shape[2] >= 3 else np.repeat(photo[..., :1], 3, 2)
    mixed = colour.astype(np.float32) + (layer[..., :3].astype(np.float32) - colour) * alpha
    if scale > 1:
        mixed = np.clip(np.rint(mixed), 0, scale)
    out = np.where(alpha > 0, mixed.astype(photo.dtype), colour)
    if photo.shape[2] in (2, 4):  # keep the photo's own alpha
        out = np.concatenate([out, photo[..., -1:]], 2)
    return out


_NUMPY_DEPTH = {"u8": np.dtype("<u1"), "u16": np.dtype("<u2"), "f32": np.dtype("<f4")}


def image_to_array(image) -> np.ndarray:
    """A protocol `Image` as an [H,W,C] array in RGB(A) order (or [H,W] for an 'A' mask), zero-copy."""
    a = np.frombuffer(image.data, dtype=_NUMPY_DEPTH[image.depth])
    a = a.reshape(image.height, image.width, len(image.channels))
    if image.channels.startswith("BGR"):
        a = a[..., [2, 1, 0, 3][: a.shape[2]]]
    return a[..., 0] if image.channels == "A" else a


def array_to_image(array: np.ndarray, channels: str | None = None, depth: str | None = None):
    """An [H,W,C] array as a protocol `Image` (RGB, RGBA, BGR or BGRA; u8, u16 or f32)."""
    from hairclip_shared.protocol import Image

    array = check_photo(array)
    if channels == "A":
        array = array[..., :1]
    elif array.shape[2] in (1, 2):  # grey (+ alpha) travels as RGB(A)
        array = np.concatenate([np.repeat(array[..., :1], 3, 2), array[..., 1:]], 2)
    channels = channels or ("RGBA" if array.shape[2] == 4 else "RGB")
    if len(channels) != array.shape[2]:
        raise ValueError(f"{channels} needs {len(channels)} channels, the array has {array.shape[2]}")
    depth = depth or {np.dtype(np.uint8): "u8", np.dtype(np.uint16): "u16"}.get(array.dtype, "f32")
    array = convert_depth(array, depth)
    if channels.startswith("BGR"):
        array = array[..., [2, 1, 0, 3][: array.shape[2]]]
    data = np.ascontiguousarray(array, dtype=_NUMPY_DEPTH[depth])
    return Image(data.shape[1], data.shape[0], memoryview(data).cast("B"), channels, depth)


def convert_depth(array: np.ndarray, depth: str) -> np.ndarray:
    """Between uint8, uint16 and float32 in [0, 1], rounding to nearest."""
    target = _NUMPY_DEPTH[depth]
    if array.dtype == target:
        return array
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
    x = array.astype(np.float32) / scale.get(array.dtype, 1.0)
    if depth == "f32":
        return x
    return np.clip(np.rint(x * scale[target]), 0, scale[target]).astype(target)
