"""Stage 7a: hair masks of the aligned original and of the edited face, from HairCLIP's parser (label 13)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hairclip.nets.parsenet import HAIR_LABEL, PARSE_SIZE, UNet, hair_mask

RAMP_LOGITS = 2.0  # width, in logits of the hair-vs-best-other margin, of the recolour weight's soft edge


@torch.inference_mode()
def hair(parser: UNet, image: torch.Tensor) -> torch.Tensor:
    """``[B,3,S,S]`` in [-1, 1] -> bool ``[B,S,S]`` hair mask, the parser run at 512 as in HairCLIP."""
    dtype = next(parser.parameters()).dtype
    return hair_mask(parser, image.to(dtype))[:, 0] > 0.5


@torch.inference_mode()
def hair_and_weight(parser: UNet, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`hair`'s mask, and from the same parser run a recolour weight ``[B,S,S]`` in [0, 1]: 0.5 at the label's
    decision boundary, ramping to 0 and 1 over `RAMP_LOGITS` of margin. A pixel whose label flips under a tiny
    change of the image (another device or precision) then moves by a fraction of a level, not by the whole
    colour shift, and the recoloured hair gets a soft edge."""
    x = F.adaptive_avg_pool2d(image.to(next(parser.parameters()).dtype), PARSE_SIZE)
    logits = parser(x).float()
    is_hair = (logits.argmax(1, keepdim=True) == HAIR_LABEL).float()
    other = torch.cat([logits[:, :HAIR_LABEL], logits[:, HAIR_LABEL + 1:]], 1).amax(1, keepdim=True)
    weight = (0.5 + (logits[:, HAIR_LABEL:HAIR_LABEL + 1] - other) / RAMP_LOGITS).clamp(0, 1)
    size = image.shape[-2:]
    return F.adaptive_avg_pool2d(is_hair, size)[:, 0] > 0.5, F.adaptive_avg_pool2d(weight, size)[:, 0]
