"""The HairCLIP server: models load once, GPU work runs on ONE worker thread, the socket never waits for it.

    plug-in --DEALER--> ROUTER (socket thread: hello, ping, cancel, leases) --queue--> worker --> Engine
                        ROUTER <--outbox (progress, result, error)--------------------- worker

The socket thread owns the ROUTER (ZeroMQ sockets are not thread-safe); the worker hands it messages
through an outbox and a wake-up pipe. Every size limit is checked on the declared sizes before anything
is allocated, and per frame by libzmq itself (ZMQ_MAXMSGSIZE). The model pipeline plugs in through the
small `Engine` interface below; this module never imports torch.
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import logging
import re
import shutil
import signal
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import zmq

from hairclip import __version__
from hairclip_shared.client import Client, CurveKeys
from hairclip_shared.protocol import (
    COMMON,
    DEFAULT_ENDPOINT,
    EDIT_ROLES,
    MAX_PREVIEW_SIDE,
    PROTOCOL_VERSION,
    REQUESTS,
    AuthFailed,
    BadRequest,
    Busy,
    Cancelled,
    EditRequest,
    EditResult,
    HairclipError,
    Image,
    JobFailed,
    Limits,
    RerenderRequest,
    ServerInfo,
    check_fields,
    check_id,
    error_header,
    pack,
    parse_images,
    unpack_header,
)

log = logging.getLogger("hairclip.server")
MiB = 1 << 20


# ---------------------------------------------------------------------------------------------- engine

@dataclass(frozen=True)
class EngineInfo:
    device: str  # e.g. "cuda:0 (NVIDIA H100)" or "cpu"
    models: dict[str, str]  # name -> loaded | not_loaded | missing
    hairstyles: list[str]
    colours: list[str]


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


class JobContext:
    """The engine's line back to the server: progress reports that double as cancellation points."""

    def __init__(self, server: Server, job: _Job):
        self._server, self._job = server, job
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
                and now - self._last < self._server.progress_interval):
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
        self._server._post(self._job, header, frames, terminal=False)


# ---------------------------------------------------------------------------------------------- server

@dataclass(eq=False)
class _Job:
    id: str
    peer: bytes  # the client's routing id; a resubmission from a new connection moves it
    header: dict  # the request minus "v": a resubmission must match it exactly
    request: EditRequest | RerenderRequest | None
    nbytes: int
    state: str = "queued"  # queued | running | done
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_error: HairclipError | None = None
    terminal: tuple[dict, list] | None = None  # the last message, kept for replay


