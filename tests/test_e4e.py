"""e4e encoder: official layout at full size, the w0 + deltas behaviour on a tiny copy of the same code."""

import json
from pathlib import Path

import pytest
import torch

from hairclip.nets.e4e import Encoder4Editing, upsample_add

KEYS = Path(__file__).parent / "data" / "keys" / "keys_e4e_encoder.json"
TINY = dict(units=(1, 1, 1, 1), width_div=4)


def _layout(module: torch.nn.Module) -> list[tuple[str, list[int], str]]:
    return [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in module.state_dict().items()]


@pytest.fixture(scope="module")
def ref() -> dict:
    return json.loads(KEYS.read_text())


@pytest.fixture(scope="module")
def full() -> Encoder4Editing:
    with torch.device("meta"):
        return Encoder4Editing(50, "ir_se", 1024)


@pytest.fixture(scope="module")
def tiny() -> Encoder4Editing:
    torch.manual_seed(0)
    net = Encoder4Editing(stylegan_size=256, **TINY).eval()
    with torch.no_grad():  # non-trivial BN statistics, so eval mode really uses them
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.fixture(scope="module")
def codes(tiny, x) -> torch.Tensor:
    with torch.no_grad():
        return tiny(x)


def test_full_size_state_dict_is_the_official_layout(full, ref):
    keys = ref["encoder"]["keys"]
    assert len(keys) == 621
    assert _layout(full) == [tuple(k) for k in keys]  # same keys, shapes, dtypes and order
    assert sum(p.numel() for p in full.parameters()) == ref["encoder"]["param_count"]


def test_checkpoint_encoder_keys_load_after_stripping_the_prefix(full, ref):
    ckpt = [k for k, _, _ in ref["checkpoint"]["state_dict"]["keys"] if k.startswith("encoder.")]
    assert [k.removeprefix("encoder.") for k in ckpt] == list(full.state_dict())


def test_full_size_defaults_are_the_official_inference_setup(full):
    assert full.n_styles == 18 and full.taps == [6, 20, 23]
    assert full.progressive_stage >= full.n_styles - 1  # all deltas active


def test_stylegan_256_has_14_styles_and_a_subset_of_the_keys(full):
    with torch.device("meta"):
        small = Encoder4Editing(stylegan_size=256)
    assert small.n_styles == 14
    assert set(small.state_dict()) == {k for k in full.state_dict()
                                       if not any(k.startswith(f"styles.{i}.") for i in range(14, 18))}


def test_full_size_forward_shape_on_meta(full):
    with torch.device("meta"):
        assert full(torch.zeros(2, 3, 256, 256)).shape == (2, 18, 512)


def test_tiny_forward_shape(codes):
    assert codes.shape == (1, 14, 128)


def test_eval_is_deterministic(tiny, x, codes):
    with torch.no_grad():
        assert torch.equal(tiny(x), codes)


@pytest.mark.parametrize("stage", [0, 2, 3, 6, 7, 10])
def test_reduced_stage_keeps_active_deltas_and_broadcasts_w0(tiny, x, codes, stage):
    full = codes
    with torch.no_grad():
        tiny.set_progressive_stage(stage)
        try:
            out = tiny(x)
        finally:
            tiny.set_progressive_stage(tiny.n_styles - 1)
    assert torch.equal(out[:, : stage + 1], full[:, : stage + 1])
    assert torch.equal(out[:, stage + 1:], full[:, :1].expand(-1, tiny.n_styles - stage - 1, -1))
    assert not torch.equal(out, full)


def test_inactive_style_blocks_get_no_gradient(x):
    torch.manual_seed(3)
    net = Encoder4Editing(stylegan_size=64, **TINY)  # 10 styles
    net.set_progressive_stage(4)
    out = net(x.expand(2, -1, -1, -1))
    assert out.shape == (2, 10, 128)
    out.square().sum().backward()
    assert all(net.styles[i].linear.weight.grad is not None for i in range(5))
    assert all(net.styles[i].linear.weight.grad is None for i in range(5, net.n_styles))
    assert net.latlayer2.weight.grad is None  # the fine FPN level is not even built


def test_upsample_add_aligns_corners():
    x = torch.arange(4.0).view(1, 1, 2, 2)
    up = upsample_add(x, torch.zeros(1, 1, 5, 5))
    assert torch.equal(up[0, 0, ::4, ::4], x[0, 0])
    assert up[0, 0, 2, 2] == x.mean()


def test_other_input_sizes_are_refused(tiny):
    with pytest.raises(ValueError), torch.no_grad():
        tiny(torch.zeros(1, 3, 128, 128))
