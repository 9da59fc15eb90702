"""The server's model engine: protocol requests in, `HairEditor` runs, protocol results out.

Keeps the last results (photo, per-face W+, offsets, hair masks) so that a strength change re-renders
without inverting or encoding anything.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import torch

from hairclip.engine_api import EngineInfo
from hairclip.errors import HairclipError
from hairclip.images import array_to_image, convert_depth, image_to_array
from hairclip.nets.mapper import COLOURS, HAIRSTYLES
from hairclip.pipeline.conditions import Conditions
from hairclip.pipeline.editor import EditOptions, EditResult, HairEditor
from hairclip.pipeline.models import Models, detector_name
from hairclip.pipeline.synthesize import to_uint8
from hairclip_shared.protocol import SLIDER_STEP, STRENGTH_RANGE, BadRequest, Face, Image, Rect
from hairclip_shared.protocol import EditResult as WireResult


class PipelineEngine:
    """The `hairclip.engine_api.Engine` that runs the real pipeline."""

    def __init__(self, models: Models, keep_jobs: int = 8):
        self.models = models
        self.editor = HairEditor(models)
        self.keep_jobs = keep_jobs
        self._jobs: OrderedDict[str, tuple[np.ndarray, EditResult, str, str]] = OrderedDict()
        self._lock = threading.RLock()  # the jobs, roots, renders ahead and plan: the socket thread reads them too
        self._device = f"{_describe(models.device)}; precision: {models.plan.describe()}"
        # Strength slider: (edit job, strength) renders made ahead while idle, and the ones still to make.
        self._root: dict[str, str] = {}  # job -> the edit job it re-renders (itself for an edit)
        self._ahead: OrderedDict[tuple[str, float], EditResult] = OrderedDict()
        self._plan: list[tuple[str, float]] = []
        self.ahead_stats = {"rendered": 0, "interrupted": 0, "used": 0}

    def info(self) -> EngineInfo:
        models = {k: "loaded" for k in self.models.names}
        models["detector"] = detector_name(self.models.detector)  # e.g. "dlib, then fan"
        return EngineInfo(device=self._device, models=models, hairstyles=list(HAIRSTYLES), colours=list(COLOURS),
                          weights=self.models.weights)

    def edit(self, request, ctx) -> WireResult:
        photo = image_to_array(request.source)
        conditions = Conditions(
            hairstyle=request.hairstyle, colour=request.colour, rgb=request.rgb,
            hairstyle_ref=_rgb(request.hairstyle_ref), colour_ref=_rgb(request.colour_ref),
            hairstyle_ref_aligned="hairstyle_ref" in request.aligned,
            colour_ref_aligned="colour_ref" in request.aligned)
        selection = request.selection
        if isinstance(selection, Rect):
            selection = (selection.x, selection.y, selection.w, selection.h)
        elif isinstance(selection, Image):
            selection = image_to_array(selection) > 0
        options = EditOptions(strength=request.strength, faces=request.faces, selection=selection,
                              aligned="source" in request.aligned, return_aligned=request.return_aligned,
                              whole_hair=request.whole_hair)

        def first_picture(image: np.ndarray) -> None:  # streamed as a progress preview before the final layer
            ctx.progress("first_picture", 1.0, preview=array_to_image(image))

        result = self.editor.edit(photo, conditions, options, progress=ctx.progress,
                                  first_picture=first_picture if request.preview else None)
        with self._lock:
            self._ahead.clear()  # a new edit: the slider renders of the old one are no longer wanted
            self._remember(ctx.job_id, ctx.job_id, photo.copy(), result, request.out_channels, request.out_depth)
            self._plan_ahead(ctx.job_id, result.strength)
        return self._wire(result, request.out_channels, request.out_depth, request.return_aligned)

    def rerender(self, request, ctx) -> WireResult:
        with self._lock:
            photo, previous, channels, depth = self._base(request.base)
            root = self._root.get(request.base, request.base)
            result = self._ahead.get((root, round(request.strength, 6)))
        if result is not None:
            self.ahead_stats["used"] += 1
        else:
            result = self.editor.rerender(photo, previous, request.strength, progress=ctx.progress)
        with self._lock:
            self._remember(ctx.job_id, root, photo, result, channels, depth)
            self._plan_ahead(root, request.strength)
        return self._wire(result, channels, depth, False)

    def ready(self, request, job_id: str) -> WireResult | None:
        """The render ahead at ``request.strength`` if the idle worker has finished it, else None; runs on the
        socket thread, so a plug-in can look without queueing a job (which would interrupt the renders ahead).
        A strength not yet planned moves the plan there: the slider is where the user is."""
        with self._lock:
            photo, _, channels, depth = self._base(request.base)
            root = self._root.get(request.base, request.base)
            key = (root, round(request.strength, 6))
            result = self._ahead.get(key)
            if result is None:
                if key not in self._plan:
                    self._plan_ahead(root, request.strength, include=True)
                return None
            self.ahead_stats["used"] += 1
            self._remember(job_id, root, photo, result, channels, depth)
        return self._wire(result, channels, depth, False)

    def _base(self, job: str) -> tuple[np.ndarray, EditResult, str, str]:
        """A cached job, refreshed in the cache (a long slider session must not evict the edit it re-renders)."""
        base = self._jobs.get(job)
        if base is None:
            raise BadRequest(f"job {job!r} is not in the server's cache; run the edit again", "unknown_job")
        self._jobs.move_to_end(job)
        root = self._root.get(job, job)
        if root in self._jobs:
            self._jobs.move_to_end(root)
        return base

    def _plan_ahead(self, root: str, strength: float, reach: int = 2, include: bool = False) -> None:
        """The grid strengths nearest ``strength`` first (``strength`` itself with ``include``), up to ``reach``
        steps either side, skipping those already rendered."""
        lo, hi = STRENGTH_RANGE
        k = round(strength / SLIDER_STEP)
        grid = {round(j * SLIDER_STEP, 6) for j in range(k - reach, k + reach + 1)}
        if include:
            grid.add(round(strength, 6))
        near = sorted((s for s in grid if lo <= s <= hi and (include or abs(s - strength) > 1e-9)
                       and (root, s) not in self._ahead), key=lambda s: (abs(s - strength), s))
        self._plan = [(root, s) for s in near]

    def render_ahead(self, interrupted) -> bool:
        """One planned slider render, while the server is idle; stopped by ``interrupted()`` (a queued job) at
        its next cancellation point. Returns whether more are planned."""
        with self._lock:
            if not self._plan:
                return False
            root, strength = self._plan[0]
            base = self._jobs.get(root)
            if base is None:
                self._plan.clear()
                return False

        def stop_if_asked(stage: str, fraction: float) -> None:
            if interrupted():
                raise _Interrupted

        try:
            result = self.editor.rerender(base[0], base[1], strength, progress=stop_if_asked)
        except _Interrupted:
            self.ahead_stats["interrupted"] += 1
            return False  # the plan stays; the next job replaces it
        with self._lock:
            if (root, strength) in self._plan:  # a look at another strength may have re-planned meanwhile
                self._plan.remove((root, strength))
            self._ahead[(root, strength)] = result
            while len(self._ahead) > 2 * 2:  # each holds a full layer and the faces' renders
                self._ahead.popitem(last=False)
            self.ahead_stats["rendered"] += 1
            return bool(self._plan)

    def _remember(self, job: str, root: str, photo: np.ndarray, result: EditResult, channels: str,
                  depth: str) -> None:
        """Keep a finished job and the edit it re-renders (``root``, itself for an edit); an edit's photo is a
        copy (the frame buffer goes away), a re-render shares it."""
        with self._lock:
            self._jobs[job] = (photo, result, channels, depth)
            self._root[job] = root
            while len(self._jobs) > self.keep_jobs:
                self._root.pop(self._jobs.popitem(last=False)[0], None)

    def _wire(self, result: EditResult, channels: str, depth: str, aligned: bool) -> WireResult:
        faces = [Face((x0, y0, x1 - x0, y1 - y0), True) for x0, y0, x1, y1 in result.boxes]
        extra = []
        if aligned:
            for f in result.faces:
                extra += [array_to_image(to_uint8(f.edited)), array_to_image(f.state.aligned.image1024),
                          array_to_image((f.mask.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy(), "A")]
                if f.inversion is not None:
                    extra.append(array_to_image(to_uint8(f.inversion)))
        layer = array_to_image(convert_depth(result.layer, depth), channels, depth)
        meta = {"strength": result.strength, "faces_edited": len(result.faces),
                "detectors": [f.state.source for f in result.faces],  # which detector found each face
                "aligned_order": ["edited", "aligned", "mask", "inversion"] if aligned else [],
                "hair_outside_crop": round(result.hair_outside_crop, 4), "whole_hair": result.whole_hair}
        outside = result.hair_outside_mask()  # sent only where the edit left hair outside the crops
        return WireResult(layer, faces, result.timings, extra, meta,
                          hair_outside=None if outside is None else array_to_image(outside, "A"))

    def close(self) -> None:
        with self._lock:
            self._jobs.clear()
            self._ahead.clear()
            self._plan.clear()


class _Interrupted(Exception):
    """A render ahead gives way to a real job."""


def _rgb(image: Image | None) -> np.ndarray | None:
    return None if image is None else np.ascontiguousarray(image_to_array(image))


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def make_engine(args) -> PipelineEngine:
    """`hairclip serve`'s engine: the official weights (fetched on first start), or ``--random-tiny`` networks."""
    import logging

    from hairclip.weights import checkpoint_files

    log = logging.getLogger("hairclip.engine")
    if getattr(args, "random_tiny", False) and checkpoint_files(args):
        raise HairclipError("--random-tiny builds its own networks; leave out --mapper, --e4e and --parsenet")
    if getattr(args, "random_tiny", False):
        log.warning("serving RANDOM TINY networks: every result is noise (for tests and demos only)")
        models = Models.random_tiny(args.device, detector=getattr(args, "detector", None),
                                    precision=getattr(args, "precision", "auto"))
    else:
        models = Models.load(args.device, args.weights_dir, download=not getattr(args, "no_download", False),
                             detector=getattr(args, "detector", None) or "dlib",
                             precision=getattr(args, "precision", "auto"), files=checkpoint_files(args))
    log.info("models on %s, precision: %s: %s; face detector: %s (loaded at the first photo that needs it)",
             models.device, models.plan.describe(), ", ".join(models.names), detector_name(models.detector))
    for name, w in models.weights.items():
        log.info("%s: %s (sha256 %s)", name, w["path"], w["sha256"])
    engine = PipelineEngine(models)
    if getattr(args, "preload", False):  # one throw-away synthesis, so the first real edit pays no warm-up
        from hairclip.pipeline.synthesize import synthesize

        synthesize(models.decoder, models.latent_avg[None])
    return engine
