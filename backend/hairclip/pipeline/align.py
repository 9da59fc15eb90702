"""Stage 2: FFHQ/e4e face alignment, and the exact map between the photo and the aligned frame.

The 256 px route reproduces e4e's ``utils/alignment.py`` pixel for pixel (the encoder was trained on it):
its shrink, crop, pad and quad warp, in that order. Every aligned frame of a face (the 256 encoder input,
the 1024 synthesis, the 1024 crop of the photo) covers the same square, so one ``FaceTransform`` maps them
all.

Coordinates are index coordinates (pixel ``(i, j)`` has its centre at ``(i, j)``) unless a name says
otherwise; PIL's continuous coordinates add 0.5.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.ndimage
from PIL import Image

E4E_SIZE = 256
SYNTH_SIZE = 1024
BAND_PIXELS = 1 << 21  # source pixels per band of a long resampling pass, between two cancellation points


def to_rgb8(photo: np.ndarray | Image.Image) -> np.ndarray:
    """Any L, LA, RGB or RGBA photo (uint8, uint16, or float in [0, 1]) as [H, W, 3] uint8 for the networks.

    Alpha is dropped: the networks need colour only, and the edit layer keeps the photo's own pixels.
    """
    if isinstance(photo, Image.Image):
        if photo.mode not in ("L", "LA", "RGB", "RGBA", "I;16", "I;16B", "I;16L"):
            photo = photo.convert("RGBA" if "transparency" in photo.info or "A" in photo.mode else "RGB")
        photo = np.asarray(photo)
    a = np.asarray(photo)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected an L, LA, RGB or RGBA image, got shape {a.shape}")
    a = a[..., :1] if a.shape[2] in (1, 2) else a[..., :3]
    if a.dtype == np.uint8:
        pass
    elif a.dtype.kind == "u" and a.dtype.itemsize == 2:  # either byte order (PIL's I;16B)
        a = np.rint(a / 257.0).astype(np.uint8)  # 65535 / 257 = 255 exactly
    elif np.issubdtype(a.dtype, np.floating):
        a = np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise ValueError(f"unsupported dtype {a.dtype}")
    return np.ascontiguousarray(np.broadcast_to(a, a.shape[:2] + (3,)))


def _square(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre and half-side vectors (c, x, y) of e4e's oriented square, in e4e's float operation order."""
    lm = np.asarray(lm)
    eye_l, eye_r = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
    eye_avg = (eye_l + eye_r) * 0.5
    eye_to_eye = eye_r - eye_l
    eye_to_mouth = (lm[48] + lm[54]) * 0.5 - eye_avg
    # Eye direction averaged with the eye-to-mouth direction turned by -90 degrees.
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    x = x / np.hypot(*x)
    x = x * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * 0.1
    return c, x, y


def quad_from_landmarks(lm: np.ndarray) -> np.ndarray:
    """e4e's quad [top-left, bottom-left, bottom-right, top-right] of the aligned frame, [4, 2] float64."""
    c, x, y = _square(lm)
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


