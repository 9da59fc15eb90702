"""Stage 6: StyleGAN2 synthesis of W+ at 1024 px with the generator's stored noise, as official inference."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from hairclip.nets.stylegan2 import Generator, Partial


@torch.inference_mode()
def synthesize(decoder: Generator, w_plus: torch.Tensor, stop_at: int | None = None,
               check: Callable[[], None] | None = None, start: Partial | None = None) -> torch.Tensor:
    """W+ ``[B, n_latent, 512]`` -> images ``[B,3,S,S]`` in about [-1, 1] (float32); ``stop_at``: the
    generator's skip image at that resolution (a first picture at 256 px costs about a third of 1024);
    ``start``: a `synthesize_partial` of the same W+ to go on from (the same bytes as starting over)."""
    dtype = next(decoder.parameters()).dtype
    if check is not None or start is not None:  # W+ in, no truncation: the synthesis alone, as the forward runs it
        return decoder.synthesis(w_plus.to(dtype), randomize_noise=False, stop_at=stop_at, check=check,
                                 start=start).float()
    image, _ = decoder([w_plus.to(dtype)], input_is_latent=True, randomize_noise=False, truncation=1.0,
                       stop_at=stop_at)
    return image.float()


@torch.inference_mode()
def synthesize_partial(decoder: Generator, w_plus: torch.Tensor, stop_at: int,
                       check: Callable[[], None] | None = None) -> Partial:
    """The synthesis of W+ stopped at ``stop_at`` px, kept so that `synthesize(..., start=)` finishes it: the
    first picture's generator run becomes the first part of the final one instead of extra work."""
    dtype = next(decoder.parameters()).dtype
    return decoder.partial(w_plus.to(dtype), randomize_noise=False, stop_at=stop_at, check=check)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``[3,H,W]`` in [-1, 1] -> uint8 ``[H,W,3]`` as ``round((clamp(x, -1, 1) + 1) / 2 * 255)``."""
    x = (image.detach().float().clamp(-1, 1) + 1) / 2 * 255
    return x.round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
