"""How fast one 1024 px synthesis could be on this machine: its arithmetic over the machine's best conv speed.

    python bench/bench_floor.py [--repeat 3] [--threads 2]

The exact re-render and the final picture each need one full synthesis, and the edit must stay the official
numbers, so no approximation may shorten it. This counts the generator's floating-point operations (torch's
FlopCounterMode, on the full-size ``Generator(1024, 512, 8, 2)``, whole and stopped at 256 px for the first
picture), measures the fastest conv of that generator
on this CPU by itself (the 3x3 64->64 conv at 512 px, channels-last, as synthesis runs it) and a 2048 matrix
product, and prints the floor: the operations divided by the best speed measured. Nothing in a synthesis can
run faster than the machine's best kernel, so the floor says which interactive targets this CPU can reach.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backend"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import median_s  # noqa: E402

from hairclip.nets.stylegan2 import Generator  # noqa: E402
from hairclip.pipeline.synthesize import synthesize  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    gen = Generator(1024, 512, 8, channel_multiplier=2).eval()
    w_plus = torch.randn(1, gen.n_latent, 512) * 0.3
    flops = {}
    for stop_at in (256, None):  # the first picture, and the full synthesis
        with FlopCounterMode(display=False) as counter:
            synthesize(gen, w_plus, stop_at=stop_at)
        flops[stop_at] = counter.get_total_flops()
    synthesis = median_s(lambda: synthesize(gen, w_plus), args.repeat)

    cl = torch.channels_last
    x = torch.randn(1, 64, 512, 512).contiguous(memory_format=cl)
    k = torch.randn(64, 64, 3, 3).contiguous(memory_format=cl)
    with torch.inference_mode():
        F.conv2d(x, k, padding=1)
        conv = median_s(lambda: F.conv2d(x, k, padding=1), args.repeat)
        a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
        a @ b
        gemm = median_s(lambda: a @ b, args.repeat)
    conv_gflops = 2 * 512 * 512 * 9 * 64 * 64 / conv / 1e9
    gemm_gflops = 2 * 2048**3 / gemm / 1e9
    best = max(conv_gflops, gemm_gflops)
    floor = flops[None] / (best * 1e9)
    print(f"threads={torch.get_num_threads()}, median of {args.repeat}")
    print(f"synthesis at 1024 px      {flops[None] / 1e9:8.1f} GFLOP (FlopCounterMode: convs and linears)")
    print(f"synthesis stopped at 256  {flops[256] / 1e9:8.1f} GFLOP (the first picture)")
    print(f"3x3 conv 64->64 at 512 px {conv_gflops:8.1f} GFLOP/s  ({conv:.3f} s)")
    print(f"2048 matrix product       {gemm_gflops:8.1f} GFLOP/s  ({gemm:.3f} s)")
    print(f"floor for one synthesis   {floor:8.2f} s  (GFLOP / the best GFLOP/s above)")
    print(f"floor for the first one   {flops[256] / (best * 1e9):8.2f} s  (stopped at 256 px)")
    print(f"measured synthesis        {synthesis:8.2f} s  ({floor / synthesis:.0%} of the machine's best speed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
