"""Regenerate tests/data/parity/*.pt by running the OFFICIAL code on deterministic weights and inputs.

    python tests/data/make_parity.py --official DIR

DIR holds plain exports of the official repositories (``git archive HEAD``, no weights, nothing compiled):
``DIR/HairCLIP`` (wty-ustc/HairCLIP), ``DIR/encoder4editing`` (omertov/encoder4editing) and ``DIR/CLIP``
(openai/CLIP); ``$HAIRCLIP_OFFICIAL`` may name DIR instead. This script never imports the hairclip package:
the numbers come from the official classes alone. tests/test_parity.py then loads the same weights into our
networks (strict keys) and compares; it needs neither these sources nor any download.

Weights and float inputs are not stored: tests/parity.py rebuilds each tensor as a pure function of
(seed, name, shape), and the files keep the official state-dict layout (keys, shapes, dtypes), a probe of each
tensor, the few stored overrides, the integer inputs (CLIP tokens) and the official outputs.

The generator is HairCLIP's own copy of rosinality's StyleGAN2 (``models/stylegan2``, with its pure-PyTorch ops),
since that is what HairCLIP runs; rosinality/stylegan2-pytorch itself is not needed. The data are made with one
thread (``torch.set_num_threads(1)``) so that they do not depend on how a reduction was split.

What had to change for the official code to run here, on the CPU and without its weight files (nothing else):
- encoder4editing's ``models/stylegan2/op`` JIT-compiles CUDA kernels at import. ``torch.utils.cpp_extension.load``
  is replaced by a stub while it is imported; the stub's kernels raise if called. e4e's encoder calls none of
  them (its EqualLinear has no activation, so it is a plain ``F.linear``).
- HairCLIP's own ``models/stylegan2/op`` is pure PyTorch, but ``fused_leaky_relu`` does ``input = input.cuda()``
  and the mapper's absent-condition branch does ``torch.ones(...).cuda()``. While HairCLIP's code runs,
  ``torch.Tensor.cuda`` returns the tensor unchanged (a device move, no arithmetic).
- ``HairMapper.__init__`` calls ``clip.load("ViT-B/32", device="cuda")``, which downloads 338 MB. ``clip.load``
  is replaced by one returning the official ``clip.model.CLIP(**TINY_CLIP)`` in float32 (what ``clip.load``
  gives on the CPU), so the mapper's CLIP is the official class at a tiny size (embed_dim stays 512).
- ``pSp`` (e4e's wrapper) and ``HairCLIPMapper`` load checkpoint files in their constructors, so their forward
  recipes are spelled out here instead, line for line: ``codes = encoder(x) + latent_avg.repeat(B, 1, 1)``,
  ``w_hat = w + 0.1 * mapper(w, ...)``, ``decoder([w_hat], input_is_latent=True, randomize_noise=False,
  truncation=1)``. The parser's hair mask is the official ``AvgLabLoss.gen_hair_mask``, built from a
  temporary ``parsenet_weights`` file holding the generated weights.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from argparse import Namespace
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.cpp_extension

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import parity  # noqa: E402  (tests/parity.py)

SEED = parity.SEED
OUT = Path(__file__).resolve().parent / "parity"
TINY_CLIP = dict(embed_dim=512, image_resolution=224, vision_layers=1, vision_width=64, vision_patch_size=32,
                 context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=1)


@contextlib.contextmanager
def official(root: Path) -> Iterator[None]:
    """Import from one official repository, then forget its modules (HairCLIP and e4e both have ``models``)."""
    before = set(sys.modules)
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        sys.path.remove(str(root))
        def from_root(m) -> bool:
            paths = [getattr(m, "__file__", None) or "", *list(getattr(m, "__path__", None) or [])]
            return any(str(p).startswith(str(root)) for p in paths)

        for name in [n for n in set(sys.modules) - before if from_root(sys.modules[n])]:
            del sys.modules[name]


@contextlib.contextmanager
def patched(obj, name: str, value) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


class _NoExtension:
    """Stands in for a JIT-compiled CUDA extension; any kernel call fails loudly."""

    def __getattr__(self, name: str):
        raise RuntimeError(f"the CUDA extension kernel {name!r} was called; the parity run must not need it")


def build(net: torch.nn.Module, rule: str, overrides: dict[str, torch.Tensor] | None = None) -> dict:
    """Load the generated weights into an official network (strict) and describe them for the data file."""
    spec = parity.spec_of(net.state_dict())
    sd = parity.make_state_dict(spec, SEED, parity.RULES[rule], overrides)
    net.load_state_dict(sd, strict=True)
    net.eval().requires_grad_(False)
    return {"spec": spec, "rule": rule, "probes": parity.probes(sd), "overrides": overrides or {}}


def run_e4e(root: Path) -> dict:
    with patched(torch.utils.cpp_extension, "load", lambda *a, **k: _NoExtension()), official(root):
        from models.encoders.psp_encoders import Encoder4Editing
        from torchvision import transforms

        enc = Encoder4Editing(50, "ir_se", Namespace(stylegan_size=1024))
        weights = build(enc, "e4e")
        latent_avg = parity.input_tensor("latent_avg", (18, 512))
        aligned = parity.input_image("aligned256", 256)
        # predict.py's transform; the input is already 256 px, so Resize must give the same pixels back.
        from PIL import Image

        pil = Image.fromarray(aligned.numpy())
        assert np.array_equal(np.asarray(transforms.Resize((256, 256))(pil)), aligned.numpy())
        x = transforms.Compose([transforms.Resize((256, 256)), transforms.ToTensor(),
                                transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])])(pil).unsqueeze(0)
        with torch.no_grad():
            codes = enc(x)
            w = codes + latent_avg.repeat(codes.shape[0], 1, 1)  # pSp.forward, start_from_latent_avg
    return {"e4e_weights": weights, "latent_avg_probe": latent_avg.flatten()[[0, -1]],
            "aligned_probe": aligned.flatten()[[0, -1]], "w": w}


def run_hairclip(root: Path, w: torch.Tensor) -> dict[str, dict]:
    import clip
    from clip.model import CLIP

    tiny = CLIP(**TINY_CLIP).float().eval()
    no_move = lambda self, *a, **k: self  # noqa: E731
    with patched(clip, "load", lambda *a, **k: (tiny, None)), patched(torch.Tensor, "cuda", no_move), official(root):
        from criteria.parse_related_loss.average_lab_color_loss import AvgLabLoss
        from criteria.parse_related_loss.unet import unet
        from mapper.latent_mappers import HairMapper
        from models.stylegan2.model import Generator

        out: dict[str, dict] = {}
        tokens = {p: clip.tokenize(p) for p in ("afro hairstyle", "bob cut hairstyle", "purple hair", "red hair")}
        absent = torch.Tensor([0]).unsqueeze(0)  # the dataset's [1, 1] "no condition", after batching

        # The mapper, with text and with images (hairstyle only, colour only: the official "cut" branches too).
        mapper = HairMapper(Namespace(no_coarse_mapper=False, no_medium_mapper=False, no_fine_mapper=False))
        weights = build(mapper, "default")
        wb = parity.input_tensor("mapper.w", (2, 18, 512))
        hs_text = torch.cat([tokens["afro hairstyle"], tokens["bob cut hairstyle"]])
        col_text = torch.cat([tokens["purple hair"], tokens["red hair"]])
        ref = parity.input_tensor("mapper.ref", (2, 3, 256, 256))
        absent2 = torch.zeros(2, 1)
        with torch.no_grad():
            out["mapper"] = {
                "weights": weights, "w_probe": wb.flatten()[[0, -1]], "ref_probe": ref.flatten()[[0, -1]],
                "tokens": tokens, "hairstyle_tokens": hs_text, "color_tokens": col_text,
                "text": mapper(wb, hs_text, col_text, absent2, absent2),
                "hairstyle_image": mapper(wb, absent2, absent2, ref, absent2),
                "color_image": mapper(wb, absent2, absent2, absent2, ref),
                "image_embedding": mapper.gen_image_embedding(ref, mapper.clip_model, None),
                "text_embedding": mapper.clip_model.encode_text(hs_text),
            }

        # The generator as a GAN: z through the mapping MLP, two styles mixed, truncated, stored noise. 8 px
        # keeps it cheap; the 1024 px decoder of the edit below runs every resolution.
        gen = Generator(8, 512, 2, channel_multiplier=2)
        weights = build(gen, "stylegan")
        z = [parity.input_tensor(f"generator.z{i}", (2, 512)) for i in range(2)]
        trunc = parity.input_tensor("generator.truncation_latent", (1, 512))
        wplus = parity.input_tensor("generator.wplus", (2, gen.n_latent, 512))
        with torch.no_grad():
            image, latent = gen(z, return_latents=True, inject_index=2, truncation=0.7, truncation_latent=trunc,
                                randomize_noise=False)
            image_w, _ = gen([wplus], input_is_latent=True, randomize_noise=False)
        inputs = {"z0": z[0], "z1": z[1], "trunc": trunc, "wplus": wplus}
        out["generator"] = {"weights": weights, "probes": {n: t.flatten()[[0, -1]] for n, t in inputs.items()},
                            "image_z": image, "latent_z": latent, "image_w": image_w}

        # The parser (parsenet.pth is unet() with its defaults: feature_scale 4). Its hair logit is offset so
        # that about a third of the reference below is hair; the offset is stored as an override.
        parser = unet()
        weights = build(parser, "default")
        reference = parity.input_image("reference1024", 1024)
        ref_t = (reference.permute(2, 0, 1).float() / 255 - 0.5).div(0.5).unsqueeze(0)  # ToTensor, Normalize
        with torch.no_grad():
            logits = parser(F.adaptive_avg_pool2d(ref_t, 512))
            others = torch.cat([logits[:, :13], logits[:, 14:]], 1).amax(1)
            bias = parser.final.bias.detach().clone()
            bias[13] += torch.quantile((others - logits[:, 13]).flatten(), 0.35)
        weights = build(parser, "default", {"final.bias": bias})
        x = parity.input_tensor("parser.x", (1, 3, 64, 64))
        with torch.no_grad():
            out["parser"] = {"weights": weights, "x_probe": x.flatten()[[0, -1]], "logits": parser(x)}

        # The full aligned edit (scripts/inference.py run_on_batch) on e4e's w, with hairstyle text, no colour,
        # through the official decoder: Generator(1024, 512, 8), as HairCLIPMapper builds it.
        decoder = Generator(1024, 512, 8)
        dweights = build(decoder, "stylegan")
        with torch.no_grad():
            w_hat = w + 0.1 * mapper(w, tokens["afro hairstyle"], absent, absent, absent)
            x_hat, w_hat_out = decoder([w_hat], input_is_latent=True, return_latents=True, randomize_noise=False,
                                       truncation=1)
        assert torch.equal(w_hat_out, w_hat)
        edit = {"decoder_weights": dweights, "w_hat": w_hat, "image_pool8": F.avg_pool2d(x_hat, 8),
                "image_crop": x_hat[:, :, 448:512, 480:544].clone(), "crop_at": (448, 480)}

        # The reference path (inference.py): the 1024 reference masked by gen_hair_mask, colour by text.
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(parser.state_dict(), Path(tmp) / "parsenet.pth")
            avg_lab = AvgLabLoss(Namespace(parsenet_weights=str(Path(tmp) / "parsenet.pth"))).eval()
        with torch.no_grad():
            mask = avg_lab.gen_hair_mask(ref_t)
            masked = ref_t * mask
            w_hat_ref = w + 0.1 * mapper(w, absent, tokens["purple hair"], masked, absent)
            ref_embedding = mapper.gen_image_embedding(masked, mapper.clip_model, None)
        edit.update({"reference_probe": reference.flatten()[[0, -1]], "hair_mask_bits": torch.from_numpy(
            np.packbits(mask.flatten().numpy() > 0.5)), "hair_fraction": mask.mean(), "reference_embedding":
            ref_embedding, "w_hat_reference": w_hat_ref})
        out["edit"] = edit
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", type=Path, default=os.environ.get("HAIRCLIP_OFFICIAL"),
                    help="folder with HairCLIP/, encoder4editing/ and CLIP/ (default: $HAIRCLIP_OFFICIAL)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.official is None:
        ap.error("give --official DIR or set HAIRCLIP_OFFICIAL")
    root = args.official.resolve()
    for sub in ("HairCLIP", "encoder4editing", "CLIP"):
        if not (root / sub).is_dir():
            ap.error(f"{root / sub} is missing")
    torch.set_num_threads(1)  # the numbers must not depend on how a reduction is split across threads
    sys.path.insert(0, str(root / "CLIP"))
    import clip

    assert Path(clip.__file__).resolve().is_relative_to(root / "CLIP"), clip.__file__

    e4e = run_e4e(root / "encoder4editing")
    results = run_hairclip(root / "HairCLIP", e4e["w"])
    results["edit"].update(e4e)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in results.items():
        torch.save(data, args.out / f"{name}.pt")
        print(f"{name}.pt: {(args.out / f'{name}.pt').stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
