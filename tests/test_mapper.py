import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from hairclip.nets import mapper as M
from hairclip.nets.stylegan2 import PixelNorm

KEYS = Path(__file__).parent / "data" / "keys"


def _ref(name: str) -> list:
    return json.loads((KEYS / name).read_text())


@pytest.fixture(scope="module")
def mapper() -> M.HairMapper:
    torch.manual_seed(0)
    net = M.HairMapper(M.build_clip(config=M.TINY_CLIP)).eval()
    with torch.no_grad():  # move LayerNorm affines and biases off their identity init so every term matters
        for name, p in net.named_parameters():
            if not name.startswith("clip_model."):
                p.add_(0.1 * torch.randn_like(p))
    return net


@pytest.fixture(scope="module")
def w() -> torch.Tensor:
    return torch.randn(2, 18, 512, generator=torch.Generator().manual_seed(1))


def _image(b: int = 2, size: int = 256, seed: int = 2) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_state_dict_matches_the_official_checkpoint_layout():
    with torch.device("meta"):
        net = M.HairMapper(M.build_clip())
    got = [[k, list(v.shape), str(v.dtype)] for k, v in net.state_dict().items()]
    ref = _ref("keys_mapper.json")
    assert got == ref
    assert sum(k.startswith("clip_model.") for k, _, _ in got) == 302


def test_build_clip_infers_vit_b32_from_the_checkpoint_shapes():
    ref = _ref("keys_mapper.json")
    with torch.device("meta"):
        sd = {"mapper." + k: torch.empty(shape) for k, shape, _ in ref}
        model = M.build_clip(sd, prefix="mapper.clip_model.")
    assert M.clip_config({k[len("mapper.clip_model."):]: v for k, v in sd.items() if ".clip_model." in k}) == M.VIT_B32
    got = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert got == [(k[len("clip_model."):], s) for k, s, _ in ref if k.startswith("clip_model.")]
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_build_clip_round_trips_the_tiny_config(mapper):
    assert M.clip_config(mapper.clip_model.state_dict()) == M.TINY_CLIP
    with pytest.raises(ValueError):
        M.build_clip(mapper.clip_model.state_dict(), config=M.TINY_CLIP)


def test_prompts_follow_the_training_templates():
    lines = (Path(M.__file__).parents[1] / "data" / "hairstyles.txt").read_text().splitlines()
    assert len(M.HAIRSTYLES) == 44 and len(set(M.HAIRSTYLES)) == 44
    assert [M.hairstyle_prompt(n) for n in M.HAIRSTYLES] == lines
    assert "short hair" in M.HAIRSTYLES and M.hairstyle_prompt("short hair") == "short hair hairstyle"
    assert M.hairstyle_prompt("afro") == "afro hairstyle" and M.colour_prompt("purple") == "purple hair"
    assert len(M.COLOURS) == 12 and {"blond", "gray", "pink"} <= set(M.COLOURS)


def test_tokens_match_the_official_ids():
    tokens = M.tokenize([M.hairstyle_prompt("afro"), M.colour_prompt("purple")])
    assert tokens.shape == (2, 77) and tokens.dtype == torch.int64
    assert tokens[0, :5].tolist() == [49406, 21795, 22324, 49407, 0]
    assert tokens[1, :5].tolist() == [49406, 5496, 2225, 49407, 0]
    assert not tokens[:, 4:].any()


def test_offset_has_the_shape_of_w_plus(mapper, w):
    emb = mapper.encode_text(M.tokenize(["afro hairstyle", "bob cut hairstyle"]))
    assert emb.shape == (2, 512) and emb.dtype == torch.float32
    out = mapper.edit_offset(w, emb, emb)
    assert out.shape == (2, 18, 512) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_no_condition_is_the_plain_normalised_linear_path(mapper, w):
    """With the cut flag set, each module is fc + LayerNorm over (layers, channels), no FiLM, no activation."""
    expected = []
    for sub, x in ((mapper.course_mapping, w[:, :4]), (mapper.medium_mapping, w[:, 4:8]),
                   (mapper.fine_mapping, w[:, 8:])):
        x = x / torch.sqrt((x**2).mean(dim=1, keepdim=True) + 1e-8)
        for mod in sub.modulation_module_list:
            x = F.layer_norm(x @ mod.fc.weight.T + mod.fc.bias, x.shape[1:])
        expected.append(x)
    with torch.no_grad():
        torch.testing.assert_close(mapper.edit_offset(w, None, None), torch.cat(expected, 1))


