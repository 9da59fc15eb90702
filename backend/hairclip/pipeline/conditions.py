"""Stage 4: the hairstyle and colour conditions as CLIP embeddings, exactly as HairCLIP builds them.

- Text uses the training templates: ``"<name> hairstyle"`` and ``"<colour> hair"``.
- A reference photo is aligned (or, marked aligned, taken as it is: HairCLIP's own reference path), its hair
  kept by the parser (label 13), pooled to 224 and CLIP-encoded.
- An RGB colour has no counterpart in HairCLIP. We recolour the photo's own hair to the target in Lab and use
  that as the colour reference, so the mapper sees the asked colour on this very hairstyle; the edited hair
  is then shifted in Lab to the target mean (`match_hair_colour`), so the result measurably reaches it.
Embeddings are cached: changing only the strength, or editing another photo with the same words, encodes
nothing again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from hairclip.color import lab_to_rgb, masked_mean, masked_std, parse_rgb, rgb_to_lab
from hairclip.errors import HairclipError
from hairclip.nets.mapper import HairMapper, colour_prompt, hairstyle_prompt, tokenize
from hairclip.nets.parsenet import UNet
from hairclip.pipeline import parse
from hairclip.pipeline.cache import LRUCache, content_key
from hairclip_shared.conditions import condition_conflict

MIN_REFERENCE_HAIR = 0.002  # fraction of the aligned crop; below this the parser found no hair to copy


class PromptTooLong(HairclipError):
    """A hairstyle or colour text is longer than CLIP's 77 tokens."""

    code = "prompt_too_long"


class NoHairInReference(HairclipError):
    """The parser found no hair to copy in a reference image (or to recolour on the face)."""

    code = "no_hair"


class ConflictingConditions(HairclipError):
    """Two conditions for one branch, or no condition at all."""

    code = "bad_conditions"


@dataclass(frozen=True, eq=False)
class Conditions:
    """What to change in the hair: at most one condition per branch, and any branch may be left empty."""

    hairstyle: str | None = None
    colour: str | None = None
    hairstyle_ref: np.ndarray | None = None  # a photo (any size, RGB uint8); aligned like the input
    colour_ref: np.ndarray | None = None
    rgb: tuple[int, int, int] | None = None
    hairstyle_ref_aligned: bool = False  # the reference is an aligned face crop: no detection, taken as it is
    colour_ref_aligned: bool = False

    def __post_init__(self):
        for name in ("hairstyle", "colour"):
            text = getattr(self, name)
            if text is not None and not text.strip():
                object.__setattr__(self, name, None)
        if self.rgb is not None:
            object.__setattr__(self, "rgb", parse_rgb(self.rgb))
        colours = [self.colour is not None, self.colour_ref is not None, self.rgb is not None]
        conflict = condition_conflict(self.hairstyle is not None, self.hairstyle_ref is not None, *colours)
        if conflict:
            raise ConflictingConditions(conflict)
        if not any([self.hairstyle, self.hairstyle_ref is not None, *colours]):
            raise ConflictingConditions("nothing to change: give a hairstyle, a colour, or a reference image")


def hairstyle_text(text: str) -> str:
    """"bob cut" and "bob cut hairstyle" both give the training prompt "bob cut hairstyle"."""
    text = " ".join(text.split())
    return text if text.lower().endswith(" hairstyle") else hairstyle_prompt(text)


def colour_text(text: str) -> str:
    """"purple" and "purple hair" both give the training prompt "purple hair"."""
    text = " ".join(text.split())
    return text if text.lower().endswith(" hair") else colour_prompt(text)


def image_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 ``[H,W,3]`` -> ``[1,3,H,W]`` float in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float()
    return x / 127.5 - 1


def recolour_hair(image: torch.Tensor, hair: torch.Tensor, rgb: tuple[int, int, int], rounds: int = 4,
                 check: Callable[[], None] = lambda: None) -> torch.Tensor:
    """Move the hair's mean Lab colour to ``rgb``, keeping its shading; ``image`` in [-1,1], ``hair`` [B,1,H,W].

    Shifted colours can leave the RGB gamut and clipping pulls the mean back, so the shift is repeated on
    the clipped result a few times; each round closes most of what is left. ``check`` runs twice a round
    (a cancellation point: a round is about 0.2 s at 1024 px on one CPU core).
    """
    target = rgb_to_lab(torch.tensor(rgb, dtype=image.dtype, device=image.device).view(1, 3, 1, 1) / 255)
    return transfer_hair_lab(image, hair, target, rounds=rounds, check=check)


