"""What a training run is prepared from: the frozen networks (weight store or official files), the process group
and autocast dtype, and the datasets of the options. The loop itself is trainer's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as torch_dist
from torch import nn

from hairclip.checkpoints import load_hairclip, load_irse50, load_parsenet, load_stylegan
from hairclip.nets.irse import Backbone
from hairclip.nets.mapper import HairMapper
from hairclip.nets.parsenet import UNet
from hairclip.nets.stylegan2 import Generator
from hairclip.precision import TRAINING
from hairclip.train import data as D
from hairclip.train.config import TrainConfig, TrainingError

STYLEGAN_FILE, IRSE50_FILE, PARSENET_FILE, HAIRCLIP_FILE = (
    "stylegan2-ffhq-config-f.pt", "model_ir_se50.pth", "parsenet.pth", "hairclip.pt")


# ---------------------------------------------------------------------------------------------- networks


@dataclass
class Networks:
    """Everything a step needs: the mapper (CLIP inside) to train, and the frozen decoder, parser and ArcFace."""

    mapper: HairMapper
    decoder: Generator
    parser: UNet
    facenet: Backbone


def _resolve(store, name: str, download: bool) -> Path:
    return store.resolve(name, download=download)


def load_networks(config: TrainConfig, store=None, download: bool = True) -> Networks:
    """The official starting point from the weight store: StyleGAN2 FFHQ (``g_ema``), CLIP ViT-B/32, the face
    parser and IR-SE50; or, with ``checkpoint_path``, the mapper, CLIP and decoder of a ``hairclip.pt``."""
    from hairclip.weights import WeightStore

    store = store or WeightStore()
    flags = dict(use_coarse=not config.no_coarse_mapper, use_medium=not config.no_medium_mapper,
                 use_fine=not config.no_fine_mapper)
    if config.checkpoint_path:
        start = load_hairclip(config.checkpoint_path)
        mapper, decoder = start.mapper, start.decoder
        have = {k: getattr(mapper, n) is not None for k, n in
                zip(flags, ("course_mapping", "medium_mapping", "fine_mapping"), strict=True)}
        if have != flags:
            raise TrainingError(f"{config.checkpoint_path} has sub-mappers {have}, the options ask for {flags}")
    else:
        decoder = load_stylegan(_resolve(store, STYLEGAN_FILE, download), size=config.stylegan_size)
        mapper = HairMapper(_load_clip(config.clip, store, download), **flags)
    parser = load_parsenet(_resolve(store, PARSENET_FILE, download))
    facenet = load_irse50(_resolve(store, IRSE50_FILE, download))
    return Networks(mapper=mapper, decoder=decoder, parser=parser, facenet=facenet)


def _load_clip(source: str, store, download: bool) -> nn.Module:
    if source == "openai":  # the official route: OpenAI's ViT-B/32, downloaded to ~/.cache/clip
        import clip

        return clip.load("ViT-B/32", device="cpu", jit=False)[0].float()
    path = _resolve(store, HAIRCLIP_FILE, download) if source == "store" else Path(source)
    return load_hairclip(path).mapper.clip_model  # the published file carries OpenAI's ViT-B/32 unchanged


def round_clip_like_checkpoint(clip_model: nn.Module) -> None:
    """Give CLIP the values ``save_hairclip`` will store (its matrices in fp16), keeping float32 tensors:
    the training precision plan."""
    TRAINING.apply_clip(clip_model)


class ConditionedOffsets(nn.Module):
    """``HairMapper.edit_offset`` for a batch whose samples differ in which conditions they have.

    The official "cut flag" (no condition: no modulation) holds for a whole call, so the samples are grouped
    by (hairstyle given, colour given) and each group is one call. Only the sub-mappers are registered, so
    DDP neither syncs nor watches the frozen CLIP.
    """

    def __init__(self, mapper: HairMapper):
        super().__init__()
        self.course_mapping, self.medium_mapping = mapper.course_mapping, mapper.medium_mapping
        self.fine_mapping = mapper.fine_mapping
        self.__dict__["mapper"] = mapper  # not a submodule

    def forward(self, w: torch.Tensor, hairstyle: torch.Tensor, has_hairstyle: torch.Tensor,
                color: torch.Tensor, has_color: torch.Tensor) -> torch.Tensor:
        group = (has_hairstyle.long() * 2 + has_color.long()).cpu()
        parts, rows = [], []
        for g in group.unique().tolist():
            idx = (group == g).nonzero().squeeze(1).to(w.device)
            parts.append(self.mapper.edit_offset(w[idx], hairstyle[idx] if g & 2 else None,
                                                 color[idx] if g & 1 else None))
            rows.append(idx)
        if len(parts) == 1:
            return parts[0][torch.argsort(rows[0])]
        return torch.cat(parts)[torch.argsort(torch.cat(rows))]


# ---------------------------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class Distributed:
    """This process's place among torchrun's processes (one process when not under torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Distributed:
        """torchrun's RANK, WORLD_SIZE and LOCAL_RANK."""
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))

    def barrier(self) -> None:
        if self.world_size > 1:
            torch_dist.barrier()


def init_distributed(device: torch.device) -> Distributed:
    """Join torchrun's process group (NCCL on CUDA, gloo elsewhere) when there is more than one process."""
    d = Distributed.from_env()
    if d.world_size > 1 and not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return d


def amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The autocast dtype for the renders and losses, or None for float32."""
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    choices = {"off": None, "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if amp not in choices:
        raise TrainingError(f"amp must be auto, bf16, fp16 or off, not {amp!r}")
    return choices[amp]


# ---------------------------------------------------------------------------------------------- datasets


def build_datasets(config: TrainConfig, decoder: Generator | None = None) -> tuple[D.LatentsDataset,
                                                                                   D.LatentsDataset | None]:
    """The train and validation sets of the options: latents from files (or random faces) and references."""
    hairstyles = D.read_hairstyles(config.hairstyle_description or None)
    colors = D.parse_colors(config.color_description or None)
    probs = D.SamplingProbabilities.from_options(config)
    in_domain = D.in_domain_references(config.color_ref_img_in_domain_path, colors)

    def dataset(latents_path: str, size: int, hairstyle_refs: str, color_refs: str, seed: int):
        if latents_path:
            latents = D.load_latents(latents_path)
        elif size > 0 and decoder is not None:
            latents = D.random_latents(decoder, size, seed=seed)
        else:
            return None
        sampler = D.EditSampler(hairstyles, colors, probs, hairstyle_references=D.list_images(hairstyle_refs),
                                color_references=D.list_images(color_refs), color_in_domain=in_domain)
        return D.LatentsDataset(latents, sampler, image_size=config.stylegan_size, seed=seed)

    train = dataset(config.latents_train_path, config.train_dataset_size, config.hairstyle_ref_img_train_path,
                    config.color_ref_img_train_path, config.seed)
    if train is None:
        raise TrainingError("no training latents: give latents_train_path or a train_dataset_size above 0")
    val = dataset(config.latents_test_path, config.test_dataset_size, config.hairstyle_ref_img_test_path,
                  config.color_ref_img_test_path, config.seed + 1)
    return train, val
