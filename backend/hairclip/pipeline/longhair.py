"""Stage 7b, long hair: the photo's hair beyond the FFHQ square, found and (for colour edits) recoloured.

The square HairCLIP edits ends at the chin or shoulders; hair below it keeps its old colour after
paste-back. Around each face we parse a window `WINDOW` times the square's side (the parser's own 512 px
input, so it sees the face and the hair together), warp its soft hair weight onto the photo, and:

- report how much of the face's hair lies outside the square (`PhotoHair.outside`), for every edit;
- for an edit that leaves that hair as it was, give it as a mask on the photo (`outside_mask`): the plug-ins
  add it as a selection the user can paint over;
- for a whole-hair edit, move that hair's Lab statistics to the edited hair's inside the square
  (`conditions.transfer_hair_lab`, the RGB mode's code), and hand over from the crop's edit to the transfer
  over a `SEAM_1024` band inside the square's edge, so there is no step where one ends.

Where no hair lies outside the square the layer is exactly the crop's. With several faces, a hair pixel
outside every square belongs to the face whose square centre is nearest (in units of each square's side),
and no face recolours hair inside another face's square, so no face's colour overwrites another's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from hairclip.color import rgb_to_lab
from hairclip.nets.parsenet import PARSE_SIZE, UNet
from hairclip.pipeline import parse
from hairclip.pipeline.align import SYNTH_SIZE, FaceTransform, _photo_crop
from hairclip.pipeline.composite import Box, Check, _bands, _nothing, restrict_to_photo, warp_to_photo
from hairclip.pipeline.conditions import hair_lab_stats, image_tensor, transfer_hair_lab

# The parsed window in units of the face square (left, top, right, bottom; the square is [0, 1] x [0, 1]):
# 3.5 sides wide and tall, from half a side above the square to two sides below it. At 512 px that is about
# 146 parser pixels per square side: enough for a hair mask, and one parser run per face.
WINDOW = (-1.25, -0.5, 2.25, 3.0)
# Hair still running off the window's lower edge gets another window below it (overlapping by `OVERLAP`
# sides), up to `MAX_WINDOWS` in all: hair to the waist needs two or three.
OVERLAP = 0.5
MAX_WINDOWS = 4
# Below this share of a face's hair outside its square (stray parser pixels, a fringe at the edge) the face
# counts as short-haired and its piece is the crop's, unchanged.
MIN_OUTSIDE = 0.01
# The parser's hair edge is only as sharp as a window pixel (several photo pixels). At photo resolution a
# pixel whose Lab colour lies more than GATE standard deviations (of the face's hair outside the square;
# lightness counts half, for highlights and shadows) from that hair's mean fades out of the transfer over one
# more, so the background next to the hair keeps its bytes.
GATE = 3.0
SEAM_1024 = 64  # the hand-over band inside the square's edge, in pixels of the 1024 frame (6% of the side)


@dataclass
class PhotoHair:
    """One face's original hair on the photo, from the window parse: soft weight [h, w] on ``box``."""

    weight: torch.Tensor  # float32 in [0, 1], on the window's photo box
    box: Box
    total: float  # the face's hair in photo pixels: the crop's mask inside the square, the window's outside
    outside: float  # of which outside the square
    outside_u8: np.ndarray | None = field(default=None, repr=False)  # `outside_mask`'s piece on ``box``, once made

    @property
    def fraction_outside(self) -> float:
        return self.outside / self.total if self.total > 0 else 0.0


def window_transform(t: FaceTransform, window: Sequence[float] = WINDOW) -> FaceTransform:
    """The frame of the window: the face's square scaled and moved in its own (rotated) axes."""
    left, top, right, bottom = window
    if not math.isclose(right - left, bottom - top):
        raise ValueError(f"the window must be square, got {window}")
    c, x, y = (np.array(v) for v in (t.c, t.x, t.y))
    centre = c + (left + right - 1) * x + (top + bottom - 1) * y  # unit (a, b) sits at c + (2a-1)x + (2b-1)y
    return FaceTransform(centre, x * (right - left), y * (right - left), t.photo_size, 1)


