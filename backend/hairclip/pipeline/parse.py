"""Stage 7a: hair masks of the aligned original and of the edited face, from HairCLIP's parser (label 13)."""

from __future__ import annotations

import torch

from hairclip.nets.parsenet import UNet, hair_mask


@torch.inference_mode()
def hair(parser: UNet, image: torch.Tensor) -> torch.Tensor:
    """``[B,3,S,S]`` in [-1, 1] -> bool ``[B,S,S]`` hair mask, the parser run at 512 as in HairCLIP."""
    dtype = next(parser.parameters()).dtype
    return hair_mask(parser, image.to(dtype))[:, 0] > 0.5
