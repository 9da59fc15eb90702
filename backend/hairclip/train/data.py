"""Training data (``mapper/datasets/latents_dataset.py``): W+ latents, reference images, and per sample a
randomly drawn edit.

Each sample draws one edit, with the official probabilities as defaults:

* hairstyle only 0.5, colour only 0.2, both 0.27, no edit the remaining 0.03;
* a hairstyle is given by a prompt with probability 0.5, else by an image from the hairstyle references;
* a colour (one of the colour names, drawn first) by a prompt with probability 0.5, by an in-domain
  reference of that colour (``<folder>/<colour> hair/*.jpg``) with probability 0.25, else by an image from the
  colour references.

A source with no images is left out and the remaining probabilities of that branch are rescaled (without
any reference folders, training is text-only). The draw depends only on (seed, epoch, index), so it is the
same in every DataLoader worker and DDP rank and after a resume.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from hairclip.nets.mapper import COLOURS, HAIRSTYLE_PROMPTS, colour_prompt, hairstyle_prompt, tokenize

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tiff")  # train_utils.make_dataset's list
IMAGE_SIZE = 1024

# Official description strings (they name the saved images and appear in the logs).
HAIRSTYLE_REFERENCE, COLOR_IN_DOMAIN, COLOR_OUT_DOMAIN = ("hairstyle_out_domain_ref", "color_in_domain_ref",
                                                          "color_out_domain_ref")


def list_images(folder: str | os.PathLike | None) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted; none for ``None`` or ``""``."""
    if not folder:
        return []
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder of images")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def in_domain_references(folder: str | os.PathLike | None, colors: Sequence[str]) -> dict[str, list[Path]]:
    """The official in-domain layout: one sub-folder per colour prompt, ``<folder>/purple hair/00000.jpg``."""
    found = {}
    for c in colors if folder else ():
        d = Path(folder) / colour_prompt(c)
        if d.is_dir() and (images := list_images(d)):
            found[c] = images
    return found


def read_hairstyles(path: str | os.PathLike | None = None) -> list[str]:
    """Hairstyle prompts, one per line (the official ``hairstyle_list.txt``: ``afro hairstyle``, ...); a line
    without the ``hairstyle`` suffix gets it. ``None``: the official 44."""
    if path is None:
        return list(HAIRSTYLE_PROMPTS)
    lines = [s.strip() for s in Path(path).read_text(encoding="utf-8").splitlines()]
    return [s if s.endswith("hairstyle") else hairstyle_prompt(s) for s in lines if s]


def parse_colors(text: str | Sequence[str] | None = None) -> list[str]:
    """Colour names, comma-separated as the official ``--color_description`` (``purple, red``) or a list.
    ``None``: the official 12."""
    if text is None:
        return list(COLOURS)
    items = text.split(",") if isinstance(text, str) else text
    return [c.strip() for c in items if c.strip()]


