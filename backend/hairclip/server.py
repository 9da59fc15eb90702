"""The HairCLIP server: models load once, GPU work runs on ONE worker thread, the socket never waits for it.

    plug-in --DEALER--> ROUTER (socket thread: hello, ping, cancel, leases) --queue--> worker --> Engine
                        ROUTER <--outbox (progress, result, error)--------------------- worker

The socket thread owns the transport (`hairclip.transport`: ZeroMQ, CURVE, framing); the worker hands it
messages through an outbox and a wake-up. The bookkeeping of jobs, leases and replays is
`hairclip.jobqueue`, without sockets. Every size limit is checked on the declared sizes before anything is
allocated. The model pipeline plugs in through `hairclip.engine_api`; this module never imports torch.
The commands (`hairclip serve`, `status`, `keys`) are in `hairclip.cli_server`.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import zmq

from hairclip import __version__
from hairclip.engine_api import Engine, EngineInfo, JobContext, check_layer
from hairclip.jobqueue import Job, JobQueue, MiB, accepted, peer_name
from hairclip.keys import check_bind
from hairclip.transport import Transport
from hairclip_shared.protocol import (
    COMMON,
    DEFAULT_ENDPOINT,
    EDIT_ROLES,
    PROTOCOL_VERSION,
    REQUESTS,
    BadRequest,
    EditRequest,
    HairclipError,
    JobFailed,
    Limits,
    NotReady,
    RerenderRequest,
    ServerInfo,
    check_fields,
    check_id,
    error_header,
    parse_images,
    unpack_header,
)

__all__ = ["Engine", "EngineInfo", "JobContext", "Server", "serve"]  # the engine names, for engines and tests
log = logging.getLogger("hairclip.server")


class Server:
    """Serves one Engine on one endpoint: serve_forever() in the main thread, or as a `with` block in tests."""

    def __init__(self, engine: Engine, bind: str = DEFAULT_ENDPOINT, *, limits: Limits | None = None,
                 keys_dir: Path | None = None, replay_bytes: int = 128 * MiB, replay_jobs: int = 64,
                 progress_interval: float = 0.05, shutdown_grace: float = 10.0):
        keys_dir = Path(keys_dir) if keys_dir is not None else None
        check_bind(bind, keys_dir)
        self.engine, self.bind, self.keys_dir = engine, bind, keys_dir
        self.limits = limits or Limits()
        self.progress_interval, self.shutdown_grace = progress_interval, shutdown_grace
        self.endpoint: str | None = None  # the bound address, with the port the OS chose
        self.jobs = JobQueue(self.limits, replay_bytes, replay_jobs)
        self._stop = threading.Event()
        self._outbox: deque[tuple[Job, dict, list, bool]] = deque()
        self._transport: Transport | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Bind and start the worker; returns the bound endpoint."""
        self._transport = Transport(self.bind, self.limits, self.keys_dir)
        self.endpoint = self._transport.endpoint
        self._worker = threading.Thread(target=self._work, name="hairclip-worker", daemon=True)
        self._worker.start()
        log.info("HairCLIP server %s listening on %s (protocol %d, %s)", __version__, self.endpoint,
                 PROTOCOL_VERSION, "CURVE" if self._transport.curve else "no encryption: loopback only")
        return self.endpoint

    def serve_forever(self) -> None:
        """Run the socket loop in this thread until stop(), SIGINT or SIGTERM."""
        if self._transport is None:
            self.start()
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            self._loop()
        finally:
            for sig, old in handlers.items():
                signal.signal(sig, old)
            self._shutdown()

    def stop(self) -> None:
        self._stop.set()
        if self._transport is not None:
            self._transport.wake()

    def __enter__(self) -> Server:
        self.start()
        self._thread = threading.Thread(target=self.serve_forever, name="hairclip-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join(self.shutdown_grace + 5)

    def _on_signal(self, signum: int, frame: object) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        self._stop.set()

    def _shutdown(self) -> None:
        log.info("shutting down")
        self._send_all(self.jobs.stop())
        self._worker.join(self.shutdown_grace)
        if self._worker.is_alive():
            log.warning("the engine did not stop within %g s; exiting anyway", self.shutdown_grace)
        self._flush()
        close = getattr(self.engine, "close", None)
        if callable(close):
            close()
        self._transport.close()
        log.info("stopped")

    # ------------------------------------------------------------------------------------------ socket thread

    def _loop(self) -> None:
        tick = max(10, min(100, int(self.limits.lease_s * 250)))  # ms; leases are checked every tick
        while not self._stop.is_set():
            if self._transport.poll(tick):
                for _ in range(100):  # bounded, so the outbox and the leases get their turn
                    msg = self._transport.recv()
                    if msg is None:
                        break
                    self._handle(*msg)
            self._flush()
            self._send_all(self.jobs.expire())

    def _handle(self, peer: bytes, parts: list[zmq.Frame], extra: int) -> None:
        self.jobs.seen(peer)  # any message renews the client's lease
        req = job = op = None
        try:
            if not parts:
                raise BadRequest("The message has no header.", "bad_header")
            header = unpack_header(parts[0].buffer, self.limits.max_header_bytes)
            op = header["op"]
            req = header.get("req") if isinstance(header.get("req"), str) else None
            job = header.get("job") if isinstance(header.get("job"), str) else None
            if extra:
                raise BadRequest(f"The message has {len(parts) + extra - 1} pixel frames; the limit is "
                                 f"{self.limits.max_frames}.", "too_large")
            if op not in REQUESTS:
                raise BadRequest(f"Unknown op {op[:40]!r}; this server knows {', '.join(REQUESTS)}.",
                                 "unknown_op")
            required, optional = REQUESTS[op]
            check_fields(header, f"the {op!r} header", {**COMMON, **required}, optional)
            frames = parts[1:]
            if frames and op not in ("echo", "edit"):
                raise BadRequest(f"{op!r} takes no pixel frames; {len(frames)} came.", "bad_frames")
            getattr(self, f"_on_{op}")(peer, header, frames)
        except HairclipError as e:
            (log.debug if isinstance(e, NotReady) else log.info)(  # a slider's looks are routine
                "rejected %s from %s: %s", (op or "a message")[:40], peer_name(peer), e)
            self._send(peer, error_header(e, job=job, req=req))
        except Exception:
            log.exception("error while handling %s from %s", (op or "a message")[:40], peer_name(peer))
            self._send(peer, error_header(JobFailed("Internal server error; see the server log.", "internal"),
                                          job=job, req=req))

    def _send(self, peer: bytes, header: dict, frames: list | tuple = ()) -> None:
        self._transport.send(peer, header, frames)

    def _send_all(self, messages: list[tuple[bytes, dict, list]]) -> None:
        for message in messages:
            self._send(*message)

    def _on_hello(self, peer: bytes, header: dict, frames: list) -> None:
        info = self.engine.info()
        log.info("hello from %s (%s)", peer_name(peer), header.get("client", "unnamed client"))
        self._send(peer, ServerInfo(__version__, PROTOCOL_VERSION, info.device, info.models, info.hairstyles,
                                    info.colours, self.limits, info.weights).to_wire(header["req"]))

    def _on_ping(self, peer: bytes, header: dict, frames: list) -> None:
        self._send(peer, {"v": PROTOCOL_VERSION, "op": "pong", **({"req": header["req"]} if "req" in header else {})})

    def _on_echo(self, peer: bytes, header: dict, frames: list) -> None:
        parse_images(header["images"], [f.buffer for f in frames], self.limits)
        self._send(peer, {"v": PROTOCOL_VERSION, "op": "echo", "req": header["req"], "images": header["images"]},
                   frames)  # the received frames go back out without a copy

    def _on_edit(self, peer: bytes, header: dict, frames: list) -> None:
        def build() -> EditRequest:
            images = parse_images(header["images"], [f.buffer for f in frames], self.limits, EDIT_ROLES)
            return EditRequest.from_wire(header["params"], images)

        self._submit(peer, header, build, sum(len(f.buffer) for f in frames))

    def _on_rerender(self, peer: bytes, header: dict, frames: list) -> None:
        if header.get("ready_only"):
            self._answer_ready(peer, header)
        else:
            self._submit(peer, header, lambda: RerenderRequest(header["base"], header["strength"]), 0)

    def _answer_ready(self, peer: bytes, header: dict) -> None:
        """A ``ready_only`` re-render, answered here and now: the render the idle worker made ahead, or
        NotReady. Nothing is queued, so the worker's render ahead is not interrupted by the look."""
        job_id = check_id(header["job"], "The job id")
        request = RerenderRequest(header["base"], header["strength"], True)
        ready = getattr(self.engine, "ready", None)
        result = ready(request, job_id) if callable(ready) else None
        if result is None:
            self.jobs.nudge()  # the look may have moved the engine's plan: an idle worker starts on it
            raise NotReady(f"Strength {request.strength:g} is not rendered ahead yet; nothing was queued.")
        self._send(peer, *result.to_wire(job_id))

    def _submit(self, peer: bytes, header: dict, build: Callable[[], EditRequest | RerenderRequest],
                nbytes: int) -> None:
        job_id = check_id(header["job"], "The job id")
        asked = {k: v for k, v in header.items() if k != "v"}
        again = self.jobs.again(job_id, peer, asked)  # idempotent: the same job again, maybe from a new connection
        if again is not None:
            self._send(*again)
            return
        request = build()  # validation, outside the queue's lock
        job, position = self.jobs.add(job_id, peer, asked, request, nbytes)
        log.info("job %s (%s) from %s queued behind %d", job_id, header["op"], peer_name(peer), position)
        self._send(peer, accepted(job, position, "queued"))

    def _on_cancel(self, peer: bytes, header: dict, frames: list) -> None:
        job_id = header["job"]
        state, messages = self.jobs.cancel(job_id)
        if state == "cancelling":
            log.info("job %s: cancel asked by %s", job_id, peer_name(peer))
        self._send_all(messages)
        self._send(peer, {"v": PROTOCOL_VERSION, "op": "cancel", "job": job_id, "state": state})

    def _flush(self) -> None:
        while self._outbox:
            job, header, frames, terminal = self._outbox.popleft()
            if terminal:
                self._send(*self.jobs.finish(job, header, frames))
            elif job.state != "done":
                self._send(job.peer, header, frames)

    # ------------------------------------------------------------------------------------------ worker thread

    def _post(self, job: Job, header: dict, frames: list, terminal: bool = False) -> None:
        self._outbox.append((job, header, frames, terminal))
        self._transport.wake()

    def _work(self) -> None:
        ahead = False  # the engine has renders ahead to do while idle
        while True:
            job = self.jobs.take(0.0 if ahead else None)
            if job is None:
                if self.jobs.waiting():  # stopping
                    return
                ahead = self._ahead()
                continue
            header, frames = self._run(job)
            self.jobs.ran(job)
            self._post(job, header, frames, terminal=True)
            release_freed_memory()
            ahead = callable(getattr(self.engine, "render_ahead", None))

    def _ahead(self) -> bool:
        """One render ahead (an engine's optional ``render_ahead(interrupted) -> more``), stopped at its next
        cancellation point by any queued job; a failure there is logged and never reaches a client."""
        try:
            return bool(self.engine.render_ahead(self.jobs.waiting))
        except Exception:
            log.exception("a render ahead failed; rendering ahead stops until the next job")
            return False

    def _run(self, job: Job) -> tuple[dict, list]:
        ctx, t0 = JobContext(job, self._post, self.progress_interval), time.perf_counter()
        kind = "edit" if isinstance(job.request, EditRequest) else "rerender"
        log.info("job %s started (%s)", job.id, kind)
        try:
            ctx.check()
            if kind == "edit":
                result = self.engine.edit(job.request, ctx)
                check_layer(job.request, result)
            else:
                result = self.engine.rerender(job.request, ctx)
            header, frames = result.to_wire(job.id)
            log.info("job %s done in %.2f s: %d of %d faces edited", job.id, time.perf_counter() - t0,
                     result.faces_edited, len(result.faces))
            return header, frames
        except HairclipError as e:
            log.info("job %s ended after %.2f s: %s", job.id, time.perf_counter() - t0, e)
            return error_header(e, job=job.id), []
        except Exception as e:
            log.exception("job %s failed inside the engine", job.id)
            err = JobFailed(f"The edit failed inside the server ({type(e).__name__}: {e}).", "internal")
            return error_header(err, job=job.id), []


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (macOS, Windows, musl)."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Give the heap pages that a finished job freed back to the OS.

    A 4096 px job allocates and frees dozens of 12-200 MB frames. After the first frees glibc raises its mmap
    threshold (up to 32 MB), so later frames come from the heap, and freed heap memory stays in the process:
    over 40 jobs on 4096 px photos RSS sat 170-300 MiB above what the server holds. malloc_trim(0) returns
    it: about 20 ms for 300 MB here, job times unchanged within noise (bench/bench_rss.py).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def serve(engine: Engine, bind: str = DEFAULT_ENDPOINT, *, limits: Limits | None = None,
          keys_dir: Path | None = None) -> int:
    """`hairclip serve`'s loop: bind, print the endpoint, serve until a signal; returns the exit code."""
    server = Server(engine, bind, limits=limits, keys_dir=keys_dir)
    try:
        server.start()
    except zmq.ZMQError as e:
        print(f"hairclip serve: cannot bind {bind}: {e.strerror}. Is a server already running there? "
              "(`hairclip status`)", file=sys.stderr)
        return 1
    print(f"listening on {server.endpoint}", flush=True)
    server.serve_forever()
    return 0