@dataclass(frozen=True)
class FaceTransform:
    """The similarity between a photo and the aligned frames of one face.

    Aligned pixel ``(u, v)`` of an S x S frame sits at ``c + a x + b y`` with ``a = 2(u + 1/2)/S - 1``
    (likewise ``b`` from ``v``), so every S shares one square. ``shrink`` k > 1 means the 256 route
    sampled a LANCZOS-shrunk copy; its per-axis correction ``X = (P / k + 1/2) W / rint(W / k) - 1/2``
    (``_correction``) is folded into the affine maps, which therefore describe the pixels e4e actually saw.
    """

    c: tuple[float, float]
    x: tuple[float, float]
    y: tuple[float, float]
    photo_size: tuple[int, int]  # (W, H)
    shrink: int = 1

    def __post_init__(self) -> None:
        for name in ("c", "x", "y"):  # plain float tuples keep it immutable and hashable
            object.__setattr__(self, name, tuple(float(v) for v in np.asarray(getattr(self, name)).ravel()))
        object.__setattr__(self, "photo_size", tuple(int(v) for v in self.photo_size))

    @classmethod
    def from_landmarks(cls, lm: np.ndarray, photo_size: tuple[int, int],
                       output_size: int = E4E_SIZE) -> FaceTransform:
        c, x, y = _square(lm)
        shrink = int(np.floor(np.hypot(*x) * 2 / output_size * 0.5))
        return cls(c, x, y, photo_size, max(shrink, 1))

    @classmethod
    def covering(cls, photo_size: tuple[int, int]) -> FaceTransform:
        """The frame that is the whole image: an already aligned FFHQ/CelebA-HQ crop."""
        w, h = (int(s) for s in photo_size)
        return cls(((w - 1) / 2, (h - 1) / 2), (w / 2, 0.0), (0.0, h / 2), (w, h), 1)

    @property
    def qsize(self) -> float:
        """Side of the square in photo pixels (e4e's ``qsize``)."""
        return float(np.hypot(*self.x) * 2)

    def quad(self) -> np.ndarray:
        """e4e's quad in the photo before the shrink correction, [4, 2] (top-left, bottom-left, ...)."""
        c, x, y = (np.array(v) for v in (self.c, self.x, self.y))
        return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])

    def _correction(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-axis (scale, offset) taking a point of the quad's geometry to where it was sampled."""
        k = self.shrink
        if k <= 1:
            return np.ones(2), np.zeros(2)
        size = np.array(self.photo_size, dtype=np.float64)
        ratio = size / np.rint(size / k)  # photo pixels per pixel of the shrunk copy
        return ratio / k, 0.5 * ratio - 0.5

    def affine(self, size: int) -> np.ndarray:
        """[2, 3] map from aligned index coordinates of a size x size frame to photo index coordinates."""
        c, x, y = (np.array(v) for v in (self.c, self.x, self.y))
        lin = np.stack([x, y], axis=1) * (2.0 / size)
        off = c + (1.0 / size - 1.0) * (x + y)
        scale, shift = self._correction()
        return np.concatenate([lin * scale[:, None], (off * scale + shift)[:, None]], axis=1)

    def inverse_affine(self, size: int) -> np.ndarray:
        """[2, 3] map from photo index coordinates to aligned index coordinates of a size x size frame."""
        m = self.affine(size)
        inv = np.linalg.inv(m[:, :2])
        return np.concatenate([inv, -(inv @ m[:, 2:])], axis=1)

    def to_photo(self, points: np.ndarray, size: int) -> np.ndarray:
        """Aligned points [..., 2] of a size x size frame -> photo points."""
        m = self.affine(size)
        return np.asarray(points, dtype=np.float64) @ m[:, :2].T + m[:, 2]

    def to_aligned(self, points: np.ndarray, size: int) -> np.ndarray:
        """Photo points [..., 2] -> aligned points of a size x size frame."""
        m = self.inverse_affine(size)
        return np.asarray(points, dtype=np.float64) @ m[:, :2].T + m[:, 2]

    def corners(self) -> np.ndarray:
        """Photo positions of the frame's outer corners (top-left, bottom-left, bottom-right, top-right)."""
        return self.to_photo(np.array([[-0.5, -0.5], [-0.5, 1.5], [1.5, 1.5], [1.5, -0.5]]), 2)  # 2 px frame

    def photo_scale(self, size: int) -> float:
        """Photo pixels per aligned pixel of a size x size frame (the larger axis)."""
        return float(np.linalg.svd(self.affine(size)[:, :2], compute_uv=False).max())

    def inside(self, size: int, apron: float = 0.0) -> np.ndarray:
        """[size, size] bool: aligned pixels whose photo position is on the photo (grown by ``apron`` px)."""
        g = np.arange(size, dtype=np.float64)
        m = self.affine(size)
        lo, hi = -0.5 - apron, np.array(self.photo_size) - 0.5 + apron
        ok = None
        for axis in range(2):
            p = m[axis, 0] * g[None, :] + m[axis, 1] * g[:, None] + m[axis, 2]
            within = (p >= lo) & (p <= hi[axis])
            ok = within if ok is None else ok & within
        return ok


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """One aligned face: the e4e input, the photo's 1024 crop of the same square, and its geometry."""

    image: np.ndarray  # [S, S, 3] uint8, e4e's aligned image (S = 256)
    image1024: np.ndarray | None  # [1024, 1024, 3] uint8 crop of the photo; synthetic fill off the photo
    transform: FaceTransform
    padded: bool  # e4e's reflect/blur padding was used (part of the square lies off the photo)


@functools.cache
def _pil_may_resize_vertically_first() -> bool:
    """Whether this Pillow runs the vertical pass first when the height shrinks over twice as much as the
    width (newer Pillows do; older ones always go horizontal first). The uint8 intermediate makes the
    order visible in the pixels, so a tiny probe tells.
    """
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 8, 3), dtype=np.uint8))
    both = np.asarray(im.resize((4, 16), Image.LANCZOS))
    vertical_first = np.asarray(im.resize((8, 16), Image.LANCZOS).resize((4, 16), Image.LANCZOS))
    return np.array_equal(both, vertical_first)