@dataclass(frozen=True)
class SamplingProbabilities:
    """The official options of the same names and defaults."""

    hairstyle_manipulation_prob: float = 0.5
    color_manipulation_prob: float = 0.2
    both_manipulation_prob: float = 0.27
    hairstyle_text_manipulation_prob: float = 0.5
    color_text_manipulation_prob: float = 0.5
    color_in_domain_ref_manipulation_prob: float = 0.25

    def __post_init__(self):
        values = [getattr(self, k) for k in self.__dataclass_fields__]
        if not all(0 <= v <= 1 for v in values):
            raise ValueError(f"probabilities must lie in [0, 1]: {self}")
        if self.hairstyle_manipulation_prob + self.color_manipulation_prob + self.both_manipulation_prob > 1 + 1e-9:
            raise ValueError("hairstyle, colour and both probabilities add up to more than 1")
        if self.color_text_manipulation_prob + self.color_in_domain_ref_manipulation_prob > 1 + 1e-9:
            raise ValueError("colour text and in-domain reference probabilities add up to more than 1")

    @classmethod
    def from_options(cls, opts: object) -> SamplingProbabilities:
        return cls(**{k: float(getattr(opts, k)) for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Edit:
    """One sample's edit: for each branch a prompt or a reference image, or nothing."""

    hairstyle_text: str | None = None
    hairstyle_image: Path | None = None
    color_text: str | None = None
    color_image: Path | None = None
    color_source: str | None = None  # COLOR_IN_DOMAIN or COLOR_OUT_DOMAIN for an image

    @property
    def description(self) -> str:
        """The official ``selected_description``: ``afro hairstyle``, ``purple hair-color_in_domain_ref``, ..."""
        hairstyle = self.hairstyle_text or (HAIRSTYLE_REFERENCE if self.hairstyle_image else None)
        color = self.color_text or self.color_source
        parts = [p for p in (hairstyle, color) if p]
        return "-".join(parts) if parts else "no_editing"


class EditSampler:
    """Draws an `Edit` with the official probabilities from the prompts and reference images given."""

    def __init__(self, hairstyles: Sequence[str] | None = None, colors: Sequence[str] | None = None,
                 probabilities: SamplingProbabilities | None = None, *,
                 hairstyle_references: Sequence[Path] = (), color_references: Sequence[Path] = (),
                 color_in_domain: Mapping[str, Sequence[Path]] | None = None):
        self.hairstyles = list(read_hairstyles() if hairstyles is None else hairstyles)
        self.colors = list(parse_colors() if colors is None else colors)
        self.p = probabilities or SamplingProbabilities()
        self.hairstyle_references = list(hairstyle_references)
        self.color_references = list(color_references)
        self.color_in_domain = {c: list(v) for c, v in (color_in_domain or {}).items() if v}
        p = self.p
        if p.hairstyle_manipulation_prob + p.both_manipulation_prob > 0 and not self.hairstyles:
            raise ValueError("hairstyle edits are drawn, but the hairstyle list is empty")
        if p.color_manipulation_prob + p.both_manipulation_prob > 0 and not self.colors:
            raise ValueError("colour edits are drawn, but the colour list is empty")
        if p.hairstyle_text_manipulation_prob == 0 and not self.hairstyle_references:
            raise ValueError("hairstyles are never given as text, but there are no hairstyle reference images")

    def _hairstyle(self, rng: np.random.Generator) -> dict:
        if not self.hairstyle_references or rng.random() < self.p.hairstyle_text_manipulation_prob:
            return {"hairstyle_text": self.hairstyles[rng.integers(len(self.hairstyles))]}
        return {"hairstyle_image": self.hairstyle_references[rng.integers(len(self.hairstyle_references))]}

    def _color(self, rng: np.random.Generator) -> dict:
        color = self.colors[rng.integers(len(self.colors))]
        p = self.p
        in_domain = self.color_in_domain.get(color, [])
        weights = np.array([p.color_text_manipulation_prob,
                            p.color_in_domain_ref_manipulation_prob if in_domain else 0.0,
                            (1 - p.color_text_manipulation_prob - p.color_in_domain_ref_manipulation_prob)
                            if self.color_references else 0.0])
        if weights.sum() <= 0:
            weights = np.array([1.0, 0.0, 0.0])  # no image of any kind for this colour: its prompt
        source = rng.choice(3, p=weights / weights.sum())
        if source == 0:
            return {"color_text": colour_prompt(color)}
        refs, name = (in_domain, COLOR_IN_DOMAIN) if source == 1 else (self.color_references, COLOR_OUT_DOMAIN)
        return {"color_image": refs[rng.integers(len(refs))], "color_source": name}

    def __call__(self, rng: np.random.Generator) -> Edit:
        p = self.p
        kinds = np.array([p.hairstyle_manipulation_prob, p.color_manipulation_prob, p.both_manipulation_prob])
        kinds = np.append(kinds, max(0.0, 1 - kinds.sum()))  # the rest: no edit
        kind = rng.choice(4, p=kinds / kinds.sum())
        parts: dict = {}
        if kind in (0, 2):
            parts |= self._hairstyle(rng)
        if kind in (1, 2):
            parts |= self._color(rng)
        return Edit(**parts)


def load_image(path: str | os.PathLike, size: int = IMAGE_SIZE) -> torch.Tensor:
    """A reference image as ``[3, size, size]`` in [-1, 1] (``ToTensor`` then ``Normalize(0.5, 0.5)``); other
    sizes are resized (the official references are already aligned 1024 px faces)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.LANCZOS)
        x = torch.from_numpy(np.asarray(im).copy())
    return x.permute(2, 0, 1).float().div(255).sub(0.5).div(0.5)


@dataclass
class Sample:
    """One training sample: a latent, its drawn edit and the edit's tokens and reference images."""

    index: int
    w: torch.Tensor
    edit: Edit
    hairstyle_tokens: torch.Tensor | None = None
    color_tokens: torch.Tensor | None = None
    hairstyle_image: torch.Tensor | None = None
    color_image: torch.Tensor | None = None


@dataclass
class Batch:
    """Samples collated into tensors, with ``has_*`` flags saying which rows hold a condition.

    Rows of a condition tensor whose ``has_*`` flag is False are zeros; a tensor is None when no sample in the
    batch has that condition.
    """

    index: torch.Tensor  # [B] dataset indices
    w: torch.Tensor  # [B, 18, 512]
    descriptions: list[str]
    has_hairstyle_text: torch.Tensor  # [B] bool
    has_hairstyle_image: torch.Tensor
    has_color_text: torch.Tensor
    has_color_image: torch.Tensor
    hairstyle_tokens: torch.Tensor | None = None  # [B, 77]
    color_tokens: torch.Tensor | None = None
    hairstyle_image: torch.Tensor | None = None  # [B, 3, S, S]
    color_image: torch.Tensor | None = None
    edits: list[Edit] = field(default_factory=list)

    def __len__(self) -> int:
        return self.w.shape[0]

    def to(self, device: torch.device | str) -> Batch:
        moved = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                 for k, v in self.__dict__.items()}
        return Batch(**moved)


def _stack(items: Sequence[torch.Tensor | None]) -> tuple[torch.Tensor | None, torch.Tensor]:
    present = torch.tensor([t is not None for t in items])
    if not present.any():
        return None, present
    like = next(t for t in items if t is not None)
    return torch.stack([like.new_zeros(like.shape) if t is None else t for t in items]), present


def collate(samples: Sequence[Sample]) -> Batch:
    hairstyle_tokens, has_hairstyle_text = _stack([s.hairstyle_tokens for s in samples])
    color_tokens, has_color_text = _stack([s.color_tokens for s in samples])
    hairstyle_image, has_hairstyle_image = _stack([s.hairstyle_image for s in samples])
    color_image, has_color_image = _stack([s.color_image for s in samples])
    return Batch(index=torch.tensor([s.index for s in samples]), w=torch.stack([s.w for s in samples]),
                 descriptions=[s.edit.description for s in samples],
                 has_hairstyle_text=has_hairstyle_text, has_hairstyle_image=has_hairstyle_image,
                 has_color_text=has_color_text, has_color_image=has_color_image,
                 hairstyle_tokens=hairstyle_tokens, color_tokens=color_tokens,
                 hairstyle_image=hairstyle_image, color_image=color_image, edits=[s.edit for s in samples])


class LatentsDataset(Dataset):
    """W+ latents ``[N, 18, 512]`` with an edit drawn per sample.

    Keys are ``(epoch, index)`` (or an index, for epoch 0): the draw is seeded by ``(seed, epoch, index)`` so it
    does not depend on who loads the sample.
    """

    def __init__(self, latents: torch.Tensor, sampler: EditSampler, image_size: int = IMAGE_SIZE, seed: int = 0):
        if latents.ndim != 3 or latents.shape[-1] != 512:
            raise ValueError(f"latents must be [N, layers, 512] W+ codes, got {list(latents.shape)}")
        self.latents = latents.float()
        self.sampler = sampler
        self.image_size = image_size
        self.seed = seed

    def __len__(self) -> int:
        return self.latents.shape[0]

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        edit = self.sampler(np.random.default_rng([self.seed, epoch, index]))
        s = Sample(index=index, w=self.latents[index], edit=edit)
        if edit.hairstyle_text:
            s.hairstyle_tokens = tokenize(edit.hairstyle_text)[0]
        if edit.color_text:
            s.color_tokens = tokenize(edit.color_text)[0]
        if edit.hairstyle_image:
            s.hairstyle_image = load_image(edit.hairstyle_image, self.image_size)
        if edit.color_image:
            s.color_image = load_image(edit.color_image, self.image_size)
        return s


class StepBatches(Sampler):
    """Batches of ``(epoch, index)`` keys for step ``start_step`` onwards, endlessly.

    Each epoch is a permutation seeded by ``(seed, epoch)`` (or the identity with ``shuffle=False``) cut into
    global batches of ``batch_size * world_size``; rank r takes the r-th slice of each, so the ranks together
    see what one process with the global batch would, and a resumed run sees what an unbroken one would.
    The incomplete last batch of an epoch is dropped, as in the official loader.
    """

    def __init__(self, n: int, batch_size: int, *, world_size: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, start_step: int = 0):
        self.global_batch = batch_size * world_size
        if n < self.global_batch:
            raise ValueError(f"{n} latents cannot fill one batch of {batch_size} x {world_size} process(es)")
        self.n, self.batch_size, self.rank = n, batch_size, rank
        self.shuffle, self.seed, self.start_step = shuffle, seed, start_step
        self.steps_per_epoch = n // self.global_batch

    def _order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch)).tolist()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            epoch, pos = divmod(step, self.steps_per_epoch)
            order = self._order(epoch)
            for p in range(pos, self.steps_per_epoch):
                start = p * self.global_batch + self.rank * self.batch_size
                yield [(epoch, i) for i in order[start:start + self.batch_size]]
            step = (epoch + 1) * self.steps_per_epoch


