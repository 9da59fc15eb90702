"""Reading and writing the official checkpoint files exactly as published.

Every loader checks keys strictly and names the file in its error, so a wrong or damaged download is
reported as such instead of surfacing later as a shape error deep inside a network.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from clip.model import convert_weights
from torch import nn

from hairclip.errors import HairclipError
from hairclip.nets.e4e import Encoder4Editing
from hairclip.nets.fan import FAN
from hairclip.nets.irse import STAGE_DEPTHS, STAGE_UNITS, Backbone
from hairclip.nets.mapper import HairMapper, build_clip
from hairclip.nets.parsenet import UNet
from hairclip.nets.s3fd import S3FD
from hairclip.nets.stylegan2 import Generator

StateDict = Mapping[str, torch.Tensor]

_LIST_AT_MOST = 12


class CheckpointError(HairclipError):
    """A checkpoint file is unreadable or does not have the layout its loader expects."""

    code = "bad_weights"


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_AT_MOST])
    more = f", … and {len(items) - _LIST_AT_MOST} more" if len(items) > _LIST_AT_MOST else ""
    return f"\n  {title} ({len(items)}): {shown}{more}"


def check_keys(module: nn.Module, state: StateDict, *, file: str, part: str) -> None:
    """Raise a readable `CheckpointError` unless ``state`` has exactly the module's keys and shapes."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} (file {list(state[k].shape)}, model {list(expected[k].shape)})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        msg = f"{file}: the {part} weights do not match the expected layout"
        if missing:
            msg += _listing("missing keys", missing)
        if unexpected:
            msg += _listing("unexpected keys", unexpected)
        if mismatched:
            msg += _listing("shape mismatches", mismatched)
        raise CheckpointError(msg)


def load_strict(module: nn.Module, state: StateDict, *, file: str, part: str) -> nn.Module:
    """Check keys and shapes, then copy the tensors in (casting to the module's dtype)."""
    check_keys(module, state, file=file, part=part)
    module.load_state_dict(state, strict=True)
    return module.eval()


def build_from_state(factory: Callable[[], nn.Module], state: StateDict, *, file: str, part: str) -> nn.Module:
    """Build on the meta device and adopt the checkpoint's tensors, skipping a slow random initialisation.

    Only for networks whose every tensor is a parameter or a persistent buffer (the CNNs here).
    """
    with torch.device("meta"):
        module = factory()
    check_keys(module, state, file=file, part=part)
    module.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"{file}: the {part} weights leave tensors unset: {', '.join(left[:5])}")
    return module.float().eval()


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``: the published files hold only tensors and plain data."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path.name}: cannot be read as a PyTorch checkpoint ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path.name}: expected a dict at the top level, found {type(data).__name__}")
    return data


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A file holding a bare state dict (``parsenet.pth``, ``model_ir_se50.pth``, the face-alignment files)."""
    state = read_checkpoint(path)
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{Path(path).name}: expected a bare state dict of tensors")
    return state


def strip_prefix(state: StateDict, prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix.``, with the prefix removed."""
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in state.items() if k.startswith(prefix + ".")}


def _require(data: Mapping[str, Any], key: str, file: str) -> Any:
    if key not in data:
        raise CheckpointError(f"{file}: missing top-level entry {key!r} (found: {', '.join(map(str, data))})")
    return data[key]


def _check_prefixes(state: StateDict, allowed: tuple[str, ...], file: str) -> None:
    strays = [k for k in state if not k.startswith(tuple(p + "." for p in allowed))]
    if strays:
        raise CheckpointError(f"{file}: unexpected keys outside {', '.join(allowed)}" + _listing("keys", strays))


def generator_kwargs(state: StateDict) -> dict[str, int]:
    """``n_mlp`` and ``width_div`` of a decoder state dict, read off its keys and shapes.

    The published files give the defaults (8 and 1), so they build exactly the official Generator; smaller
    networks (tests, demos) written by ``save_hairclip`` load through the same path.
    """
    n_mlp = len({k.split(".")[1] for k in state if k.startswith("style.") and k.endswith(".weight")})
    const = state.get("input.input")
    width_div = 512 // int(const.shape[1]) if const is not None and const.ndim == 4 and const.shape[1] else 1
    return {"n_mlp": n_mlp or 8, "width_div": max(width_div, 1)}


