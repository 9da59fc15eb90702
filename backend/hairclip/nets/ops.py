"""Low-level ops of StyleGAN2 in pure PyTorch: they run on CPU, CUDA and MPS with nothing to compile.

Each op has a plain reference (``*_ref``) that spells out the definition. The public op runs a faster
formulation of the same maths unless ``use_reference_ops()`` (or HAIRCLIP_REFERENCE_OPS=1) asks for the
reference; tests compare the two and ``bench/bench_ops.py`` shows the gain.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)

IntPair = int | tuple[int, int]

# Process-wide switch to the reference paths, for debugging and end-to-end benchmarks.
_use_reference = os.environ.get("HAIRCLIP_REFERENCE_OPS", "") == "1"


def use_reference_ops(enabled: bool = True) -> bool:
    """Make ``upfirdn2d`` and ``fused_leaky_relu`` run their plain ``*_ref`` versions; returns the old setting."""
    global _use_reference
    previous, _use_reference = _use_reference, bool(enabled)
    return previous


@contextlib.contextmanager
def reference_ops(enabled: bool = True) -> Iterator[None]:
    """``use_reference_ops`` for the duration of a ``with`` block."""
    previous = use_reference_ops(enabled)
    try:
        yield
    finally:
        use_reference_ops(previous)


def _pair(v: IntPair) -> tuple[int, int]:
    """``v`` or ``(vx, vy)`` -> ``(vx, vy)``."""
    if isinstance(v, int):
        return v, v
    vx, vy = v
    return int(vx), int(vy)


def _pads(pad: Sequence[int]) -> tuple[int, int, int, int]:
    """rosinality's ``(p0, p1)`` for both axes, or ``(x0, x1, y0, y1)``."""
    if len(pad) == 2:
        return pad[0], pad[1], pad[0], pad[1]
    if len(pad) == 4:
        return pad[0], pad[1], pad[2], pad[3]
    raise ValueError(f"pad must have 2 or 4 entries, got {pad!r}")


def upfirdn2d_ref(x: torch.Tensor, kernel: torch.Tensor, up: IntPair = 1, down: IntPair = 1,
                  pad: Sequence[int] = (0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative pads crop), convolve with ``kernel``, keep every ``down``-th.

    The definition, written out step by step; slow but obviously right.
    """
    (ux, uy), (dx, dy) = _pair(up), _pair(down)
    px0, px1, py0, py1 = _pads(pad)
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, w)
    z = y.new_zeros(n * c, 1, h * uy, w * ux)
    z[:, :, ::uy, ::ux] = y
    z = F.pad(z, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    z = z[:, :, max(-py0, 0):z.shape[2] - max(-py1, 0), max(-px0, 0):z.shape[3] - max(-px1, 0)]
    # conv2d is a cross-correlation; flipping the kernel makes it the true convolution of the definition.
    k = torch.flip(kernel, [0, 1]).to(device=x.device, dtype=x.dtype)[None, None]
    z = F.conv2d(z, k)[:, :, ::dy, ::dx]
    return z.reshape(n, c, z.shape[2], z.shape[3])


def upfirdn2d_fast(x: torch.Tensor, kernel: torch.Tensor, up: IntPair = 1, down: IntPair = 1,
                   pad: Sequence[int] = (0, 0)) -> torch.Tensor:
    """The same maths as a depthwise (``groups=C``) convolution, which keeps ``x``'s memory format.

    Upsampling is a strided ``conv_transpose2d``: it never materialises the zero-inserted image, and its
    output is the full convolution, of which the padded window is a crop (``F.pad`` crops when negative).
    """
    (ux, uy), (dx, dy) = _pair(up), _pair(down)
    px0, px1, py0, py1 = _pads(pad)
    c, h, w = x.shape[1:]
    kh, kw = kernel.shape
    k = kernel.to(device=x.device, dtype=x.dtype)
    out_h, out_w = h * uy + py0 + py1 - kh + 1, w * ux + px0 + px1 - kw + 1
    if ux == uy == 1:
        k = torch.flip(k, [0, 1]).expand(c, 1, kh, kw)
        if px0 == px1 >= 0 and py0 == py1 >= 0:  # conv2d pads symmetric borders itself, without a copy
            return F.conv2d(x, k, stride=(dy, dx), padding=(py0, px0), groups=c)
        return F.conv2d(F.pad(x, [px0, px1, py0, py1]), k, stride=(dy, dx), groups=c)
    y = F.conv_transpose2d(x, k.expand(c, 1, kh, kw), stride=(uy, ux), groups=c)
    sy, sx = kh - 1 - py0, kw - 1 - px0  # where the padded window starts in the full convolution
    y = F.pad(y, [-sx, out_w - (y.shape[3] - sx), -sy, out_h - (y.shape[2] - sy)])
    return y[:, :, ::dy, ::dx] if dx > 1 or dy > 1 else y


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: IntPair = 1, down: IntPair = 1,
              pad: Sequence[int] = (0, 0)) -> torch.Tensor:
    """Upsample, FIR-filter, downsample ``x`` [N,C,H,W] with a 2-D ``kernel``; ``up``/``down`` int or (x, y).

    ``pad`` is ``(p0, p1)`` for both axes or ``(x0, x1, y0, y1)``. Negative pads crop.
    """
    if x.ndim != 4 or kernel.ndim != 2:
        raise ValueError(f"expected x [N,C,H,W] and a 2-D kernel, got {tuple(x.shape)} and {tuple(kernel.shape)}")
    return (upfirdn2d_ref if _use_reference else upfirdn2d_fast)(x, kernel, up, down, pad)


def _bias_view(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    # HairCLIP/e4e convention: channels are dim 1, except for 3-D [B, L, C] input where they are last.
    shape = (1, 1, -1) if x.ndim == 3 else (1, -1) + (1,) * (x.ndim - 2)
    return bias.view(shape).to(x.dtype)


def fused_leaky_relu_ref(x: torch.Tensor, bias: torch.Tensor | None, negative_slope: float = 0.2,
                         scale: float = SQRT2) -> torch.Tensor:
    """``leaky_relu(x + bias) * scale``, as written."""
    if bias is not None:
        x = x + _bias_view(x, bias)
    return F.leaky_relu(x, negative_slope) * scale


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None, negative_slope: float = 0.2,
                     scale: float = SQRT2, *, inplace: bool = False) -> torch.Tensor:
    """``leaky_relu(x + bias) * sqrt(2)``; bias is per channel (dim 1), or the last dim for 3-D input.

    Without autograd the three steps share one buffer instead of allocating three: the same arithmetic, in
    the same order, with less memory traffic. ``inplace=True`` lets that buffer be ``x`` itself; it is a
    permission, not a promise (with autograd the result is always a new tensor).
    """
    if _use_reference or (torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad))):
        return fused_leaky_relu_ref(x, bias, negative_slope, scale)
    if bias is None:
        out = x if inplace else x.clone()
    else:
        out = x.add_(_bias_view(x, bias)) if inplace else x + _bias_view(x, bias)
    return F.leaky_relu_(out, negative_slope).mul_(scale)


class FusedLeakyReLU(nn.Module):
    """Bias plus scaled leaky ReLU; the ``bias`` parameter is what the checkpoints call ``activate.bias``."""

    def __init__(self, channel: int, bias: bool = True, negative_slope: float = 0.2, scale: float = SQRT2):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel)) if bias else None
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale, inplace=inplace)