def validation_batches(n: int, batch_size: int, max_batches: int | None = None) -> list[list[tuple[int, int]]]:
    """The whole validation set in order, epoch 0 (so every validation sees the same edits)."""
    keys = [(0, i) for i in range(n)]
    batches = [keys[i:i + batch_size] for i in range(0, n, batch_size)]
    return batches[:max_batches] if max_batches else batches


@torch.no_grad()
def random_latents(decoder: torch.nn.Module, n: int, truncation: float = 0.7, seed: int = 0,
                   n_layers: int = 18, batch: int = 256) -> torch.Tensor:
    """W+ codes of random faces (z -> w, truncated towards the mean w), for training without inverted photos:
    the official fallback when no latents are given."""
    g = torch.Generator().manual_seed(seed)
    p = next(decoder.parameters())
    z = torch.randn(n, 512, generator=g)
    mean = decoder.style(torch.randn(4096, 512, generator=g).to(p.device, p.dtype)).mean(0, keepdim=True)
    out = []
    for i in range(0, n, batch):
        w = decoder.style(z[i:i + batch].to(p.device, p.dtype))
        out.append((mean + truncation * (w - mean)).float().cpu())
    return torch.cat(out).unsqueeze(1).repeat(1, n_layers, 1)


def load_latents(path: str | os.PathLike) -> torch.Tensor:
    """A ``.pt`` holding a ``[N, 18, 512]`` tensor (the official ``train_faces.pt`` / ``test_faces.pt``)."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(data, Mapping) and "latents" in data:
        data = data["latents"]
    if not isinstance(data, torch.Tensor) or data.ndim != 3 or data.shape[-1] != 512:
        shape = list(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
        raise ValueError(f"{path}: expected a [N, 18, 512] tensor of W+ latents, found {shape}")
    return data.float()