def square_weight(t: FaceTransform, box: Box, device: torch.device, seam: float = SEAM_1024,
                  check: Check = _nothing) -> torch.Tensor:
    """[h, w] on ``box``: 1 inside the face square farther than ``seam`` (1024-frame px) from its edge, falling
    linearly to 0 at the edge, 0 outside. The crop's share of the hand-over. Computed in row bands, each a
    cancellation point: a long-hair window on a big photo is tens of megapixels."""
    x0, y0, x1, y1 = box
    dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
    inv = torch.as_tensor(t.inverse_affine(SYNTH_SIZE), dtype=dtype, device=device)
    xs = torch.arange(x0, x1, dtype=dtype, device=device)[None, :]
    out = torch.empty((y1 - y0, x1 - x0), dtype=torch.float32, device=device)
    for b0, b1 in _bands(y0, y1, x1 - x0):
        check()
        ys = torch.arange(b0, b1, dtype=dtype, device=device)[:, None]
        u = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2] + 0.5  # distance from the frame's left edge
        v = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2] + 0.5
        edge = torch.minimum(torch.minimum(u, SYNTH_SIZE - u), torch.minimum(v, SYNTH_SIZE - v))
        out[b0 - y0:b1 - y0] = (edge / max(seam, 1e-6)).clamp(0, 1) if seam > 0 else (edge > 0)
    return out


