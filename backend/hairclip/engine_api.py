"""The engine boundary: what the server needs from a model pipeline, and the line back it gives one.

The server imports only this module, never the pipeline (or torch); `hairclip serve` injects the real
engine (`hairclip.engine.make_engine`), tests inject doubles.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from hairclip_shared.protocol import (
    MAX_PREVIEW_SIDE,
    PROTOCOL_VERSION,
    Cancelled,
    EditRequest,
    EditResult,
    Image,
    RerenderRequest,
)

if TYPE_CHECKING:
    from hairclip.jobqueue import Job

log = logging.getLogger("hairclip.server")


@dataclass(frozen=True)
class EngineInfo:
    """What an engine tells the server's hello: its device, models and vocabulary."""

    device: str  # e.g. "cuda:0 (NVIDIA H100)" or "cpu"
    models: dict[str, str]  # name -> loaded | not_loaded | missing; 'detector' -> its name
    hairstyles: list[str]
    colours: list[str]
    weights: dict[str, dict[str, str]] = field(default_factory=dict)  # file -> {"path", "sha256"}


class Engine(Protocol):
    """What the server needs from a model pipeline.

    edit() and rerender() run on the single worker thread and should call ctx.progress() between stages:
    that is where a cancel or an expired lease stops the job. info() runs on the socket thread while a
    job may be running, so it must be cheap and must not touch the GPU.
    """

    def info(self) -> EngineInfo: ...

    def edit(self, request: EditRequest, ctx: JobContext) -> EditResult: ...

    def rerender(self, request: RerenderRequest, ctx: JobContext) -> EditResult:
        """Re-run only the edit and synthesis of job `request.base` at a new strength, from caches.

        Raise BadRequest(..., "unknown_job") when the base job is not cached.
        """
        ...

    # Optional, found with getattr: render_ahead(interrupted) -> more, run by the idle worker, and
    # ready(request, job_id) -> EditResult | None, run on the socket thread for a ``ready_only`` re-render
    # (a render ahead already made, or None; never the GPU work itself).


class JobContext:
    """The engine's line back to the server: progress reports that double as cancellation points."""

    def __init__(self, job: Job, post: Callable[[Job, dict, list], None], interval: float = 0.05):
        self._job, self._post, self._interval = job, post, interval
        self._stage: str | None = None
        self._last = 0.0

    @property
    def job_id(self) -> str:
        return self._job.id

    @property
    def cancelled(self) -> bool:
        return self._job.cancel.is_set()

    def check(self) -> None:
        """Raise the job's Cancelled error if the client cancelled, went silent, or the server is stopping."""
        if self._job.cancel.is_set():
            err = self._job.cancel_error or Cancelled("The job was cancelled.")
            raise type(err)(err.message, err.code)

    def progress(self, stage: str, fraction: float, preview: Image | None = None) -> None:
        """Report progress (fraction of this stage, 0..1); a small preview image is optional."""
        self.check()
        now = time.monotonic()
        # Progress is for eyes: more than ~20 messages a second per stage only costs the socket thread.
        if (stage == self._stage and fraction < 1.0 and preview is None
                and now - self._last < self._interval):
            return
        self._stage, self._last = stage, now
        header = {"v": PROTOCOL_VERSION, "op": "progress", "job": self._job.id, "stage": str(stage),
                  "fraction": min(max(float(fraction), 0.0), 1.0)}
        frames = []
        wants = not isinstance(self._job.request, EditRequest) or self._job.request.preview
        if preview is not None and wants:
            if max(preview.width, preview.height) <= MAX_PREVIEW_SIDE:
                header["images"], frames = [preview.spec("preview")], [preview.data]
            else:
                log.warning("job %s: dropped a %s preview (the limit is %d px a side)",
                            self._job.id, preview.describe(), MAX_PREVIEW_SIDE)
        self._post(self._job, header, frames)


def check_layer(request: EditRequest, result: EditResult) -> None:
    """The engine's side of the contract: a full-size layer in the format the plug-in asked for."""
    layer, src = result.layer, request.source
    want = (src.width, src.height, request.out_channels, request.out_depth)
    got = (layer.width, layer.height, layer.channels, layer.depth)
    if got != want:
        raise TypeError(f"the engine returned a {layer.describe()} layer; the request needs "
                        f"{src.width}x{src.height} {request.out_channels} {request.out_depth}")
