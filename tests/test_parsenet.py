import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hairclip.nets.parsenet import HAIR_LABEL, PARSE_SIZE, UNet, hair_mask, parse

KEYS = Path(__file__).parent / "data" / "keys"


@pytest.fixture(scope="module")
def parser() -> UNet:
    """A narrow parser (widths 4..64) so that parsing at 512 stays fast; the layout test covers the real one."""
    torch.manual_seed(0)
    net = UNet(feature_scale=16)
    with torch.no_grad():  # non-trivial BatchNorm statistics, as a trained checkpoint has
        for name, buf in net.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    return net.eval()


def _image(size: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _hair_where(parser: UNet, img: torch.Tensor, fraction: float) -> UNet:
    """A copy whose hair logit is shifted so that roughly `fraction` of the parsed pixels become hair."""
    parser = copy.deepcopy(parser)
    with torch.no_grad():
        logits = parser(F.adaptive_avg_pool2d(img, PARSE_SIZE))
        gap = logits.max(1).values - logits[:, HAIR_LABEL]
        parser.final.bias[HAIR_LABEL] += gap.flatten().quantile(fraction)
    return parser


def test_state_dict_matches_the_official_parsenet_layout():
    path = KEYS / "keys_parsenet_unet.json"
    with torch.device("meta"):
        net = UNet()
    got = [[k, list(v.shape), str(v.dtype)] for k, v in net.state_dict().items()]
    assert got == json.loads(path.read_text())


def test_without_batchnorm_only_the_convolutions_remain():
    with torch.device("meta"):
        keys = list(UNet(is_batchnorm=False).state_dict())
    assert "conv1.conv1.0.weight" in keys and not any(".1." in k for k in keys)


def test_bilinear_variant_is_refused():
    with pytest.raises(ValueError):
        UNet(is_deconv=False)


def test_forward_gives_class_logits_at_the_input_resolution():
    with torch.no_grad():
        out = UNet().eval()(_image(64))
    assert out.shape == (1, 19, 64, 64) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_parse_runs_at_512_unless_told_otherwise(parser):
    img = _image(128)
    with torch.no_grad():
        as_is = parser(img).argmax(1)
        at_512 = parser(F.adaptive_avg_pool2d(img, 512)).argmax(1)
    labels = parse(parser, img, size=None)
    assert labels.shape == (1, 128, 128) and labels.dtype == torch.int64
    assert torch.equal(labels, as_is)
    assert torch.equal(parse(parser, img), at_512)


def test_hair_mask_is_label_13_at_512_brought_back_to_1024(parser):
    img = _image(1024, seed=2)
    parser = _hair_where(parser, img, 0.5)
    mask = hair_mask(parser, img)
    assert mask.shape == (1, 1, 1024, 1024) and mask.dtype == img.dtype
    labels = parse(parser, img)
    nearest = (labels == HAIR_LABEL).float().repeat_interleave(2, 1).repeat_interleave(2, 2).unsqueeze(1)
    assert torch.equal(mask, nearest)  # 512 -> 1024 area resize is exact 2x2 replication, so 0/1 only
    assert 0.3 < mask.mean() < 0.7


def test_hair_mask_at_other_sizes_follows_the_input(parser):
    img = _image(768, seed=3)
    mask = hair_mask(_hair_where(parser, img, 0.5), img)
    assert mask.shape == (1, 1, 768, 768) and mask.min() >= 0 and mask.max() <= 1


def test_eval_parsing_is_deterministic(parser):
    img = _image(128, seed=4)
    assert torch.equal(parse(parser, img, size=None), parse(parser, img, size=None))


def test_on_the_cpu_the_parser_runs_channels_last_with_the_same_logits_and_labels(parser):
    """The CPU's faster layout (`hairclip bench models`: parser against parser-plain-layout) is a summation
    order, not an approximation: the logits agree to float rounding and the labels exactly."""
    img = F.adaptive_avg_pool2d(_image(256, seed=5), PARSE_SIZE)
    seen = []
    hook = parser.conv1.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous()))
    try:
        with torch.no_grad():
            fast = parser(img)
            parser.channels_last = False
            plain = parser(img)
    finally:
        parser.channels_last = None
        hook.remove()
    assert seen == [False, True]  # channels-last by default on the CPU, the plain layout when told
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    assert torch.equal(fast.argmax(1), plain.argmax(1))
