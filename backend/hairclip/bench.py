"""``hairclip bench``: median forward times and peak memory of every network at full size, a whole edit, and
the GPU check (``hairclip bench gpu``). Every network runs in the dtypes of the precision plan, as the pipeline
runs it, and the dtypes printed are read off the networks.

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

from hairclip import precision

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
        return lambda: mapper.edit_offset(w, mapper.encode_image(image), None), clip_dtype
    if name == "parser":
        parser = put(UNet(), "parser")
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
        cmd = [sys.executable, "-m", "hairclip.bench", "--one", name, "--device", device,
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
        print(f"{row['case']:<18} FAILED: {row['error'][0]}", flush=True)
        return
    print(f"{row['case']:<18} {row['median_s'] * 1000:>10.1f} ms  (min {row['min_s'] * 1000:.1f}, "
          f"n={row['repeat']})  peak {row['peak_kind']} {row['peak_mb']:>7.0f} MB   "
          f"{row['device']} {row['plan']} plan: {row['dtype']}, threads={row['threads']}", flush=True)


def _print_ratios(rows: list[dict]) -> None:
    by = {r["case"]: r for r in rows if "error" not in r}
    pairs = [("generator-ref-ops", "generator", "fast ops vs reference ops"),
             ("generator", "generator-stop256", "full 1024 vs a 256 preview"),
             ("mapper+text", "mapper", "mapper with CLIP text vs cached embedding")]
    for slow, fast, what in pairs:
        if slow in by and fast in by:
            print(f"ratio {what}: {by[slow]['median_s'] / by[fast]['median_s']:.2f}x")


def _random_full_models(device, plan=None, seed: int = 0):
    """Full-size networks with random weights (the same for the same seed), as `Models` holds them after
    loading the real files, in the dtypes of ``plan`` (default: the device's)."""
    import torch

    from hairclip.nets.e4e import Encoder4Editing
    from hairclip.nets.mapper import HairMapper, build_clip
    from hairclip.nets.parsenet import UNet
    from hairclip.nets.stylegan2 import Generator
    from hairclip.pipeline.models import CentredFace, Models

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        models = Models(Encoder4Editing(50, "ir_se", 1024), torch.randn(18, 512) * 0.1, HairMapper(build_clip()),
                        Generator(1024, 512, 8, channel_multiplier=2), UNet(), CentredFace(0.5), device,
                        {"all": "random full-size"})
    return models.to(device, plan)


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


def _photo(size: int):
    """A deterministic ``size``² test photo with structure at every scale."""
    import numpy as np

    yy, xx = np.mgrid[0:size, 0:size]
    return np.stack([(xx * 7) % 256, (yy * 3) % 256, (xx ^ yy) % 256], -1).astype(np.uint8)


def _build_models(device, precision: str, tiny: bool, seed: int = 0):
    from hairclip.pipeline.models import CentredFace, Models
    from hairclip.precision import plan_for

    if tiny:
        return Models.random_tiny(device, seed=seed, detector=CentredFace(0.5), precision=precision)
    return _random_full_models(device, plan_for(device, precision), seed)


def _full_edit(editor, photo, cond):
    """An edit of a photo seen for the first time: nothing cached."""
    editor.inverter.cache.clear()
    editor.conditions.text_cache.clear()
    editor.face_cache.clear()
    return editor.edit(photo, cond)


def _measure(fn, n: int):
    """Median wall time, per-stage medians and the last result of ``n`` calls."""
    walls, stages = [], {}
    for _ in range(n):
        t0 = time.perf_counter()
        result = fn()
        walls.append(time.perf_counter() - t0)
        for k, v in result.timings.items():
            stages.setdefault(k, []).append(v)
    return statistics.median(walls), {k: statistics.median(v) for k, v in stages.items()}, result


def run_pipeline(device_name: str, repeat: int, size: int, precision: str = "auto", tiny: bool = False) -> int:
    """Per-stage medians of a full edit of a ``size``² photo with one face, and of a strength-only re-render."""
    import torch

    from hairclip.device import pick_device
    from hairclip.nets import ops
    from hairclip.pipeline.conditions import Conditions
    from hairclip.pipeline.editor import HairEditor

    device = pick_device(device_name)
    torch.manual_seed(0)
    editor = HairEditor(_build_models(device, precision, tiny))
    photo = _photo(size)
    cond = Conditions(hairstyle="bob cut", color="purple")

    with torch.inference_mode():
        _full_edit(editor, photo, cond)  # warm-up
        wall, stages, result = _measure(lambda: _full_edit(editor, photo, cond), repeat)
        re_wall, re_stages, _ = _measure(lambda: editor.rerender(photo, result, 0.7), repeat)
        with ops.reference_ops():
            ref_wall, _, _ = _measure(lambda: _full_edit(editor, photo, cond), max(1, repeat // 2))
        detect = _time_detector(photo, device, repeat)
    print(f"{size}x{size} photo, one face ({result.faces[0].state.transform.qsize:.0f} px square), {device}, "
          f"threads={torch.get_num_threads()}, median of {repeat}")
    print(f"precision: {editor.models.plan.describe()}")
    print("dtypes ran: " + ", ".join(f"{k} {v}" for k, v in editor.models.dtypes().items()))
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


def official_path_s(models, texts, repeat: int) -> float:
    """Median seconds of the official code's path for the networks of a warm new-text edit: the CLIP encode of a
    new text, the mapper and one synthesis from a W+, in the official arithmetic (the plain ops, channels first,
    float32: what tests/test_parity.py checks against the official code's own numbers)."""
    import torch

    from hairclip.nets.mapper import tokenize
    from hairclip.nets.ops import reference_ops
    from hairclip.pipeline.conditions import hairstyle_text
    from hairclip.pipeline.edit import apply_offset, edit_offset
    from hairclip.pipeline.synthesize import synthesize

    decoder, mapper = models.decoder, models.mapper
    w = models.latent_avg[None, :decoder.n_latent].float()
    saved, decoder.channels_last = decoder.channels_last, False
    times = []
    try:
        with torch.inference_mode(), reference_ops():
            for _ in range(repeat):
                t0 = time.perf_counter()
                emb = mapper.encode_text(tokenize(hairstyle_text(next(texts))).to(w.device)).float()
                synthesize(decoder, apply_offset(w, edit_offset(mapper, w, emb, None), 1.0))
                times.append(time.perf_counter() - t0)
    finally:
        decoder.channels_last = saved
    return statistics.median(times)


def run_interactive(device_name: str, repeat: int, size: int, precision: str = "auto", tiny: bool = False) -> dict:
    """What the user feels, through a real server on loopback: medians of a new edit's first picture and final
    layer, the exact strength re-render, and a warm edit with new text (photo cached). The plain reference,
    in the same run, is the same new-text edit without the per-photo cache and without a first picture."""
    import torch

    from hairclip.device import pick_device
    from hairclip.engine import PipelineEngine
    from hairclip.images import to_wire
    from hairclip.nets.mapper import HAIRSTYLES
    from hairclip.server import Server
    from hairclip_shared.client import Client
    from hairclip_shared.protocol import EditRequest, EditResult, Progress

    device = pick_device(device_name)
    torch.manual_seed(0)
    engine = PipelineEngine(_build_models(device, precision, tiny))
    editor = engine.editor
    wire = to_wire(_photo(size))
    texts = iter(HAIRSTYLES * 4)  # a text never seen before on every run: its CLIP encode is part of the work

    def timed(client, request):
        t0, first = time.perf_counter(), None
        for event in client.submit(request).events(timeout=600):
            if isinstance(event, Progress) and event.stage == "first_picture" and event.preview is not None:
                first = time.perf_counter() - t0
            if isinstance(event, EditResult):
                return first, time.perf_counter() - t0, event
        raise RuntimeError("the job ended without a result")

    def forget_photo() -> None:
        editor.photo_cache.clear()
        editor.inverter.cache.clear()
        editor.face_cache.clear()

    keys = ("first", "final", "rerender", "slider", "warm_first", "warm_final", "plain")
    rows: dict[str, list[float]] = {k: [] for k in keys}
    with Server(engine, "tcp://127.0.0.1:0") as srv, Client(srv.endpoint, timeout=60) as client:
        timed(client, EditRequest(source=wire, hairstyle=next(texts)))  # warm-up: allocations, first calls
        for n in range(repeat):
            forget_photo()
            first, final, result = timed(client, EditRequest(source=wire, hairstyle=next(texts)))
            rows["first"].append(first)
            rows["final"].append(final)
            strength = round(0.5 + 0.1 * n, 6)
            t0 = time.perf_counter()
            client.rerender(result.job, strength).result(timeout=600)
            rows["rerender"].append(time.perf_counter() - t0)
            done, deadline = engine.ahead_stats["rendered"], time.monotonic() + 600
            while engine.ahead_stats["rendered"] == done:  # the idle server renders strength - 0.1 first
                if time.monotonic() > deadline:
                    raise RuntimeError("the server rendered nothing ahead in 10 minutes")
                time.sleep(0.01)
            t0 = time.perf_counter()
            client.rerender(result.job, round(strength - 0.1, 6)).result(timeout=600)
            rows["slider"].append(time.perf_counter() - t0)
            first, final, _ = timed(client, EditRequest(source=wire, hairstyle=next(texts)))
            rows["warm_first"].append(first)
            rows["warm_final"].append(final)
            editor.photo_cache.clear()  # the plain path: W+ still cached (as before), the rest recomputed
            rows["plain"].append(timed(client, EditRequest(source=wire, hairstyle=next(texts), preview=False))[1])
    med = {k: statistics.median(v) for k, v in rows.items()}
    med["official"] = official_path_s(engine.models, texts, repeat)
    plain, official = med["plain"], med["official"]
    print(f"{size}x{size} photo, one face, {'tiny random' if tiny else 'full-size random'} networks, {device}, "
          f"threads={torch.get_num_threads()}, through a loopback server, median of {repeat}")
    for key, what in (("first", "new edit, first picture (256 px)"), ("final", "new edit, final layer"),
                      ("rerender", "exact strength re-render"), ("slider", "slider strength rendered ahead"),
                      ("warm_first", "warm new text, first picture"),
                      ("warm_final", "warm new text, final layer"), ("plain", "plain reference (see above)")):
        print(f"  {what:<34} {med[key]:8.3f} s   {med[key] / plain:5.2f}x plain   {med[key] / official:5.2f}x official")
    print(f"  {'official path':<34} {official:8.3f} s   (CLIP text, mapper, one synthesis; official_path_s)")
    return med


def layer_difference(a, b) -> dict[str, float]:
    """Max and mean absolute difference of two uint8 layers, in 8-bit levels."""
    import numpy as np

    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {"max": int(d.max()), "mean": float(d.mean())}


def run_gpu_check(device_name: str = "cuda", precision: str = "auto", tiny: bool = False, size: int = 2048,
                  repeat: int = 10, warmup: int = 3, json_path: str | None = None) -> int:
    """The GPU check of one run: warm full edit, re-render, stages, peak memory, difference to the CPU fp32
    result on the same inputs, and the reference ops' ratio. ``--device cpu --tiny`` runs the same code on
    the CPU with the small networks, as a smoke test."""
    import torch

    from hairclip.device import pick_device
    from hairclip.nets import ops
    from hairclip.pipeline.conditions import Conditions
    from hairclip.pipeline.editor import HairEditor

    if device_name.startswith("cuda") and not torch.cuda.is_available():
        print("hairclip bench gpu: no CUDA device is available here (torch.cuda.is_available() is False); run "
              "it on a machine with an NVIDIA GPU, or smoke-test it with --device cpu --tiny.", file=sys.stderr)
        return 1
    t_build = time.perf_counter()
    device = pick_device(device_name)
    cuda = device.type == "cuda"
    editor = HairEditor(_build_models(device, precision, tiny))
    build_s = time.perf_counter() - t_build
    photo = _photo(size)
    cond = Conditions(hairstyle="bob cut", color="purple")
    with torch.inference_mode():
        for _ in range(warmup):
            _full_edit(editor, photo, cond)
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        wall, stages, result = _measure(lambda: _full_edit(editor, photo, cond), repeat)
        re_wall, re_stages, _ = _measure(lambda: editor.rerender(photo, result, 0.7), repeat)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
        with ops.reference_ops():
            for _ in range(min(warmup, 1)):
                _full_edit(editor, photo, cond)
            ref_wall, _, _ = _measure(lambda: _full_edit(editor, photo, cond), max(1, repeat // 3))
        report = {
            "device": _device_name(device), "precision": editor.models.plan.describe(),
            "dtypes": editor.models.dtypes(), "photo": f"{size}x{size}, one face", "tiny": tiny,
            "repeat": repeat, "warmup": warmup, "build_s": build_s,
            "full_edit_ms": wall * 1000, "stages_ms": {k: v * 1000 for k, v in stages.items()},
            "rerender_ms": re_wall * 1000, "rerender_stages_ms": {k: v * 1000 for k, v in re_stages.items()},
            "peak_gpu_mb": peak, "reference_ops_ms": ref_wall * 1000, "reference_ops_ratio": ref_wall / wall,
        }
        cpu = HairEditor(_build_models(torch.device("cpu"), "fp32", tiny))  # the same seed: the same weights
        report["diff_vs_cpu_fp32"] = layer_difference(result.layer, _full_edit(cpu, photo, cond).layer)
    _print_gpu_report(report)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=1)
    return 0


def _device_name(device) -> str:
    import torch

    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)


def _print_gpu_report(r: dict) -> None:
    nets = "random tiny" if r["tiny"] else "random full-size"
    print(f"GPU check on {r['device']}: {r['photo']} photo, {nets} networks (built in {r['build_s']:.1f} s), "
          f"median of {r['repeat']} after {r['warmup']} warm-up(s)")
    print(f"precision: {r['precision']}")
    print("dtypes ran: " + ", ".join(f"{k} {v}" for k, v in r["dtypes"].items()))
    print(f"warm full edit       {r['full_edit_ms']:9.1f} ms")
    for k, v in sorted(r["stages_ms"].items(), key=lambda kv: -kv[1]):
        print(f"  {k:<18} {v:9.1f} ms")
    print(f"strength re-render   {r['rerender_ms']:9.1f} ms  ("
          + ", ".join(f"{k} {v:.1f}" for k, v in r["rerender_stages_ms"].items()) + ")")
    peak = "n/a (not CUDA)" if r["peak_gpu_mb"] is None else f"{r['peak_gpu_mb']:.0f} MB"
    print(f"peak GPU memory      {peak}  (torch.cuda.max_memory_allocated, timed runs)")
    d = r["diff_vs_cpu_fp32"]
    print(f"vs CPU fp32, same inputs: max {d['max']} levels, mean {d['mean']:.3f} (8-bit)")
    print(f"reference ops full edit {r['reference_ops_ms']:.1f} ms, ratio {r['reference_ops_ratio']:.2f}x")


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


if __name__ == "__main__":  # the child process of one case
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", required=True, choices=list(CASES))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--precision", default="auto", choices=precision.CHOICES)
    a = ap.parse_args()
    print(json.dumps(_run_one(a.one, a.device, a.repeat, a.warmup, a.precision)))
