"""``hairclip bench``: median forward times and peak memory of every network at full size, a whole edit, and
the GPU check (``hairclip bench gpu``). Every network runs in the dtypes of the precision plan, as the pipeline
runs it, and the dtypes printed are read off the networks.

Each case runs in a fresh subprocess, so its peak memory is its own and not what an earlier case left
behind. Weights are random: speed does not depend on their values.

One module per family: bench_models, bench_pipeline, bench_gpu; this one is the command.
"""

from __future__ import annotations

import argparse
import json
import sys

from hairclip import precision
from hairclip.bench_gpu import layer_difference, run_gpu_check  # noqa: F401  (imported from here by tests)
from hairclip.bench_models import CASES, _print_ratios, _run_one, run_models  # noqa: F401
from hairclip.bench_pipeline import run_interactive, run_pipeline


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "gpu":
        device = "cuda" if args.device == "auto" else args.device
        return run_gpu_check(device, args.precision, args.tiny, args.size, args.repeat or 10,
                             3 if args.warmup is None else args.warmup, args.json)
    if args.what == "interactive":
        run_interactive(args.device, args.repeat or 5, args.size, args.precision, args.tiny)
        return 0
    if args.what == "pipeline":
        return run_pipeline(args.device, args.repeat or 5, args.size, args.precision, args.tiny)
    args.repeat, args.warmup = args.repeat or 5, 1 if args.warmup is None else args.warmup
    names = args.only.split(",") if args.only else list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        print(f"unknown case(s): {', '.join(unknown)}; known: {', '.join(CASES)}", file=sys.stderr)
        return 2
    print(f"{len(names)} case(s), random weights, median of {args.repeat} after {args.warmup} warm-up")
    rows = run_models(names, args.device, args.repeat, args.warmup, args.precision)
    _print_ratios(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 1 if any("error" in r for r in rows) else 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="benchmark the networks (median times, peak memory)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["models", "pipeline", "gpu", "interactive"],
                   help="models: each network alone; pipeline: a whole edit and a strength re-render; "
                        "interactive: first picture, final, re-render and warm edit through a loopback server; "
                        "gpu: the GPU check (needs CUDA unless --device cpu --tiny)")
    p.add_argument("--size", type=int, default=2048, help="pipeline, gpu, interactive: the photo's side in pixels")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (gpu: auto means cuda)")
    p.add_argument("--precision", default="auto", choices=precision.CHOICES, help=precision.HELP)
    p.add_argument("--tiny", action="store_true",
                   help="pipeline, gpu, interactive: the small random networks (a smoke test)")
    p.add_argument("--repeat", type=int, default=None, help="timed runs (default 5; gpu: 10)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up runs (default 1; gpu: 3)")
    p.add_argument("--only", help="comma-separated cases: " + ", ".join(CASES))
    p.add_argument("--json", help="also write the results to this JSON file")
    p.set_defaults(func=_cmd_bench)
