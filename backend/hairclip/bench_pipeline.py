"""``hairclip bench pipeline`` and ``hairclip bench interactive``: a whole edit and a strength re-render in
process, and the first picture, final, re-render and warm edit through a loopback server, on random networks.
"""

from __future__ import annotations

import statistics
import time


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
    """An edit of a photo seen for the first time: nothing cached (the per-photo crop, W+ and masks neither)."""
    editor.photo_cache.clear()
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
    cond = Conditions(hairstyle="bob cut", colour="purple")

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
                emb = mapper.encode_text_ref(tokenize(hairstyle_text(next(texts))).to(w.device)).float()
                synthesize(decoder, apply_offset(w, edit_offset(mapper, w, emb, None), 1.0))
                times.append(time.perf_counter() - t0)
    finally:
        decoder.channels_last = saved
    return statistics.median(times)


def first_drag_s(client, source, result, strength: float) -> float:
    """Seconds from the slider's first move to the cross-faded picture, as the plug-ins make it: a fresh
    `RenderSession` (holding only the exact render at ``strength``) looks at the server's render ahead at
    ``strength - 0.1``, takes the full layer, lays it over the photo at 256 px and mixes the two."""
    from hairclip_shared.preview import RenderSession

    job = result.job
    session = RenderSession(lambda s: client.rerender(job, s), source, result, strength,
                            ready=lambda s: client.rerender(job, s, ready_only=True))
    t0 = time.perf_counter()
    session.move(round(strength - 0.05, 6))
    while session.frame().kind != "crossfade":
        if time.perf_counter() - t0 > 60:
            raise RuntimeError(f"no cross-fade within a minute ({session.error or 'nothing came'})")
        session.poll()
        time.sleep(0.001)
    elapsed = time.perf_counter() - t0
    session.cancel()
    return elapsed


def run_interactive(device_name: str, repeat: int, size: int, precision: str = "auto", tiny: bool = False) -> dict:
    """What the user feels, through a real server on loopback: medians of a new edit's first picture and final
    layer, the exact strength re-render, and a warm edit with new text (photo cached). The plain reference,
    in the same run, is the same new-text edit without the per-photo cache and without a first picture."""
    import torch

    from hairclip.device import pick_device
    from hairclip.engine import PipelineEngine
    from hairclip.images import array_to_image
    from hairclip.nets.mapper import HAIRSTYLES
    from hairclip.server import Server
    from hairclip_shared.client import Client
    from hairclip_shared.protocol import EditRequest, EditResult, Progress

    device = pick_device(device_name)
    torch.manual_seed(0)
    engine = PipelineEngine(_build_models(device, precision, tiny))
    editor = engine.editor
    wire = array_to_image(_photo(size))
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
            rows["slider"].append(first_drag_s(client, wire, result, strength))
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
                      ("rerender", "exact strength re-render"), ("slider", "slider, first drag (a look)"),
                      ("warm_first", "warm new text, first picture"),
                      ("warm_final", "warm new text, final layer"), ("plain", "plain reference (see above)")):
        print(f"  {what:<34} {med[key]:8.3f} s   {med[key] / plain:5.2f}x plain   {med[key] / official:5.2f}x official")
    print(f"  {'official path':<34} {official:8.3f} s   (CLIP text, mapper, one synthesis; official_path_s)")
    return med