def hair_lab_stats(image: torch.Tensor, hair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of the hair's Lab colour, each ``[B,3,1,1]``; ``image`` in [-1,1], ``hair`` [B,1,H,W]."""
    lab = rgb_to_lab((image + 1) / 2)
    mean = masked_mean(lab, hair)
    return mean, masked_std(lab, hair, mean)


def transfer_hair_lab(image: torch.Tensor, hair: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | None = None,
                      where: torch.Tensor | None = None, rounds: int = 4, std_limit: float = 1.5,
                      check: Callable[[], None] = lambda: None) -> torch.Tensor:
    """Shift (and with ``std``, first scale) the Lab statistics of the hair (``hair``'s weights) to ``mean``/``std``.

    What `recolour_hair` does for an RGB target, and what long hair beyond the crop gets from the edited hair
    inside it: each pixel moves by the same Lab offset (times the same per-channel gain), so shading and
    strand texture stay. The gain is limited to [1/std_limit, std_limit]: flat hair must not turn into noise.
    ``where`` (default ``hair``) is where the result replaces the image.
    """
    where = hair if where is None else where
    out = (image + 1) / 2
    for n in range(rounds):
        check()
        lab = rgb_to_lab(out)
        check()
        centre = masked_mean(lab, hair)
        if std is not None and n == 0:
            gain = (std / masked_std(lab, hair, centre).clamp_min(1e-6)).clamp(1 / std_limit, std_limit)
            lab = centre + (lab - centre) * gain
        out = torch.lerp(out, lab_to_rgb(lab + (mean - centre)).clamp(0, 1), where)
    return out * 2 - 1


def match_hair_colour(image: torch.Tensor, hair: torch.Tensor, rgb: tuple[int, int, int],
                     check: Callable[[], None] = lambda: None) -> torch.Tensor:
    """The same Lab shift applied to an edited image's own hair."""
    return recolour_hair(image, hair, rgb, check=check)


def hair_lab_distance(image: torch.Tensor, hair: torch.Tensor, rgb: tuple[int, int, int]) -> float:
    """Distance in Lab between the mean hair colour and ``rgb``: how far an edit is from the asked colour."""
    lab = masked_mean(rgb_to_lab((image + 1) / 2), hair)
    target = rgb_to_lab(torch.tensor(rgb, dtype=image.dtype, device=image.device).view(1, 3, 1, 1) / 255)
    return float((lab - target).flatten().norm())


class ConditionEncoder:
    """Turns `Conditions` into the mapper's embeddings, with caches for text and reference images."""

    def __init__(self, mapper: HairMapper, parser: UNet, reference_crop, cache_size: int = 64):
        self.mapper = mapper
        self.parser = parser
        self.reference_crop = reference_crop  # (photo, aligned) -> the 1024 uint8 crop (raises if no face)
        self.text_cache: LRUCache[torch.Tensor] = LRUCache(cache_size)
        self.image_cache: LRUCache[torch.Tensor] = LRUCache(cache_size)

    @property
    def device(self) -> torch.device:
        return next(self.mapper.parameters()).device

    def text(self, prompt: str) -> torch.Tensor:
        def encode() -> torch.Tensor:
            try:
                tokens = tokenize(prompt)
            except RuntimeError as exc:  # clip.tokenize's only complaint is a prompt over 77 tokens
                raise PromptTooLong(f"the text {prompt!r} is longer than CLIP's 77 tokens; shorten it") from exc
            return self.mapper.encode_text(tokens.to(self.device)).float()

        return self.text_cache.get_or_compute(prompt, encode)

    def reference(self, photo: np.ndarray, what: str, aligned: bool = False) -> torch.Tensor:
        """A reference photo's hair, as HairCLIP's image condition.

        HairCLIP's recipe on the 1024 crop: ``ToTensor``/``Normalize(0.5, 0.5)`` (``image_tensor`` is bit-equal),
        the parser's hair mask at 1024, ``image * mask``, then the mapper's 224 pool and CLIP encode.
        """
        def encode() -> torch.Tensor:
            crop = image_tensor(self.reference_crop(photo, aligned), self.device)
            hair = parse.hair(self.parser, crop)[:, None].float()
            if hair.mean() < MIN_REFERENCE_HAIR:
                raise NoHairInReference(f"no hair was found in the {what} reference image")
            return self.mapper.encode_image(crop * hair).float()

        return self.image_cache.get_or_compute(("ref", aligned, content_key(photo)), encode)

    def rgb(self, aligned1024: torch.Tensor, hair: torch.Tensor, rgb: tuple[int, int, int],
            check: Callable[[], None] = lambda: None) -> torch.Tensor:
        """The colour condition for an RGB target: this face's own hair, recoloured."""
        def encode() -> torch.Tensor:
            if hair.float().mean() < MIN_REFERENCE_HAIR:
                raise NoHairInReference("no hair was found on the face to recolour")
            mask = hair.float()
            return self.mapper.encode_image(recolour_hair(aligned1024, mask, rgb, check=check) * mask).float()

        key = ("rgb", rgb, content_key(aligned1024.cpu().numpy()))
        return self.image_cache.get_or_compute(key, encode)

    def embeddings(self, cond: Conditions) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(hairstyle, colour) embeddings, None where the branch is empty or depends on the face (RGB)."""
        style = (self.text(hairstyle_text(cond.hairstyle)) if cond.hairstyle
                 else self.reference(cond.hairstyle_ref, "hairstyle", cond.hairstyle_ref_aligned)
                 if cond.hairstyle_ref is not None else None)
        colour = (self.text(colour_text(cond.colour)) if cond.colour
                 else self.reference(cond.colour_ref, "colour", cond.colour_ref_aligned)
                 if cond.colour_ref is not None else None)
        return style, colour
