"""IR / IR-SE residual blocks and the ArcFace backbone, with the state-dict layout of the official
``Backbone(112, 50, drop_ratio=0.6, mode='ir_se')`` (identity loss) and shared with the e4e encoder.

Size knobs, whose defaults are the official network: ``width_div`` divides every channel width (and the
512-d embedding) and ``units`` overrides the units per stage. They exist so tests can run a tiny copy of the
same code; any non-default value gives a network that no released checkpoint fits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

STAGE_DEPTHS = (64, 128, 256, 512)
STAGE_UNITS = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}
SE_REDUCTION = 16


class SEModule(nn.Module):
    """Squeeze-and-excitation: a per-channel gate from globally pooled features."""

    def __init__(self, channels: int, reduction: int = SE_REDUCTION):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # adaptive_avg_pool2d rather than mean(): the official kernel, so the sums round the same way.
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class BottleneckIR(nn.Module):
    """Improved residual unit (BN-conv-PReLU-conv-BN, stride on the second conv), optionally with SE."""

    def __init__(self, in_channel: int, depth: int, stride: int, se: bool = False):
        super().__init__()
        self.stride = stride
        # Same width: the shortcut is the input subsampled (the official MaxPool2d(1, stride) picks the same
        # pixels); otherwise a strided 1x1 projection.
        self.shortcut_layer = None if in_channel == depth else nn.Sequential(
            nn.Conv2d(in_channel, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            *([SEModule(depth)] if se else []),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        shortcut = x[:, :, ::s, ::s] if self.shortcut_layer is None else self.shortcut_layer(x)
        return self.res_layer(x) + shortcut


class BottleneckIRSE(BottleneckIR):
    """IR unit with squeeze-and-excitation (``mode='ir_se'``)."""

    def __init__(self, in_channel: int, depth: int, stride: int):
        super().__init__(in_channel, depth, stride, se=True)


def block_specs(num_layers: int = 50, units: Sequence[int] | None = None,
                width_div: int = 1) -> list[tuple[int, int, int]]:
    """(in_channel, depth, stride) per unit: four stages, each opening with a stride-2 unit."""
    if num_layers not in STAGE_UNITS:
        raise ValueError(f"num_layers must be one of {sorted(STAGE_UNITS)}, got {num_layers}")
    units = tuple(units) if units is not None else STAGE_UNITS[num_layers]
    if len(units) != 4 or min(units) < 1:
        raise ValueError(f"units must be four positive counts, got {units}")
    if width_div < 1 or STAGE_DEPTHS[0] % width_div or STAGE_DEPTHS[0] // width_div < SE_REDUCTION:
        # The SE bottleneck is channels // 16 wide, so the narrowest stage keeps at least 16 channels.
        raise ValueError(f"width_div must divide 64 and leave >= {SE_REDUCTION} channels, got {width_div}")
    depths = [d // width_div for d in STAGE_DEPTHS]
    specs = []
    for stage, (n, depth) in enumerate(zip(units, depths, strict=True)):
        in_channel = depths[max(stage - 1, 0)]
        specs += [(in_channel, depth, 2)] + [(depth, depth, 1)] * (n - 1)
    return specs


def stage_ends(num_layers: int = 50, units: Sequence[int] | None = None) -> list[int]:
    """Index in ``body`` of the last unit of each stage (for IR-SE50: 2, 6, 20, 23)."""
    units = tuple(units) if units is not None else STAGE_UNITS[num_layers]
    ends, total = [], 0
    for n in units:
        total += n
        ends.append(total - 1)
    return ends


def make_input_layer(width_div: int = 1) -> nn.Sequential:
    """The stem: 3x3 conv to 64 channels at full resolution, BN, PReLU."""
    c = STAGE_DEPTHS[0] // width_div
    return nn.Sequential(nn.Conv2d(3, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.PReLU(c))


def make_body(num_layers: int = 50, mode: str = "ir_se", units: Sequence[int] | None = None,
              width_div: int = 1) -> nn.Sequential:
    """The residual trunk: 16x downsampling to 512 channels (for the default size)."""
    if mode not in ("ir", "ir_se"):
        raise ValueError(f"mode must be 'ir' or 'ir_se', got {mode!r}")
    return nn.Sequential(*(BottleneckIR(i, d, s, se=mode == "ir_se")
                           for i, d, s in block_specs(num_layers, units, width_div)))


def l2_norm(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """x / ||x||, with no epsilon, as the official (F.normalize would clamp the norm)."""
    return x / torch.norm(x, 2, dim, True)


class Backbone(nn.Module):
    """ArcFace IR(-SE) network: face crop [B,3,112,112] in [-1,1] -> unit-norm identity embedding [B,512]."""

    def __init__(self, input_size: int = 112, num_layers: int = 50, mode: str = "ir_se",
                 drop_ratio: float = 0.6, affine: bool = True, *,
                 units: Sequence[int] | None = None, width_div: int = 1):
        super().__init__()
        if input_size not in (112, 224):
            raise ValueError(f"input_size must be 112 or 224, got {input_size}")
        c, dim = STAGE_DEPTHS[-1] // width_div, 512 // width_div
        self.input_layer = make_input_layer(width_div)
        # Registered before body: that is the official key order.
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(c),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(c * (input_size // 16) ** 2, dim),
            nn.BatchNorm1d(dim, affine=affine),
        )
        self.body = make_body(num_layers, mode, units, width_div)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2_norm(self.output_layer(self.body(self.input_layer(x))))
