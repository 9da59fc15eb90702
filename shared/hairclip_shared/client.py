"""The client both editor plug-ins use to talk to the HairCLIP server.

Pure Python apart from pyzmq and msgpack: no Qt, GTK, numpy or torch, so it runs in an editor's embedded
Python 3.10+. ZeroMQ sockets are not thread-safe, so one background thread owns the socket; callers hand
it messages through a queue. That keeps heartbeats flowing while a GUI draws, and lets the GUI poll a
`Job` without blocking (or block on it, from a worker thread or a batch script).

Long because the socket thread and everything it serves share private state: the I/O loop, the monitor
that turns a vanished server into errors, and the Job and call records it completes. Splitting them would
put that state behind an interface whose only user is this file.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator

import zmq

from .keys import CurveKeys
from .protocol import (
    DEFAULT_ENDPOINT,
    EDIT_ROLES,
    PROTOCOL_VERSION,
    Accepted,
    AuthFailed,
    BadRequest,
    Cancelled,
    EditRequest,
    EditResult,
    HairclipError,
    Image,
    Limits,
    Progress,
    ProtocolError,
    RerenderRequest,
    ServerEvent,
    ServerInfo,
    ServerNotRunning,
    Timeout,
    check_id,
    error_from_wire,
    pack,
    pack_images,
    parse_images,
    unpack_header,
)

log = logging.getLogger("hairclip.client")
_wake_ids = itertools.count()


class Job:
    """A submitted edit: poll() it from a GUI timer, or block on events() / result()."""

    def __init__(self, client: Client, job_id: str):
        self.id = job_id
        self._client = client
        self._cond = threading.Condition()
        self._events: deque[ServerEvent] = deque()
        self._terminal: EditResult | HairclipError | None = None
        self.position: int | None = None
        self.stage: str | None = None
        self.fraction = 0.0

    @property
    def done(self) -> bool:
        return self._terminal is not None

    @property
    def state(self) -> str:
        """pending | queued | running | done | cancelled | failed."""
        t = self._terminal
        if isinstance(t, EditResult):
            return "done"
        if t is not None:
            return "cancelled" if isinstance(t, Cancelled) else "failed"
        if self.stage is not None:
            return "running"
        return "pending" if self.position is None else "queued"

    def poll(self) -> list[ServerEvent]:
        """Events since the last poll, without blocking; a failure arrives as an exception instance."""
        with self._cond:
            out = list(self._events)
            self._events.clear()
        return out

    def events(self, timeout: float | None = None) -> Iterator[Accepted | Progress | EditResult]:
        """Yield events until the result; a failure is raised. `timeout` bounds the whole iteration."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: self._events, _remaining(deadline)):
                    raise Timeout(f"Job {self.id} sent nothing more within {timeout} s.")
                ev = self._events.popleft()
            if isinstance(ev, HairclipError):
                raise ev
            yield ev
            if isinstance(ev, EditResult):
                return

    def result(self, timeout: float | None = None) -> EditResult:
        """Wait for the result; raises the job's error, or Timeout (the job keeps running)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._terminal is not None, timeout):
                raise Timeout(f"Job {self.id} did not finish within {timeout} s.")
        if isinstance(self._terminal, HairclipError):
            raise self._terminal
        return self._terminal

    def cancel(self) -> None:
        """Ask the server to stop the job; the job then ends with Cancelled (or its result, if too late)."""
        if not self.done:
            self._client._send({"op": "cancel", "job": self.id})

    def _deliver(self, ev: ServerEvent) -> bool:
        """Called by the I/O thread. Returns True when the job has ended."""
        with self._cond:
            if self._terminal is not None:
                return True
            if isinstance(ev, Accepted):
                self.position = ev.position
            elif isinstance(ev, Progress):
                self.stage, self.fraction = ev.stage, ev.fraction
            else:
                self._terminal = ev
            self._events.append(ev)
            self._cond.notify_all()
            return self._terminal is not None


class _Call:
    """A request with one reply (hello, echo, ping)."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.heard = False  # did the server say anything since this call went out?
        self.done = threading.Event()
        self.reply: tuple[dict, list] | None = None
        self.error: HairclipError | None = None

    def finish(self, reply: tuple[dict, list] | None = None, error: HairclipError | None = None) -> None:
        if not self.done.is_set():
            self.reply, self.error = reply, error
            self.done.set()


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class Client:
    """A connection to one HairCLIP server.

    timeout: how long the server may stay silent before a call or a job fails with ServerNotRunning
    (heartbeats make a live server answer at least every `heartbeat` seconds, even mid-job).
    With connect=True the constructor says hello and raises ServerNotRunning if nobody answers.
    """

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, timeout: float = 5.0, heartbeat: float = 1.0,
                 keys: CurveKeys | None = None, name: str = "hairclip-client", connect: bool = True):
        self.endpoint, self.timeout, self.keys, self.name = endpoint, timeout, keys, name
        self.heartbeat = heartbeat
        self.info: ServerInfo | None = None
        self.limits = Limits()  # until hello says otherwise
        self._ctx = zmq.Context()
        self._lock = threading.Lock()
        self._outbox: deque[tuple[list | None, Job | _Call | threading.Event | None]] = deque()
        self._jobs: dict[str, Job] = {}
        self._calls: dict[str, _Call] = {}
        self._closing = False
        self._close_linger = 0
        self._closed = False
        self._req_ids = itertools.count(1)
        wake = f"inproc://hairclip-client-wake-{next(_wake_ids)}"
        self._wake_rx = self._ctx.socket(zmq.PAIR)
        self._wake_rx.bind(wake)
        self._wake_tx = self._ctx.socket(zmq.PAIR)
        self._wake_tx.connect(wake)
        self._thread = threading.Thread(target=self._io_loop, name="hairclip-client-io", daemon=True)
        self._thread.start()
        if connect:
            try:
                self.hello()
            except BaseException:
                self.close()
                raise

    # ------------------------------------------------------------------------------------------ public

    def hello(self, timeout: float | None = None) -> ServerInfo:
        """Handshake: the server's versions, device, models, hairstyles and limits."""
        header, _ = self._call({"op": "hello", "client": self.name}, timeout=timeout)
        try:
            info = ServerInfo.from_wire(header)
        except BadRequest as e:
            raise ProtocolError(f"The server's hello reply is malformed: {e.message}") from None
        self.info, self.limits = info, info.limits
        # Beat well inside the lease so one late beat never cancels a job.
        self.heartbeat = min(self.heartbeat, info.limits.lease_s / 3)
        return info

    def ping(self, timeout: float | None = None) -> float:
        """Round-trip time in seconds."""
        t0 = time.perf_counter()
        self._call({"op": "ping"}, timeout=timeout)
        return time.perf_counter() - t0

    def echo(self, images: dict[str, Image], timeout: float | None = None) -> dict[str, Image]:
        """Send images and get them back unchanged: a check (and benchmark) of the wire alone."""
        specs, frames = pack_images(images)
        parse_images(specs, frames, self.limits)
        header, frames = self._call({"op": "echo", "images": specs}, frames, timeout)
        return parse_images(header.get("images"), frames, self.limits)

    def submit(self, request: EditRequest, job_id: str | None = None) -> Job:
        """Start an edit. Resubmitting a job id is idempotent: the server resumes or replays that job."""
        params, specs, frames = request.to_wire()
        parse_images(specs, frames, self.limits, EDIT_ROLES)  # fail here, not by a dropped connection
        return self._start_job({"op": "edit", "params": params, "images": specs}, frames, job_id)

    def rerender(self, base: Job | str, strength: float, job_id: str | None = None, *,
                 ready_only: bool = False) -> Job:
        """Cheap re-render of a finished edit at a new strength (the server reuses its caches).

        ``ready_only`` asks only for a render the server made ahead while idle: the job ends at once with it,
        or with `NotReady`, and never queues (a queued job would interrupt the renders ahead)."""
        req = RerenderRequest(base.id if isinstance(base, Job) else base, strength, ready_only)
        header = {"op": "rerender", "base": req.base, "strength": req.strength}
        if ready_only:
            header["ready_only"] = True  # only when asked: a server that predates it refuses the field
        return self._start_job(header, [], job_id)

    def edit(self, request: EditRequest, timeout: float | None = None) -> EditResult:
        """Blocking edit; for batch scripts and worker threads."""
        return self.submit(request).result(timeout)

    def reconnect(self, timeout: float = 5.0) -> None:
        """Drop the connection and open a fresh one; calls and jobs in flight fail with ServerNotRunning."""
        done = threading.Event()
        with self._lock:
            if self._closed:
                raise Cancelled("The client is closed.")
            self._outbox.append((None, done))
            self._wake()
        done.wait(timeout)

    def close(self) -> None:
        """Cancel unfinished jobs on the server and release the socket."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for job in self._jobs.values():
                if not job.done:
                    self._outbox.append((self._frames({"op": "cancel", "job": job.id}), None))
                    self._close_linger = 500  # let the cancels leave before the socket goes
            self._closing = True
            self._wake()
        self._thread.join(timeout=2.0)
        self._fail_all(Cancelled("The client was closed."))
        self._wake_tx.close(linger=0)
        self._wake_rx.close(linger=0)
        self._ctx.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ callers' side

    def _frames(self, header: dict, frames: list | tuple = ()) -> list:
        header = {"v": PROTOCOL_VERSION, **header}
        data = pack(header)
        if len(data) > self.limits.max_header_bytes:
            raise BadRequest(f"The request header is {len(data)} bytes; the server's limit is "
                             f"{self.limits.max_header_bytes}.", "too_large")
        return [data, *frames]

    def _wake(self) -> None:
        self._wake_tx.send(b"", zmq.NOBLOCK)  # caller holds self._lock: the PAIR is shared by callers

    def _send(self, header: dict, frames: list | tuple = (), owner: Job | _Call | None = None) -> None:
        msg = self._frames(header, frames)
        with self._lock:
            if self._closed:
                raise Cancelled("The client is closed.")
            self._outbox.append((msg, owner))
            self._wake()

    def _call(self, header: dict, frames: list | tuple = (), timeout: float | None = None,
              ) -> tuple[dict, list]:
        timeout = self.timeout if timeout is None else timeout
        req = f"r{next(self._req_ids)}"
        call = _Call(time.monotonic() + timeout)
        with self._lock:
            self._calls[req] = call
        try:
            self._send({**header, "req": req}, frames, call)
            call.done.wait(timeout + 1.0)  # the I/O thread enforces the deadline; this is a backstop
        finally:
            with self._lock:
                self._calls.pop(req, None)
        if call.error is not None:
            raise call.error
        if call.reply is None:
            raise ServerNotRunning(f"No HairCLIP server answered at {self.endpoint} within {timeout:g} s.")
        return call.reply

    def _start_job(self, header: dict, frames: list, job_id: str | None) -> Job:
        job_id = check_id(job_id, "The job id") if job_id is not None else uuid.uuid4().hex
        job = Job(self, job_id)
        with self._lock:
            old = self._jobs.get(job_id)
            if old is not None and not old.done:
                job = old  # the same job asked for again: same handle, the server resumes it
            self._jobs[job_id] = job
        self._send({**header, "job": job_id}, frames, job)
        return job

    def _fail_all(self, err: HairclipError) -> None:
        with self._lock:
            jobs = [j for j in self._jobs.values() if not j.done]
            calls = list(self._calls.values())
            self._jobs.clear()
        for job in jobs:
            job._deliver(err)
        for call in calls:
            call.finish(error=err)

    # ------------------------------------------------------------------------------------------ I/O thread

    def _open(self) -> None:
        """(Re)open the DEALER and its monitor. Only the I/O thread calls this."""
        for old in (self._sock, self._monitor):
            if old is not None:
                self._poller.unregister(old)
                old.close(linger=0)  # drops whatever the dead connection still had queued
        sock = self._ctx.socket(zmq.DEALER)
        # A fresh routing id per connection: replies meant for a dropped connection never reach this one.
        sock.routing_id = f"hc-{uuid.uuid4().hex}".encode()
        sock.linger = 0
        if self.keys is not None:
            sock.curve_serverkey = self.keys.server_public
            sock.curve_publickey = self.keys.public
            sock.curve_secretkey = self.keys.secret
        self._handshaken = False
        self._answered = False  # has the server sent anything on this connection? Only then can it be "lost".
        self._monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
                                                | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                                | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                                | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        sock.connect(self.endpoint)
        self._sock = sock
        self._poller.register(sock, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)

    def _reset(self, err: HairclipError) -> None:
        log.info("%s", err.message)
        self._fail_all(err)
        self._open()

    def _pending(self) -> bool:
        with self._lock:
            return bool(self._calls) or any(not j.done for j in self._jobs.values())

    def _io_loop(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        self._poller = zmq.Poller()
        self._poller.register(self._wake_rx, zmq.POLLIN)
        self._sock = self._monitor = None
        self._open()
        last_heard = last_beat = quiet_since = time.monotonic()
        was_pending = False
        while True:
            ready = dict(self._poller.poll(100))
            now = time.monotonic()
            if self._wake_rx in ready:
                while self._wake_rx.poll(0):
                    self._wake_rx.recv()
            if self._sock in ready:
                while self._sock.poll(0):
                    msg = self._sock.recv_multipart(copy=False)
                    try:
                        self._dispatch(msg)
                    except Exception:  # a bug here must not stop the thread every job depends on
                        log.exception("could not handle a message from the server")
                last_heard = now
                self._answered = True
                with self._lock:
                    for call in self._calls.values():
                        call.heard = True
            if self._monitor in ready:
                while self._monitor.poll(0):
                    err = self._on_monitor(recv_monitor_message(self._monitor))
                    if err is not None:
                        self._reset(err)
                        break
            with self._lock:
                batch = list(self._outbox)
                self._outbox.clear()
                closing = self._closing
            for msg, owner in batch:
                if msg is None:  # reconnect(), in order with the messages around it
                    self._reset(ServerNotRunning(f"The connection to {self.endpoint} was reset."))
                    owner.set()
                    continue
                try:
                    self._sock.send_multipart(msg, copy=False, flags=zmq.NOBLOCK)
                except zmq.Again:
                    err = ServerNotRunning(f"The HairCLIP server at {self.endpoint} is not taking messages.")
                    if isinstance(owner, _Call):
                        owner.finish(error=err)
                    elif isinstance(owner, Job):
                        owner._deliver(err)
            if closing:
                self._sock.close(linger=self._close_linger)
                self._monitor.close(linger=0)
                return
            pending = self._pending()
            if pending and not was_pending:
                quiet_since = now
            was_pending = pending
            if pending and now - last_beat >= self.heartbeat:
                try:
                    self._sock.send(pack({"v": PROTOCOL_VERSION, "op": "ping"}), zmq.NOBLOCK)
                except zmq.Again:
                    pass
                last_beat = now
            with self._lock:
                expired = [c for c in self._calls.values() if now > c.deadline]
            for call in expired:
                call.finish(error=Timeout("The server is alive but did not answer in time.") if call.heard
                            else ServerNotRunning(f"No HairCLIP server answered at {self.endpoint}."))
            silent = now - max(last_heard, quiet_since)
            if pending and silent > self.timeout:
                self._reset(ServerNotRunning(f"The HairCLIP server at {self.endpoint} stopped answering "
                                             f"(silent for {silent:.1f} s)."))

    def _on_monitor(self, event: dict) -> HairclipError | None:
        """A lost or refused connection fails what is in flight at once instead of after the timeout."""
        e = event["event"]
        if e == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._handshaken = True
        if e == zmq.EVENT_HANDSHAKE_SUCCEEDED or not self._pending():
            return None
        if e == zmq.EVENT_DISCONNECTED and self._handshaken and self._answered:
            return ServerNotRunning(f"Lost the connection to the HairCLIP server at {self.endpoint}.")
        if e == zmq.EVENT_DISCONNECTED and self._handshaken:  # something took the connection, then dropped it
            return ServerNotRunning(f"No HairCLIP server answered at {self.endpoint}: something accepted the "
                                    "connection and closed it without a reply.")
        if e == zmq.EVENT_DISCONNECTED:
            return AuthFailed(f"The server at {self.endpoint} closed the connection during the handshake: it "
                              "may need CURVE keys (see `hairclip keys`), or it is not a HairCLIP server.")
        if e == zmq.EVENT_HANDSHAKE_FAILED_AUTH:  # the server's ZAP handler said no: a live server
            if self.keys is None:
                return AuthFailed(f"Authentication failed: the HairCLIP server at {self.endpoint} is running "
                                  "but refused this client: it needs CURVE keys (see `hairclip keys`).")
            return AuthFailed(self.keys.refused_message(self.endpoint))
        if self.keys is None:
            return AuthFailed(f"The handshake with {self.endpoint} failed: the server needs CURVE keys "
                              "(see `hairclip keys`).")
        return AuthFailed(f"The CURVE handshake with {self.endpoint} failed: check that the server uses "
                          "CURVE and that server.key is its current public key.")

    def _dispatch(self, frames: list[zmq.Frame]) -> None:
        try:
            header = unpack_header(frames[0].bytes, 1 << 20)
        except HairclipError as e:
            log.warning("Dropped a malformed message from the server: %s", e)
            return
        body = [f.buffer for f in frames[1:]]
        op, req, job_id = header["op"], header.get("req"), header.get("job")
        with self._lock:
            call = self._calls.get(req) if isinstance(req, str) else None
            job = self._jobs.get(job_id) if isinstance(job_id, str) else None
        if call is not None:
            if op == "error":
                call.finish(error=error_from_wire(str(header.get("code")), str(header.get("message"))))
            else:
                call.finish((header, body))
            return
        if job is None:
            return  # a pong, a cancel acknowledgement, or news of a job this client forgot
        try:
            ev = self._job_event(op, header, body)
        except (HairclipError, KeyError, TypeError, ValueError) as e:
            ev = ProtocolError(f"Malformed {op!r} message from the server: {getattr(e, 'message', e)}")
        if ev is not None and job._deliver(ev):
            with self._lock:
                if self._jobs.get(job.id) is job:
                    del self._jobs[job.id]

    def _job_event(self, op: str, h: dict, body: list) -> ServerEvent | None:
        if op == "accepted":
            return Accepted(h["job"], int(h["position"]), str(h["state"]))
        if op == "progress":
            previews = parse_images(h.get("images", []), body, self.limits)
            return Progress(h["job"], str(h["stage"]), float(h["fraction"]), previews.get("preview"))
        if op == "result":
            return EditResult.from_wire(h, body, self.limits)
        if op == "error":
            return error_from_wire(str(h.get("code")), str(h.get("message")))
        return None  # "cancel" acknowledgements and ops from newer servers
