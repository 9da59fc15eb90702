"""StyleGAN2 generator: the official layout at full size, the official forward semantics on small copies."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hairclip.nets.ops import reference_ops, upfirdn2d_ref
from hairclip.nets.stylegan2 import Generator, ModulatedConv2d

KEYS = Path(__file__).parent / "data" / "keys"


def _layout(module: torch.nn.Module) -> list[tuple[str, list[int], str]]:
    return [(k, list(v.shape), str(v.dtype)) for k, v in module.state_dict().items()]


def _ref(name: str) -> list[tuple[str, list[int], str]]:
    return [tuple(k) for k in json.loads((KEYS / name).read_text())]


def _small(size: int, width_div: int = 4) -> Generator:
    """A small, narrow copy (W stays 512); noise strengths and biases made non-zero so they count."""
    torch.manual_seed(0)
    g = Generator(size, style_dim=512, n_mlp=2, width_div=width_div).eval()
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight") or name.endswith("bias"):
                p.normal_(0, 0.3)
    return g


@pytest.fixture(scope="module")
def g8() -> Generator:
    return _small(8)


def _w(g: Generator, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, g.n_latent, g.style_dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size,name,count", [(1024, "keys_generator_1024.json", 171),
                                             (256, "keys_generator_256.json", 135)])
def test_full_size_state_dict_is_the_official_layout(size, name, count):
    with torch.device("meta"):
        g = Generator(size, 512, 8, channel_multiplier=2)
    ours, ref = _layout(g), _ref(name)
    assert len(ref) == count
    assert {k: (s, d) for k, s, d in ours} == {k: (s, d) for k, s, d in ref}  # names, shapes, dtypes
    assert [k for k, _, _ in ours] == [k for k, _, _ in ref]  # and even the order
    assert g.n_latent == {1024: 18, 256: 14}[size]


def test_checkpoint_decoders_load_under_the_decoder_prefix():
    with torch.device("meta"):
        g = Generator(1024)
    hairclip = [k.removeprefix("decoder.") for k, _, _ in _ref("keys_hairclip_pt_state_dict.json")
                if k.startswith("decoder.")]
    e4e = json.loads((KEYS / "keys_e4e_encoder.json").read_text())["checkpoint"]["state_dict"]
    assert hairclip == list(g.state_dict())
    assert [k.removeprefix("decoder.") for k, _, _ in e4e["keys"] if k.startswith("decoder.")] == hairclip
    assert sum(p.numel() for p in g.parameters()) == e4e["decoder_param_count"]


def test_fir_kernels_are_the_normalised_outer_product_with_upsampling_gain():
    g = Generator(8, n_mlp=1)
    k = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64
    torch.testing.assert_close(g.convs[0].conv.blur.kernel, 4 * k)
    torch.testing.assert_close(g.to_rgbs[0].upsample.kernel, 4 * k)


def test_generator_renders_a_batch_at_its_size(g8):
    with torch.no_grad():
        img, lat = g8([torch.randn(2, 512)])
    assert img.shape == (2, 3, 8, 8) and lat is None
    assert torch.isfinite(img).all() and img.is_contiguous()


def test_fixed_noise_is_deterministic_and_random_noise_is_not(g8):
    z = [torch.randn(1, 512)]
    with torch.no_grad():
        a, _ = g8(z, randomize_noise=False)
        b, _ = g8(z, randomize_noise=False)
        c, _ = g8(z, randomize_noise=True)
        d, _ = g8(z, noise=[getattr(g8.noises, f"noise_{i}") for i in range(g8.num_layers)])
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3
    assert torch.equal(a, d)  # the buffers are the fixed noise


def test_w_plus_input_is_used_per_layer_and_returned(g8):
    w = torch.randn(2, 512)
    with torch.no_grad():
        a, _ = g8([w], input_is_latent=True, randomize_noise=False)
        b, lat = g8([w[:, None].repeat(1, g8.n_latent, 1)], input_is_latent=True, randomize_noise=False,
                     return_latents=True)
        wp = _w(g8)
        c, lat_c = g8([wp], input_is_latent=True, randomize_noise=False, return_latents=True)
        wp2 = wp.clone()
        wp2[:, -1] += 1  # only the last ToRGB style changes
        d, _ = g8([wp2], input_is_latent=True, randomize_noise=False)
    assert torch.equal(a, b) and torch.equal(lat, w[:, None].expand_as(lat))
    assert torch.equal(lat_c, wp)
    assert (c - d).abs().max() > 1e-4


def test_z_goes_through_the_mapping_network(g8):
    z = torch.randn(2, 512)
    with torch.no_grad():
        a, lat = g8([z], randomize_noise=False, return_latents=True)
        b, _ = g8([g8.style(z)], input_is_latent=True, randomize_noise=False)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(lat[:, 3], g8.style(z))


def test_style_mixing_switches_at_the_inject_index(g8):
    z1, z2 = torch.randn(2, 512), torch.randn(2, 512)
    with torch.no_grad():
        _, lat = g8([z1, z2], inject_index=2, randomize_noise=False, return_latents=True)
        _, rand = g8([z1, z2], randomize_noise=False, return_latents=True)
    w1, w2 = g8.style(z1), g8.style(z2)
    assert torch.equal(lat[:, :2], w1[:, None].expand(-1, 2, -1))
    assert torch.equal(lat[:, 2:], w2[:, None].expand(-1, g8.n_latent - 2, -1))
    assert torch.equal(rand[:, 0], w1) and torch.equal(rand[:, -1], w2)  # a random index is in [1, n_latent-1]


def test_truncation_zero_gives_the_truncation_image(g8):
    with torch.no_grad():
        mean = g8.mean_latent(64)
        a, _ = g8([torch.randn(2, 512)], truncation=0.0, truncation_latent=mean, randomize_noise=False)
        b, _ = g8([mean], input_is_latent=True, randomize_noise=False)
        z = torch.randn(1, 512)
        half, _ = g8([z], truncation=0.5, truncation_latent=mean, randomize_noise=False)
        lerp, _ = g8([0.5 * (g8.style(z) + mean)], input_is_latent=True, randomize_noise=False)
    assert mean.shape == (1, 512)
    torch.testing.assert_close(a, b.expand_as(a))
    torch.testing.assert_close(half, lerp)
    with pytest.raises(ValueError):
        g8([torch.randn(1, 512)], truncation=0.5)


def test_stop_at_returns_the_rgb_of_a_smaller_generator_with_the_same_weights():
    g16 = _small(16)
    w = _w(g16)
    with torch.no_grad():
        full, _ = g16([w], input_is_latent=True, randomize_noise=False)
        at16, _ = g16([w], input_is_latent=True, randomize_noise=False, stop_at=16)
        for res in (4, 8):
            small = Generator(res, n_mlp=2, width_div=4).eval()
            small.load_state_dict({k: v for k, v in g16.state_dict().items() if k in small.state_dict()})
            want, _ = small([w[:, :small.n_latent]], input_is_latent=True, randomize_noise=False)
            got, _ = g16([w], input_is_latent=True, randomize_noise=False, stop_at=res)
            assert got.shape == (2, 3, res, res)
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert torch.equal(full, at16)
    with pytest.raises(ValueError):
        g16.synthesis(w, stop_at=12)


@pytest.mark.parametrize("channels_last", [True, False])
def test_a_synthesis_continued_from_a_partial_one_is_the_full_synthesis_to_the_bit(channels_last):
    g = _small(64)
    g.channels_last = channels_last
    w = _w(g)
    with torch.no_grad():
        full = g.synthesis(w, randomize_noise=False)
        part = g.partial(w, randomize_noise=False, stop_at=16)
        at16 = g.synthesis(w, randomize_noise=False, stop_at=16)
        went_on = g.synthesis(w, randomize_noise=False, start=part)
        done = g.partial(w, randomize_noise=False, start=part)
    assert part.res == 16 and torch.equal(part.skip.contiguous(), at16)
    assert torch.equal(went_on, full)
    assert done.res == 64 and torch.equal(g.synthesis(w, randomize_noise=False, start=done), full)


def test_channels_last_synthesis_matches_contiguous(g8):
    w = _w(g8, batch=2)
    with torch.no_grad():
        g8.channels_last = True
        a = g8.synthesis(w, randomize_noise=False)
        g8.channels_last = False
        b = g8.synthesis(w, randomize_noise=False)
        g8.channels_last = None
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_fast_ops_match_the_reference_ops_end_to_end(g8):
    w = _w(g8)
    with torch.no_grad():
        fast = g8.synthesis(w, randomize_noise=False)
        with reference_ops():
            ref = g8.synthesis(w, randomize_noise=False)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)


def test_gradients_reach_the_latent_and_the_weights(g8):
    w = _w(g8, batch=2).requires_grad_()
    img, _ = g8([w], input_is_latent=True, randomize_noise=False)
    img.square().mean().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    assert g8.convs[0].conv.weight.grad.abs().sum() > 0
    g8.zero_grad(set_to_none=True)


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 0.15), (torch.float16, 0.02)])
def test_half_precision_generator_stays_in_dtype(dtype, tol):
    torch.manual_seed(0)
    g = Generator(8, n_mlp=2, width_div=4).eval()
    w = _w(g, batch=1)
    with torch.no_grad():
        want, _ = g([w], input_is_latent=True, randomize_noise=False)
        g = g.to(dtype)
        got, _ = g([w], input_is_latent=True, randomize_noise=False)  # an fp32 W+ is accepted
    assert got.dtype == dtype
    assert (got.float() - want).abs().max() <= tol * want.abs().max()


@pytest.mark.parametrize("kw", [dict(upsample=True), dict(downsample=True), dict()])
def test_modulated_conv_equals_the_unfused_formulation(kw):
    # conv(x * s, w) * d with d = 1/||w * s|| per output channel: the same maths with the style on the input.
    torch.manual_seed(0)
    m = ModulatedConv2d(6, 5, 3, 16, **kw)
    x, style = torch.randn(3, 6, 9, 9), torch.randn(3, 16)
    s = m.modulation(style)
    w = m.scale * m.weight[0]
    d = torch.rsqrt((w[None] * s[:, None, :, None, None]).square().sum((2, 3, 4)) + 1e-8)
    xs = x * s[:, :, None, None]
    if kw.get("upsample"):
        y = upfirdn2d_ref(F.conv_transpose2d(xs, w.transpose(0, 1), stride=2), m.blur.kernel, pad=m.blur.pad)
    elif kw.get("downsample"):
        y = F.conv2d(upfirdn2d_ref(xs, m.blur.kernel, pad=m.blur.pad), w, stride=2)
    else:
        y = F.conv2d(xs, w, padding=1)
    want = y * d[:, :, None, None]
    torch.testing.assert_close(m(x, style), want, rtol=1e-5, atol=1e-5)  # grouped over the batch
    torch.testing.assert_close(m(x[:1], style[:1]), want[:1], rtol=1e-5, atol=1e-5)  # one sample
    out = m(x.contiguous(memory_format=torch.channels_last), style)  # one conv per sample
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def test_sizes_follow_the_official_channel_table():
    with torch.device("meta"):
        g = Generator(2048, channel_multiplier=1)
        tiny = Generator(4)
    assert [g.channels[2**i] for i in range(2, 12)] == [512, 512, 512, 512, 256, 128, 64, 32, 16, 8]
    assert tiny.n_latent == 2 and tiny.num_layers == 1 and len(tiny.convs) == 0
    with pytest.raises(ValueError):
        Generator(48)


def test_width_div_narrows_feature_maps_but_keeps_w_and_the_image():
    g = Generator(64, n_mlp=1, width_div=16).eval()
    assert [g.channels[2**i] for i in range(2, 7)] == [32, 32, 32, 32, 32]
    assert g.convs[0].conv.modulation.weight.shape == (32, 512)
    with torch.no_grad():
        img, _ = g([_w(g)], input_is_latent=True, randomize_noise=False)
    assert img.shape == (2, 3, 64, 64) and g.n_latent == 10
