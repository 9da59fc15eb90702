"""``hairclip bench gpu``: the GPU check, a warm full edit and a re-render on the GPU against the CPU's fp32
result for the same inputs, with peak GPU memory and the reference ops' ratio.
"""

from __future__ import annotations

import json
import sys
import time

from hairclip.bench_pipeline import _build_models, _full_edit, _measure, _photo


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
    cond = Conditions(hairstyle="bob cut", colour="purple")
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
