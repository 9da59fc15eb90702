"""HairCLIP's latent mapper: W+ offsets conditioned on CLIP embeddings of text or reference images.

State-dict layout of the official ``HairMapper`` (the ``mapper.*`` keys of ``hairclip.pt``): CLIP ViT-B/32 under
``clip_model.*``, then three sub-mappers. Coarse (w[:, :4]) and medium (w[:, 4:8]) layers follow the hairstyle
condition, fine layers (w[:, 8:]) the colour condition.
"""

from __future__ import annotations

import importlib.resources
import warnings
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hairclip.nets.stylegan2 import PixelNorm

with warnings.catch_warnings():  # the clip package imports pkg_resources, which warns on recent setuptools
    warnings.simplefilter("ignore", UserWarning)
    import clip
    from clip.model import CLIP

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
EDIT_SCALE = 0.1  # w_hat = w + EDIT_SCALE * mapper(w, ...), as in training and inference

# The 12 colours of the training set.
COLOURS = ("purple", "red", "orange", "yellow", "green", "blue", "gray", "brown", "black", "white", "blond", "pink")
_SUFFIX = " hairstyle"
HAIRSTYLE_PROMPTS: tuple[str, ...] = tuple(
    importlib.resources.files("hairclip").joinpath("data/hairstyles.txt").read_text().splitlines()
)
HAIRSTYLES: tuple[str, ...] = tuple(p.removesuffix(_SUFFIX) for p in HAIRSTYLE_PROMPTS)

# CLIP constructor arguments. TINY_CLIP keeps embed_dim=512 (the sub-mappers are 512 wide) and the real
# tokenizer's vocabulary and context, and the 224 px input that HairCLIP pools to; the rest is shrunk.
VIT_B32 = dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
               context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
               transformer_layers=12)
TINY_CLIP = dict(VIT_B32, vision_layers=1, vision_width=64, transformer_width=64, transformer_heads=1,
                 transformer_layers=1)


def hairstyle_prompt(name: str) -> str:
    """The training template: ``"<name> hairstyle"`` (so "short hair" gives "short hair hairstyle")."""
    return f"{name}{_SUFFIX}"


def colour_prompt(name: str) -> str:
    """The training template: ``"<colour> hair"``."""
    return f"{name} hair"


def tokenize(prompts: str | Sequence[str]) -> torch.Tensor:
    """CLIP BPE tokens, ``[B, 77]`` int64."""
    return clip.tokenize(prompts).long()


def clip_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """CLIP constructor arguments read off a ViT CLIP state dict's shapes (works on meta tensors too)."""
    if "visual.proj" not in state_dict:
        raise ValueError("not a ViT CLIP state dict (HairCLIP uses ViT-B/32); strip any key prefix first")

    def depth(prefix: str) -> int:
        return len({k[len(prefix):].split(".")[0] for k in state_dict if k.startswith(prefix)})

    vision_width, _, patch, _ = state_dict["visual.conv1.weight"].shape
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    context_length, width = state_dict["positional_embedding"].shape
    return dict(embed_dim=state_dict["text_projection"].shape[1], image_resolution=patch * grid,
                vision_layers=depth("visual.transformer.resblocks."), vision_width=vision_width,
                vision_patch_size=patch, context_length=context_length,
                vocab_size=state_dict["token_embedding.weight"].shape[0], transformer_width=width,
                transformer_heads=width // 64, transformer_layers=depth("transformer.resblocks."))


def build_clip(state_dict: Mapping[str, torch.Tensor] | None = None, *, config: Mapping[str, int] | None = None,
               prefix: str = "") -> CLIP:
    """A float32 ``clip.model.CLIP`` shaped like ``state_dict`` (keys under ``prefix``), or from ``config``.

    Architecture only, randomly initialised: the weights arrive with ``HairMapper.load_state_dict``, which also
    casts the checkpoint's fp16 CLIP tensors to float32. Unlike ``clip.model.build_model`` this neither halves
    the model nor needs the JIT-only keys. With neither argument it builds ViT-B/32.
    """
    if state_dict is not None and config is not None:
        raise ValueError("give a state dict or a config, not both")
    if state_dict is not None:
        config = clip_config({k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)})
    return CLIP(**(config or VIT_B32)).eval()


def _film_mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.LayerNorm([512]), nn.LeakyReLU(0.01), nn.Linear(512, 512))


class ModulationModule(nn.Module):
    """Normalised linear map of the latents, then FiLM: ``x * (1 + gamma(e)) + beta(e)`` from the embedding e."""

    def __init__(self, layers: int):
        super().__init__()
        self.fc = nn.Linear(512, 512)
        self.norm = nn.LayerNorm([layers, 512], elementwise_affine=False)  # over layers and channels jointly
        self.gamma_function = _film_mlp()
        self.beta_function = _film_mlp()
        self.act = nn.LeakyReLU(0.01)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(self.fc(x))
        if embedding is None:  # the official "cut flag": no condition, so no modulation and no activation
            return x
        return self.act(x * (1 + self.gamma_function(embedding)) + self.beta_function(embedding))


