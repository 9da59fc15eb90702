"""``hairclip bench models``: median forward times and peak memory of every network at full size, each in the
dtypes of the precision plan, in a fresh subprocess so that its peak memory is its own. Weights are random:
speed does not depend on their values.
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

from hairclip import precision

# name -> (what it measures, builder). Builders return a zero-argument callable that runs one forward.
CASES: dict[str, str] = {
    "generator": "StyleGAN2 generator, W+ -> 1024x1024, fixed noise",
    "generator-ref-ops": "the same with the reference upfirdn2d (zero insertion + conv)",
    "generator-stop256": "the same generator stopped at 256x256 (what a preview would cost)",
    "e4e": "e4e encoder (IR-SE50), 256x256 -> W+",
    "mapper": "HairCLIP mapper, cached embeddings (no CLIP)",
    "mapper+text": "HairCLIP mapper with the CLIP text encode",
    "mapper+text-ref": "the same with CLIP's own text pass over all 77 positions",
    "mapper+image": "HairCLIP mapper with the CLIP image encode of a 1024 reference",
    "parser": "face parser (U-Net), 512x512",
    "parser-plain-layout": "the same parser kept channels-first (the CPU runs it channels-last)",
}


def _build(name: str, device, plan) -> tuple[Callable[[], object], str]:
    """One forward of the case's network in the dtypes of ``plan`` (as `Models.to` sets them), and the
    dtype it really holds."""
    import torch

    from hairclip.nets import ops
    from hairclip.nets.e4e import Encoder4Editing
    from hairclip.nets.mapper import HairMapper, build_clip
    from hairclip.nets.parsenet import UNet
    from hairclip.nets.stylegan2 import Generator
    from hairclip.precision import dtype_of

    def put(module: torch.nn.Module, role) -> torch.nn.Module:
        return plan.apply(module.to(device).eval(), role)

    def dtype(module: torch.nn.Module) -> torch.dtype:
        return next(module.parameters()).dtype

    if name.startswith("generator"):
        gen = put(Generator(1024, 512, 8, channel_multiplier=2), "generator")
        w = torch.randn(1, gen.n_latent, 512, device=device, dtype=dtype(gen))
        stop = 256 if name == "generator-stop256" else None
        if name == "generator-ref-ops":
            ops.use_reference_ops(True)
        return lambda: gen([w], input_is_latent=True, randomize_noise=False, stop_at=stop), dtype_of(gen)
    if name == "e4e":
        enc = put(Encoder4Editing(50, "ir_se", stylegan_size=1024), "e4e")
        x = torch.randn(1, 3, 256, 256, device=device, dtype=dtype(enc))
        return lambda: enc(x), dtype_of(enc)
    if name.startswith("mapper"):
        import clip

        mapper = HairMapper(build_clip()).to(device).eval()
        plan.apply_clip(mapper.clip_model)
        w = torch.randn(1, 18, 512, device=device)
        emb = torch.randn(1, 512, device=device)
        tokens = clip.tokenize(["bob cut hairstyle"]).to(device)
        image = torch.rand(1, 3, 1024, 1024, device=device) * 2 - 1
        if name == "mapper":
            return lambda: mapper.edit_offset(w, emb, emb), dtype_of(mapper.fine_mapping)
        clip_dtype = f"CLIP {dtype_of(mapper.clip_model)}, mapper {dtype_of(mapper.fine_mapping)}"
        if name == "mapper+text":
            return lambda: mapper.edit_offset(w, mapper.encode_text(tokens), None), clip_dtype
        if name == "mapper+text-ref":
            return lambda: mapper.edit_offset(w, mapper.encode_text_ref(tokens), None), clip_dtype
        return lambda: mapper.edit_offset(w, mapper.encode_image(image), None), clip_dtype
    if name.startswith("parser"):
        parser = put(UNet(), "parser")
        if name == "parser-plain-layout":
            parser.channels_last = False
        x = torch.randn(1, 3, 512, 512, device=device, dtype=dtype(parser))
        return lambda: parser(x), dtype_of(parser)
    raise KeyError(name)


def _max_rss_mb() -> float:
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def _run_one(name: str, device_name: str, repeat: int, warmup: int, precision: str = "auto") -> dict:
    """Runs in the child process: build, warm up, time ``repeat`` forwards, report as JSON."""
    import torch

    from hairclip.device import pick_device, prepare
    from hairclip.precision import plan_for

    device = pick_device(device_name)
    prepare(device)
    plan = plan_for(device, precision)
    base_mb = _max_rss_mb()
    with torch.inference_mode():
        fn, dtype = _build(name, device, plan)
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
        "case": name, "device": str(device), "plan": plan.name, "dtype": dtype,
        "threads": torch.get_num_threads(), "median_s": statistics.median(times), "min_s": min(times),
        "repeat": repeat, "peak_mb": peak_mb, "peak_kind": peak_kind,
    }


def run_models(names: list[str], device: str, repeat: int, warmup: int, precision: str = "auto") -> list[dict]:
    rows = []
    for name in names:
        cmd = [sys.executable, "-m", "hairclip.bench_models", "--one", name, "--device", device,
               "--repeat", str(repeat), "--warmup", str(warmup), "--precision", precision]
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if out.returncode != 0:
            rows.append({"case": name, "error": out.stderr.strip().splitlines()[-1:] or ["failed"]})
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        _print_row(rows[-1])
    return rows


def _print_row(row: dict) -> None:
    if "error" in row:
        print(f"{row['case']:<19} FAILED: {row['error'][0]}", flush=True)
        return
    print(f"{row['case']:<19} {row['median_s'] * 1000:>10.1f} ms  (min {row['min_s'] * 1000:.1f}, "
          f"n={row['repeat']})  peak {row['peak_kind']} {row['peak_mb']:>7.0f} MB   "
          f"{row['device']} {row['plan']} plan: {row['dtype']}, threads={row['threads']}", flush=True)


def _print_ratios(rows: list[dict]) -> None:
    by = {r["case"]: r for r in rows if "error" not in r}
    pairs = [("generator-ref-ops", "generator", "fast ops vs reference ops"),
             ("generator", "generator-stop256", "full 1024 vs a 256 preview"),
             ("mapper+text", "mapper", "mapper with CLIP text vs cached embedding"),
             ("parser-plain-layout", "parser", "parser channels-first vs as it runs"),
             ("mapper+text-ref", "mapper+text", "CLIP's 77-position text pass vs the prompt's own tokens")]
    for slow, fast, what in pairs:
        if slow in by and fast in by:
            print(f"ratio {what}: {by[slow]['median_s'] / by[fast]['median_s']:.2f}x")


if __name__ == "__main__":  # the child process of one case
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", required=True, choices=list(CASES))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--precision", default="auto", choices=precision.CHOICES)
    a = ap.parse_args()
    print(json.dumps(_run_one(a.one, a.device, a.repeat, a.warmup, a.precision)))
