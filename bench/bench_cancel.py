"""Worst cancel latency of a big edit: the longest stretch between two cancellation points.

A cancel (or an expired lease) stops a job at the engine's next progress report, so the longest gap between
two reports is the longest a cancel can wait. This runs the whole edit in-process on a `--size`² photo with
the small random networks (a centred face filling `--face` of the short side) and times every gap, in wall
time and in the worker thread's CPU time (what the gap would take on a quiet machine: the networks run on one
thread here). Time inside the networks (e4e, the parser, the mapper, the generator) is counted apart: with the
real weights they run on the GPU, and a network call is never interrupted. The plain reference is the longest
stage, which is what a cancel waited for when stages had no inner cancellation points.

    python bench/bench_cancel.py [--size 4096] [--face 0.5] [--runs 2]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

import hairclip.pipeline.editor as editor_module
from hairclip.pipeline.conditions import Conditions
from hairclip.pipeline.editor import HairEditor
from hairclip.pipeline.invert import Inverter
from hairclip.pipeline.models import CentredFace, Models

_in_networks = [0.0]  # CPU seconds spent inside network calls so far


def _counted(fn):
    def wrapper(*args, **kwargs):
        t0 = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            _in_networks[0] += time.thread_time() - t0
    return wrapper


def _count_networks(editor: HairEditor) -> None:
    editor_module.synthesize = _counted(editor_module.synthesize)
    editor_module.edit_offset = _counted(editor_module.edit_offset)
    editor_module.parse.hair = _counted(editor_module.parse.hair)
    Inverter.__call__ = _counted(Inverter.__call__)
    editor.models.mapper.encode_image = _counted(editor.models.mapper.encode_image)


def gaps(editor: HairEditor, photo: np.ndarray, conditions: Conditions) -> tuple[list[tuple], dict[str, float]]:
    """(wall, cpu, cpu outside networks, from, to) for every gap between two progress reports; stage timings."""
    out, last = [], [time.perf_counter(), time.thread_time(), _in_networks[0], "start"]

    def progress(stage: str, fraction: float) -> None:
        f = sys._getframe(1)
        while f.f_code.co_name in ("check", "<lambda>"):
            f = f.f_back
        where = f"{f.f_code.co_name}:{f.f_lineno}"
        wall, cpu, net = time.perf_counter(), time.thread_time(), _in_networks[0]
        out.append((wall - last[0], cpu - last[1], (cpu - last[1]) - (net - last[2]), last[3], where))
        last[:] = [wall, cpu, net, where]

    result = editor.edit(photo, conditions, progress=progress)
    return out, result.timings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--face", type=float, default=0.5)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    editor = HairEditor(Models.random_tiny("cpu", detector=CentredFace(args.face)))
    _count_networks(editor)
    rng = np.random.default_rng(0)
    for run in range(args.runs):
        photo = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
        conditions = Conditions(hairstyle="afro", rgb=(200, 40, 40) if run % 2 else None)
        found, timings = gaps(editor, photo, conditions)
        worst_wall = max(found, key=lambda g: g[0])
        worst_cpu = max(found, key=lambda g: g[1])
        worst_outside = max(found, key=lambda g: g[2])
        longest = max(timings, key=timings.get)
        print(f"run {run + 1} ({'rgb' if run % 2 else 'text'} colour): {len(found)} cancellation points; "
              f"stage timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
        print(f"  worst gap, wall:               {worst_wall[0]:.3f} s  ({worst_wall[3]} -> {worst_wall[4]})")
        print(f"  worst gap, worker CPU:         {worst_cpu[1]:.3f} s  ({worst_cpu[3]} -> {worst_cpu[4]})")
        print(f"  worst gap outside networks:    {worst_outside[2]:.3f} s CPU  "
              f"({worst_outside[3]} -> {worst_outside[4]})")
        print(f"  reference, longest stage:      {timings[longest]:.3f} s ({longest}); ratio worst CPU gap "
              f"outside networks / longest stage {worst_outside[2] / timings[longest]:.3f}")
        print("  top 5 gaps (wall, CPU, CPU outside networks):")
        for g in sorted(found, key=lambda g: -g[1])[:5]:
            print(f"    {g[0]:.3f}  {g[1]:.3f}  {g[2]:.3f}  {g[3]} -> {g[4]}")


if __name__ == "__main__":
    main()
