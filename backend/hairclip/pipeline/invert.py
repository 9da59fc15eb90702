"""Stage 3: e4e inversion of the aligned 256 px face to W+ (encoder output + ``latent_avg``)."""

from __future__ import annotations

import numpy as np
import torch

from hairclip.nets.e4e import Encoder4Editing
from hairclip.pipeline.cache import LRUCache, content_key


def to_model_input(aligned: np.ndarray, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``[H,W,3]`` -> ``[1,3,H,W]`` in [-1, 1]: ``ToTensor`` then ``Normalize(0.5, 0.5)``."""
    x = torch.from_numpy(np.ascontiguousarray(aligned)).to(device).permute(2, 0, 1).unsqueeze(0)
    return x.to(dtype).div(255).sub(0.5).div(0.5)


class Inverter:
    """Inverts aligned faces, caching W+ by the aligned crop's pixels (so by image content and face)."""

    def __init__(self, encoder: Encoder4Editing, latent_avg: torch.Tensor, cache_size: int = 64):
        self.encoder = encoder
        self.latent_avg = latent_avg
        self.cache: LRUCache[torch.Tensor] = LRUCache(cache_size)

    @property
    def device(self) -> torch.device:
        return self.latent_avg.device

    @torch.inference_mode()
    def _run(self, aligned256: np.ndarray) -> torch.Tensor:
        dtype = next(self.encoder.parameters()).dtype
        codes = self.encoder(to_model_input(aligned256, self.device, dtype)).float()
        return codes + self.latent_avg.float().unsqueeze(0)

    def __call__(self, aligned256: np.ndarray) -> torch.Tensor:
        """uint8 ``[256,256,3]`` -> W+ ``[1, n_styles, 512]`` (float32)."""
        if aligned256.shape != (256, 256, 3) or aligned256.dtype != np.uint8:
            raise ValueError(f"e4e takes a 256x256 RGB uint8 crop, got {aligned256.shape} {aligned256.dtype}")
        return self.cache.get_or_compute(content_key(aligned256), lambda: self._run(aligned256))