def encoder_kwargs(state: StateDict) -> dict[str, Any]:
    """``units``, ``width_div`` and ``style_dim`` of an e4e encoder state dict (``None``/1: the official IR-SE50)."""
    first = state.get("input_layer.0.weight")
    width_div = max(64 // int(first.shape[0]), 1) if first is not None and first.ndim == 4 else 1
    depths = [int(state[f"body.{i}.res_layer.1.weight"].shape[0])
              for i in range(len(state)) if f"body.{i}.res_layer.1.weight" in state]
    units = tuple(sum(1 for d in depths if d == stage // width_div) for stage in STAGE_DEPTHS)
    style = state.get("styles.0.linear.weight")
    style_dim = int(style.shape[0]) if style is not None and style.ndim == 2 else None
    return {"units": None if units == STAGE_UNITS[50] or 0 in units else units, "width_div": width_div,
            "style_dim": None if style_dim == STAGE_DEPTHS[-1] // width_div else style_dim}


def parsenet_kwargs(state: StateDict) -> dict[str, int]:
    """``feature_scale`` of a parser state dict (4 in the published ``parsenet.pth``)."""
    first = state.get("conv1.conv1.0.weight")
    return {"feature_scale": max(64 // int(first.shape[0]), 1) if first is not None and first.ndim == 4 else 4}


@dataclass
class HairCLIPWeights:
    """The contents of ``hairclip.pt``: the mapper (with CLIP inside) and the StyleGAN2 decoder."""

    mapper: HairMapper
    decoder: Generator
    opts: dict[str, Any] = field(default_factory=dict)


def mapper_flags(opts: Mapping[str, Any]) -> dict[str, bool]:
    """Which sub-mappers the checkpoint was trained with (all three in the published file)."""
    return {
        "use_coarse": not opts.get("no_coarse_mapper", False),
        "use_medium": not opts.get("no_medium_mapper", False),
        "use_fine": not opts.get("no_fine_mapper", False),
    }


def load_hairclip(path: str | Path) -> HairCLIPWeights:
    """Load ``hairclip.pt``: ``state_dict`` with ``mapper.*`` and ``decoder.*`` keys, plus ``opts``."""
    file = Path(path).name
    data = read_checkpoint(path)
    state = _require(data, "state_dict", file)
    opts = dict(data.get("opts") or {})
    _check_prefixes(state, ("mapper", "decoder"), file)
    mapper_state = strip_prefix(state, "mapper")
    clip_state = strip_prefix(mapper_state, "clip_model")
    if not clip_state:
        raise CheckpointError(f"{file}: no mapper.clip_model.* weights; CLIP is expected inside the checkpoint")
    mapper = HairMapper(build_clip(clip_state), **mapper_flags(opts))
    load_strict(mapper, mapper_state, file=file, part="HairCLIP mapper (mapper.*)")
    decoder_state = strip_prefix(state, "decoder")
    size = int(opts.get("stylegan_size", 1024))
    decoder = build_from_state(lambda: Generator(size, 512, channel_multiplier=2, **generator_kwargs(decoder_state)),
                               decoder_state, file=file, part="StyleGAN2 decoder (decoder.*)")
    return HairCLIPWeights(mapper=mapper.float(), decoder=decoder, opts=opts)


def save_hairclip(path: str | Path, mapper: HairMapper, decoder: Generator, opts: Mapping[str, Any],
                  *, clip_fp16: bool = True) -> None:
    """Write a checkpoint in the exact ``hairclip.pt`` layout, so inference loads it unchanged.

    With ``clip_fp16`` CLIP's tensors take the published dtypes, halving their size as in the original.
    """
    clip_model = copy.deepcopy(mapper.clip_model).cpu().float()
    if clip_fp16:
        convert_weights(clip_model)  # the very conversion the official training ran
    clip_state = clip_model.state_dict()
    state: dict[str, torch.Tensor] = {}
    for k, v in mapper.state_dict().items():  # keep the official key order
        if k.startswith("clip_model."):
            state["mapper." + k] = clip_state[k[len("clip_model."):]].detach()
        else:
            state["mapper." + k] = v.detach().cpu().float()
    for k, v in decoder.state_dict().items():
        state["decoder." + k] = v.detach().cpu().float()
    tmp = Path(str(path) + ".tmp")
    torch.save({"state_dict": state, "opts": dict(opts)}, tmp)
    tmp.replace(path)


@dataclass
class E4EWeights:
    """The contents of ``e4e_ffhq_encode.pt`` that inversion needs: the encoder and ``latent_avg``."""

    encoder: Encoder4Editing
    latent_avg: torch.Tensor  # [n_styles, 512]; W+ = encoder(x) + latent_avg
    opts: dict[str, Any] = field(default_factory=dict)


def load_e4e(path: str | Path) -> E4EWeights:
    """Load ``e4e_ffhq_encode.pt``: ``encoder.*`` and ``decoder.*`` keys, ``latent_avg`` and ``opts``.

    The decoder half is checked key by key but not kept: synthesis uses the decoder of ``hairclip.pt``.
    """
    file = Path(path).name
    data = read_checkpoint(path)
    state = _require(data, "state_dict", file)
    opts = dict(data.get("opts") or {})
    _check_prefixes(state, ("encoder", "decoder"), file)
    size = int(opts.get("stylegan_size", 1024))
    encoder_state, decoder_state = strip_prefix(state, "encoder"), strip_prefix(state, "decoder")
    encoder = build_from_state(
        lambda: Encoder4Editing(50, "ir_se", stylegan_size=size, **encoder_kwargs(encoder_state)),
        encoder_state, file=file, part="e4e encoder (encoder.*)")
    with torch.device("meta"):
        check_keys(Generator(size, 512, channel_multiplier=2, **generator_kwargs(decoder_state)), decoder_state,
                   file=file, part="StyleGAN2 decoder (decoder.*)")
    latent_avg = _require(data, "latent_avg", file)
    n_styles = int(2 * math.log2(size) - 2)
    if latent_avg.ndim == 1:  # some e4e variants store the [512] mean; W+ repeats it per layer
        latent_avg = latent_avg.unsqueeze(0).repeat(n_styles, 1)
    if tuple(latent_avg.shape) != (n_styles, 512):
        raise CheckpointError(f"{file}: latent_avg has shape {list(latent_avg.shape)}, expected [{n_styles}, 512]")
    return E4EWeights(encoder=encoder, latent_avg=latent_avg.float(), opts=opts)


def load_parsenet(path: str | Path) -> UNet:
    """Load ``parsenet.pth``: a bare state dict of HairCLIP's 19-class face-parsing U-Net."""
    state = read_state_dict(path)
    return build_from_state(lambda: UNet(**parsenet_kwargs(state)), state, file=Path(path).name, part="face parser")


def load_stylegan(path: str | Path, size: int = 1024) -> Generator:
    """Load rosinality's ``stylegan2-ffhq-config-f.pt`` (``g_ema``), the generator training starts from."""
    file = Path(path).name
    data = read_checkpoint(path)
    state = _require(data, "g_ema", file)
    return build_from_state(lambda: Generator(size, 512, 8, channel_multiplier=2), state,
                            file=file, part="StyleGAN2 generator (g_ema)")


def load_irse50(path: str | Path) -> Backbone:
    """Load ``model_ir_se50.pth``: the ArcFace IR-SE50 backbone used by the identity loss."""
    return build_from_state(lambda: Backbone(112, 50, mode="ir_se", drop_ratio=0.6), read_state_dict(path),
                            file=Path(path).name, part="IR-SE50 backbone")


def _with_batchnorm_counters(factory: Callable[[], nn.Module], state: StateDict) -> dict[str, torch.Tensor]:
    """Files saved before PyTorch 0.4.1 lack BatchNorm's ``num_batches_tracked``; it is unused in eval."""
    with torch.device("meta"):
        keys = factory().state_dict()
    return {k: torch.zeros((), dtype=torch.long) for k in keys if k.endswith("num_batches_tracked")} | dict(state)


def load_s3fd(path: str | Path) -> S3FD:
    """The S3FD face detector from face-alignment's published state dict (``s3fd-619a316812.pth``)."""
    state = _with_batchnorm_counters(S3FD, read_state_dict(path))
    return build_from_state(S3FD, state, file=Path(path).name, part="S3FD face detector")


def load_fan(path: str | Path) -> FAN:
    """2D-FAN from face-alignment's published state dict (``2DFAN4-11f355bf06.pth.tar``).

    The number of stacked hourglasses is read from the keys (m0., m1., ...); the published file has 4.
    """
    state = read_state_dict(path)
    prefixes, stacks = {k.split(".")[0] for k in state}, 0
    while f"m{stacks}" in prefixes:
        stacks += 1
    if stacks == 0:
        raise CheckpointError(f"{Path(path).name}: not a FAN weight file (no hourglass 'm0.*' keys)")
    state = _with_batchnorm_counters(lambda: FAN(stacks), state)
    return build_from_state(lambda: FAN(stacks), state, file=Path(path).name, part="2D-FAN landmark network")
