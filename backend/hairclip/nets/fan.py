"""Face Alignment Network (2D-FAN, Bulat & Tzimiropoulos 2017) with the state-dict layout of
face-alignment's published ``2DFAN4-11f355bf06.pth.tar``. Heatmap decoding lives in ``hairclip.pipeline.face_fan``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

N_LANDMARKS = 68  # iBUG 300-W, numbered as dlib numbers them


class ConvBlock(nn.Module):
    """FAN's residual block: three pre-activated 3x3 convs of out/2, out/4, out/4 channels, concatenated
    (multi-scale receptive fields at a third of the cost), plus the input, projected if the width changes."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout // 2, 3, padding=1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout // 2), nn.Conv2d(cout // 2, cout // 4, 3, padding=1, bias=False)
        self.bn3, self.conv3 = nn.BatchNorm2d(cout // 4), nn.Conv2d(cout // 4, cout // 4, 3, padding=1, bias=False)
        self.downsample = (nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False))
                           if cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(F.relu(self.bn1(x)))
        b = self.conv2(F.relu(self.bn2(a)))
        c = self.conv3(F.relu(self.bn3(b)))
        return torch.cat([a, b, c], 1) + (x if self.downsample is None else self.downsample(x))


class HourGlass(nn.Module):
    """One FAN hourglass: ``depth`` levels, each adding a full-resolution branch to an upsampled half-resolution one.

    At each level: a full-resolution branch b1, and b2 at half resolution, the next level (or b2_plus at the
    bottom), b3, upsampled x2 and added. Module names are the weight file's.
    """

    def __init__(self, depth: int, ch: int):
        super().__init__()
        self.depth = depth
        for level in range(depth, 0, -1):  # registered outside-in, as the file lists them
            self.add_module(f"b1_{level}", ConvBlock(ch, ch))
            self.add_module(f"b2_{level}", ConvBlock(ch, ch))
        self.b2_plus_1 = ConvBlock(ch, ch)
        for level in range(1, depth + 1):
            self.add_module(f"b3_{level}", ConvBlock(ch, ch))

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        low = getattr(self, f"b2_{level}")(F.avg_pool2d(x, 2, 2))
        low = self._level(level - 1, low) if level > 1 else self.b2_plus_1(low)
        low = getattr(self, f"b3_{level}")(low)
        return getattr(self, f"b1_{level}")(x) + F.interpolate(low, scale_factor=2.0, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(self.depth, x)


class FAN(nn.Module):
    """Face Alignment Network (Bulat & Tzimiropoulos 2017): 68 landmark heatmaps from a 256 px face crop.

    A stem to 64x64x256, then ``stacks`` hourglasses, each predicting 68 heatmaps that (except the last) are fed
    back into the next one. 2D-FAN-4 has 4.
    """

    def __init__(self, stacks: int = 4):
        super().__init__()
        self.stacks = stacks
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, stride=2, padding=3), nn.BatchNorm2d(64)
        self.conv2, self.conv3, self.conv4 = ConvBlock(64, 128), ConvBlock(128, 128), ConvBlock(128, 256)
        for i in range(stacks):
            self.add_module(f"m{i}", HourGlass(4, 256))
            self.add_module(f"top_m_{i}", ConvBlock(256, 256))
            self.add_module(f"conv_last{i}", nn.Conv2d(256, 256, 1))
            self.add_module(f"bn_end{i}", nn.BatchNorm2d(256))
            self.add_module(f"l{i}", nn.Conv2d(256, N_LANDMARKS, 1))
            if i < stacks - 1:
                self.add_module(f"bl{i}", nn.Conv2d(256, 256, 1))
                self.add_module(f"al{i}", nn.Conv2d(N_LANDMARKS, 256, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] [B, 3, 256, 256] -> the last stack's heatmaps [B, 68, 64, 64]."""
        x = F.avg_pool2d(self.conv2(F.relu(self.bn1(self.conv1(x)))), 2, 2)
        x = self.conv4(self.conv3(x))
        for i in range(self.stacks):
            y = getattr(self, f"top_m_{i}")(getattr(self, f"m{i}")(x))
            y = F.relu(getattr(self, f"bn_end{i}")(getattr(self, f"conv_last{i}")(y)))
            heat = getattr(self, f"l{i}")(y)
            if i < self.stacks - 1:
                x = x + getattr(self, f"bl{i}")(y) + getattr(self, f"al{i}")(heat)
        return heat
