"""StyleGAN2 generator with the state-dict layout and maths of rosinality's ``Generator(size, 512, 8, 2)``.

HairCLIP and e4e ship the "fused" modulated convolution of that code (weights modulated per sample, a
grouped convolution over the batch), so that is the one written here; checkpoints load with ``strict=True``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hairclip.nets.ops import FusedLeakyReLU, fused_leaky_relu, upfirdn2d

CHANNELS_LAST = torch.channels_last


class PixelNorm(nn.Module):
    """Normalise by the RMS over dim 1 (channels for [B,C]; the layer axis for HairCLIP's [B,L,C])."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


def make_kernel(k: Sequence[float]) -> torch.Tensor:
    """A 1-D FIR taps list -> its normalised 2-D outer product (a 2-D list is only normalised)."""
    k = torch.tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


class Upsample(nn.Module):
    """2x upsampling with the FIR filter; the gain ``factor**2`` restores the zero-inserted energy."""

    def __init__(self, kernel: Sequence[float], factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor**2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class Blur(nn.Module):
    """FIR low-pass at the current rate; after a strided transposed conv it carries the upsampling gain."""

    def __init__(self, kernel: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_kernel(kernel) * upsample_factor**2)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class EqualConv2d(nn.Module):
    """Conv2d with the equalised learning rate: N(0,1) weights scaled by 1/sqrt(fan_in) at run time."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.stride, self.padding = stride, padding
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, {k}, stride={self.stride}, padding={self.padding}"


class EqualLinear(nn.Module):
    """Linear layer with the equalised learning rate: weights stored as N(0,1)/lr_mul, scaled at run time."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: str | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.activation = activation
        self.scale = (1 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias=bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}"


class ModulatedConv2d(nn.Module):
    """Conv whose weights are scaled per input channel by the style, then renormalised per output channel.

    Upsampling is a stride-2 transposed conv followed by the FIR blur; downsampling blurs first. Each sample
    has its own weights: one conv group per sample, as in the official code, or one conv per sample.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False, downsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.eps = 1e-8
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.upsample, self.downsample, self.demodulate = upsample, downsample, demodulate
        factor, taps = 2, len(blur_kernel)
        if upsample:
            p = (taps - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        if downsample:
            p = (taps - factor) + (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2, p // 2))
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)

    def extra_repr(self) -> str:
        return (f"{self.in_channel}, {self.out_channel}, {self.kernel_size}, "
                f"upsample={self.upsample}, downsample={self.downsample}")

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        b, cin, h, w = x.shape
        weight = self.scale * self.weight * self.modulation(style).view(b, 1, cin, 1, 1)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4], keepdim=True) + self.eps)
        if b == 1 or _channels_last(x):
            # A plain conv per sample keeps channels-last, which on CPU beats one grouped conv over the batch.
            outs = [self._conv(x[i:i + 1], weight[i], groups=1) for i in range(b)]
            return outs[0] if b == 1 else torch.cat(outs)
        out = self._conv(x.reshape(1, b * cin, h, w), weight, groups=b)
        return out.reshape(b, self.out_channel, out.shape[2], out.shape[3])

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
        """``weight`` is [groups, out, in, k, k] or, for one group, [out, in, k, k]."""
        k = self.kernel_size
        if self.upsample:
            weight = weight.view(groups, self.out_channel, self.in_channel, k, k).transpose(1, 2)
            weight = _like(x, weight.reshape(groups * self.in_channel, self.out_channel, k, k))
            return self.blur(F.conv_transpose2d(x, weight, stride=2, groups=groups))
        weight = _like(x, weight.reshape(groups * self.out_channel, self.in_channel, k, k))
        if self.downsample:
            return F.conv2d(self.blur(x), weight, stride=2, groups=groups)
        return F.conv2d(x, weight, padding=self.padding, groups=groups)


def _channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=CHANNELS_LAST) and not x.is_contiguous()


def _like(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Give the weight the input's memory format, so the conv need not convert either."""
    return weight.contiguous(memory_format=CHANNELS_LAST) if _channels_last(x) else weight


class NoiseInjection(nn.Module):
    """Per-pixel noise, one map shared by all channels, with a learned strength."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, image: torch.Tensor, noise: torch.Tensor | None = None, inplace: bool = False) -> torch.Tensor:
        """``image + weight * noise``; ``inplace=True`` may overwrite ``image`` when autograd is off."""
        if noise is None:
            b, _, h, w = image.shape
            noise = image.new_empty(b, 1, h, w).normal_()
        scaled = self.weight * noise.to(image.dtype)
        if inplace and not (torch.is_grad_enabled() and (image.requires_grad or scaled.requires_grad)):
            return image.add_(scaled)
        return image + scaled


class ConstantInput(nn.Module):
    """The learned 4x4 start of synthesis; only the batch size is taken from the input."""

    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.input.repeat(x.shape[0], 1, 1, 1)


class StyledConv(nn.Module):
    """Modulated conv, then noise, then bias and scaled leaky ReLU."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 upsample: bool = False, blur_kernel: Sequence[float] = (1, 3, 3, 1), demodulate: bool = True):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, demodulate=demodulate,
                                    upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        # The conv output is a fresh tensor of ours, so noise, bias and activation may reuse it (without
        # autograd): two fewer full-size temporaries per layer, the same arithmetic.
        return self.activate(self.noise(self.conv(x, style), noise=noise, inplace=True), inplace=True)


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation), added to the upsampled RGB of the previous resolution."""

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias
        return out if skip is None else out + self.upsample(skip)


def stylegan2_channels(res: int, channel_multiplier: int = 2) -> int:
    """Feature channels at resolution ``res``: 512 up to 32 px, then halving with each doubling."""
    return 512 if res <= 32 else (2**14 * channel_multiplier) // res


@dataclass
class Partial:
    """A synthesis stopped at ``res`` px: its features and skip image, to go on from without redoing them."""

    out: torch.Tensor
    skip: torch.Tensor
    res: int


class Generator(nn.Module):
    """Mapping MLP (z -> w), then a 4x4 constant refined by two styled convs per resolution up to ``size``.

    Each resolution adds its RGB to the upsampled RGB of the one below (the skip architecture), so the
    image at any resolution is available: see ``synthesis(..., stop_at=res)``.
    ``channels_last=None`` runs synthesis channels-last on CPU (measurably faster there) and contiguous
    elsewhere; True or False forces it. ``width_div`` narrows every feature map (not W) for small test
    copies; the official networks have 1.
    """

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), lr_mlp: float = 0.01, width_div: int = 1):
        super().__init__()
        self.log_size = int(math.log2(size))
        if size < 4 or 2**self.log_size != size:
            raise ValueError(f"size must be a power of two >= 4, got {size}")
        if width_div < 1:
            raise ValueError(f"width_div must be >= 1, got {width_div}")
        self.size, self.style_dim = size, style_dim
        self.channels = {2**i: max(1, stylegan2_channels(2**i, channel_multiplier) // width_div)
                         for i in range(2, self.log_size + 1)}
        self.channels_last: bool | None = None

        self.style = nn.Sequential(
            PixelNorm(),
            *(EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu") for _ in range(n_mlp)),
        )
        ch = self.channels
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(ch[4], style_dim, upsample=False)

        self.num_layers = (self.log_size - 2) * 2 + 1
        self.convs = nn.ModuleList()
        self.upsamples = nn.ModuleList()  # empty, kept for attribute compatibility with the reference
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))
        for i in range(3, self.log_size + 1):
            c_in, c_out = ch[2 ** (i - 1)], ch[2**i]
            self.convs.append(StyledConv(c_in, c_out, 3, style_dim, upsample=True, blur_kernel=blur_kernel))
            self.convs.append(StyledConv(c_out, c_out, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(c_out, style_dim))  # as in the reference: default FIR for the skip
        self.n_latent = self.log_size * 2 - 2

    def mean_latent(self, n_latent: int) -> torch.Tensor:
        """Average w over ``n_latent`` random z: the truncation centre, [1, style_dim]."""
        p = self.input.input
        return self.style(torch.randn(n_latent, self.style_dim, device=p.device, dtype=p.dtype)).mean(0, keepdim=True)

    def forward(self, styles: Sequence[torch.Tensor] | torch.Tensor, return_latents: bool = False,
                inject_index: int | None = None, truncation: float = 1.0,
                truncation_latent: torch.Tensor | None = None, input_is_latent: bool = False,
                noise: Sequence[torch.Tensor | None] | None = None, randomize_noise: bool = True,
                stop_at: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Official semantics: ``styles`` are z (or w with ``input_is_latent``; W+ as [B, n_latent, C]).

        Two styles mix at ``inject_index`` (random if None). Returns (image in about [-1,1], W+ or None).
        """
        if isinstance(styles, torch.Tensor):
            styles = [styles]
        dtype = self.input.input.dtype
        styles = [s.to(dtype) for s in styles]
        if not input_is_latent:
            styles = [self.style(s) for s in styles]
        if truncation < 1:
            if truncation_latent is None:
                raise ValueError("truncation < 1 needs truncation_latent (see mean_latent)")
            t = truncation_latent.to(dtype)
            styles = [t + truncation * (s - t) for s in styles]

        if len(styles) < 2:
            latent = styles[0] if styles[0].ndim == 3 else styles[0].unsqueeze(1).repeat(1, self.n_latent, 1)
        else:
            if inject_index is None:
                inject_index = random.randint(1, self.n_latent - 1)
            latent = torch.cat([styles[0].unsqueeze(1).repeat(1, inject_index, 1),
                                styles[1].unsqueeze(1).repeat(1, self.n_latent - inject_index, 1)], 1)

        image = self.synthesis(latent, noise=noise, randomize_noise=randomize_noise, stop_at=stop_at)
        return image, (latent if return_latents else None)

    def synthesis(self, latent: torch.Tensor, noise: Sequence[torch.Tensor | None] | None = None,
                  randomize_noise: bool = True, stop_at: int | None = None,
                  check: Callable[[], None] | None = None, start: Partial | None = None) -> torch.Tensor:
        """W+ [B, n_latent, C] -> RGB at ``size``, or at ``stop_at`` px (the skip image built so far).

        ``check`` runs before each resolution: a cancellation point inside the synthesis. ``start`` continues
        a `partial` synthesis of the same W+ and noise instead of starting over (the same bytes).

        ``noise=None`` draws fresh noise if ``randomize_noise``, else uses the stored ``noises`` buffers.
        """
        return self.partial(latent, noise, randomize_noise, stop_at, check, start).skip.contiguous()

    def partial(self, latent: torch.Tensor, noise: Sequence[torch.Tensor | None] | None = None,
                randomize_noise: bool = True, stop_at: int | None = None,
                check: Callable[[], None] | None = None, start: Partial | None = None) -> Partial:
        """`synthesis` up to ``stop_at`` px, keeping the features too, so a later call can go on from there."""
        if stop_at is not None and (stop_at not in self.channels):
            raise ValueError(f"stop_at must be a power of two in [4, {self.size}], got {stop_at}")
        if noise is None:
            noise = ([None] * self.num_layers if randomize_noise
                     else [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)])

        if start is None:
            out = self.input(latent)
            if self.channels_last if self.channels_last is not None else out.device.type == "cpu":
                out = out.contiguous(memory_format=CHANNELS_LAST)
            out = self.conv1(out, latent[:, 0], noise=noise[0])
            skip = self.to_rgb1(out, latent[:, 1])
            res = 4
        else:
            out, skip, res = start.out, start.skip, start.res
        for j in range(int(math.log2(res)) - 2, len(self.to_rgbs)):
            if res == stop_at:
                break
            if check is not None:
                check()
            i = 2 * j + 1
            out = self.convs[i - 1](out, latent[:, i], noise=noise[i])
            out = self.convs[i](out, latent[:, i + 1], noise=noise[i + 1])
            skip = self.to_rgbs[j](out, latent[:, i + 2], skip)
            res *= 2
        return Partial(out, skip, res)
