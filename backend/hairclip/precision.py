"""The precision plan: which network runs in which dtype, for each device kind. Defined here once; the
pipeline (`Models.to`), the server, ``hairclip bench`` and training take their dtypes from here and cast
nothing else.

The GPU plan converts CLIP exactly as the official ``clip.load(device="cuda")`` does (`clip.model.convert_weights`):
the weights and biases of Conv1d/Conv2d/Linear layers and of attention, and ``text_projection`` and ``proj``,
to fp16; LayerNorms, embeddings and ``logit_scale`` stay fp32 (CLIP's LayerNorm computes in fp32 and casts
back). Every other network runs in fp32, as HairCLIP's and e4e's official inference do. A faster mode
(``gpu-bf16``) exists only as a plan with its accuracy measured (``bench/precision_accuracy.py``); ``auto``
never picks it.

Imports nothing heavy, so the command line can offer the plan names without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch
    from torch import nn

ClipMode = Literal["fp32", "fp16", "fp16-values"]
Dtype = Literal["fp32", "fp16", "bf16"]
Role = Literal["generator", "e4e", "parser", "facenet"]


@dataclass(frozen=True)
class PrecisionPlan:
    """The dtype each network runs in, for one configuration.

    ``clip``: fp32; fp16 (the official `convert_weights`); or fp16-values (those fp16-rounded values kept in
    fp32 storage, for training, where autocast picks the compute dtype).
    """

    name: str
    clip: ClipMode
    generator: Dtype = "fp32"
    e4e: Dtype = "fp32"
    parser: Dtype = "fp32"
    facenet: Dtype = "fp32"

    def describe(self) -> str:
        """One line, e.g. ``gpu plan (CLIP fp16 weights, LayerNorm fp32; generator, e4e, parser fp32)``."""
        clip = {"fp32": "CLIP fp32", "fp16": "CLIP fp16 weights, LayerNorm fp32",
                "fp16-values": "CLIP fp16 values in fp32"}[self.clip]
        groups: dict[str, list[str]] = {}
        for role in ("generator", "e4e", "parser"):
            groups.setdefault(getattr(self, role), []).append(role)
        return f"{self.name} plan ({clip}; " + "; ".join(f"{', '.join(r)} {d}" for d, r in groups.items()) + ")"

    def dtypes(self) -> dict[str, str]:
        """Each inference network's dtype, as benchmarks and logs print them."""
        clip = "fp16 (LayerNorm, embeddings fp32)" if self.clip == "fp16" else "fp32"
        return {"clip": clip, "mapper": "fp32", "generator": self.generator, "e4e": self.e4e, "parser": self.parser}

    def torch_dtype(self, role: Role) -> torch.dtype:
        import torch

        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[getattr(self, role)]

    def apply_clip(self, clip_model: nn.Module) -> nn.Module:
        """Put CLIP in this plan's dtypes, from any earlier plan (fp32 first, then the official conversion)."""
        import copy
        import warnings

        with warnings.catch_warnings():  # the clip package imports pkg_resources, which warns on new setuptools
            warnings.simplefilter("ignore", UserWarning)
            from clip.model import convert_weights

        clip_model.float()
        if self.clip == "fp16":
            convert_weights(clip_model)
        elif self.clip == "fp16-values":  # the values `save_hairclip` stores: training sees the CLIP it saves
            half = copy.deepcopy(clip_model)
            convert_weights(half)
            clip_model.load_state_dict(half.state_dict())
        return clip_model

    def apply(self, module: nn.Module, role: Role) -> nn.Module:
        """Cast one of the other networks to its dtype in this plan."""
        return module.to(self.torch_dtype(role))


PLANS: dict[str, PrecisionPlan] = {
    "fp32": PrecisionPlan("fp32", "fp32"),
    "gpu": PrecisionPlan("gpu", "fp16"),
    # Faster, not the default: generator and e4e in bf16. bench/precision_accuracy.py measures its 8-bit
    # difference to fp32 on the CPU; `hairclip bench gpu --precision gpu-bf16` measures it on a GPU.
    "gpu-bf16": PrecisionPlan("gpu-bf16", "fp16", generator="bf16", e4e="bf16"),
}
TRAINING = PrecisionPlan("training", "fp16-values")
DEVICE_PLANS = {"cpu": "fp32", "cuda": "gpu", "mps": "gpu"}
CHOICES = ("auto", *PLANS)
HELP = ("dtypes of the networks: auto (default: fp32 on the CPU, gpu on CUDA and MPS); gpu (CLIP fp16 as the "
        "official code, the rest fp32; on any device, the CPU included); fp32; gpu-bf16 (experimental)")


def plan_for(device: torch.device | str, precision: str = "auto") -> PrecisionPlan:
    """``auto``: the plan of the device kind (fp32 on the CPU, the GPU plan on CUDA and MPS); else by name."""
    if precision == "auto":
        import torch

        return PLANS[DEVICE_PLANS.get(torch.device(device).type, "fp32")]
    if precision not in PLANS:
        raise ValueError(f"precision must be one of {', '.join(CHOICES)}, not {precision!r}")
    return PLANS[precision]


def dtype_of(module: nn.Module) -> str:
    """What a network's parameters really are, in `PrecisionPlan.dtypes` terms (read off the module, so a
    benchmark reports what ran, not what was meant)."""
    short = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}
    if hasattr(module, "ln_final") and hasattr(module, "visual"):  # a CLIP model
        matrices, norms = str(module.visual.conv1.weight.dtype), str(module.ln_final.weight.dtype)
        if matrices == norms:
            return short[matrices]
        return f"{short[matrices]} (LayerNorm, embeddings {short[norms]})"
    dtypes = {str(p.dtype) for p in module.parameters() if p.is_floating_point()}
    return "/".join(short.get(d, d) for d in sorted(dtypes))
