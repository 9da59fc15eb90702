"""Fast vs reference StyleGAN2 ops at the shapes the 1024 generator runs, and the whole generator.

    python bench/bench_ops.py [--reps 5] [--threads N] [--dtype float32] [--device cpu] [--max-res 1024]
                              [--layout channels_last|contiguous] [--generator [--batch 1]]

Prints the median time of each path and the ratio ref/fast. The generator feeds the ops channels-last on
CPU, so that layout is the default here (``--layout contiguous`` for plain NCHW).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backend"))

from hairclip.nets.ops import (  # noqa: E402
    fused_leaky_relu,
    fused_leaky_relu_ref,
    reference_ops,
    upfirdn2d,
    upfirdn2d_ref,
)
from hairclip.nets.stylegan2 import Generator, make_kernel, stylegan2_channels  # noqa: E402


def medians_s(fns: list, reps: int, sync) -> list[float]:
    """Median seconds of each function, timed in turn within every repetition, so load drift hits all alike."""
    for fn in fns:  # warm-up: allocator, oneDNN primitive cache, cuDNN autotune
        fn()
    sync()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, ts in zip(fns, times, strict=True):
            t = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t)
    return [statistics.median(ts) for ts in times]


def cases(max_res: int) -> list[tuple[str, tuple[int, ...], dict]]:
    """(label, input shape, op kwargs) for every upfirdn2d and activation call of one 1024 forward (batch 1)."""
    out = []
    for i in range(3, max_res.bit_length()):
        res = 2**i
        c = stylegan2_channels(res)
        out.append((f"blur   {res:4d}", (1, c, res + 1, res + 1), dict(pad=(1, 1), gain=4)))  # after convT
        out.append((f"up_rgb {res:4d}", (1, 3, res // 2, res // 2), dict(up=2, pad=(2, 1), gain=4)))
        out.append((f"lrelu  {res:4d}", (1, c, res, res), {}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0 keeps the default")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layout", default="channels_last", choices=["channels_last", "contiguous"])
    ap.add_argument("--max-res", type=int, default=1024)
    ap.add_argument("--generator", action="store_true", help="also time Generator(max_res) full and stop_at=256")
    ap.add_argument("--batch", type=int, default=1, help="batch size of the generator runs")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype, device = getattr(torch, args.dtype), torch.device(args.device)
    fmt = torch.channels_last if args.layout == "channels_last" else torch.contiguous_format
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"torch {torch.__version__}, {device}, {args.dtype}, {args.layout}, threads {torch.get_num_threads()}, "
          f"median of {args.reps}")
    print(f"{'op':12s} {'input shape':>22s} {'ref ms':>9s} {'fast ms':>9s} {'ref/fast':>8s}")
    total_ref = total_fast = 0.0
    with torch.inference_mode():
        for label, shape, kw in cases(args.max_res):
            x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=fmt)
            if label.startswith("lrelu"):
                b = torch.randn(shape[1], device=device)
                ref, fast = partial(fused_leaky_relu_ref, x, b), partial(fused_leaky_relu, x, b)
            else:
                k = (make_kernel([1, 3, 3, 1]) * kw["gain"]).to(device)
                op = dict(up=kw.get("up", 1), pad=kw["pad"])
                ref, fast = partial(upfirdn2d_ref, x, k, **op), partial(upfirdn2d, x, k, **op)
            t_ref, t_fast = medians_s([ref, fast], args.reps, sync)
            total_ref, total_fast = total_ref + t_ref, total_fast + t_fast
            print(f"{label:12s} {str(tuple(shape)):>22s} {t_ref * 1e3:9.2f} {t_fast * 1e3:9.2f} {t_ref / t_fast:8.1f}",
                  flush=True)
        print(f"{'total':12s} {'':>22s} {total_ref * 1e3:9.2f} {total_fast * 1e3:9.2f} {total_ref / total_fast:8.1f}")

        if args.generator:
            generator_times(args.max_res, args.batch, device, dtype, args.reps, sync)


def generator_times(size: int, batch: int, device: torch.device, dtype: torch.dtype, reps: int, sync) -> None:
    """End to end: does the fast path pay off inside the generator? (The reference is close to the official.)"""
    g = Generator(size).to(device=device, dtype=dtype).eval()
    w = torch.randn(batch, g.n_latent, 512, device=device, dtype=dtype)
    setups = [("fast ops, channels-last", False, True), ("fast ops, contiguous", False, False),
              ("reference ops, contiguous", True, False)]

    def run(reference: bool, channels_last: bool, stop: int | None) -> None:
        g.channels_last = channels_last
        with reference_ops(reference):
            g([w], input_is_latent=True, randomize_noise=False, stop_at=stop)

    for stop in (None, 256):
        if stop is None or stop < size:
            fns = [partial(run, reference, channels_last, stop) for _, reference, channels_last in setups]
            for (label, _, _), t in zip(setups, medians_s(fns, reps, sync), strict=True):
                print(f"Generator({size}) batch {batch} {label:26s} stop_at={stop}: {t:.3f} s", flush=True)

if __name__ == "__main__":
    main()
