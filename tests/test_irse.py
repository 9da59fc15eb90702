"""IR-SE50 ArcFace backbone: official layout at full size, behaviour on a tiny copy of the same code."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hairclip.nets.irse import Backbone, BottleneckIR, block_specs, l2_norm, stage_ends

KEYS = Path(__file__).parent / "data" / "keys" / "keys_irse50.json"
TINY = dict(units=(1, 2, 1, 1), width_div=4)


def _layout(module: torch.nn.Module) -> list[tuple[str, list[int], str]]:
    return [(k, list(v.shape), str(v.dtype)) for k, v in module.state_dict().items()]


@pytest.fixture(scope="module")
def tiny() -> Backbone:
    torch.manual_seed(0)
    return Backbone(**TINY).eval()


def test_full_size_state_dict_is_the_official_layout():
    ref = json.loads(KEYS.read_text())
    with torch.device("meta"):
        net = Backbone(112, 50, "ir_se", drop_ratio=0.6)
    assert len(ref) == 397
    assert _layout(net) == [(k, shape, dtype) for k, shape, dtype in ref]  # same keys, shapes and order


def test_full_size_forward_shape_on_meta():
    with torch.device("meta"):
        net = Backbone()
        assert net.eval()(torch.zeros(2, 3, 112, 112)).shape == (2, 512)


def test_plain_ir_mode_drops_only_the_se_weights():
    ref = {k for k, _, _ in json.loads(KEYS.read_text())}
    with torch.device("meta"):
        net = Backbone(mode="ir")
    assert set(net.state_dict()) == {k for k in ref if ".res_layer.5." not in k}


def test_block_table_matches_the_ir50_stages():
    specs = block_specs(50)
    assert [s for _, _, s in specs] == [2, 1, 1, 2, 1, 1, 1, 2] + [1] * 13 + [2, 1, 1]
    assert specs[3] == (64, 128, 2) and specs[7] == (128, 256, 2) and specs[21] == (256, 512, 2)
    assert len(block_specs(100)) == 49 and len(block_specs(152)) == 50
    assert stage_ends(50) == [2, 6, 20, 23]


@pytest.mark.parametrize("bad", [dict(num_layers=34), dict(mode="se"), dict(width_div=8),
                                 dict(units=(1, 1, 1)), dict(input_size=96)])
def test_invalid_configurations_are_refused(bad):
    with pytest.raises(ValueError), torch.device("meta"):
        Backbone(**bad)


def test_identity_shortcut_is_the_strided_max_pool_of_the_official():
    torch.manual_seed(1)
    unit = BottleneckIR(16, 16, 2, se=True).eval()
    x = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        assert torch.equal(unit(x), unit.res_layer(x) + F.max_pool2d(x, 1, 2))


@pytest.mark.parametrize("size", [112, 224])
def test_tiny_embedding_is_unit_norm(size):
    torch.manual_seed(2)
    net = Backbone(size, **TINY).eval()
    with torch.no_grad():
        emb = net(torch.rand(3, 3, size, size) * 2 - 1)
    assert emb.shape == (3, 512 // TINY["width_div"])
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))


def test_eval_is_deterministic_and_ignores_dropout(tiny):
    no_drop = Backbone(drop_ratio=0.0, **TINY).eval()
    no_drop.load_state_dict(tiny.state_dict())
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        a, b = tiny(x), tiny(x)
        assert torch.equal(a, b)
        assert torch.equal(a, no_drop(x))


def test_l2_norm_is_plain_division():
    x = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    assert torch.equal(l2_norm(x), torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
