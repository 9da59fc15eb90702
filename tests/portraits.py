"""Synthetic portraits with known hair, and a parser stand-in that knows them (tests and bench/long_hair.py).

The random tiny parser labels ~30% of any image as hair, in noise-like blobs, so the whole-hair stage can't
be judged with it. `KeyParser` is an honest stand-in: it labels a pixel background or skin when its colour is
near the portrait's drawn background or skin colour, and hair otherwise. On the drawn photo that is the
drawn hair (give or take antialiased edges); on the random decoder's noise it is most of the crop, so the
crop's RGB-mode recolouring covers most of it and "the edited hair" has a well-defined colour.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hairclip.nets.parsenet import HAIR_LABEL
from hairclip.pipeline.faces import Face
from hairclip.pipeline.models import face_template

BACKGROUND = (70, 120, 170)
SKIN = (226, 184, 150)
HAIR = (105, 66, 38)
N_LABELS = 19


class KeyParser(nn.Module):
    """Parser stand-in: class 0 near ``background``, 1 near ``skin``, hair (13) elsewhere; soft margins."""

    def __init__(self, background=BACKGROUND, skin=SKIN, radius: float = 40.0):
        super().__init__()
        self.register_buffer("keys", torch.tensor([background, skin], dtype=torch.float32) / 127.5 - 1)
        self.radius = radius / 127.5
        self.scale = nn.Parameter(torch.tensor(20.0))  # a parameter, so `parameters()` reports the dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = torch.stack([(x - k.view(1, 3, 1, 1).to(x.dtype)).norm(dim=1) for k in self.keys], 1)  # [B, 2, H, W]
        logits = x.new_full((x.shape[0], N_LABELS) + x.shape[-2:], -1e3)
        logits[:, :2] = (self.radius - d) * self.scale
        logits[:, HAIR_LABEL] = 0.0
        return logits


def face_at(cx: float, cy: float, side: float) -> Face:
    x0, y0 = cx - side / 2, cy - side / 2
    return Face(face_template() * side + [x0, y0], (x0, y0, x0 + side, y0 + side))


def portrait(w: int, h: int, heads: list[tuple[float, float, float, float]], seed: int = 0,
             hair: tuple[int, int, int] = HAIR, spread: float = 1.18) -> tuple[np.ndarray, np.ndarray, list[Face]]:
    """(photo [h, w, 3] uint8, drawn hair mask [h, w] bool, faces). ``heads``: (cx, cy, face side, hair bottom y)
    per person: a skin oval on a flat background, hair over the head and hanging straight down to the bottom
    given, ``spread`` times the face's half-width to each side, with strand texture (vertical stripes of varying
    lightness and a little noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    photo = np.empty((h, w, 3), np.float32)
    photo[:] = BACKGROUND
    mask = np.zeros((h, w), bool)
    skins = []
    for cx, cy, side, bottom in heads:
        rx, ry = 0.62 * side, 0.72 * side
        top = ((xx - cx) / (rx * spread)) ** 2 + ((yy - (cy - 0.08 * side)) / (ry * spread * 0.95)) ** 2 <= 1
        curtain = (np.abs(xx - cx) <= rx * spread) & (yy >= cy - 0.1 * side) & (yy <= bottom)
        mask |= top | curtain
        skins.append(((xx - cx) / (0.5 * side)) ** 2 + ((yy - cy) / (0.62 * side)) ** 2 <= 1)
    skin = np.any(skins, axis=0)
    strands = 1 + 0.18 * np.sin(xx * 0.9 + 3 * np.sin(yy * 0.01)) + 0.1 * np.sin(xx * 0.23)
    colour = np.array(hair, np.float32) * strands[..., None] + rng.normal(0, 4, (h, w, 3))
    photo[mask] = colour[mask]
    photo[skin] = SKIN
    mask &= ~skin
    faces = [face_at(cx, cy, side) for cx, cy, side, _ in heads]
    return np.clip(np.rint(photo), 0, 255).astype(np.uint8), mask, faces
