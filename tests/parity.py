"""Deterministic weights for the parity data (tests/data/parity), shared by the script that ran the official
code (tests/data/make_parity.py) and by tests/test_parity.py.

The official networks have hard-coded widths (512-wide mapper and StyleGAN, the IR-SE50 trunk), so even their
smallest configurations hold tens of millions of weights: far too many to store. Instead each tensor is a
pure function of (seed, key, shape): a slice of a pool of splitmix64 hashes (numpy's wrapping uint64
arithmetic), scaled to a range that depends on the layer. No random number generator, library version or
construction order is involved, so the test rebuilds exactly the tensors that the official code ran with; the
stored per-tensor probes check that.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable, Mapping

import numpy as np
import torch

Spec = Mapping[str, tuple[tuple[int, ...], str]]  # key -> (shape, dtype name), the official state dict's layout
Rule = Callable[[str, tuple[int, ...]], tuple[float, float]]  # key, shape -> uniform range (low, high)

def hash_uniform(seed: int, n: int) -> np.ndarray:
    """``n`` float32 values in [0, 1): splitmix64 of ``seed + i``, top 24 bits (exact in float32)."""
    with np.errstate(over="ignore"):
        x = np.arange(n, dtype=np.uint64) + np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
        x *= np.uint64(0x9E3779B97F4A7C15)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)


POOL_SIZE = 4_194_301  # a prime above the largest tensor (3.2M values): no tensor repeats within itself


@functools.lru_cache(maxsize=2)
def _pool(seed: int) -> torch.Tensor:
    """The hashed values, doubled so that any tensor is one contiguous slice."""
    pool = torch.from_numpy(hash_uniform(seed, POOL_SIZE))
    return torch.cat([pool, pool])


def key_offset(key: str) -> int:
    return zlib.crc32(key.encode()) * 2654435761 % POOL_SIZE


def uniform(seed: int, key: str, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    """Values for one tensor: a slice of the seed's hashed pool starting at a crc32-derived offset of ``key``,
    mapped to [low, high)."""
    n = math.prod(shape)
    if n > POOL_SIZE:
        raise ValueError(f"{key}: {n} values is more than the pool holds ({POOL_SIZE})")
    start = key_offset(key)
    u = _pool(seed)[start:start + n]
    return (u * (high - low)).add_(low).reshape(shape)


def fan_in_range(shape: tuple[int, ...], gain: float = 1.0) -> tuple[float, float]:
    """Uniform with variance gain^2 / fan_in (fan_in: all dims but the first)."""
    a = gain * math.sqrt(3.0 / max(1, math.prod(shape[1:])))
    return -a, a


def default_rule(key: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """Plain PyTorch layers: weights of variance 1/fan_in, norm gains and PReLU slopes in [0.5, 1.5], small biases,
    BatchNorm statistics that actually normalise something."""
    name = key.rsplit(".", 1)[-1]
    if name == "running_var":
        return 0.5, 1.5
    if name in ("running_mean", "bias") or name.endswith("_bias"):
        return -0.2, 0.2
    if len(shape) >= 2:
        return fan_in_range(shape)
    if name == "weight":
        return 0.5, 1.5
    return -0.2, 0.2


def unit_range(scale: float = 1.0) -> tuple[float, float]:
    """Variance ``scale**2`` (StyleGAN's equalised-lr weights are stored at unit variance)."""
    a = scale * math.sqrt(3.0)
    return -a, a


def stylegan_rule(key: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """rosinality's layers: equalised-lr weights at unit variance (the mapping MLP's at 1/lr_mul), noise maps at
    unit variance, modulation biases around their init of 1, noise strengths and biases small."""
    name = key.rsplit(".", 1)[-1]
    if key.startswith("style.") and name == "weight":
        return unit_range(100.0)  # lr_mul = 0.01: stored weights are randn / lr_mul
    if key.startswith("style.") and name == "bias":
        return -20.0, 20.0  # used as bias * lr_mul
    if key.startswith("noises.") or key == "input.input" or (name == "weight" and len(shape) >= 2):
        return unit_range()
    if key.endswith("modulation.bias"):
        return 0.8, 1.2
    if key.endswith("noise.weight"):
        return 0.05, 0.3
    return -0.2, 0.2


def e4e_rule(key: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """The IR-SE trunk and FPN as plain layers; the style heads' EqualLinear at unit variance. The residual
    branch's last BatchNorm gains are kept small, so 24 residual units do not blow the activations up."""
    if ".linear." in key and key.endswith("weight"):
        return unit_range()
    if key.endswith("res_layer.4.weight"):
        return 0.1, 0.3
    return default_rule(key, shape)


def make_state_dict(spec: Spec, seed: int, rule: Rule = default_rule,
                    overrides: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The state dict of ``spec``: every float tensor ``uniform(seed, key, ...)`` in ``rule``'s range, integer
    tensors (BatchNorm's num_batches_tracked) zero, then the few ``overrides`` (stored tensors, e.g. a
    calibrated bias)."""
    out = {}
    for key, (shape, dtype) in spec.items():
        shape = tuple(shape)
        if dtype.startswith("torch.int"):
            out[key] = torch.zeros(shape, dtype=getattr(torch, dtype.removeprefix("torch.")))
        else:
            out[key] = uniform(seed, key, shape, *rule(key, shape))
    for key, value in (overrides or {}).items():
        out[key] = value.clone()
    return out


def spec_of(state_dict: Mapping[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(v.shape), str(v.dtype)) for k, v in state_dict.items()}


def probes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The first and last value of each tensor: enough to tell that a rebuild is the same tensor."""
    return {k: v.flatten()[[0, -1]].clone() for k, v in state_dict.items() if v.numel()}


RULES: dict[str, Rule] = {"default": default_rule, "stylegan": stylegan_rule, "e4e": e4e_rule}


SEED = 0


def input_tensor(name: str, shape: tuple[int, ...], low: float = -1.0, high: float = 1.0) -> torch.Tensor:
    """A float input of the parity cases, rebuilt like the weights (under the name ``input.<name>``)."""
    return uniform(SEED, f"input.{name}", shape, low, high)


def input_image(name: str, size: int) -> torch.Tensor:
    """A uint8 ``[size, size, 3]`` picture of noise, rebuilt like the weights."""
    return uniform(SEED, f"image.{name}", (size, size, 3), 0.0, 256.0).floor_().clamp_(0, 255).to(torch.uint8)
