"""Stage 7, geometry and compositing: the edited aligned face back onto the photo as an RGBA layer.

The aligned S x S frame is inverse-mapped per photo pixel, only inside the face square's bounding box.
The layer carries the photo's own colours wherever its alpha is 0, so laying it over the photo gives the
photo back byte for byte outside the edit.

Long because each fast path here (edit_mask_fast, compose_face) sits beside the plain reference it must
equal byte for byte (edit_mask_warm, warp_face_warm, compose_layer), as in stylegan3's ops, and the tests
compare the two; `FAST = False` runs the reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .align import FaceTransform

# Edit-mask margins for a 1024 frame (scale with S): the union of old and new hair stays fully opaque
# DILATE px beyond itself, then fades to 0 over FEATHER px, so e4e's imperfect reconstruction of the
# surroundings only shows in a thin blended band.
DILATE_1024 = 12
FEATHER_1024 = 24

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in photo pixels, end exclusive
Check = Callable[[], None]  # a cancellation point: raises to stop the job
# Work on a big photo goes in row bands of about this many pixels, with a cancellation point after each,
# so a cancel never waits for a whole 4096 px face (~0.05 s a band on one CPU core; pixelwise, so the
# bands give the same bytes as one pass).
TILE_PIXELS = 1 << 18
# `compose_face` samples the warp in these square tiles, skipping tiles where the edit mask is 0.
TILE = 32
# Set False to run the plain reference path everywhere (`edit_mask_warm`, `warp_face_warm`, `compose_one`).
FAST = True


def _nothing() -> None:
    pass


def _bands(y0: int, y1: int, width: int) -> list[tuple[int, int]]:
    rows = max(1, TILE_PIXELS // max(width, 1))
    return [(y, min(y + rows, y1)) for y in range(y0, y1, rows)]


def face_box(transform: FaceTransform, photo_hw: tuple[int, int]) -> Box:
    """Photo pixels the face square can touch (plus one for the bilinear fringe), clipped to the photo."""
    h, w = photo_hw
    cs = transform.corners()
    x0, y0 = (max(math.floor(v), 0) for v in cs.min(axis=0))
    x1, y1 = min(math.ceil(cs[:, 0].max()) + 1, w), min(math.ceil(cs[:, 1].max()) + 1, h)
    return x0, y0, max(x1, x0), max(y1, y0)


def warp_to_photo(img: torch.Tensor, transform: FaceTransform, photo_hw: tuple[int, int],
                  padding_mode: str = "border", antialias: bool = True, check: Check = _nothing,
                  ) -> tuple[torch.Tensor, Box]:
    """[C, S, S] aligned image -> ([C, h, w] on the photo's ``face_box``, the box).

    Sampling is bilinear at the exact inverse map. Where the square is smaller on the photo than S the
    frame is first reduced with a triangle filter to about one photo pixel per pixel; the normalised
    (align_corners=False) coordinates are the same in every frame size, so the reduction keeps the geometry.
    """
    c, s, s2 = img.shape
    if s != s2:
        raise ValueError(f"expected a square aligned frame, got {tuple(img.shape)}")
    box = x0, y0, x1, y1 = face_box(transform, photo_hw)
    src = img[None].float()
    if x1 <= x0 or y1 <= y0:
        return src.new_zeros((c, y1 - y0, x1 - x0)), box

    if antialias:
        m = transform.affine(s)
        scale = np.hypot(m[0, :2], m[1, :2])  # photo pixels per aligned pixel along u and v
        if scale.min() < 1.0:
            size = [min(s, math.ceil(s * float(scale[1]))), min(s, math.ceil(s * float(scale[0])))]
            src = F.interpolate(src, size=size, mode="bilinear", antialias=True, align_corners=False)

    # Photo index -> aligned index of the S frame -> grid_sample's [-1, 1] (pixel edges at +-1).
    inv = transform.inverse_affine(s)
    norm = inv * (2.0 / s)
    norm[:, 2] += 1.0 / s - 1.0
    dtype = torch.float32 if img.device.type == "mps" else torch.float64  # MPS has no float64
    coef = torch.as_tensor(norm, dtype=dtype, device=img.device)
    xs = torch.arange(x0, x1, dtype=dtype, device=img.device)[None, :]
    out = src.new_empty((c, y1 - y0, x1 - x0))
    for b0, b1 in _bands(y0, y1, x1 - x0):
        check()
        ys = torch.arange(b0, b1, dtype=dtype, device=img.device)[:, None]
        grid = torch.stack([coef[i, 0] * xs + coef[i, 1] * ys + coef[i, 2] for i in range(2)], dim=-1)
        out[:, b0 - y0:b1 - y0] = F.grid_sample(src, grid[None].float(), mode="bilinear",
                                                padding_mode=padding_mode, align_corners=False)[0]
    return out, box


def edit_mask(hair_before: torch.Tensor, hair_after: torch.Tensor, dilate_px: int = DILATE_1024,
              feather_px: int = FEATHER_1024, check: Check = _nothing) -> torch.Tensor:
    """Where the edit shows, [S, S] float32 in [0, 1]: old hair | new hair, grown, with a soft edge.

    Old hair must go too (a shorter style uncovers background), hence the union. The growth is a square
    (a separable max filter, done with running sums); the edge is two box blurs of radius ``feather_px // 4``,
    a tent of total width about ``feather_px`` that starts ``dilate_px`` out, so the union itself keeps exactly 1.
    """
    m = (hair_before.bool() | hair_after.bool()).float()[None, None]
    r = feather_px // 4
    grow = dilate_px + 2 * r
    if grow > 0:
        m = _grow_binary(m, grow, -1)
        check()
        m = _grow_binary(m, grow, -2)
    for _ in range(2 if r > 0 else 0):
        check()
        # Replicate at the frame edge: hair cut by the square must stay opaque up to its border.
        m = F.avg_pool2d(F.pad(m, (r, r, 0, 0), mode="replicate"), (1, 2 * r + 1), stride=1)
        m = F.avg_pool2d(F.pad(m, (0, 0, r, r), mode="replicate"), (2 * r + 1, 1), stride=1)
    return m[0, 0].clamp_(0.0, 1.0)


def _grow_binary(m: torch.Tensor, grow: int, dim: int) -> torch.Tensor:
    """A 0/1 mask grown by ``grow`` px along ``dim``: the same as a max filter of width 2*grow+1, from running
    sums (exact for 0/1 counts) in O(1) per pixel instead of O(width): 10x faster at 1024 px."""
    pad = (grow + 1, grow, 0, 0) if dim == -1 else (0, 0, grow + 1, grow)
    sums = F.pad(m, pad).cumsum(dim)
    n = m.shape[dim]
    window = sums.narrow(dim, 2 * grow + 1, n) - sums.narrow(dim, 0, n)
    return (window > 0.5).to(m.dtype)


def restrict_to_photo(mask: torch.Tensor, transform: FaceTransform) -> torch.Tensor:
    """Zero an aligned [S, S] mask where the square lay off the photo (e4e's synthetic padding).

    An apron of two photo pixels (two aligned pixels where those are larger) is kept: only the warp's
    filter footprint reaches there from the photo, and cutting it would fade the photo's own edge pixels.
    """
    s = mask.shape[-1]
    apron = 2.0 * max(1.0, transform.photo_scale(s))
    inside = torch.from_numpy(transform.inside(s, apron)).to(mask.device)
    return mask * inside


def warp_face(edited: torch.Tensor, mask: torch.Tensor, transform: FaceTransform,
              photo_hw: tuple[int, int], check: Check = _nothing) -> tuple[torch.Tensor, torch.Tensor, Box]:
    """Edited [3, S, S] in [0, 1] and its edit mask [S, S] -> (rgb [3, h, w], alpha [h, w], box) on the photo."""
    rgb, box = warp_to_photo(edited, transform, photo_hw, padding_mode="border", check=check)
    alpha, _ = warp_to_photo(restrict_to_photo(mask, transform)[None], transform, photo_hw,
                             padding_mode="zeros", check=check)
    return rgb.clamp(0.0, 1.0), alpha[0].clamp(0.0, 1.0), box


def _as_numpy(a: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().to("cpu", torch.float32).numpy()
    return np.asarray(a, dtype=np.float32)


def _quantise(v: np.ndarray, dtype: np.dtype) -> np.ndarray:
    v = np.clip(v, 0.0, 1.0)
    if dtype == np.uint8:
        return np.rint(v * 255.0).astype(np.uint8)
    if dtype == np.uint16:
        return np.rint(v * 65535.0).astype(np.uint16)
    return v.astype(dtype)


def compose_layer(photo: np.ndarray, faces: Sequence[tuple[torch.Tensor | np.ndarray,
                                                           torch.Tensor | np.ndarray, Box]],
                  check: Check = _nothing, base: np.ndarray | None = None) -> np.ndarray:
    """The edit as an [H, W, 4] layer in the photo's dtype (uint8, uint16 or float in [0, 1]).

    ``faces`` holds (rgb [3, h, w] in [0, 1], alpha [h, w], box) from ``warp_face``. Alpha is the largest
    face alpha; where faces overlap the colour is their alpha-weighted mean, so there is no seam where
    one mask overtakes the other. Wherever the quantised alpha is 0 the colour is the photo's own.
    ``check`` runs per face and per row band: a cancellation point. ``base``, `clear_layer(photo)` if cached,
    is copied instead of building it again.
    """
    photo = np.asarray(photo)
    if photo.ndim != 3 or photo.shape[2] not in (3, 4):
        raise ValueError(f"expected an [H, W, 3|4] photo, got shape {photo.shape}")
    if photo.dtype not in (np.uint8, np.uint16) and not np.issubdtype(photo.dtype, np.floating):
        raise ValueError(f"unsupported photo dtype {photo.dtype}")
    layer = _base_copy(photo, base, check)
    faces = [(_as_numpy(rgb).transpose(1, 2, 0), _as_numpy(alpha).reshape(rgb.shape[-2:]), box)
             for rgb, alpha, box in faces]
    for _, _, (x0, y0, x1, y1) in faces:
        check()
        if x1 <= x0 or y1 <= y0:
            continue
        for b0, b1 in _bands(y0, y1, x1 - x0):
            check()
            _compose_band(layer, photo, faces, (x0, b0, x1, b1))
    return layer


def _compose_band(layer: np.ndarray, photo: np.ndarray, faces: list, band: Box) -> None:
    """One band of one face's box, settled with every face that overlaps it; shared pixels come out the same."""
    x0, y0, x1, y1 = band
    top = np.zeros((y1 - y0, x1 - x0), np.float32)
    weight = np.zeros_like(top)
    colour = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
    for rgb, alpha, (u0, v0, u1, v1) in faces:
        ix0, iy0, ix1, iy1 = max(x0, u0), max(y0, v0), min(x1, u1), min(y1, v1)
        if ix1 <= ix0 or iy1 <= iy0:
            continue
        here = np.s_[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
        a = np.clip(alpha[iy0 - v0:iy1 - v0, ix0 - u0:ix1 - u0], 0.0, 1.0)
        np.maximum(top[here], a, out=top[here])
        weight[here] += a
        colour[here] += a[..., None] * rgb[iy0 - v0:iy1 - v0, ix0 - u0:ix1 - u0]
    a_q = _quantise(top, photo.dtype)
    c_q = _quantise(colour / np.maximum(weight, 1e-12)[..., None], photo.dtype)
    keep = a_q == 0
    c_q[keep] = photo[y0:y1, x0:x1, :3][keep]
    layer[y0:y1, x0:x1, :3] = c_q
    layer[y0:y1, x0:x1, 3] = a_q


@dataclass(frozen=True)
class FaceWarp:
    """What compositing one face needs that depends only on the photo, computed once per photo and face.

    A warm edit (new text, reference or strength) then only samples. The grid addresses the S frame padded by one
    pixel (colour replicated, alpha 0), so colour and alpha warp in ONE sampling pass with border padding,
    which is the same as warping the colour with border and the alpha with zero padding."""

    transform: FaceTransform
    photo_hw: tuple[int, int]
    size: int  # S
    box: Box
    reduced: list[int] | None  # the antialiased frame size [h, w], or None when the square is not reduced
    grid: torch.Tensor  # [1, h, w, 2] float32 into the padded (reduced) frame
    inside: torch.Tensor  # [S, S] float: `restrict_to_photo`'s factor
    grown_before: torch.Tensor  # [S, S] float 0/1: the original's hair grown as in `edit_mask`
    # Per `TILE` x `TILE` tile of the box: the padded frame's pixels (u0, v0, u1, v1, end exclusive) its
    # bilinear samples can read, with a pixel to spare; `compose_face` skips tiles whose alpha there is all 0.
    feet: np.ndarray | None = None
    tiles: torch.Tensor | None = None  # [ty, tx, TILE, TILE, 2]: the grid by tiles (a view of its storage)


def prepare_warp(transform: FaceTransform, photo_hw: tuple[int, int], hair_before: torch.Tensor,
                 dilate_px: int = DILATE_1024, feather_px: int = FEATHER_1024, check: Check = _nothing) -> FaceWarp:
    s = hair_before.shape[-1]
    device = hair_before.device
    box = x0, y0, x1, y1 = face_box(transform, photo_hw)
    m = transform.affine(s)
    scale = np.hypot(m[0, :2], m[1, :2])
    reduced = None
    if scale.min() < 1.0:
        reduced = [min(s, math.ceil(s * float(scale[1]))), min(s, math.ceil(s * float(scale[0])))]
    fh, fw = reduced or [s, s]
    # Photo index -> normalised coordinates of the S frame (as `warp_to_photo`) -> those of the padded frame.
    inv = transform.inverse_affine(s)
    norm = inv * (2.0 / s)
    norm[:, 2] += 1.0 / s - 1.0
    dtype = torch.float32 if device.type == "mps" else torch.float64
    coef = torch.as_tensor(norm, dtype=dtype, device=device)
    pad = torch.tensor([fw / (fw + 2), fh / (fh + 2)], dtype=dtype, device=device)
    # The grid runs on past the box to whole `TILE`s (the same map; those samples are never used), so that
    # `compose_face` can take the tiles it needs as views.
    h, w = max(y1 - y0, 0), max(x1 - x0, 0)
    hp, wp = -(-h // TILE) * TILE, -(-w // TILE) * TILE
    padded = torch.empty((1, hp, wp, 2), dtype=torch.float32, device=device)
    xs = torch.arange(x0, x0 + wp, dtype=dtype, device=device)[None, :]
    for b0, b1 in _bands(y0, y0 + hp, wp):
        check()
        ys = torch.arange(b0, b1, dtype=dtype, device=device)[:, None]
        for i in range(2):
            padded[0, b0 - y0:b1 - y0, :, i] = (coef[i, 0] * xs + coef[i, 1] * ys + coef[i, 2]) * pad[i]
    grid = padded[:, :h, :w]
    tiles = padded[0].view(hp // TILE, TILE, wp // TILE, TILE, 2).permute(0, 2, 1, 3, 4)
    inside = torch.from_numpy(transform.inside(s, 2.0 * max(1.0, transform.photo_scale(s)))).to(device).float()
    r = feather_px // 4
    grown = hair_before.bool().float()[None, None]
    if dilate_px + 2 * r > 0:
        grown = _grow_binary(_grow_binary(grown, dilate_px + 2 * r, -1), dilate_px + 2 * r, -2)
    to_padded = norm * np.array([[fw / (fw + 2)], [fh / (fh + 2)]])
    feet = _tile_feet(to_padded, box, fw + 2, fh + 2) if grid.numel() else None
    return FaceWarp(transform, tuple(photo_hw), s, box, reduced, grid, inside, grown[0, 0], feet, tiles)


def _tile_feet(coef: np.ndarray, box: Box, w: int, h: int) -> np.ndarray:
    """[ty, tx, 4] int: the pixels of a padded w x h frame that the grid's tiles can sample (see `FaceWarp.feet`).

    ``coef`` [2, 3] maps photo (x, y, 1) to the grid's normalised coordinates; an affine map takes its extremes
    over a tile at the tile's corners, and a pixel to spare each side covers the grid's float32 rounding."""
    x0, y0, x1, y1 = box
    xs = np.arange(x0, x1, TILE, dtype=np.float64)
    ys = np.arange(y0, y1, TILE, dtype=np.float64)
    cx = np.stack([xs, np.minimum(xs + TILE, x1) - 1])  # [2, tx]: each tile's first and last column
    cy = np.stack([ys, np.minimum(ys + TILE, y1) - 1])
    g = coef[:, 0, None, None, None, None] * cx[None, None, :, None, :] \
        + coef[:, 1, None, None, None, None] * cy[None, :, None, :, None] + coef[:, 2, None, None, None, None]
    lo, hi = g.min(axis=(1, 2)), g.max(axis=(1, 2))  # [2, ty, tx]
    size = np.array([w, h], np.float64)[:, None, None]
    # grid_sample's own unnormalisation (align_corners=False); border padding clips into the frame.
    first = np.clip(np.floor(((lo + 1) * size - 1) / 2) - 1, 0, size).astype(np.int64)
    last = np.clip(np.floor(((hi + 1) * size - 1) / 2) + 3, 0, size).astype(np.int64)
    return np.stack([first[0], first[1], last[0], last[1]], -1)


def edit_mask_warm(warp: FaceWarp, hair_after: torch.Tensor, dilate_px: int = DILATE_1024,
                   feather_px: int = FEATHER_1024, check: Check = _nothing) -> torch.Tensor:
    """`edit_mask` with the original's grown hair from the cache: a max filter distributes over the union, so
    grow(before | after) = grow(before) | grow(after), and only the new hair is grown."""
    r = feather_px // 4
    m = hair_after.bool().float()[None, None]
    if dilate_px + 2 * r > 0:
        m = _grow_binary(m, dilate_px + 2 * r, -1)
        check()
        m = _grow_binary(m, dilate_px + 2 * r, -2)
    m = torch.maximum(m, warp.grown_before[None, None])
    for _ in range(2 if r > 0 else 0):
        check()
        m = _box_blur(_box_blur(m, r, -1), r, -2)
    return m[0, 0].clamp_(0.0, 1.0)


def _box_blur(m: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """`avg_pool2d` of width 2r+1 with replicated edges, from running sums in float64 (the same values to
    float32 rounding): O(1) per pixel, 2-3x faster at 1024 px."""
    pad = (r + 1, r, 0, 0) if dim == -1 else (0, 0, r + 1, r)
    sums = F.pad(m, pad, mode="replicate").double().cumsum(dim)
    n = m.shape[dim]
    return ((sums.narrow(dim, 2 * r + 1, n) - sums.narrow(dim, 0, n)) / (2 * r + 1)).to(m.dtype)


def warp_face_warm(edited: torch.Tensor, mask: torch.Tensor, warp: FaceWarp,
                   check: Check = _nothing) -> tuple[torch.Tensor, Box]:
    """`warp_face` from a `FaceWarp`: -> ([4, h, w] RGB and alpha in [0, 1], box), in one sampling pass."""
    x0, y0, x1, y1 = warp.box
    src = torch.cat([edited.float(), (mask * warp.inside)[None].float()])[None]
    if x1 <= x0 or y1 <= y0:
        return src.new_zeros((4, max(y1 - y0, 0), max(x1 - x0, 0))), warp.box
    if warp.reduced is not None:
        src = F.interpolate(src, size=warp.reduced, mode="bilinear", antialias=True, align_corners=False)
    src = torch.cat([F.pad(src[:, :3], (1, 1, 1, 1), mode="replicate"), F.pad(src[:, 3:], (1, 1, 1, 1))], 1)
    out = src.new_empty((4, y1 - y0, x1 - x0))
    for b0, b1 in _bands(y0, y1, x1 - x0):
        check()
        out[:, b0 - y0:b1 - y0] = F.grid_sample(src, warp.grid[:, b0 - y0:b1 - y0], mode="bilinear",
                                                padding_mode="border", align_corners=False)[0]
    return out.clamp_(0.0, 1.0), warp.box


def _clear_layer(photo: np.ndarray, check: Check) -> np.ndarray:
    """An RGBA layer with the photo's colour and alpha 0, filled in row bands (each a cancellation point)."""
    h, w = photo.shape[:2]
    layer = np.empty((h, w, 4), photo.dtype)
    for b0, b1 in _bands(0, h, w):
        check()
        layer[b0:b1, :, :3] = photo[b0:b1, :, :3]
        layer[b0:b1, :, 3] = 0
    return layer


def compose_one(photo: np.ndarray, rgba: torch.Tensor, box: Box, check: Check = _nothing) -> np.ndarray:
    """`compose_layer` for a single face from `warp_face_warm`'s [4, h, w]: quantised in place, no weighting
    (one face's alpha-weighted mean is its own colour)."""
    photo = np.asarray(photo)
    if photo.ndim != 3 or photo.shape[2] not in (3, 4):
        raise ValueError(f"expected an [H, W, 3|4] photo, got shape {photo.shape}")
    layer = _clear_layer(photo, check)
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return layer
    rgba = rgba.detach().to("cpu", torch.float32)
    for b0, b1 in _bands(y0, y1, x1 - x0):
        check()
        q = _quantise_t(rgba[:, b0 - y0:b1 - y0], photo.dtype).permute(1, 2, 0).numpy()
        layer[b0:b1, x0:x1, 3] = q[..., 3]
        np.copyto(layer[b0:b1, x0:x1, :3], q[..., :3], where=q[..., 3:] != 0, casting="unsafe")
    return layer


def _quantise_t(v: torch.Tensor, dtype: np.dtype) -> torch.Tensor:
    """`_quantise` in torch, [C, h, w] -> [C, h, w] contiguous in HWC order (so the permute is free)."""
    v = v.permute(1, 2, 0).contiguous().clamp_(0.0, 1.0)
    if dtype == np.uint8:
        return v.mul_(255.0).round_().to(torch.uint8).permute(2, 0, 1)
    if dtype == np.uint16:
        return v.mul_(65535.0).round_().to(torch.int32).permute(2, 0, 1)  # torch has no uint16 math
    return v.to(getattr(torch, np.dtype(dtype).name)).permute(2, 0, 1)


def preview_frame(photo_small: torch.Tensor, faces: Sequence[tuple[torch.Tensor, torch.Tensor, FaceTransform]],
                  scale: float, check: Check = _nothing) -> np.ndarray:
    """A first picture: the edit laid over a reduced photo ([3, h, w] in [0, 1]), uint8 [h, w, 3].

    ``faces`` holds (edited [3, s, s] in [0, 1], hair mask [s, s] of the original and edited union, the
    face's transform on the full photo); ``scale`` is the reduced photo's size over the full one's.
    """
    out = photo_small.clone()
    hw = tuple(out.shape[-2:])
    for edited, hair, t in faces:
        s = edited.shape[-1]
        small = FaceTransform(((t.c[0] + 0.5) * scale - 0.5, (t.c[1] + 0.5) * scale - 0.5),
                              (t.x[0] * scale, t.x[1] * scale), (t.y[0] * scale, t.y[1] * scale), hw[::-1])
        warp = prepare_warp(small, hw, torch.zeros_like(hair), DILATE_1024 * s // 1024,
                            FEATHER_1024 * s // 1024, check)
        mask = edit_mask(hair, hair, DILATE_1024 * s // 1024, FEATHER_1024 * s // 1024, check)
        rgba, (x0, y0, x1, y1) = warp_face_warm(edited, mask, warp, check)
        a = rgba[3:]
        out[:, y0:y1, x0:x1] = out[:, y0:y1, x0:x1] * (1 - a) + rgba[:3] * a
    return out.clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


# The fast path: the same bytes as the reference functions above, with only the per-edit work done per edit.


def edit_mask_fast(warp: FaceWarp, hair_after: torch.Tensor, dilate_px: int = DILATE_1024,
                   feather_px: int = FEATHER_1024, check: Check = _nothing) -> torch.Tensor:
    """`edit_mask_warm`, equal to the bit, on the CPU: the growth as a max filter on booleans, the blurs as
    float64 running sums over only the rows and columns the mask reaches (plus the blur's reach), in numpy.

    Every running sum here is exact (0/1 counts, then float32 values no finer than 2**-24 / (2r+1)**3 in sums
    under 2**11: inside float64's 53 bits for r <= 31, beyond which the reference runs), so any order or
    window start gives the reference's sums, and the division by 2r+1 and the rounding to float32 are the
    same operations."""
    r = feather_px // 4
    if r > 31:
        return edit_mask_warm(warp, hair_after, dilate_px, feather_px, check)
    grow = dilate_px + 2 * r
    m = hair_after.detach().cpu().numpy().astype(bool)
    if grow > 0:
        m = _dilate(_dilate(m, grow, 1), grow, 0)
    m |= warp.grown_before.cpu().numpy() != 0
    out = np.zeros(m.shape, np.float32)
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    if len(rows) and r > 0:
        # Beyond 2r+1 px of the mask every pass gives exact zeros, and a zero edge replicates as zeros.
        n, width = m.shape, 2 * r + 1
        y0, y1 = max(rows[0] - width, 0), min(rows[-1] + width + 1, n[0])
        x0, x1 = max(cols[0] - width, 0), min(cols[-1] + width + 1, n[1])
        # Pass 1 on 0/1 is a count of ones (small integers), then the reference's float32 value of each count.
        ones = m[y0:y1, x0:x1].astype(np.uint8 if width < 256 else np.int32)
        count = _window_sums(_edge_pad(ones, r, 1), width, 1)
        v = np.take((np.arange(width + 1) / width).astype(np.float32), count)
        v = _box_blur_np(v, r, 0)
        check()
        out[y0:y1, x0:x1] = _box_blur_np(_box_blur_np(v, r, 1), r, 0)
    elif len(rows):
        out[m] = 1.0
    return torch.from_numpy(out).to(hair_after.device).clamp_(0.0, 1.0)


def _edge_pad(a: np.ndarray, r: int, axis: int) -> np.ndarray:
    """``a`` with its first and last entries along ``axis`` repeated ``r`` times: replicate padding."""
    if axis == 0:
        return np.concatenate([np.repeat(a[:1], r, 0), a, np.repeat(a[-1:], r, 0)], 0)
    return np.concatenate([np.repeat(a[:, :1], r, 1), a, np.repeat(a[:, -1:], r, 1)], 1)


def _dilate(m: np.ndarray, grow: int, axis: int) -> np.ndarray:
    """A boolean mask grown by ``grow`` px along ``axis`` (zero beyond the edges): `_grow_binary`'s result,
    as ORs of shifted copies, each doubling the window (log2(2 grow + 1) passes)."""
    m = np.moveaxis(m, axis, 0)
    n, width = m.shape[0], 2 * grow + 1
    b = np.concatenate([np.zeros((grow,) + m.shape[1:], bool), m, np.zeros((grow,) + m.shape[1:], bool)])
    k = 1  # b[i] is the OR of the padded mask over [i, i + k)
    while 2 * k <= width:
        b = b[:-k] | b[k:]
        k *= 2
    return np.moveaxis(b[:n] | b[width - k:width - k + n], 0, axis)


def _window_sums(p: np.ndarray, width: int, axis: int) -> np.ndarray:
    """Sums of ``width`` consecutive entries of ``p`` along ``axis`` (length shrinks by width - 1), from sums
    over power-of-two windows: a few whole-array adds, fast along either axis (cumsum is slow along rows)."""
    def shift(a: np.ndarray, start: int, stop: int | None = None) -> np.ndarray:
        return a[start:stop] if axis == 0 else a[:, start:stop]

    n = p.shape[axis] - width + 1
    out, at, block, k = None, 0, p, 1
    while k <= width:
        if width & k:
            part = shift(block, at, at + n)
            out = part.copy() if out is None else np.add(out, part, out=out)
            at += k
        if 2 * k <= width:
            block = shift(block, 0, -k) + shift(block, k)
        k *= 2
    return out


def _box_blur_np(m: np.ndarray, r: int, axis: int) -> np.ndarray:
    """`_box_blur` of a float32 [h, w] array along ``axis`` in numpy: the same exact sums, other order."""
    if axis == 0:  # down the columns: a running sum, one row in and one out per step (no padded copy)
        n, w = m.shape[0], 2 * r + 1
        acc = m[0].astype(np.float64) * (r + 1)  # the replicated edge: r + 1 times the first row, exactly
        for j in range(1, r + 1):
            acc += m[min(j, n - 1)]
        out = np.empty(m.shape, np.float32)
        step = np.empty_like(acc)
        for i in range(n):
            np.divide(acc, w, out=step)
            out[i] = step
            acc += m[min(i + r + 1, n - 1)]
            acc -= m[max(i - r, 0)]
        return out
    sums = np.cumsum(_edge_pad(m.astype(np.float64), r, 1), 1)  # along the rows: cumsum is fast there
    window = np.empty_like(sums[:, 2 * r:])
    window[:, 0] = sums[:, 2 * r]
    np.subtract(sums[:, 2 * r + 1:], sums[:, :-2 * r - 1], out=window[:, 1:])
    return np.divide(window, 2 * r + 1, out=window).astype(np.float32)


def clear_layer(photo: np.ndarray, check: Check = _nothing) -> np.ndarray:
    """The photo as an RGBA layer with alpha 0: what a layer is outside its edit. It depends only on the photo,
    so a warm edit copies a cached one (a memcpy) instead of interleaving the channels again (10x slower)."""
    return _clear_layer(np.asarray(photo), check)


def _base_copy(photo: np.ndarray, base: np.ndarray | None, check: Check) -> np.ndarray:
    ok = base is not None and base.shape == photo.shape[:2] + (4,) and base.dtype == photo.dtype
    return base.copy() if ok else _clear_layer(photo, check)


def compose_face(photo: np.ndarray, edited: torch.Tensor, mask: torch.Tensor, warp: FaceWarp,
                 base: np.ndarray | None = None, check: Check = _nothing) -> np.ndarray:
    """``compose_one(photo, *warp_face_warm(edited, mask, warp))``, byte for byte, doing only what shows.

    ``base`` is `clear_layer(photo)` if cached. The warp is sampled only in the `TILE` tiles whose
    bilinear footprint (`FaceWarp.feet`) holds some non-zero alpha: elsewhere the reference's alpha is an
    exact 0, which leaves the photo's colour, i.e. the base layer."""
    photo = np.asarray(photo)
    if photo.ndim != 3 or photo.shape[2] not in (3, 4):
        raise ValueError(f"expected an [H, W, 3|4] photo, got shape {photo.shape}")
    layer = _base_copy(photo, base, check)
    x0, y0, x1, y1 = warp.box
    if x1 <= x0 or y1 <= y0 or warp.feet is None or warp.tiles is None:
        return layer
    src = _padded_source(edited, mask, warp)
    check()
    ty, tx = np.nonzero(_active_tiles(src[0, 3], warp.feet))
    h, w = y1 - y0, x1 - x0
    # One pixel of an 8- or 16-bit layer is one 32- or 64-bit word: "alpha != 0 ? new : base" in one pass.
    word = {1: np.uint32, 2: np.uint64}.get(layer.dtype.itemsize) if layer.dtype.kind == "u" else None
    chunk = max(1, TILE_PIXELS // (TILE * TILE))
    for n0 in range(0, len(ty), chunk):  # the active tiles in a few sampling calls (few parallel regions)
        check()
        cy, cx = ty[n0:n0 + chunk], tx[n0:n0 + chunk]
        grid = warp.tiles[torch.from_numpy(cy), torch.from_numpy(cx)]
        out = F.grid_sample(src, grid.reshape(1, -1, TILE, 2), mode="bilinear", padding_mode="border",
                            align_corners=False)[0]
        q = _quantise_t(out.cpu(), photo.dtype).permute(1, 2, 0).numpy().reshape(len(cy), TILE, TILE, 4)
        # Runs of side-by-side tiles in one tile row are written together.
        cuts = np.flatnonzero((np.diff(cy) != 0) | (np.diff(cx) != 1)) + 1
        for a, b in zip(np.r_[0, cuts].tolist(), np.r_[cuts, len(cy)].tolist(), strict=True):
            r0, c0 = int(cy[a]) * TILE, int(cx[a]) * TILE
            r1, c1 = min(r0 + TILE, h), min(int(cx[b - 1]) * TILE + TILE, w)
            run = q[a:b].transpose(1, 0, 2, 3).reshape(TILE, (b - a) * TILE, 4)[:r1 - r0, :c1 - c0]
            dst = layer[y0 + r0:y0 + r1, x0 + c0:x0 + c1]
            if word is not None:
                run = np.ascontiguousarray(run, dtype=layer.dtype)
                np.copyto(dst.view(word)[..., 0], run.view(word)[..., 0], where=run[..., 3] != 0)
            else:
                dst[..., 3] = run[..., 3]
                np.copyto(dst[..., :3], run[..., :3], where=run[..., 3:] != 0, casting="unsafe")
    return layer


def _padded_source(edited: torch.Tensor, mask: torch.Tensor, warp: FaceWarp) -> torch.Tensor:
    """`warp_face_warm`'s sampled frame [1, 4, h + 2, w + 2]: colour edge-replicated, alpha zero-padded. Unreduced,
    it is written straight into place (the same copies and products, without two concatenations and pads)."""
    if warp.reduced is not None:
        src = torch.cat([edited.float(), (mask * warp.inside)[None].float()])[None]
        src = F.interpolate(src, size=warp.reduced, mode="bilinear", antialias=True, align_corners=False)
        return torch.cat([F.pad(src[:, :3], (1, 1, 1, 1), mode="replicate"), F.pad(src[:, 3:], (1, 1, 1, 1))], 1)
    s = edited.shape[-1]
    src = edited.new_empty((1, 4, s + 2, s + 2), dtype=torch.float32)
    colour, alpha = src[0, :3], src[0, 3]
    colour[:, 1:-1, 1:-1] = edited
    colour[:, 1:-1, 0], colour[:, 1:-1, -1] = edited[:, :, 0], edited[:, :, -1]
    colour[:, 0], colour[:, -1] = colour[:, 1], colour[:, -2]
    alpha[1:-1, 1:-1] = mask * warp.inside
    alpha[0], alpha[-1], alpha[:, 0], alpha[:, -1] = 0.0, 0.0, 0.0, 0.0
    return src


def _active_tiles(alpha: torch.Tensor, feet: np.ndarray, block: int = 8) -> np.ndarray:
    """[ty, tx] bool: which tiles' footprints hold a non-zero alpha (of the padded frame), on a grid of
    ``block`` px cells that a footprint covers generously."""
    a = alpha.detach().cpu().numpy() != 0
    h, w = a.shape
    a = np.pad(a, ((0, -h % block), (0, -w % block)))
    cells = a.reshape(a.shape[0] // block, block, a.shape[1] // block, block).any(axis=(1, 3))
    seen = np.zeros((cells.shape[0] + 1, cells.shape[1] + 1), np.int32)  # a summed-area table of the cells
    seen[1:, 1:] = cells.cumsum(0, dtype=np.int32).cumsum(1)
    u0, v0 = feet[..., 0] // block, feet[..., 1] // block
    u1, v1 = -(-feet[..., 2] // block), -(-feet[..., 3] // block)
    return (seen[v1, u1] - seen[v0, u1] - seen[v1, u0] + seen[v0, u0]) > 0
