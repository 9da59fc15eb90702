"""Our networks and the aligned edit compute the official numbers.

tests/data/parity/*.pt hold what the official code (wty-ustc/HairCLIP, omertov/encoder4editing, openai/CLIP)
computed with deterministic weights (tests/data/make_parity.py made them; tests/parity.py rebuilds the weights).
Here the same weights load into our networks with strict key checks, in the official layouts at official
widths (only CLIP is tiny), and the outputs are compared. Nothing official is imported and nothing downloaded.

Tolerance: every float is compared at 1e-5 (relative and absolute). With one thread, as the data were made,
e4e, the parser, CLIP's embeddings (CLIP's own 77-position text pass, `encode_text_ref`; the product's pass
over the prompt's tokens only is 4e-7 from it), the mapping MLP and the generator on its reference ops
reproduce them bit for bit here; but a convolution's summation order depends on the thread count and the
CPU's kernels, so the stored numbers are not asserted bit for bit (2 threads: at most 7e-6 apart, on outputs
of up to 7). The hair mask is an argmax: it must be equal except where the hair logit ties the best other
class within 1e-5.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import parity
from hairclip.nets.e4e import Encoder4Editing
from hairclip.nets.mapper import TINY_CLIP, HairMapper, build_clip, tokenize
from hairclip.nets.ops import reference_ops
from hairclip.nets.parsenet import HAIR_LABEL, UNet
from hairclip.nets.stylegan2 import Generator
from hairclip.pipeline import parse
from hairclip.pipeline.edit import apply_offset, edit_offset
from hairclip.pipeline.invert import Inverter
from hairclip.pipeline.synthesize import synthesize

DATA = Path(__file__).parent / "data" / "parity"
TIGHT = dict(rtol=1e-5, atol=1e-5)
NEAR_TIE = 1e-5


def load(name: str) -> dict:
    return torch.load(DATA / f"{name}.pt", weights_only=True)


def rebuilt(make: Callable[[], torch.nn.Module], weights: dict, meta: bool = False) -> torch.nn.Module:
    """``make()`` with the official run's weights: same keys and shapes (strict), same values (probes).

    ``meta`` builds the network without initialising it (the big ones: their init costs seconds) and takes the
    loaded tensors as its own, so everything it computes with must be in the state dict.
    """
    sd = parity.make_state_dict(weights["spec"], parity.SEED, parity.RULES[weights["rule"]], weights["overrides"])
    probes = parity.probes(sd)
    changed = [k for k, p in weights["probes"].items() if not torch.equal(probes[k], p)]
    assert not changed, f"the rebuilt weights differ from the official run's ({changed[:3]}...): regenerate the data"
    with torch.device("meta") if meta else contextlib.nullcontext():
        net = make()
    net.load_state_dict(sd, strict=True, assign=meta)
    assert not any(t.is_meta for t in (*net.parameters(), *net.buffers()))
    return net.eval().requires_grad_(False)


def same_input(t: torch.Tensor, probe: torch.Tensor) -> torch.Tensor:
    assert torch.equal(t.flatten()[[0, -1]], probe), "the rebuilt input differs from the official run's"
    return t


@pytest.fixture(scope="module")
def mapper_case():
    data = load("mapper")
    return data, rebuilt(lambda: HairMapper(build_clip(config=TINY_CLIP)), data["weights"])


@pytest.fixture(scope="module")
def edit_case(mapper_case):
    data = load("edit")
    encoder = rebuilt(lambda: Encoder4Editing(50, "ir_se", 1024), data["e4e_weights"], meta=True)
    latent_avg = same_input(parity.input_tensor("latent_avg", (18, 512)), data["latent_avg_probe"])
    aligned = same_input(parity.input_image("aligned256", 256), data["aligned_probe"]).numpy()
    w = Inverter(encoder, latent_avg)(aligned)  # the pipeline's inversion stage, run once for all tests
    decoder = rebuilt(lambda: Generator(1024, 512, 8), data["decoder_weights"], meta=True)
    parser = rebuilt(UNet, load("parser")["weights"])
    return data, w, mapper_case[1], decoder, parser


def test_prompts_tokenize_to_the_official_ids(mapper_case):
    data, _ = mapper_case
    for prompt, ids in data["tokens"].items():
        assert torch.equal(tokenize(prompt), ids.long()), prompt


def test_mapper_with_text_matches_official(mapper_case):
    data, mapper = mapper_case
    w = same_input(parity.input_tensor("mapper.w", (2, 18, 512)), data["w_probe"])
    hs, col, absent = data["hairstyle_tokens"].long(), data["color_tokens"].long(), torch.zeros(2, 1)
    with torch.no_grad():
        torch.testing.assert_close(mapper.encode_text(hs), data["text_embedding"], **TIGHT)
        torch.testing.assert_close(mapper(w, hs, col, absent, absent), data["text"], **TIGHT)
        offset = mapper.edit_offset(w, mapper.encode_text(hs), mapper.encode_text(col))  # the pipeline's route
    torch.testing.assert_close(offset, data["text"], **TIGHT)


@pytest.mark.parametrize("which", ["hairstyle", "color"])
def test_mapper_with_an_image_matches_official(mapper_case, which):
    data, mapper = mapper_case
    w = same_input(parity.input_tensor("mapper.w", (2, 18, 512)), data["w_probe"])
    ref = same_input(parity.input_tensor("mapper.ref", (2, 3, 256, 256)), data["ref_probe"])
    absent = torch.zeros(2, 1)
    images = (ref, absent) if which == "hairstyle" else (absent, ref)
    with torch.no_grad():
        emb = mapper.encode_image(ref)
        torch.testing.assert_close(emb, data["image_embedding"], **TIGHT)
        torch.testing.assert_close(mapper(w, absent, absent, *images), data[f"{which}_image"], **TIGHT)
        # The other half is the official "cut" branch: no condition, no modulation.
        embs = (emb, None) if which == "hairstyle" else (None, emb)
        torch.testing.assert_close(mapper.edit_offset(w, *embs), data[f"{which}_image"], **TIGHT)


def test_generator_matches_official():
    data = load("generator")
    gen = rebuilt(lambda: Generator(8, 512, 2, channel_multiplier=2), data["weights"])
    probes = data["probes"]
    z = [same_input(parity.input_tensor(f"generator.z{i}", (2, 512)), probes[f"z{i}"]) for i in range(2)]
    trunc = same_input(parity.input_tensor("generator.truncation_latent", (1, 512)), probes["trunc"])
    wplus = same_input(parity.input_tensor("generator.wplus", (2, 4, 512)), probes["wplus"])

    def run():
        with torch.no_grad():
            image, latent = gen(z, return_latents=True, inject_index=2, truncation=0.7, truncation_latent=trunc,
                                randomize_noise=False)
            return image, latent, gen([wplus], input_is_latent=True, randomize_noise=False)[0]

    image, latent, image_w = run()  # the product's fast ops, channels-last
    torch.testing.assert_close(latent, data["latent_z"], **TIGHT)
    torch.testing.assert_close(image, data["image_z"], **TIGHT)
    torch.testing.assert_close(image_w, data["image_w"], **TIGHT)
    gen.channels_last = False
    with reference_ops():  # the plain ops, the official arithmetic
        image, _, image_w = run()
    torch.testing.assert_close(image, data["image_z"], **TIGHT)
    torch.testing.assert_close(image_w, data["image_w"], **TIGHT)


def test_parser_matches_official():
    data = load("parser")
    parser = rebuilt(UNet, data["weights"])
    x = same_input(parity.input_tensor("parser.x", (1, 3, 64, 64)), data["x_probe"])
    with torch.no_grad():
        torch.testing.assert_close(parser(x), data["logits"], **TIGHT)


def test_e4e_inversion_matches_official(edit_case):
    """predict.py's transform of a 256 px aligned face, e4e, then pSp's ``codes + latent_avg``."""
    data, w, *_ = edit_case
    torch.testing.assert_close(w, data["w"], **TIGHT)


def test_aligned_text_edit_matches_official(edit_case):
    """predict.py on an aligned face: w = e4e(x) + latent_avg, w_hat = w + 0.1 * mapper(w, text), and the
    decoder on w_hat with the stored noise, through the pipeline's own stages."""
    data, w, mapper, decoder, _ = edit_case
    offset = edit_offset(mapper, w, mapper.encode_text(tokenize("afro hairstyle")), None)
    w_hat = apply_offset(w, offset, strength=1.0)
    torch.testing.assert_close(w_hat, data["w_hat"], **TIGHT)
    image = synthesize(decoder, data["w_hat"])  # the official w_hat, so the decoder is checked on its own
    y, x = data["crop_at"]
    torch.testing.assert_close(image[:, :, y:y + 64, x:x + 64], data["image_crop"], **TIGHT)
    torch.testing.assert_close(F.avg_pool2d(image, 8), data["image_pool8"], **TIGHT)


