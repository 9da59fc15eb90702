"""``hairclip bench``: median forward times and peak memory of every network at full size.

Each case runs in a fresh subprocess, so its peak memory is its own and not what an earlier case left
behind. Weights are random: speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

# name -> (what it measures, builder). Builders return a zero-argument callable that runs one forward.
CASES: dict[str, str] = {
    "generator": "StyleGAN2 generator, W+ -> 1024x1024, fixed noise",
    "generator-ref-ops": "the same with the reference upfirdn2d (zero insertion + conv)",
    "generator-stop256": "the same generator stopped at 256x256 (what a preview would cost)",
    "e4e": "e4e encoder (IR-SE50), 256x256 -> W+",
    "mapper": "HairCLIP mapper, cached embeddings (no CLIP)",
    "mapper+text": "HairCLIP mapper with the CLIP text encode",
    "mapper+image": "HairCLIP mapper with the CLIP image encode of a 1024 reference",
    "parser": "face parser (U-Net), 512x512",
}


def _build(name: str, device, dtype) -> Callable[[], object]:
    import torch

    from hairclip.nets import ops
    from hairclip.nets.e4e import Encoder4Editing
    from hairclip.nets.mapper import HairMapper, build_clip
    from hairclip.nets.parsenet import UNet
    from hairclip.nets.stylegan2 import Generator

    def put(module: torch.nn.Module) -> torch.nn.Module:
        return module.to(device=device, dtype=dtype).eval()

    if name.startswith("generator"):
        gen = put(Generator(1024, 512, 8, channel_multiplier=2))
        w = torch.randn(1, gen.n_latent, 512, device=device, dtype=dtype)
        stop = 256 if name == "generator-stop256" else None
        if name == "generator-ref-ops":
            ops.use_reference_ops(True)
        return lambda: gen([w], input_is_latent=True, randomize_noise=False, stop_at=stop)
    if name == "e4e":
        enc = put(Encoder4Editing(50, "ir_se", stylegan_size=1024))
        x = torch.randn(1, 3, 256, 256, device=device, dtype=dtype)
        return lambda: enc(x)
    if name.startswith("mapper"):
        import clip

        mapper = HairMapper(build_clip()).to(device).eval()
        mapper.clip_model.to(dtype)
        w = torch.randn(1, 18, 512, device=device)
        emb = torch.randn(1, 512, device=device)
        tokens = clip.tokenize(["bob cut hairstyle"]).to(device)
        image = torch.rand(1, 3, 1024, 1024, device=device, dtype=dtype) * 2 - 1
        if name == "mapper":
            return lambda: mapper.edit_offset(w, emb, emb)
        if name == "mapper+text":
            return lambda: mapper.edit_offset(w, mapper.encode_text(tokens), None)
        return lambda: mapper.edit_offset(w, mapper.encode_image(image), None)
    if name == "parser":
        parser = put(UNet())
        x = torch.randn(1, 3, 512, 512, device=device, dtype=dtype)
        return lambda: parser(x)
    raise KeyError(name)


def _max_rss_mb() -> float:
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def _run_one(name: str, device_name: str, repeat: int, warmup: int) -> dict:
    """Runs in the child process: build, warm up, time ``repeat`` forwards, report as JSON."""
    import torch

    from hairclip.device import inference_dtype, pick_device, prepare

    device = pick_device(device_name)
    prepare(device)
    dtype = inference_dtype(device)
    base_mb = _max_rss_mb()
    with torch.inference_mode():
        fn = _build(name, device, dtype)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elif device.type == "mps":
                torch.mps.synchronize()

        for _ in range(warmup):
            fn()
        sync()
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
        peak_kind = "GPU"
    else:
        peak_mb = _max_rss_mb() - base_mb
        peak_kind = "RSS"
    return {
        "case": name, "device": str(device), "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(), "median_s": statistics.median(times), "min_s": min(times),
        "repeat": repeat, "peak_mb": peak_mb, "peak_kind": peak_kind,
    }


def run_models(names: list[str], device: str, repeat: int, warmup: int) -> list[dict]:
    rows = []
    for name in names:
        cmd = [sys.executable, "-m", "hairclip.bench", "--one", name, "--device", device,
               "--repeat", str(repeat), "--warmup", str(warmup)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if out.returncode != 0:
            rows.append({"case": name, "error": out.stderr.strip().splitlines()[-1:] or ["failed"]})
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        _print_row(rows[-1])
    return rows


def _print_row(row: dict) -> None:
    if "error" in row:
        print(f"{row['case']:<18} FAILED: {row['error'][0]}", flush=True)
        return
    print(f"{row['case']:<18} {row['median_s'] * 1000:>10.1f} ms  (min {row['min_s'] * 1000:.1f}, "
          f"n={row['repeat']})  peak {row['peak_kind']} {row['peak_mb']:>7.0f} MB   "
          f"{row['device']} {row['dtype']} threads={row['threads']}", flush=True)


def _print_ratios(rows: list[dict]) -> None:
    by = {r["case"]: r for r in rows if "error" not in r}
    pairs = [("generator-ref-ops", "generator", "fast ops vs reference ops"),
             ("generator", "generator-stop256", "full 1024 vs a 256 preview"),
             ("mapper+text", "mapper", "mapper with CLIP text vs cached embedding")]
    for slow, fast, what in pairs:
        if slow in by and fast in by:
            print(f"ratio {what}: {by[slow]['median_s'] / by[fast]['median_s']:.2f}x")


def _random_full_models(device):
    """Full-size networks with random weights, as `Models` holds them after loading the real files."""
    import torch

    from hairclip.nets.e4e import Encoder4Editing
    from hairclip.nets.mapper import HairMapper, build_clip
    from hairclip.nets.parsenet import UNet
    from hairclip.nets.stylegan2 import Generator
    from hairclip.pipeline.models import CentredFace, Models

    return Models(Encoder4Editing(50, "ir_se", 1024), torch.randn(18, 512) * 0.1, HairMapper(build_clip()),
                  Generator(1024, 512, 8, channel_multiplier=2), UNet(), CentredFace(0.5), device,
                  {"all": "random full-size"}).to(device)


def _time_detector(photo, device, repeat: int) -> float:
    """Median time of the real detector networks (random weights, so what they find is meaningless)."""
    import tempfile
    from pathlib import Path

    import torch

    from hairclip.pipeline.faces import FAN, S3FD, FanDetector

    with tempfile.TemporaryDirectory() as tmp:
        torch.save(S3FD().state_dict(), Path(tmp) / "s3fd.pth")
        torch.save(FAN(4).state_dict(), Path(tmp) / "fan.pth")
        detector = FanDetector(Path(tmp) / "s3fd.pth", Path(tmp) / "fan.pth", device)
    h, w = photo.shape[:2]
    box = [[w * 0.25, h * 0.25, w * 0.75, h * 0.75, 1.0]]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        detector.boxes(photo)
        detector.landmarks(photo, box)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_pipeline(device_name: str, repeat: int, size: int) -> int:
    """Per-stage medians of a full edit of a ``size``² photo with one face, and of a strength-only re-render."""
    import numpy as np
    import torch

    from hairclip.device import pick_device
    from hairclip.nets import ops
    from hairclip.pipeline.conditions import Conditions
    from hairclip.pipeline.editor import HairEditor

    device = pick_device(device_name)
    torch.manual_seed(0)
    editor = HairEditor(_random_full_models(device))
    yy, xx = np.mgrid[0:size, 0:size]
    photo = np.stack([(xx * 7) % 256, (yy * 3) % 256, (xx ^ yy) % 256], -1).astype(np.uint8)
    cond = Conditions(hairstyle="bob cut", color="purple")

    def full_edit():
        editor.inverter.cache.clear()  # a new photo each time: nothing cached
        editor.conditions.text_cache.clear()
        return editor.edit(photo, cond)

    def measure(fn, n):
        walls, stages = [], {}
        for _ in range(n):
            t0 = time.perf_counter()
            result = fn()
            walls.append(time.perf_counter() - t0)
            for k, v in result.timings.items():
                stages.setdefault(k, []).append(v)
        return statistics.median(walls), {k: statistics.median(v) for k, v in stages.items()}, result

    with torch.inference_mode():
        full_edit()  # warm-up
        wall, stages, result = measure(full_edit, repeat)
        re_wall, re_stages, _ = measure(lambda: editor.rerender(photo, result, 0.7), repeat)
        with ops.reference_ops():
            ref_wall, _, _ = measure(full_edit, max(1, repeat // 2))
        detect = _time_detector(photo, device, repeat)
    print(f"{size}x{size} photo, one face ({result.faces[0].state.transform.qsize:.0f} px square), {device}, "
          f"threads={torch.get_num_threads()}, median of {repeat}")
    print(f"full edit            {wall:8.2f} s")
    for k, v in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"  {k:<18} {v:8.3f} s")
    outside = sum(stages.get(k, 0.0) for k in ("faces", "align", "composite"))
    print(f"face detection       {detect:8.2f} s  (S3FD + 2D-FAN-4 at full size, random weights; the timings "
          "above use a fixed face)")
    print(f"outside the networks {outside:8.3f} s ({outside / wall:.1%} of the edit: faces, align, composite)")
    print(f"strength re-render   {re_wall:8.2f} s  (synthesize {re_stages.get('synthesize', 0):.2f}, "
          f"parse {re_stages.get('parse', 0):.2f}, composite {re_stages.get('composite', 0):.2f})")
    print(f"ratio full edit / re-render: {wall / re_wall:.2f}x")
    print(f"full edit with the reference ops (zero insertion + conv): {ref_wall:.2f} s, "
          f"ratio {ref_wall / wall:.2f}x")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "pipeline":
        return run_pipeline(args.device, args.repeat, args.size)
    names = args.only.split(",") if args.only else list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        print(f"unknown case(s): {', '.join(unknown)}; known: {', '.join(CASES)}", file=sys.stderr)
        return 2
    print(f"{len(names)} case(s), random weights, median of {args.repeat} after {args.warmup} warm-up")
    rows = run_models(names, args.device, args.repeat, args.warmup)
    _print_ratios(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 1 if any("error" in r for r in rows) else 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="benchmark the networks (median times, peak memory)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["models", "pipeline"],
                   help="models: each network alone; pipeline: a whole edit and a strength re-render")
    p.add_argument("--size", type=int, default=2048, help="pipeline: the photo's side in pixels")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--only", help="comma-separated cases: " + ", ".join(CASES))
    p.add_argument("--json", help="also write the results to this JSON file")
    p.set_defaults(func=_cmd_bench)


if __name__ == "__main__":  # the child process of one case
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", required=True, choices=list(CASES))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    a = ap.parse_args()
    print(json.dumps(_run_one(a.one, a.device, a.repeat, a.warmup)))