def is_local(endpoint: str) -> bool:
    """Only loopback TCP, ipc and inproc count as local; anything else needs CURVE."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name or a host name: may be reachable from outside


def check_bind(endpoint: str, keys_dir: Path | None) -> None:
    if keys_dir is None and not is_local(endpoint):
        raise ValueError(f"Refusing to bind to {endpoint} without CURVE keys: anyone on the network could "
                         "send jobs. Run `hairclip keys` and pass --keys-dir, or bind to tcp://127.0.0.1.")
    if keys_dir is not None:
        for need in (keys_dir / "server.key_secret", keys_dir / "authorized_clients"):
            if not need.exists():
                raise ValueError(f"{need} does not exist; run `hairclip keys --dir {keys_dir}`.")


def _peer(peer: bytes) -> str:
    """A routing id for the logs: our clients' are readable, libzmq's own are binary."""
    text = peer.decode("ascii", "replace")
    return text[:40] if text.isprintable() else peer.hex()


class Server:
    """Serves one Engine on one endpoint. Use serve_forever() in the main thread, or `with` in tests."""

    def __init__(self, engine: Engine, bind: str = DEFAULT_ENDPOINT, *, limits: Limits | None = None,
                 keys_dir: Path | None = None, replay_bytes: int = 128 * MiB, replay_jobs: int = 64,
                 progress_interval: float = 0.05, shutdown_grace: float = 10.0):
        keys_dir = Path(keys_dir) if keys_dir is not None else None
        check_bind(bind, keys_dir)
        self.engine, self.bind, self.keys_dir = engine, bind, keys_dir
        self.limits = limits or Limits()
        self.replay_bytes, self.replay_jobs = replay_bytes, replay_jobs
        self.progress_interval, self.shutdown_grace = progress_interval, shutdown_grace
        self.endpoint: str | None = None  # the bound address, with the port the OS chose
        self._stop = threading.Event()
        self._cond = threading.Condition()  # guards _queue, _queued_bytes, _running and job states
        self._queue: deque[_Job] = deque()
        self._queued_bytes = 0
        self._running: _Job | None = None
        self._stopping = False
        self._jobs: dict[str, _Job] = {}  # queued or running; only the socket thread changes it
        self._done: OrderedDict[str, _Job] = OrderedDict()
        self._done_bytes = 0
        self._last_seen: dict[bytes, float] = {}
        self._outbox: deque[tuple[_Job, dict, list, bool]] = deque()
        self._wake_lock = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._ctx: zmq.Context | None = None
        self._auth = self._router = self._wake_rx = self._wake_tx = None

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Bind and start the worker; returns the bound endpoint."""
        ctx = self._ctx = zmq.Context()
        try:
            router = self._router = ctx.socket(zmq.ROUTER)
            router.maxmsgsize = self.limits.max_frame_bytes  # libzmq drops a peer that sends a larger frame
            router.router_mandatory = True  # a reply to a vanished client raises, so we can log it
            router.router_handover = True
            router.linger = 500
            if self.keys_dir is not None:
                from zmq.auth.thread import ThreadAuthenticator

                public, secret = zmq.auth.load_certificate(self.keys_dir / "server.key_secret")
                self._auth = ThreadAuthenticator(ctx, log=logging.getLogger("hairclip.server.auth"))
                self._auth.start()
                self._auth.configure_curve(domain="*", location=str(self.keys_dir / "authorized_clients"))
                router.curve_server = True
                router.curve_publickey, router.curve_secretkey = public, secret
            router.bind(self.bind)
            self.endpoint = router.last_endpoint.decode()
            wake = f"inproc://hairclip-server-wake-{id(self)}"
            self._wake_rx = ctx.socket(zmq.PAIR)
            self._wake_rx.bind(wake)
            self._wake_tx = ctx.socket(zmq.PAIR)
            self._wake_tx.connect(wake)
        except BaseException:
            self._close_sockets()
            raise
        self._worker = threading.Thread(target=self._work, name="hairclip-worker", daemon=True)
        self._worker.start()
        log.info("HairCLIP server %s listening on %s (protocol %d, %s)", __version__, self.endpoint,
                 PROTOCOL_VERSION, "CURVE" if self._auth else "no encryption: loopback only")
        return self.endpoint

    def serve_forever(self) -> None:
        """Run the socket loop in this thread until stop(), SIGINT or SIGTERM."""
        if self._ctx is None:
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
        self._wake()

    def _wake(self) -> None:
        with self._wake_lock:
            if not self._closed and self._wake_tx is not None:
                try:
                    self._wake_tx.send(b"", zmq.NOBLOCK)
                except zmq.Again:
                    pass  # wake-ups are pending already

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
        with self._cond:
            self._stopping = True
            for job in list(self._jobs.values()):
                self._cancel(job, Cancelled("The HairCLIP server is shutting down.", "shutting_down"))
            self._cond.notify_all()
        self._worker.join(self.shutdown_grace)
        if self._worker.is_alive():
            log.warning("the engine did not stop within %g s; exiting anyway", self.shutdown_grace)
        self._flush()
        close = getattr(self.engine, "close", None)
        if callable(close):
            close()
        self._close_sockets()
        log.info("stopped")

    def _close_sockets(self) -> None:
        with self._wake_lock:
            self._closed = True
            for sock in (self._router, self._wake_rx, self._wake_tx):
                if sock is not None:
                    sock.close()
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()

    # ------------------------------------------------------------------------------------------ socket thread

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._wake_rx, zmq.POLLIN)
        tick = max(10, min(100, int(self.limits.lease_s * 250)))  # ms; leases are checked every tick
        while not self._stop.is_set():
            ready = dict(poller.poll(tick))
            if self._wake_rx in ready:
                while self._wake_rx.poll(0):
                    self._wake_rx.recv()
            if self._router in ready:
                for _ in range(100):  # bounded, so the outbox and the leases get their turn
                    msg = self._recv()
                    if msg is None:
                        break
                    self._handle(*msg)
            self._flush()
            self._expire_leases()

    def _recv(self) -> tuple[bytes, list[zmq.Frame], int] | None:
        """One message, keeping at most header + max_frames parts; the rest are released unread."""
        try:
            first = self._router.recv(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        parts, extra, more = [], 0, first.more
        while more:
            frame = self._router.recv(copy=False)
            more = frame.more
            if len(parts) <= self.limits.max_frames:
                parts.append(frame)
            else:
                extra += 1
        return first.bytes, parts, extra

    def _handle(self, peer: bytes, parts: list[zmq.Frame], extra: int) -> None:
        self._last_seen[peer] = time.monotonic()  # any message renews the client's lease
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
            log.info("rejected %s from %s: %s", (op or "a message")[:40], _peer(peer), e)
            self._send(peer, error_header(e, job=job, req=req))
        except Exception:
            log.exception("error while handling %s from %s", (op or "a message")[:40], _peer(peer))
            self._send(peer, error_header(JobFailed("Internal server error; see the server log.", "internal"),
                                          job=job, req=req))

    def _send(self, peer: bytes, header: dict, frames: list | tuple = ()) -> None:
        try:
            self._router.send_multipart([peer, pack(header), *frames], flags=zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as e:  # EHOSTUNREACH: the client is gone; EAGAIN: it stopped reading
            log.info("could not deliver %s to %s: %s", header.get("op"), _peer(peer), e.strerror)

    def _on_hello(self, peer: bytes, header: dict, frames: list) -> None:
        info = self.engine.info()
        log.info("hello from %s (%s)", _peer(peer), header.get("client", "unnamed client"))
        self._send(peer, ServerInfo(__version__, PROTOCOL_VERSION, info.device, info.models, info.hairstyles,
                                    info.colours, self.limits).to_wire(header["req"]))

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
        self._submit(peer, header, lambda: RerenderRequest(header["base"], header["strength"]), 0)

    def _submit(self, peer: bytes, header: dict, build: Callable[[], EditRequest | RerenderRequest],
                nbytes: int) -> None:
        job_id = check_id(header["job"], "The job id")
        asked = {k: v for k, v in header.items() if k != "v"}
        old = self._jobs.get(job_id) or self._done.get(job_id)
        if old is not None:  # idempotent: the same job again, maybe from a new connection
            if old.header != asked:
                raise BadRequest(f"Job id {job_id} was already used for a different request; use a new id.",
                                 "job_conflict")
            old.peer = peer
            log.info("job %s asked for again by %s (%s)", job_id, _peer(peer), old.state)
            if old.terminal is not None:
                self._send(peer, *old.terminal)
            else:
                with self._cond:
                    self._accepted(old, self._position(old))
            return
        request = build()  # validation, outside the lock
        with self._cond:
            if self._stopping:
                raise Cancelled("The HairCLIP server is shutting down.", "shutting_down")
            waiting = len(self._queue)
            if waiting >= self.limits.max_queue:
                raise Busy(f"The HairCLIP server is busy: {waiting} jobs are waiting. Try again when one "
                           "finishes.")
            if self._queued_bytes + nbytes > self.limits.max_queued_bytes:
                raise Busy("The HairCLIP server is busy: the waiting jobs already hold "
                           f"{self._queued_bytes // MiB} MiB of images. Try again when one finishes.")
            job = _Job(job_id, peer, asked, request, nbytes)
            self._queue.append(job)
            self._queued_bytes += nbytes
            self._jobs[job_id] = job
            position = self._position(job)
            self._cond.notify()
        log.info("job %s (%s) from %s queued behind %d", job_id, header["op"], _peer(peer), position)
        self._accepted(job, position, "queued")

    def _position(self, job: _Job) -> int:
        """Needs self._cond. Jobs ahead of this one, the running one included."""
        return self._queue.index(job) + (self._running is not None) if job.state == "queued" else 0

    def _accepted(self, job: _Job, position: int, state: str | None = None) -> None:
        self._send(job.peer, {"v": PROTOCOL_VERSION, "op": "accepted", "job": job.id, "position": position,
                              "state": state or job.state})

    def _on_cancel(self, peer: bytes, header: dict, frames: list) -> None:
        job_id = header["job"]
        job = self._jobs.get(job_id)
        if job is None:
            state = "finished" if job_id in self._done else "unknown"
        else:
            state = "cancelling"
            log.info("job %s: cancel asked by %s", job_id, _peer(peer))
            with self._cond:
                self._cancel(job, Cancelled("The job was cancelled."))
        self._send(peer, {"v": PROTOCOL_VERSION, "op": "cancel", "job": job_id, "state": state})

    def _cancel(self, job: _Job, err: HairclipError) -> None:
        """Needs self._cond. A queued job ends now; a running one at the engine's next check()."""
        if job.state == "queued":
            self._queue.remove(job)
            self._queued_bytes -= job.nbytes
            self._finish(job, error_header(err, job=job.id), [])
        elif job.state == "running" and not job.cancel.is_set():
            job.cancel_error = err
            job.cancel.set()

    def _expire_leases(self) -> None:
        now, lease = time.monotonic(), self.limits.lease_s
        with self._cond:
            for job in list(self._jobs.values()):
                silent = now - self._last_seen.get(job.peer, 0.0)
                if silent > lease and not job.cancel.is_set():
                    log.warning("job %s: client %s silent for %.1f s (lease %g s); cancelling", job.id,
                                _peer(job.peer), silent, lease)
                    self._cancel(job, Cancelled(f"The client sent no heartbeat for {lease:g} s.",
                                                "lease_expired"))
        busy = {job.peer for job in self._jobs.values()}
        for peer, seen in list(self._last_seen.items()):
            if peer not in busy and now - seen > 2 * lease:
                del self._last_seen[peer]

    def _flush(self) -> None:
        while self._outbox:
            job, header, frames, terminal = self._outbox.popleft()
            if terminal:
                with self._cond:
                    self._finish(job, header, frames)
            elif job.state != "done":
                self._send(job.peer, header, frames)

    def _finish(self, job: _Job, header: dict, frames: list) -> None:
        """Needs self._cond. Sends the job's last message and keeps it for a replay."""
        job.state, job.terminal, job.request = "done", (header, frames), None
        self._jobs.pop(job.id, None)
        self._done[job.id] = job
        self._done_bytes += sum(memoryview(f).nbytes for f in frames)
        self._send(job.peer, header, frames)
        while self._done and (len(self._done) > self.replay_jobs or self._done_bytes > self.replay_bytes):
            _, old = self._done.popitem(last=False)
            self._done_bytes -= sum(memoryview(f).nbytes for f in old.terminal[1])

    # ------------------------------------------------------------------------------------------ worker thread

    def _post(self, job: _Job, header: dict, frames: list, terminal: bool) -> None:
        self._outbox.append((job, header, frames, terminal))
        self._wake()

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stopping)
                if self._stopping:
                    return
                job = self._queue.popleft()
                self._queued_bytes -= job.nbytes
                job.state, self._running = "running", job
            header, frames = self._run(job)
            with self._cond:
                self._running = None
            self._post(job, header, frames, terminal=True)
            release_freed_memory()

    def _run(self, job: _Job) -> tuple[dict, list]:
        ctx, t0 = JobContext(self, job), time.perf_counter()
        kind = "edit" if isinstance(job.request, EditRequest) else "rerender"
        log.info("job %s started (%s)", job.id, kind)
        try:
            ctx.check()
            if kind == "edit":
                result = self.engine.edit(job.request, ctx)
                _check_layer(job.request, result)
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


def _check_layer(request: EditRequest, result: EditResult) -> None:
    """The engine's side of the contract: a full-size layer in the format the plug-in asked for."""
    layer, src = result.layer, request.source
    want = (src.width, src.height, request.out_channels, request.out_depth)
    got = (layer.width, layer.height, layer.channels, layer.depth)
    if got != want:
        raise TypeError(f"the engine returned a {layer.describe()} layer; the request needs "
                        f"{src.width}x{src.height} {request.out_channels} {request.out_depth}")


# ---------------------------------------------------------------------------------------------- keys

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


def default_keys_dir() -> Path:
    import platformdirs

    return platformdirs.user_config_path("hairclip-studio") / "keys"


def generate_keys(keys_dir: Path, client: str = "client", force: bool = False) -> dict[str, Path]:
    """Server keypair (once) plus one client keypair whose public half goes into authorized_clients/.

    Layout: server.key, server.key_secret, clients/<name>.key[_secret], authorized_clients/<name>.key.
    """
    import zmq.auth

    if not _NAME.match(client):
        raise ValueError(f"client name {client!r} must be 1-64 characters of A-Z a-z 0-9 _ -")
    clients, authorized = keys_dir / "clients", keys_dir / "authorized_clients"
    for d in (keys_dir, clients, authorized):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o700)
    if force or not (keys_dir / "server.key_secret").exists():
        zmq.auth.create_certificates(keys_dir, "server")
    if (clients / f"{client}.key_secret").exists() and not force:
        raise FileExistsError(f"{clients / (client + '.key_secret')} exists; pass --force to replace it")
    public, secret = zmq.auth.create_certificates(clients, client)
    shutil.copyfile(public, authorized / f"{client}.key")
    return {"server_public": keys_dir / "server.key", "client_secret": Path(secret),
            "authorized": authorized / f"{client}.key"}