def test_aligned_reference_edit_matches_official(edit_case):
    """inference.py's reference path: the 1024 reference times gen_hair_mask (parser at 512, label 13, back to
    1024), its CLIP embedding, and the edit with a colour text."""
    data, w, mapper, _, parser = edit_case
    reference = same_input(parity.input_image("reference1024", 1024), data["reference_probe"])
    ref = reference.permute(2, 0, 1).unsqueeze(0).float().div(255).sub(0.5).div(0.5)
    mask = parse.hair(parser, ref)
    official = torch.from_numpy(np.unpackbits(data["hair_mask_bits"].numpy()).reshape(mask.shape).astype(bool))
    assert 0.2 < official.float().mean() < 0.5  # a real mask, not all or nothing
    differ = mask != official
    if differ.any():  # only an argmax near-tie may go the other way
        with torch.no_grad():
            logits = parser(F.adaptive_avg_pool2d(ref, 512))
        others = torch.cat([logits[:, :HAIR_LABEL], logits[:, HAIR_LABEL + 1:]], 1).amax(1)
        margin = F.interpolate((logits[:, HAIR_LABEL] - others).abs()[:, None], scale_factor=2)[:, 0]
        assert margin[differ].max() < NEAR_TIE and differ.float().mean() < 1e-4, int(differ.sum())
    # Each later stage starts from the official input to it, so a flipped near-tie pixel cannot hide anything.
    emb = mapper.encode_image(ref * official.unsqueeze(1).float())
    torch.testing.assert_close(emb, data["reference_embedding"], **TIGHT)
    offset = edit_offset(mapper, w, emb, mapper.encode_text(tokenize("purple hair")))
    torch.testing.assert_close(apply_offset(w, offset), data["w_hat_reference"], **TIGHT)