def test_each_condition_drives_only_its_own_layers(mapper, w):
    h1, h2, c1, c2 = torch.randn(4, 1, 512, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        cut = mapper.edit_offset(w, None, None)
        a, b = mapper.edit_offset(w, h1, c1), mapper.edit_offset(w, h2, c1)
        c = mapper.edit_offset(w, h1, c2)
        hair_only, color_only = mapper.edit_offset(w, h1, None), mapper.edit_offset(w, None, c1)
    torch.testing.assert_close(a[:, 8:], b[:, 8:], rtol=0, atol=0)  # fine layers: colour only
    torch.testing.assert_close(a[:, :8], c[:, :8], rtol=0, atol=0)  # coarse + medium: hairstyle only
    assert (a[:, :8] - b[:, :8]).abs().max() > 1e-2 and (a[:, 8:] - c[:, 8:]).abs().max() > 1e-2
    torch.testing.assert_close(hair_only[:, 8:], cut[:, 8:], rtol=0, atol=0)
    torch.testing.assert_close(color_only[:, :8], cut[:, :8], rtol=0, atol=0)
    torch.testing.assert_close(hair_only[:, :8], a[:, :8], rtol=0, atol=0)


def test_pixelnorm_normalises_over_the_layer_axis(mapper, w):
    x = w[:, :4]
    torch.testing.assert_close(PixelNorm()(x), x / x.pow(2).mean(dim=1, keepdim=True).add(1e-8).sqrt())
    emb = torch.randn(2, 512, generator=torch.Generator().manual_seed(4))
    per_channel = torch.rand(1, 1, 512, generator=torch.Generator().manual_seed(5)) * 3 + 0.5
    per_layer = torch.linspace(0.5, 3.0, 18).view(1, 18, 1)
    with torch.no_grad():
        ref = mapper.edit_offset(w, emb, emb)
        torch.testing.assert_close(mapper.edit_offset(w * per_channel, emb, emb), ref, rtol=1e-4, atol=1e-4)
        assert (mapper.edit_offset(w * per_layer, emb, emb) - ref).abs().max() > 1e-2


def test_one_cached_embedding_serves_a_whole_batch(mapper, w):
    emb = torch.randn(1, 512, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(mapper.edit_offset(w, emb, emb), mapper.edit_offset(w, emb.expand(2, -1),
                                                                                       emb.expand(2, -1)))


def test_encode_image_is_the_official_preprocessing(mapper):
    img = _image()
    x = F.adaptive_avg_pool2d(img, (224, 224)) * 0.5 + 0.5
    direct = mapper.clip_model.encode_image(TF.normalize(x, M.CLIP_MEAN, M.CLIP_STD))
    torch.testing.assert_close(mapper.encode_image(img), direct.detach(), rtol=0, atol=0)


ABSENT = torch.zeros(2, 1)


@pytest.mark.parametrize("hair_text, color_text, hair_img, color_img", [
    (False, False, False, False), (True, False, False, False), (False, True, False, False),
    (True, True, False, False), (False, False, True, True), (True, False, False, True),
    (True, True, True, True),  # text wins over an image given alongside it
])
def test_official_forward_equals_edit_offset_of_the_encodings(mapper, w, hair_text, color_text, hair_img,
                                                              color_img):
    ht, ct = M.tokenize(["afro hairstyle", "mohawk hairstyle"]), M.tokenize(["purple hair", "red hair"])
    hi, ci = _image(seed=7), _image(seed=8)
    args = (ht if hair_text else ABSENT, ct if color_text else ABSENT, hi if hair_img else ABSENT,
            ci if color_img else ABSENT)
    h = mapper.encode_text(ht) if hair_text else mapper.encode_image(hi) if hair_img else None
    c = mapper.encode_text(ct) if color_text else mapper.encode_image(ci) if color_img else None
    with torch.no_grad():
        torch.testing.assert_close(mapper(w, *args), mapper.edit_offset(w, h, c), rtol=0, atol=0)


def test_disabled_sub_mapper_gives_zero_offset_and_has_no_weights(mapper, w):
    net = M.HairMapper(mapper.clip_model, use_medium=False)
    assert not any(k.startswith("medium_mapping.") for k in net.state_dict())
    with torch.no_grad():
        out = net.edit_offset(w, torch.ones(2, 512), None)
    assert not out[:, 4:8].any() and out[:, :4].any()


def test_fp16_checkpoint_loads_into_the_float32_mapper(mapper, w):
    half = copy.deepcopy(mapper)
    M.clip.model.convert_weights(half.clip_model)  # what the published hairclip.pt went through
    sd = half.state_dict()
    assert sd["clip_model.text_projection"].dtype == torch.float16
    assert sd["clip_model.ln_final.weight"].dtype == torch.float32
    torch.manual_seed(9)
    fresh = M.HairMapper(M.build_clip(config=M.TINY_CLIP)).eval()
    fresh.load_state_dict(sd)
    assert all(p.dtype == torch.float32 for p in fresh.state_dict().values() if p.is_floating_point())
    for k, v in sd.items():
        torch.testing.assert_close(fresh.state_dict()[k], v.float(), rtol=0, atol=0)
    tokens = M.tokenize("afro hairstyle")
    with torch.no_grad():
        # fp32 maths on fp16-rounded weights stays close to the fp16-free original
        torch.testing.assert_close(fresh.encode_text(tokens), mapper.encode_text(tokens), rtol=0.02, atol=0.02)


def test_embeddings_reach_the_sub_mappers_as_float32_when_clip_runs_in_fp16(mapper, w):
    half = copy.deepcopy(mapper)
    M.clip.model.convert_weights(half.clip_model)
    tokens = M.tokenize(["afro hairstyle", "bob cut hairstyle"])
    emb = half.encode_text(tokens)
    assert emb.dtype == torch.float32
    with torch.no_grad():
        out = half(w, tokens, ABSENT, ABSENT, ABSENT)
        torch.testing.assert_close(out, half.edit_offset(w, emb, None), rtol=0, atol=0)
        torch.testing.assert_close(out, mapper(w, tokens, ABSENT, ABSENT, ABSENT), rtol=0.05, atol=0.05)


def test_eval_forward_is_deterministic(mapper, w):
    tokens = M.tokenize(["afro hairstyle", "bob cut hairstyle"])
    with torch.no_grad():
        a = mapper(w, tokens, ABSENT, ABSENT, _image())
        b = mapper(w, tokens, ABSENT, ABSENT, _image())
    assert torch.equal(a, b)


def test_text_is_encoded_over_its_own_tokens_only_and_equals_clips_77_position_pass(mapper):
    """CLIP's causal mask: the end-of-text embedding never sees the padding, so encode_text runs only up to the
    longest prompt's end-of-text token; it must agree with CLIP's own pass (encode_text_ref) to float rounding,
    prompts of different lengths in one batch included."""
    tokens = M.tokenize(["afro hairstyle", "purple hair", "a long braided hairstyle with curls on the left side"])
    seen = []
    hook = mapper.clip_model.token_embedding.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    try:
        fast, ref = mapper.encode_text(tokens), mapper.encode_text_ref(tokens)
        previous = M.use_reference_text(True)
        try:
            switched = mapper.encode_text(tokens)
        finally:
            M.use_reference_text(previous)
    finally:
        hook.remove()
    assert seen == [int(tokens.argmax(-1).max()) + 1, 77, 77] and seen[0] < 20
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(switched, ref)


def test_the_short_text_pass_follows_the_gpu_plans_clip_dtypes(mapper):
    from hairclip.precision import PLANS

    half = copy.deepcopy(mapper)
    PLANS["gpu"].apply_clip(half.clip_model)  # forced on the CPU, as CI has no GPU
    tokens = M.tokenize(["bob cut hairstyle"])
    fast, ref = half.encode_text(tokens), half.encode_text_ref(tokens)
    assert fast.dtype == ref.dtype == torch.float32
    torch.testing.assert_close(fast, ref, rtol=1e-2, atol=1e-2)
