"""Stage 5: the edit in W+. ``w' = w + strength * 0.1 * mapper(w, ...)``; strength 1 is the official edit."""

from __future__ import annotations

import torch

from hairclip.nets.mapper import EDIT_SCALE, HairMapper
from hairclip_shared.protocol import STRENGTH_RANGE  # one range for the wire and the pipeline: 0 to 2


@torch.inference_mode()
def edit_offset(mapper: HairMapper, w: torch.Tensor, hairstyle_emb: torch.Tensor | None,
                colour_emb: torch.Tensor | None) -> torch.Tensor:
    """The mapper's raw offset (before the 0.1 scale); cached per face so strength changes are free."""
    return mapper.edit_offset(w, hairstyle_emb, colour_emb).float()


def apply_offset(w: torch.Tensor, offset: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    lo, hi = STRENGTH_RANGE
    if not lo <= strength <= hi:
        raise ValueError(f"strength must be within {lo}..{hi}, got {strength}")
    return w + strength * EDIT_SCALE * offset

