"""CIE Lab as HairCLIP computes it, and its inverse.

HairCLIP's colour losses convert RGB in [0, 1] to XYZ with the sRGB/D65 matrix *without* undoing the sRGB
gamma, then to Lab with the usual cube-root curve, normalising X, Y, Z by the matrix's row sums (the white
point). We keep that exact variant so that colour distances mean what they mean in the paper's losses.
"""

from __future__ import annotations

import torch

RGB_TO_XYZ = torch.tensor([[0.412453, 0.357580, 0.180423],
                           [0.212671, 0.715160, 0.072169],
                           [0.019334, 0.119193, 0.950227]], dtype=torch.float64)
_EPS = 0.008856  # (6/29)^3, where the cube-root curve meets its linear toe
_KAPPA = 903.3   # L* slope of the toe


def _f(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > _EPS, t.clamp_min(_EPS).pow(1 / 3), 7.787 * t + 0.137931)


def _f_inv(u: torch.Tensor) -> torch.Tensor:
    return torch.where(u > 0.206893, u.pow(3), (u - 0.137931) / 7.787)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """``[B,3,H,W]`` RGB in [0, 1] -> Lab (L in [0, 100]), HairCLIP's variant."""
    m = RGB_TO_XYZ.to(rgb.device, rgb.dtype)
    xyz = torch.einsum("nc,bchw->bnhw", m, rgb) / m.sum(dim=1).view(1, 3, 1, 1)
    fx, fy, fz = _f(xyz).unbind(1)
    y = xyz[:, 1]
    lightness = torch.where(y > _EPS, 116 * fy - 16, _KAPPA * y)
    return torch.stack([lightness, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """The inverse of `rgb_to_lab` (unclipped: out-of-gamut colours leave [0, 1])."""
    lightness, a, b = lab.unbind(1)
    y = torch.where(lightness > _KAPPA * _EPS, ((lightness + 16) / 116).pow(3), lightness / _KAPPA)
    fy = _f(y)
    xyz = torch.stack([_f_inv(fy + a / 500), y, _f_inv(fy - b / 200)], dim=1)
    m = RGB_TO_XYZ.to(lab.device, lab.dtype)
    xyz = xyz * m.sum(dim=1).view(1, 3, 1, 1)
    return torch.einsum("nc,bchw->bnhw", torch.linalg.inv(m), xyz)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image channel means inside ``mask`` (``[B,1,H,W]``); an empty mask gives 0, as in HairCLIP."""
    total = (x * mask).sum(dim=(2, 3), keepdim=True)
    area = mask.sum(dim=(2, 3), keepdim=True)
    return total / torch.where(area == 0, torch.ones_like(area), area)


def masked_std(x: torch.Tensor, mask: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image channel standard deviations inside ``mask`` (weighted like `masked_mean`)."""
    mean = masked_mean(x, mask) if mean is None else mean
    return masked_mean((x - mean) ** 2, mask).sqrt()


def parse_rgb(text: str | tuple[int, int, int] | list[int]) -> tuple[int, int, int]:
    """``'#RRGGBB'``, ``'RRGGBB'``, ``'r,g,b'`` or three ints in 0..255."""
    if isinstance(text, (tuple, list)):
        values = [int(v) for v in text]
    else:
        s = text.strip().removeprefix("#")
        if "," in s:
            values = [int(v) for v in s.split(",")]
        elif len(s) == 6 and all(c in "0123456789abcdefABCDEF" for c in s):
            values = [int(s[i:i + 2], 16) for i in (0, 2, 4)]
        else:
            raise ValueError(f"not a colour: {text!r} (use #RRGGBB or r,g,b)")
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise ValueError(f"not a colour: {text!r} (three values in 0..255)")
    return values[0], values[1], values[2]