def _parse_window(parser: UNet, rgb8: np.ndarray, wt: FaceTransform, device: torch.device,
                  check: Check) -> tuple[torch.Tensor, Box, bool]:
    """One window's soft hair weight on the photo, its box, and whether hair runs off its lower edge."""
    window = image_tensor(_photo_crop(rgb8, wt, PARSE_SIZE), device)
    check()
    _, weight = parse.hair_and_weight(parser, window)
    on_photo = torch.from_numpy(wt.inside(PARSE_SIZE)).to(device)
    weight = weight[0].float() * on_photo  # off the photo the window is black, not hair
    runs_on = bool((weight[-PARSE_SIZE // 64:] > 0.5).any())
    warped, box = warp_to_photo(weight[None], wt, rgb8.shape[:2], padding_mode="zeros", antialias=False,
                                check=check)
    return warped[0].clamp(0, 1), box, runs_on


def photo_hair(parser: UNet, rgb8: np.ndarray, faces: Sequence[FaceTransform], index: int,
               hair_before: torch.Tensor, check: Check = _nothing) -> PhotoHair:
    """Parse the windows around face ``index`` of ``faces`` (every face found in the photo, edited or not) and
    keep the hair that is this face's: nearest to it, and outside every other face's square. ``hair_before``
    is the crop's own [1024, 1024] mask (for the total)."""
    device = hair_before.device
    t = faces[index]
    left, top, right, bottom = WINDOW
    parts = []
    for n in range(MAX_WINDOWS):
        shift = n * (bottom - top - OVERLAP)
        wt = window_transform(t, (left, top + shift, right, bottom + shift))
        weight, box, runs_on = _parse_window(parser, rgb8, wt, device, check)
        parts.append((weight, box))
        if not runs_on or box[3] >= rgb8.shape[0] or box[3] <= box[1]:
            break
    box = parts[0][1]
    for _, b in parts[1:]:
        box = _union(box, b)
    check()  # each step below is a pass over the whole window, which on a big photo is tens of megapixels
    weight = _place(parts[0][0], parts[0][1], box)
    for w, b in parts[1:]:
        check()
        weight = torch.maximum(weight, _place(w, b, box))
    if len(faces) > 1:
        for j, o in enumerate(faces):
            if j != index:
                check()
                weight = weight * (1 - square_weight(o, box, device, seam=0, check=check))
        check()
        weight = weight * (_nearest(faces, box, device) == index)
    check()
    inside = square_weight(t, box, device, seam=0, check=check)
    check()
    outside = float((weight * (1 - inside)).sum())
    check()
    area = float(restrict_to_photo(hair_before.float(), t).sum()) * t.photo_scale(SYNTH_SIZE) ** 2
    return PhotoHair(weight, box, area + outside, outside)


def _nearest(transforms: Sequence[FaceTransform], box: Box, device: torch.device) -> torch.Tensor:
    """[h, w] index of the face whose square centre is nearest, in units of each square's side."""
    x0, y0, x1, y1 = box
    xs = torch.arange(x0, x1, dtype=torch.float32, device=device)[None, :]
    ys = torch.arange(y0, y1, dtype=torch.float32, device=device)[:, None]
    d = torch.stack([torch.hypot(xs - t.c[0], ys - t.c[1]) / t.qsize for t in transforms])
    return d.argmin(0)


def _union(a: Box, b: Box) -> Box:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _place(x: torch.Tensor, box: Box, into: Box) -> torch.Tensor:
    """``x`` [..., h, w] on ``box`` inside a zero tensor on the larger ``into``."""
    out = x.new_zeros(x.shape[:-2] + (into[3] - into[1], into[2] - into[0]))
    out[..., box[1] - into[1]:box[3] - into[1], box[0] - into[0]:box[2] - into[0]] = x
    return out


def _within(inner: Box, outer: Box) -> tuple[slice, slice]:
    """The index of ``inner`` in an array on ``outer``."""
    return slice(inner[1] - outer[1], inner[3] - outer[1]), slice(inner[0] - outer[0], inner[2] - outer[0])


def extend_piece(photo: np.ndarray, piece: tuple[torch.Tensor, torch.Tensor, Box], hair: PhotoHair,
                 edited: torch.Tensor, edited_hair: torch.Tensor, t: FaceTransform, check: Check = _nothing,
                 ) -> tuple[torch.Tensor, torch.Tensor, Box]:
    """One face's layer piece grown over its hair outside the square, in the edited hair's colour.

    ``piece`` is `warp_face`'s (rgb [3, h, w] in [0, 1], alpha, box); ``photo`` the [H, W, 3] colour photo
    (uint8, uint16 or float in [0, 1]); ``edited`` [1, 3, S, S] in [-1, 1], the crop as shown, and
    ``edited_hair`` [1, 1, S, S] its hair weights (the colour to reach); ``t`` the face's transform. In hair
    at the hand-over band the colour goes linearly from the crop's to the transfer's and alpha stays 1;
    where this face has no hair outside its square the piece comes back as it is.
    """
    rgb1, a1, fbox = piece
    if hair.fraction_outside < MIN_OUTSIDE or float(edited_hair.sum()) <= 0:
        return piece
    device = rgb1.device
    h = hair.weight.to(device)
    claim = h * (1 - square_weight(t, hair.box, device))  # the transfer's share of each pixel
    rows, cols = (torch.nonzero(claim.amax(d) > 0)[:, 0] for d in (1, 0))
    if len(rows) == 0:
        return piece
    hx, hy = hair.box[:2]  # only the pixels the transfer reaches are worked on
    box = _union(fbox, (hx + int(cols[0]), hy + int(rows[0]), hx + int(cols[-1]) + 1, hy + int(rows[-1]) + 1))
    claim = _place(claim, hair.box, _union(box, hair.box))[_within(box, _union(box, hair.box))]
    own = square_weight(t, box, device)
    check()
    x0, y0, x1, y1 = box
    region = np.asarray(photo[y0:y1, x0:x1, :3])
    scale = 255.0 if region.dtype == np.uint8 else 65535.0 if region.dtype == np.uint16 else 1.0
    source = torch.from_numpy(region.astype(np.float32) / np.float32(scale)).to(device).permute(2, 0, 1)[None]
    source_mean, source_std = hair_lab_stats(source * 2 - 1, claim[None, None])
    z = (rgb_to_lab(source) - source_mean).abs() / source_std.clamp_min(1.0)
    z = torch.maximum(z[:, 0] / 2, z[:, 1:].amax(1))[0]
    claim = claim * (GATE + 1 - z).clamp(0, 1)
    mean, std = hair_lab_stats(edited.float(), edited_hair.float())
    moved = transfer_hair_lab(source * 2 - 1, claim[None, None], mean, std, where=(claim > 0).float()[None, None],
                              check=check)
    rgb2 = ((moved[0] + 1) / 2).clamp(0, 1)
    rgb1, a1 = _place(rgb1, fbox, box), _place(a1, fbox, box)
    share = claim / (a1 * own + claim).clamp_min(1e-12)
    return rgb1 + (rgb2 - rgb1) * share, torch.maximum(a1, claim), box


def outside_mask(faces: Sequence[tuple[PhotoHair, FaceTransform]], shape: tuple[int, int],
                 check: Check = _nothing) -> np.ndarray | None:
    """The faces' original hair outside their squares as a uint8 [H, W] mask on the photo (``shape``), or None
    when no face has any (below `MIN_OUTSIDE`). What an edit that does not recolour it leaves as it was: the
    window parse's soft weight, 0 inside each square, each face's own hair only (as `photo_hair` assigns it)."""
    out: np.ndarray | None = None
    for hair, t in faces:
        if hair.fraction_outside < MIN_OUTSIDE:
            continue
        check()
        x0, y0, x1, y1 = hair.box
        if hair.outside_u8 is None:  # the photo's own hair: made once, kept with the photo's cached face
            weight = hair.weight * (1 - square_weight(t, hair.box, hair.weight.device, seam=0, check=check))
            hair.outside_u8 = (weight.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        piece = hair.outside_u8
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        if out is None:
            out = np.zeros(shape, np.uint8)
        np.maximum(out[cy0:cy1, cx0:cx1], piece[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0], out=out[cy0:cy1, cx0:cx1])
    return out if out is not None and out.any() else None