def _shrunk_region(photo: np.ndarray, size: tuple[int, int], box: tuple[int, int, int, int],
                   check: Callable[[], None] = lambda: None) -> np.ndarray:
    """``photo.resize(size, LANCZOS).crop(box)``, bit-exact, resizing as little of the photo as it can.

    PIL gives a source box the full resize's taps only if the tap centres come out as the same doubles;
    it reads the box as float32. Along an axis whose ratio photo/shrunk is an integer every product is
    exact, so we resample just the box; along any other axis we must resample its full extent and slice.
    The two passes run one axis per call, in the order the full resize would use, because each pass
    rounds to uint8. Kept because it matters: ``bench/bench_align_shrink.py`` measured the plain way
    (resize the whole photo, then crop) 3 to 11 times slower, 1.2 to 2.6 s more per big face on a 12-24 MP
    photo, against a whole edit's 3.5 s; ``test_shrunk_crop_equals_crop_of_the_full_shrink`` checks the bits.
    """
    h, w = photo.shape[:2]
    plans = []  # per axis: photo slice, source box within it, output count, output slice
    for n, m, a, b in ((w, size[0], box[0], box[2]), (h, size[1], box[1], box[3])):
        if n % m:
            plans.append((0, n, 0.0, float(n), m, a, b))
        else:
            ratio = n // m
            reach = 3 * ratio + 2  # LANCZOS reaches 3 output pixels each side
            lo, hi = max(a * ratio - reach, 0), min(b * ratio + reach, n)
            plans.append((lo, hi, float(a * ratio - lo), float(b * ratio - lo), b - a, 0, b - a))
    (x0, x1, *_), (y0, y1, *_) = plans
    img = Image.fromarray(np.ascontiguousarray(photo[y0:y1, x0:x1]))
    order = (0, 1)
    if _pil_may_resize_vertically_first() and h - size[1] > max(0, 2 * (w - size[0])):
        order = (1, 0)
    for axis in order:
        _, _, s0, s1, count, _, _ = plans[axis]
        img = _resize_in_bands(img, axis, count, s0, s1, check)
    (*_, c0, c1), (*_, r0, r1) = plans
    return np.asarray(img)[r0:r1, c0:c1]