# ---------------------------------------------------------------------------------------------- CLI

EngineFactory = Callable[[argparse.Namespace], Engine]


def register_cli(subparsers: argparse._SubParsersAction, engine_factory: EngineFactory | None = None) -> None:
    """Add `serve`, `status` and `keys`; each sets args.func(args) -> exit code.

    engine_factory(args) builds the model pipeline from --device, --weights-dir and --preload.
    """
    d = Limits()
    p = subparsers.add_parser("serve", help="run the HairCLIP server")
    p.add_argument("--bind", default=DEFAULT_ENDPOINT, help=f"ZeroMQ endpoint (default {DEFAULT_ENDPOINT})")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--weights-dir", type=Path, default=None, help="where the model weights are")
    p.add_argument("--preload", action="store_true", help="warm the models up before serving the first job")
    p.add_argument("--no-download", action="store_true", help="fail instead of fetching missing weights")
    p.add_argument("--random-tiny", action="store_true",
                   help="serve small randomly initialised networks instead of the weights: results are noise; "
                        "for tests and demos of the plug-ins")
    p.add_argument("--keys-dir", type=Path, default=None,
                   help="enable CURVE with the keys `hairclip keys` wrote (needed beyond loopback)")
    p.add_argument("--lease", type=float, default=d.lease_s, help="seconds a silent client keeps its jobs")
    p.add_argument("--max-queue", type=int, default=d.max_queue, help="jobs that may wait; more get 'busy'")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=lambda args: _cmd_serve(args, engine_factory or _pipeline_engine))

    p = subparsers.add_parser("status", help="show what the running server says about itself")
    p.add_argument("--connect", default=DEFAULT_ENDPOINT)
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--keys-dir", type=Path, default=None, help="connect with CURVE keys from this folder")
    p.add_argument("--key-name", default="client")
    p.set_defaults(func=_cmd_status)

    p = subparsers.add_parser("keys", help="generate CURVE keys for a server reachable beyond loopback")
    p.add_argument("--dir", type=Path, default=None, help="default: the user config folder")
    p.add_argument("--client", default="client", help="name of the client keypair to add")
    p.add_argument("--force", action="store_true", help="replace existing keys")
    p.set_defaults(func=_cmd_keys)


