"""Ranger (RAdam + Lookahead + gradient centralisation), the optimiser HairCLIP trains with by default.

The maths of the version the official code ships (lessw2020's 20.4.11) with its defaults, in a few lines:

* gradient centralisation: every gradient with more than one dimension loses its mean over all but dim 0;
* RAdam: Adam moments; while the variance estimate is unreliable (length of the approximated simple moving
  average ρ_t <= 5) the step is bias-corrected momentum SGD, afterwards Adam with the rectification term r_t;
* Lookahead: every k steps the slow weights move ``alpha`` of the way to the fast ones, which restart there.

All of it lives in ``state``, so ``state_dict``/``load_state_dict`` resume a run exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim import Optimizer


class Ranger(Optimizer):
    """The Ranger optimiser the official training uses: RAdam with Lookahead and gradient centralisation."""

    def __init__(self, params: Iterable, lr: float = 1e-3, alpha: float = 0.5, k: int = 6,
                 n_sma_threshold: float = 5.0, betas: tuple[float, float] = (0.95, 0.999), eps: float = 1e-5,
                 weight_decay: float = 0.0, use_gc: bool = True, gc_conv_only: bool = False):
        if not 0.0 <= alpha <= 1.0 or k < 1 or lr <= 0 or eps <= 0:
            raise ValueError(f"invalid Ranger settings: lr={lr}, alpha={alpha}, k={k}, eps={eps}")
        defaults = dict(lr=lr, alpha=alpha, k=k, n_sma_threshold=n_sma_threshold, betas=betas, eps=eps,
                        weight_decay=weight_decay, use_gc=use_gc, gc_min_dim=4 if gc_conv_only else 2)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr = group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.float()
                if grad.is_sparse:
                    raise RuntimeError("Ranger does not support sparse gradients")
                if group["use_gc"] and grad.dim() >= group["gc_min_dim"]:
                    grad = grad - grad.mean(dim=tuple(range(1, grad.dim())), keepdim=True)
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                    state["slow_buffer"] = p.detach().clone()
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                m.mul_(beta1).add_(grad, alpha=1 - beta1)

                beta2_t = beta2**t
                rho_inf = 2 / (1 - beta2) - 1
                rho_t = rho_inf - 2 * t * beta2_t / (1 - beta2_t)
                p32 = p.float()
                if group["weight_decay"]:
                    p32.add_(p32, alpha=-group["weight_decay"] * lr)
                if rho_t > group["n_sma_threshold"]:
                    r_t = math.sqrt((1 - beta2_t) * (rho_t - 4) / (rho_inf - 4) * (rho_t - 2) / rho_t
                                    * rho_inf / (rho_inf - 2))
                    p32.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-lr * r_t / (1 - beta1**t))
                else:
                    p32.add_(m, alpha=-lr / (1 - beta1**t))
                p.copy_(p32)

                if t % group["k"] == 0:
                    slow = state["slow_buffer"]
                    slow.add_(p - slow, alpha=group["alpha"])
                    p.copy_(slow)
        return loss
