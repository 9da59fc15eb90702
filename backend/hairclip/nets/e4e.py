"""e4e encoder (Tov et al. 2021) with the state-dict layout of the official
``Encoder4Editing(50, 'ir_se', opts)``: an IR-SE50 trunk, a two-level FPN, and one style block per W+ layer.

The encoder predicts a single code w0 plus per-layer deltas; W+ is ``codes + latent_avg``, and the caller
adds ``latent_avg`` (it lives in the checkpoint beside the state dict, not in it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hairclip.nets.irse import STAGE_DEPTHS, make_body, make_input_layer, stage_ends
from hairclip.nets.stylegan2 import EqualLinear

INPUT_SIZE = 256


class GradualStyleBlock(nn.Module):
    """Stride-2 3x3 convs with LeakyReLU(0.01) from ``spatial``^2 down to 1x1, then an EqualLinear."""

    def __init__(self, in_c: int, out_c: int, spatial: int, style_dim: int | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(in_c if i == 0 else out_c, out_c, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_c, style_dim or out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).flatten(1))


def upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """FPN top-down step: bilinear (align_corners=True) resize of x to y's size, plus y."""
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


class Encoder4Editing(nn.Module):
    """Aligned face [B,3,256,256] in [-1,1] -> codes [B, n_styles, 512], without latent_avg.

    Styles [0, 3) read the 16x16 map c3, [3, 7) the FPN level p2 (32x32), the rest p1 (64x64).
    ``progressive_stage`` k (training) keeps w0 and the deltas of layers 1..k; the others repeat w0.

    ``units`` and ``width_div`` are test-only size knobs (see ``hairclip.nets.irse``); ``width_div`` also
    divides the style width, so codes are [B, n_styles, 512 // width_div], unless ``style_dim`` asks for
    another code width (a tiny encoder that still feeds a 512-wide mapper and generator).
    """

    coarse_ind = 3
    middle_ind = 7

    def __init__(self, num_layers: int = 50, mode: str = "ir_se", stylegan_size: int = 1024, *,
                 units: Sequence[int] | None = None, width_div: int = 1, style_dim: int | None = None):
        super().__init__()
        c1, c2, c3 = (d // width_div for d in STAGE_DEPTHS[1:])
        self.n_styles = 2 * int(math.log2(stylegan_size)) - 2
        self.input_layer = make_input_layer(width_div)
        self.body = make_body(num_layers, mode, units, width_div)
        # Ends of stages 2-4 (units 6, 20, 23 of IR-SE50; the official hard-codes those indices, which are
        # stage ends only for 50 layers).
        self.taps = stage_ends(num_layers, units)[1:]
        self.styles = nn.ModuleList(
            GradualStyleBlock(c3, c3, 16 if i < self.coarse_ind else 32 if i < self.middle_ind else 64, style_dim)
            for i in range(self.n_styles))
        self.latlayer1 = nn.Conv2d(c2, c3, 1)
        self.latlayer2 = nn.Conv2d(c1, c3, 1)
        self.progressive_stage = self.n_styles - 1

    def set_progressive_stage(self, stage: int) -> None:
        """Number of active deltas; any stage >= n_styles - 1 is inference (the official enum's 18)."""
        if stage < 0:
            raise ValueError(f"progressive stage must be >= 0, got {stage}")
        self.progressive_stage = int(stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            # The style blocks pool a fixed number of times; another size gives wrong-sized codes.
            raise ValueError(f"e4e expects {INPUT_SIZE}x{INPUT_SIZE} input, got {tuple(x.shape[-2:])}")
        x = self.input_layer(x)
        feats = []
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self.taps:
                feats.append(x)
        c1, c2, c3 = feats

        k = min(self.progressive_stage, self.n_styles - 1)
        # FPN levels are built only when an active delta reads them, as the official does.
        p2 = upsample_add(c3, self.latlayer1(c2)) if k >= self.coarse_ind else None
        p1 = upsample_add(p2, self.latlayer2(c1)) if k >= self.middle_ind else None
        w0 = self.styles[0](c3)
        deltas = [self.styles[i](c3 if i < self.coarse_ind else p2 if i < self.middle_ind else p1)
                  for i in range(1, k + 1)]
        return torch.stack([w0, *(w0 + d for d in deltas), *[w0] * (self.n_styles - 1 - k)], dim=1)