def _pipeline_engine(args: argparse.Namespace) -> Engine:
    from hairclip.engine import make_engine  # torch and the models load here, not at import

    return make_engine(args)


def _cmd_serve(args: argparse.Namespace, engine_factory: EngineFactory | None) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if engine_factory is None:
        print("hairclip serve: no model engine is available in this installation, so there is nothing to "
              "serve (the edit pipeline is not installed or not wired into the command line).", file=sys.stderr)
        return 2
    try:
        check_bind(args.bind, args.keys_dir)
    except ValueError as e:
        print(f"hairclip serve: {e}", file=sys.stderr)
        return 2
    limits = replace(Limits(), lease_s=args.lease, max_queue=args.max_queue)
    log.info("starting the engine (device %s)", args.device)
    try:
        engine = engine_factory(args)
    except HairclipError as e:  # missing weights and the like: the message says what to do
        print(f"hairclip serve: the engine did not start: {e.message}", file=sys.stderr)
        return 1
    except Exception as e:
        log.exception("the engine did not start")
        print(f"hairclip serve: the engine did not start: {e}", file=sys.stderr)
        return 1
    server = Server(engine, args.bind, limits=limits, keys_dir=args.keys_dir)
    try:
        server.start()
    except zmq.ZMQError as e:
        print(f"hairclip serve: cannot bind {args.bind}: {e.strerror}. Is a server already running there? "
              "(`hairclip status`)", file=sys.stderr)
        return 1
    print(f"listening on {server.endpoint}", flush=True)
    server.serve_forever()
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    try:
        keys = CurveKeys.from_dir(args.keys_dir, args.key_name) if args.keys_dir else None
    except (OSError, ValueError) as e:
        print(f"hairclip status: cannot read the CURVE keys in {args.keys_dir}: {e}", file=sys.stderr)
        return 1
    try:
        with Client(args.connect, timeout=args.timeout, keys=keys, name="hairclip status") as client:
            info = client.info
    except AuthFailed as e:  # the server is up: telling the user to start it would mislead
        print(f"hairclip status: {e.message}", file=sys.stderr)
        return 1
    except HairclipError as e:
        print(f"The HairCLIP server is not running at {args.connect}: {e.message}\n"
              "Start it with: hairclip serve", file=sys.stderr)
        return 1
    lim = info.limits
    print(f"HairCLIP server {info.server} at {args.connect} (protocol {info.protocol})")
    print(f"device:     {info.device}")
    print("models:     " + (", ".join(f"{k} {v}" for k, v in info.models.items()) or "none"))
    print(f"hairstyles: {len(info.hairstyles)} trained" + (f" ({', '.join(info.hairstyles[:6])}, ...)"
                                                            if info.hairstyles else ""))
    print(f"colours:    {', '.join(info.colours) or 'none listed'}")
    print(f"limits:     {lim.max_pixels} px per image, {lim.max_frame_bytes // MiB} MiB per frame, "
          f"queue {lim.max_queue}, lease {lim.lease_s:g} s")
    return 0


def _cmd_keys(args: argparse.Namespace) -> int:
    keys_dir = args.dir or default_keys_dir()
    try:
        paths = generate_keys(keys_dir, args.client, args.force)
    except (ValueError, FileExistsError) as e:
        print(f"hairclip keys: {e}", file=sys.stderr)
        return 1
    print(f"Keys in {keys_dir}:\n"
          f"  server public key: {paths['server_public']} (give it to every client)\n"
          f"  client '{args.client}' secret key: {paths['client_secret']} (keep it private)\n"
          f"  authorised: {paths['authorized']}\n"
          f"Serve with: hairclip serve --bind tcp://0.0.0.0:5570 --keys-dir {keys_dir}")
    return 0