class SubHairMapper(nn.Module):
    """PixelNorm over the layer axis of a [B, L, 512] slice of W+, then five modulation modules."""

    def __init__(self, layers: int):
        super().__init__()
        self.pixelnorm = PixelNorm()
        self.modulation_module_list = nn.ModuleList([ModulationModule(layers) for _ in range(5)])

    def forward(self, x: torch.Tensor, embedding: torch.Tensor | None = None) -> torch.Tensor:
        x = self.pixelnorm(x)
        for module in self.modulation_module_list:
            x = module(x, embedding)
        return x


_reference_text = False  # tests and benchmarks: make encode_text run CLIP's own 77-position pass


def use_reference_text(enabled: bool = True) -> bool:
    """Make ``HairMapper.encode_text`` run `encode_text_ref`; returns the old setting."""
    global _reference_text
    previous, _reference_text = _reference_text, bool(enabled)
    return previous


class HairMapper(nn.Module):
    """HairCLIP's mapper: the W+ offset that gives a latent the hairstyle and colour of its conditions.

    ``forward`` keeps the official signature; ``encode_*`` and ``edit_offset`` let a caller cache the (frozen)
    CLIP embeddings of a prompt or reference across edits.
    """

    def __init__(self, clip_model: CLIP, use_coarse: bool = True, use_medium: bool = True, use_fine: bool = True):
        super().__init__()
        self.clip_model = clip_model
        self.course_mapping = SubHairMapper(4) if use_coarse else None  # sic: the checkpoint's spelling
        self.medium_mapping = SubHairMapper(4) if use_medium else None
        self.fine_mapping = SubHairMapper(10) if use_fine else None

    @torch.no_grad()
    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, 77]`` tokens to ``[B, 512]`` float32 embeddings, running only the positions up to the last
        end-of-text token: CLIP's causal mask keeps the embedding read there from ever seeing the padding after
        it, so this is `encode_text_ref`'s sum without the padding's work (a prompt of a few words is 6-10 of
        the 77 positions). Tests compare the two."""
        if _reference_text:
            return self.encode_text_ref(tokens)
        m = self.clip_model
        eot = tokens.argmax(dim=-1)  # the end-of-text token has the highest id
        n = int(eot.max()) + 1
        x = (m.token_embedding(tokens[:, :n]).type(m.dtype) + m.positional_embedding[:n].type(m.dtype)).permute(1, 0, 2)
        for block in m.transformer.resblocks:
            mask = None if block.attn_mask is None else block.attn_mask[:n, :n].to(dtype=x.dtype, device=x.device)
            h = block.ln_1(x)
            x = x + block.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
            x = x + block.mlp(block.ln_2(x))
        x = m.ln_final(x.permute(1, 0, 2)).type(m.dtype)
        return (x[torch.arange(x.shape[0]), eot] @ m.text_projection).float()

    @torch.no_grad()
    def encode_text_ref(self, tokens: torch.Tensor) -> torch.Tensor:
        """CLIP's own ``encode_text``: all 77 positions, as the official code runs it."""
        return self.clip_model.encode_text(tokens).float()

    @torch.no_grad()
    def encode_image(self, img: torch.Tensor) -> torch.Tensor:
        """A hair-masked ``[B, 3, H, W]`` image in [-1, 1] to ``[B, 512]`` float32 embeddings.

        Area-resize to CLIP's input size (224 for ViT-B/32), map to [0, 1], then CLIP's mean/std.
        """
        x = F.adaptive_avg_pool2d(img, self.clip_model.visual.input_resolution) * 0.5 + 0.5
        mean = x.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(CLIP_STD).view(1, 3, 1, 1)
        return self.clip_model.encode_image((x - mean) / std).float()

    def edit_offset(self, w: torch.Tensor, hairstyle_emb: torch.Tensor | None = None,
                    colour_emb: torch.Tensor | None = None) -> torch.Tensor:
        """The ``[B, 18, 512]`` offset for W+ ``w``; an embedding is ``[B or 1, 512]``, or None when absent."""
        def condition(emb: torch.Tensor | None) -> torch.Tensor | None:
            # Same for all layers of a slice, so it broadcasts over the layer axis instead of being repeated.
            return None if emb is None else emb.to(w.dtype).unsqueeze(1)

        hairstyle, colour = condition(hairstyle_emb), condition(colour_emb)
        parts = []
        for mapper, layers, emb in ((self.course_mapping, slice(0, 4), hairstyle),
                                    (self.medium_mapping, slice(4, 8), hairstyle),
                                    (self.fine_mapping, slice(8, None), colour)):
            x = w[:, layers]
            parts.append(torch.zeros_like(x) if mapper is None else mapper(x, emb))
        return torch.cat(parts, dim=1)

    def embed(self, text_inputs: torch.Tensor, image: torch.Tensor) -> torch.Tensor | None:
        """The official condition rule: text if present, else the image, else None; ``[B, 1]`` means absent."""
        if text_inputs.shape[1] != 1:
            return self.encode_text(text_inputs)
        if image.shape[1] != 1:
            return self.encode_image(image)
        return None

    def forward(self, w: torch.Tensor, hairstyle_text_inputs: torch.Tensor, color_text_inputs: torch.Tensor,
                hairstyle_tensor: torch.Tensor, color_tensor: torch.Tensor) -> torch.Tensor:
        """The official call: tokens ``[B, 77]`` and hair-masked images ``[B, 3, H, W]``, each ``[B, 1]`` if absent."""
        return self.edit_offset(w, self.embed(hairstyle_text_inputs, hairstyle_tensor),
                                self.embed(color_text_inputs, color_tensor))