def _resize_in_bands(img: Image.Image, axis: int, count: int, s0: float, s1: float,
                     check: Callable[[], None]) -> Image.Image:
    """One LANCZOS pass along ``axis`` (0: x), source span s0..s1 to ``count`` pixels, done in bands across the
    other axis with a cancellation point between them (a pass over a 4096 px photo is ~0.2 s). Each output
    line depends only on its own input line, so the bands give the same bytes as one call."""
    w, h = img.size
    across = h if axis == 0 else w
    step = max(1, BAND_PIXELS // max(w if axis == 0 else h, 1))
    out = Image.new(img.mode, (count, h) if axis == 0 else (w, count))
    for a in range(0, across, step):
        check()
        b = min(a + step, across)
        if axis == 0:
            part = img.crop((0, a, w, b))
            out.paste(part.resize((count, b - a), Image.LANCZOS, box=(s0, 0, s1, b - a)), (0, a))
        else:
            part = img.crop((a, 0, b, h))
            out.paste(part.resize((b - a, count), Image.LANCZOS, box=(0, s0, b - a, s1)), (a, 0))
    return out


def _synthesise_pad(img: np.ndarray, pad: np.ndarray, qsize: float) -> np.ndarray:
    """e4e's padding: reflect, blur towards the outside, fade to the median colour; uint8 out.

    The float64 weights and the float32 image follow e4e's dtypes so the rounding matches it.
    """
    pl, pt, pr, pb = (int(p) for p in pad)
    f = np.pad(img.astype(np.float32), ((pt, pb), (pl, pr), (0, 0)), mode="reflect")
    h, w = f.shape[:2]
    xs, ys = np.arange(w, dtype=np.float64)[None, :], np.arange(h, dtype=np.float64)[:, None]
    # 1 on the outer edge, 0 on the photo's border, negative inside.
    edge = np.maximum(1.0 - np.minimum(xs / pl, (w - 1 - xs) / pr),
                      1.0 - np.minimum(ys / pt, (h - 1 - ys) / pb))
    sigma = qsize * 0.02
    blur = scipy.ndimage.gaussian_filter(f, [sigma, sigma, 0])
    f += (blur - f) * np.clip(edge * 3.0 + 1.0, 0.0, 1.0)[..., None]
    f += (np.median(f, axis=(0, 1)) - f) * np.clip(edge, 0.0, 1.0)[..., None]
    return np.uint8(np.clip(np.rint(f), 0, 255))


def _e4e_source(photo: np.ndarray, quad: np.ndarray, qsize: float, shrink: int,
                check: Callable[[], None] = lambda: None) -> tuple[np.ndarray, np.ndarray, bool]:
    """e4e's shrink, crop and pad, in e4e's order; returns the source image, the quad in it, padded.

    Only the crop is ever resampled or converted to float: the shrink is computed on the crop alone.
    """
    h, w = photo.shape[:2]
    size = (w, h)
    if shrink > 1:
        size = (int(np.rint(w / shrink)), int(np.rint(h / shrink)))
        quad, qsize = quad / shrink, qsize / shrink
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo, hi = np.floor(quad.min(axis=0)).astype(int), np.ceil(quad.max(axis=0)).astype(int)
    crop = (max(lo[0] - border, 0), max(lo[1] - border, 0), min(hi[0] + border, size[0]),
            min(hi[1] + border, size[1]))
    if crop[2] - crop[0] < size[0] or crop[3] - crop[1] < size[1]:
        quad = quad - crop[:2]
    else:
        crop = (0, 0) + size
    img = _shrunk_region(photo, size, crop, check) if shrink > 1 else photo[crop[1]:crop[3], crop[0]:crop[2]]

    ch, cw = img.shape[:2]
    lo, hi = np.floor(quad.min(axis=0)).astype(int), np.ceil(quad.max(axis=0)).astype(int)
    pad = np.array([max(border - lo[0], 0), max(border - lo[1], 0), max(hi[0] - cw + border, 0),
                    max(hi[1] - ch + border, 0)])
    if pad.max() > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        check()
        return _synthesise_pad(img, pad, qsize), quad + pad[:2], True
    return img, quad, False


def _quad_transform(img: np.ndarray, quad: np.ndarray, size: int) -> np.ndarray:
    """PIL's QUAD warp as e4e calls it: corners in index coordinates, bilinear, 0 off the source."""
    out = Image.fromarray(np.ascontiguousarray(img)).transform(
        (size, size), Image.QUAD, (quad + 0.5).flatten().tolist(), Image.BILINEAR)
    return np.array(out)


def _photo_crop(photo: np.ndarray, t: FaceTransform, size: int) -> np.ndarray:
    """The square sampled straight from the photo at full resolution; off-photo pixels are 0.

    Where the square is larger than ``size`` on the photo, the needed region is first reduced (PIL's
    antialiased triangle filter: 3x cheaper than LANCZOS, and this crop only feeds the parser and debug
    output) to about one photo pixel per output pixel, so the bilinear warp does not alias.
    """
    h, w = photo.shape[:2]
    m = t.affine(size)
    cs = t.corners()
    x0, y0 = (max(int(np.floor(v)) - 2, 0) for v in cs.min(axis=0))
    x1, y1 = min(int(np.ceil(cs[:, 0].max())) + 3, w), min(int(np.ceil(cs[:, 1].max())) + 3, h)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((size, size, 3), np.uint8)
    region = Image.fromarray(np.ascontiguousarray(photo[y0:y1, x0:x1]))
    scale = np.ones(2)
    reduce = t.photo_scale(size)
    if reduce > 1.0:
        rsize = (max(round((x1 - x0) / reduce), 1), max(round((y1 - y0) / reduce), 1))
        region = region.resize(rsize, Image.BILINEAR)
        scale = np.array([(x1 - x0) / rsize[0], (y1 - y0) / rsize[1]])
    # Region index coordinates are (p + 1/2 - origin) / scale - 1/2; PIL's AFFINE wants continuous ones.
    lin = m[:, :2] / scale[:, None]
    off = (m[:, 2] + 0.5 - np.array([x0, y0])) / scale  # continuous source point of aligned index (0, 0)
    off = off - lin @ np.array([0.5, 0.5])  # ... and of the continuous output origin
    data = (lin[0, 0], lin[0, 1], off[0], lin[1, 0], lin[1, 1], off[1])
    return np.array(region.transform((size, size), Image.AFFINE, data, Image.BILINEAR))


def align_face(photo: np.ndarray, landmarks: np.ndarray, output_size: int = E4E_SIZE,
               crop1024: bool = True, check: Callable[[], None] = lambda: None) -> AlignedFace:
    """Align one face the e4e way; also the 1024 crop of the same square, for parsing and debugging.

    ``photo`` is [H, W, 3] uint8 RGB (see ``to_rgb8``), ``landmarks`` the 68 dlib points in index
    coordinates. The 1024 crop differs from the 256 route on purpose: it is sampled from the full
    resolution photo (no shrink; an antialiased reduction only where the square is over 1024 px) with the
    corrected geometry of ``FaceTransform``, so it lies exactly on the 256 frame; off the photo it takes
    e4e's synthetic padding (the 256 route's padded source, same quad) when e4e padded, else black.
    ``check`` runs between the resampling steps (a cancellation point: each step is long on a big photo).
    """
    photo = np.asarray(photo)
    if photo.dtype != np.uint8 or photo.ndim != 3 or photo.shape[2] != 3:
        raise ValueError("align_face wants [H, W, 3] uint8 RGB; convert with to_rgb8")
    h, w = photo.shape[:2]
    t = FaceTransform.from_landmarks(landmarks, (w, h), output_size)
    src, quad, padded = _e4e_source(photo, t.quad(), t.qsize, t.shrink, check)
    check()
    image = _quad_transform(src, quad, output_size)
    big = None
    if crop1024:
        check()
        big = _photo_crop(photo, t, SYNTH_SIZE)
        if padded:
            check()  # off the photo: the 256 image's padded source and quad, so the fill is what e4e saw
            on_photo = t.inside(SYNTH_SIZE)
            big = np.where(on_photo[..., None], big, _quad_transform(src, quad, SYNTH_SIZE))
    return AlignedFace(image, big, t, padded)


def aligned_input(photo: np.ndarray, output_size: int = E4E_SIZE) -> AlignedFace:
    """An already aligned FFHQ/CelebA-HQ crop (``--aligned``): the frame is the whole image.

    The e4e input is ``transforms.Resize((S, S))`` of the PIL image, which for PIL input is
    ``Image.resize(..., BILINEAR)`` (antialiased) and nothing at all when the size already matches.
    """
    photo = np.asarray(photo)
    if photo.dtype != np.uint8 or photo.ndim != 3 or photo.shape[2] != 3:
        raise ValueError("aligned_input wants [H, W, 3] uint8 RGB; convert with to_rgb8")
    h, w = photo.shape[:2]
    im = Image.fromarray(photo)
    image = photo.copy() if (w, h) == (output_size, output_size) else np.array(
        im.resize((output_size, output_size), Image.BILINEAR))
    return AlignedFace(image, aligned_crop1024(photo), FaceTransform.covering((w, h)), False)


def aligned_crop1024(photo: np.ndarray) -> np.ndarray:
    """An aligned crop at 1024 px, HairCLIP's parsing and reference size: as it is when already 1024 (the
    official path, which accepts nothing else), else resized with LANCZOS (our extension)."""
    h, w = photo.shape[:2]
    if (w, h) == (SYNTH_SIZE, SYNTH_SIZE):
        return np.array(photo, copy=True)
    return np.array(Image.fromarray(photo).resize((SYNTH_SIZE, SYNTH_SIZE), Image.LANCZOS))
