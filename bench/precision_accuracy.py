"""How far a faster precision plan moves the picture: 8-bit differences against the fp32 plan, on the CPU.

    PYTHONPATH=backend:shared python bench/precision_accuracy.py [--plan gpu-bf16] [--samples 2] [--size 1024]
                                                               [--skip-full]

bf16 convolutions are very slow on CPUs without native bf16: on a shared 2-core machine neither the 1024 px
generator (25 minutes) nor the 256 px one (10 minutes, ``--size 256``) finished its bf16 pass; ``--skip-full``
measures the whole edit on the small networks only.

1. The full-size generator (random weights, W+ from its own mapping network) in the plan's dtype against fp32:
   the synthesized 1024 px face, in 8-bit levels.
2. The full-size e4e in the plan's dtype against fp32: both W+ rendered by the fp32 generator, in 8-bit levels.
3. The whole edit (text, reference image, RGB) on the small random networks, with the plan against the fp32
   plan: the output layer, in 8-bit levels.
Also times each side (medians; on a shared machine they are inflated). Accuracy on the CPU stands in for the GPU's
until `hairclip bench gpu --precision PLAN` runs on one; bf16 rounds the same way on both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backend"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "shared"))

from hairclip.bench import layer_difference  # noqa: E402
from hairclip.nets.e4e import Encoder4Editing  # noqa: E402
from hairclip.nets.stylegan2 import Generator  # noqa: E402
from hairclip.pipeline.synthesize import synthesize, to_uint8  # noqa: E402
from hairclip.precision import PLANS, PrecisionPlan  # noqa: E402


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def _report(what: str, diffs: list[dict], t32: list[float], tplan: list[float], plan: str) -> None:
    print(f"{what:<34} max {max(d['max'] for d in diffs):3d} levels, mean {np.mean([d['mean'] for d in diffs]):.3f}"
          f"   time fp32 {statistics.median(t32):.2f} s, {plan} {statistics.median(tplan):.2f} s", flush=True)


def full_size(plan: PrecisionPlan, samples: int, size: int) -> None:
    torch.manual_seed(0)
    gen32 = Generator(size, 512, 8, channel_multiplier=2).eval()
    enc32 = Encoder4Editing(50, "ir_se", size).eval()
    gen = plan.apply(Generator(size, 512, 8, channel_multiplier=2).eval(), "generator")
    gen.load_state_dict(gen32.state_dict())  # copies and casts to the plan's dtype
    enc = plan.apply(Encoder4Editing(50, "ir_se", size).eval(), "e4e")
    enc.load_state_dict(enc32.state_dict())
    g_diffs, e_diffs, g_t, e_t = [], [], ([], []), ([], [])
    with torch.inference_mode():
        for i in range(samples):
            z = torch.randn(1, 512, generator=torch.Generator().manual_seed(i))
            w = gen32.style(z)[:, None].repeat(1, gen32.n_latent, 1)
            a, t_a = _timed(synthesize, gen32, w)
            b, t_b = _timed(synthesize, gen, w)
            g_diffs.append(layer_difference(to_uint8(a[0]), to_uint8(b[0])))
            g_t[0].append(t_a)
            g_t[1].append(t_b)
            face = torch.nn.functional.adaptive_avg_pool2d(a.clamp(-1, 1), 256)  # a "photo" for e4e
            w32, t_a = _timed(enc32, face)
            wp, t_b = _timed(enc, face.to(plan.torch_dtype("e4e")))
            images = synthesize(gen32, torch.cat([w32, wp.float()]))
            e_diffs.append(layer_difference(to_uint8(images[0]), to_uint8(images[1])))
            e_t[0].append(t_a)
            e_t[1].append(t_b)
    _report(f"generator ({plan.generator}), {size} px", g_diffs, *g_t, plan.name)
    _report(f"e4e ({plan.e4e}) -> fp32 generator", e_diffs, *e_t, plan.name)


def whole_edit_tiny(plan: PrecisionPlan) -> None:
    from hairclip.pipeline.conditions import Conditions
    from hairclip.pipeline.editor import HairEditor
    from hairclip.pipeline.models import Models

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:300, 0:260]
    photo = np.clip(np.stack([xx * 0.6, yy * 0.5, (xx + yy) * 0.3], -1) + rng.normal(0, 12, (300, 260, 3)),
                    0, 255).astype(np.uint8)
    ref = np.clip(np.stack([xx * 0.8 + 20, yy * 0.6, xx * 0.2], -1) + rng.normal(0, 12, (300, 260, 3)),
                  0, 255).astype(np.uint8)
    edits = {"text": Conditions(hairstyle="afro", colour="purple"),
             "reference": Conditions(hairstyle_ref=ref, colour_ref=ref),
             "rgb": Conditions(hairstyle="bob cut", rgb="#1ec83c")}
    fp32 = HairEditor(Models.random_tiny("cpu", precision="fp32"))
    other = HairEditor(Models.random_tiny("cpu", precision=plan.name))
    for name, cond in edits.items():
        (a, t_a), (b, t_b) = _timed(fp32.edit, photo, cond), _timed(other.edit, photo, cond)
        _report(f"whole edit, tiny networks, {name}", [layer_difference(a.layer, b.layer)], [t_a], [t_b], plan.name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", default="gpu-bf16", choices=[p for p in PLANS if p != "fp32"])
    ap.add_argument("--samples", type=int, default=2, help="random faces for the full-size networks")
    ap.add_argument("--size", type=int, default=1024, help="the generator's resolution (e4e's W+ matches it)")
    ap.add_argument("--skip-full", action="store_true", help="only the whole edit on the tiny networks")
    args = ap.parse_args()
    plan = PLANS[args.plan]
    print(f"{plan.describe()} against the fp32 plan, on the CPU ({torch.get_num_threads()} threads)", flush=True)
    if not args.skip_full:
        full_size(plan, args.samples, args.size)
    whole_edit_tiny(plan)


if __name__ == "__main__":
    main()
