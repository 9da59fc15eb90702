"""Training options, kept free of heavy imports so that ``hairclip --help`` stays fast."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from hairclip.errors import HairclipError


@dataclass
class TrainConfig:
    """The options of one training run, stored whole as the checkpoint's ``opts``.

    Names and defaults are the official ``train_options.py`` ones where they exist; the whole dict is stored as
    the official code stores ``vars(opts)``.
    """

    exp_dir: str = ""
    # data
    latents_train_path: str = ""  # [N, 18, 512] .pt; "" draws train_dataset_size random faces
    latents_test_path: str = ""  # "" draws test_dataset_size random faces (no validation with 0)
    hairstyle_ref_img_train_path: str = ""
    hairstyle_ref_img_test_path: str = ""
    color_ref_img_train_path: str = ""
    color_ref_img_test_path: str = ""
    color_ref_img_in_domain_path: str = ""  # <folder>/<colour> hair/*.jpg
    hairstyle_description: str = ""  # a file of prompts, one per line; "" = the official 44
    color_description: str = ""  # comma-separated colour names; "" = the official 12
    train_dataset_size: int = 5000
    test_dataset_size: int = 1000
    # edit sampling
    hairstyle_manipulation_prob: float = 0.5
    color_manipulation_prob: float = 0.2
    both_manipulation_prob: float = 0.27
    hairstyle_text_manipulation_prob: float = 0.5
    color_text_manipulation_prob: float = 0.5
    color_in_domain_ref_manipulation_prob: float = 0.25
    # optimisation
    batch_size: int = 1
    test_batch_size: int = 1
    workers: int = 4
    test_workers: int = 2
    learning_rate: float = 0.0005
    optim_name: str = "ranger"  # or "adam"
    amp: str = "auto"  # auto (bf16, else fp16, on CUDA; off elsewhere), bf16, fp16, off
    seed: int = 0
    # loss weights
    text_manipulation_lambda: float = 2.0
    image_manipulation_lambda: float = 1.0
    attribute_preservation_lambda: float = 1.0
    image_hairstyle_lambda: float = 5.0
    image_color_lambda: float = 0.02
    id_lambda: float = 0.3
    maintain_color_lambda: float = 0.02
    background_lambda: float = 1.0
    latent_l2_lambda: float = 0.8
    # networks
    no_coarse_mapper: bool = False
    no_medium_mapper: bool = False
    no_fine_mapper: bool = False
    stylegan_size: int = 1024
    checkpoint_path: str = ""  # start from a hairclip.pt (mapper, CLIP and decoder) instead of scratch
    clip: str = "store"  # CLIP for a new mapper: "store" (inside the store's hairclip.pt), "openai", or a file
    parse_size: int = 512  # the face parser's input size in the hair masks
    # schedule and logs
    max_steps: int = 500000
    image_interval: int = 100
    board_interval: int = 50
    val_interval: int = 2000
    save_interval: int = 2000
    val_batches: int = 201  # the official validation stops after batch 200
    val_image_batches: int = 4
    image_log_size: int = 256  # tile size of the logged image grids

    def to_opts(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_opts(cls, opts: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in opts.items() if k in known})


class TrainingError(HairclipError):
    """A training run cannot start or continue (bad options, a clash with an earlier run, missing data)."""
