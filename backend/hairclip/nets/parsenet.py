"""The face parser HairCLIP uses for hair masks: a small U-Net, 19 CelebAMask-HQ classes, label 13 = hair.

State-dict layout of HairCLIP's ``criteria/parse_related_loss/unet.py`` ``unet()`` (``parsenet.pth``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HAIR_LABEL = 13
PARSE_SIZE = 512  # the resolution the parser runs at in HairCLIP


def _conv_bn_relu(in_ch: int, out_ch: int, batchnorm: bool) -> nn.Sequential:
    norm = [nn.BatchNorm2d(out_ch)] if batchnorm else []
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, 1, 1), *norm, nn.ReLU())


class ConvBlock(nn.Module):
    """Two 3x3 conv + BN + ReLU at one resolution."""

    def __init__(self, in_ch: int, out_ch: int, batchnorm: bool = True):
        super().__init__()
        self.conv1 = _conv_bn_relu(in_ch, out_ch, batchnorm)
        self.conv2 = _conv_bn_relu(out_ch, out_ch, batchnorm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class UpBlock(nn.Module):
    """2x transposed-conv upsampling, concatenated with the encoder's skip, then a ConvBlock."""

    def __init__(self, in_ch: int, out_ch: int, batchnorm: bool = True):
        super().__init__()
        self.conv = ConvBlock(in_ch, out_ch, batchnorm)
        self.up = nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2)

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        skip = F.pad(skip, [(x.shape[2] - skip.shape[2]) // 2] * 4)  # the official size fix-up; 0 for sizes % 16
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """Four 2x max-pool downsamplings and their mirror, widths (64..1024) / feature_scale.

    ``channels_last=None`` runs it channels-last on CPU (1.25x faster at 512 px on 2 threads; the same labels)
    and as given elsewhere; True or False forces it.
    """

    def __init__(self, feature_scale: int = 4, n_classes: int = 19, is_deconv: bool = True, in_channels: int = 3,
                 is_batchnorm: bool = True):
        super().__init__()
        if not is_deconv:
            # The official bilinear variant concatenates in_ch + out_ch channels into a conv built for in_ch.
            raise ValueError("only the transposed-conv U-Net exists; the official bilinear variant cannot run")
        f = [int(c / feature_scale) for c in (64, 128, 256, 512, 1024)]
        bn = is_batchnorm
        self.conv1 = ConvBlock(in_channels, f[0], bn)
        self.conv2 = ConvBlock(f[0], f[1], bn)
        self.conv3 = ConvBlock(f[1], f[2], bn)
        self.conv4 = ConvBlock(f[2], f[3], bn)
        self.center = ConvBlock(f[3], f[4], bn)
        self.up_concat4 = UpBlock(f[4], f[3], bn)
        self.up_concat3 = UpBlock(f[3], f[2], bn)
        self.up_concat2 = UpBlock(f[2], f[1], bn)
        self.up_concat1 = UpBlock(f[1], f[0], bn)
        self.final = nn.Conv2d(f[0], n_classes, 1)
        self.channels_last: bool | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` image in [-1, 1] (no other normalisation), H and W divisible by 16, to class logits."""
        if self.channels_last if self.channels_last is not None else x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        skips = []
        for down in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = down(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.center(x)
        ups = (self.up_concat4, self.up_concat3, self.up_concat2, self.up_concat1)
        for up, skip in zip(ups, reversed(skips), strict=True):
            x = up(skip, x)
        return self.final(x)


@torch.no_grad()
def parse(parser: UNet, img: torch.Tensor, size: int | None = PARSE_SIZE) -> torch.Tensor:
    """Per-pixel class labels ``[B, size, size]`` (int64) of an image in [-1, 1], area-resized to ``size`` first
    (``None``: as is). Call ``parser.eval()`` first, as HairCLIP does."""
    if size is not None:
        img = F.adaptive_avg_pool2d(img, size)
    return parser(img).argmax(dim=1)


def hair_mask(parser: UNet, img: torch.Tensor) -> torch.Tensor:
    """HairCLIP's hair mask: parse at 512, take label 13, area-resize back to the input size.

    Returns ``[B, 1, H, W]`` in ``img``'s dtype; exactly 0/1 when H and W are multiples of 512 (1024 in
    HairCLIP), fractional at edges otherwise. The reference image fed to the mapper is ``img * mask``.
    """
    mask = (parse(parser, img) == HAIR_LABEL).unsqueeze(1).to(img.dtype)
    return F.adaptive_avg_pool2d(mask, img.shape[-2:])
