"""upfirdn2d and fused_leaky_relu: both paths against the written-out definitions, in fp32 and half precision."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hairclip.nets.ops import (
    FusedLeakyReLU,
    fused_leaky_relu,
    fused_leaky_relu_ref,
    reference_ops,
    upfirdn2d,
    upfirdn2d_fast,
    upfirdn2d_ref,
)

PATHS = [upfirdn2d_ref, upfirdn2d_fast, upfirdn2d]

# (up, down, pad) with pad as rosinality's (p0, p1) or (x0, x1, y0, y1); up/down may be (x, y)
CASES = [
    (1, 1, (0, 0)),
    (1, 1, (1, 1)),  # StyleGAN2's blur after the transposed conv
    (2, 1, (2, 1)),  # ToRGB skip upsampling
    (1, 2, (2, 2)),  # Downsample / the blur before a stride-2 conv
    (2, 2, (1, 2)),
    (1, 1, (-1, 2)),  # negative pads crop
    (3, 2, (0, -1)),
    (1, 1, (2, 0, -1, 1)),  # 4-tuple (x0, x1, y0, y1)
    (2, 1, (3, -2, 0, 1)),
    ((2, 1), (1, 2), (1, 2, 0, 1)),  # different factors per axis
]


def definition(x: torch.Tensor, k: torch.Tensor, up, down, pad) -> np.ndarray:
    """float64 direct sum: zero-insert, pad/crop, out[y, x] = sum_ij z[y*d + i, x*d + j] * k[kh-1-i, kw-1-j]."""
    ux, uy = (up, up) if isinstance(up, int) else up
    dx, dy = (down, down) if isinstance(down, int) else down
    x0, x1, y0, y1 = (pad[0], pad[1], pad[0], pad[1]) if len(pad) == 2 else pad
    a = x.double().numpy()
    n, c, h, w = a.shape
    z = np.zeros((n, c, h * uy, w * ux))
    z[:, :, ::uy, ::ux] = a
    z = np.pad(z, ((0, 0), (0, 0), (max(y0, 0), max(y1, 0)), (max(x0, 0), max(x1, 0))))
    z = z[:, :, max(-y0, 0):z.shape[2] - max(-y1, 0), max(-x0, 0):z.shape[3] - max(-x1, 0)]
    kk = k.double().numpy()
    kh, kw = kk.shape
    oh, ow = (z.shape[2] - kh) // dy + 1, (z.shape[3] - kw) // dx + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(kh):
        for j in range(kw):
            out += z[:, :, i:i + (oh - 1) * dy + 1:dy, j:j + (ow - 1) * dx + 1:dx] * kk[kh - 1 - i, kw - 1 - j]
    return out


@pytest.mark.parametrize("up,down,pad", CASES)
@pytest.mark.parametrize("path", PATHS, ids=lambda f: f.__name__)
def test_upfirdn2d_matches_the_definition(path, up, down, pad):
    x = torch.randn(2, 3, 7, 11)  # non-square
    k = torch.randn(4, 3)  # non-square, asymmetric
    out = path(x, k, up=up, down=down, pad=pad)
    want = definition(x, k, up, down, pad)
    assert out.shape == want.shape
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", PATHS, ids=lambda f: f.__name__)
def test_upfirdn2d_is_a_true_convolution_not_a_correlation(path):
    # An impulse reproduces the kernel itself; a cross-correlation would give it flipped.
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1
    k = torch.arange(6.0).view(2, 3)
    out = path(x, k, pad=(1, 1, 1, 0))
    assert torch.equal(out[0, 0, 2:4, 1:4], k)


def test_stylegan_blur_of_a_constant_keeps_the_constant_inside():
    k = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1]))
    x = torch.full((1, 2, 8, 8), 3.0)
    up = upfirdn2d(x, k / k.sum() * 4, up=2, pad=(2, 1))  # the ToRGB upsampler
    assert up.shape == (1, 2, 16, 16)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 3.0))


@settings(max_examples=40, deadline=None)
@given(
    up=st.integers(1, 3), down=st.integers(1, 3), h=st.integers(2, 9), w=st.integers(2, 9),
    kh=st.integers(1, 5), kw=st.integers(1, 5), pads=st.lists(st.integers(-1, 4), min_size=4, max_size=4),
)
def test_fast_path_agrees_with_reference_in_fp32(up, down, h, w, kh, kw, pads):
    x0, x1, y0, y1 = pads
    assume(w * up + x0 + x1 >= kw and h * up + y0 + y1 >= kh)  # something to output
    x, k = torch.randn(2, 3, h, w), torch.randn(kh, kw)
    torch.testing.assert_close(upfirdn2d_fast(x, k, up, down, pads), upfirdn2d_ref(x, k, up, down, pads),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 3e-2), (torch.float16, 3e-3)])
@pytest.mark.parametrize("up,down,pad", CASES[1:5])
def test_half_precision_stays_in_its_dtype_and_near_fp32(dtype, tol, up, down, pad):
    x = torch.randn(2, 4, 9, 8)
    k = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64  # an fp32 buffer
    want = upfirdn2d_ref(x, k, up, down, pad)
    for path in PATHS:
        out = path(x.to(dtype), k, up, down, pad)
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), want, rtol=tol, atol=tol)
    fast, ref = upfirdn2d_fast(x.to(dtype), k, up, down, pad), upfirdn2d_ref(x.to(dtype), k, up, down, pad)
    torch.testing.assert_close(fast.float(), ref.float(), rtol=tol, atol=tol)


def test_fast_path_keeps_channels_last_and_its_gradients_match():
    x = torch.randn(1, 6, 9, 9).contiguous(memory_format=torch.channels_last).requires_grad_()
    k = torch.randn(4, 4, requires_grad=True)
    fast = upfirdn2d(x, k, up=2, pad=(2, 1))
    assert fast.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(fast)
    gx_fast, gk_fast = torch.autograd.grad(fast, (x, k), g)
    gx_ref, gk_ref = torch.autograd.grad(upfirdn2d_ref(x, k, up=2, pad=(2, 1)), (x, k), g)
    torch.testing.assert_close(gx_fast, gx_ref)
    torch.testing.assert_close(gk_fast, gk_ref)


def test_upfirdn2d_rejects_bad_arguments():
    with pytest.raises(ValueError):
        upfirdn2d(torch.zeros(1, 1, 4, 4), torch.ones(2, 2), pad=(1, 1, 1))
    with pytest.raises(ValueError):
        upfirdn2d(torch.zeros(1, 4, 4), torch.ones(2, 2))


@pytest.mark.parametrize("shape,bias_dim", [((5, 8), 1), ((2, 6, 8), 2), ((2, 8, 5, 3), 1)])
@pytest.mark.parametrize("grad", [False, True])
def test_fused_leaky_relu_is_scaled_leaky_relu_of_biased_input(shape, bias_dim, grad):
    x = torch.randn(shape, requires_grad=grad)
    b = torch.randn(8)
    view = [1] * len(shape)
    view[bias_dim] = 8
    want = F.leaky_relu(x + b.view(view), 0.2) * math.sqrt(2)
    torch.testing.assert_close(fused_leaky_relu(x, b), want, rtol=0, atol=0)
    torch.testing.assert_close(fused_leaky_relu_ref(x, b), want, rtol=0, atol=0)
    torch.testing.assert_close(FusedLeakyReLU(8).requires_grad_(grad)(x), F.leaky_relu(x, 0.2) * math.sqrt(2))


def test_fused_leaky_relu_honours_slope_scale_and_no_bias():
    x = torch.randn(3, 4, 2, 2)
    torch.testing.assert_close(fused_leaky_relu(x, None, 0.1, 3.0), F.leaky_relu(x, 0.1) * 3.0)
    assert FusedLeakyReLU(4, bias=False).bias is None
    assert list(FusedLeakyReLU(4).state_dict()) == ["bias"]


def test_inplace_overwrites_only_without_autograd():
    x, b = torch.randn(2, 3, 4, 4), torch.randn(3)
    want = fused_leaky_relu_ref(x, b)
    y = x.clone()
    assert fused_leaky_relu(y, b, inplace=True).data_ptr() == y.data_ptr()
    torch.testing.assert_close(y, want, rtol=0, atol=0)
    x0 = x.clone()
    fused_leaky_relu(x, b)  # default never touches its input
    assert torch.equal(x, x0)
    xg = x.clone().requires_grad_()
    out = fused_leaky_relu(xg, b, inplace=True)
    assert out.data_ptr() != xg.data_ptr()
    out.sum().backward()
    assert xg.grad is not None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_leaky_relu_keeps_half_precision_with_an_fp32_bias(dtype):
    x, b = torch.randn(2, 4, 3, 3), torch.randn(4)
    out = fused_leaky_relu(x.to(dtype), b)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), fused_leaky_relu_ref(x, b), rtol=2e-2, atol=2e-2)


def test_reference_switch_routes_the_public_ops_and_restores_them(monkeypatch):
    import hairclip.nets.ops as ops

    calls = []
    for name, original in [("upfirdn2d_ref", upfirdn2d_ref), ("fused_leaky_relu_ref", fused_leaky_relu_ref)]:
        monkeypatch.setattr(ops, name, lambda *a, _n=name, _f=original, **k: calls.append(_n) or _f(*a, **k))
    x, k = torch.randn(1, 2, 5, 5), torch.ones(2, 2)
    with reference_ops():
        upfirdn2d(x, k)
        fused_leaky_relu(x, None)
    upfirdn2d(x, k)
    fused_leaky_relu(x, None)
    assert calls == ["upfirdn2d_ref", "fused_leaky_relu_ref"]
    assert ops.use_reference_ops(True) is False
    upfirdn2d(x, k)
    assert ops.use_reference_ops(False) is True
    assert calls[-1] == "upfirdn2d_ref" and len(calls) == 3
