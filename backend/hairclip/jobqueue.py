"""The server's job bookkeeping, in pure Python with no sockets: the queue, the leases and the replay cache.

The socket thread submits, cancels, renews leases and finishes jobs; the worker thread takes them one at a
time. Methods that end a job return the messages to send as (peer, header, frames) and leave the sending
to the caller, so all of this runs, and is tested, without ZeroMQ.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from hairclip_shared.protocol import (
    PROTOCOL_VERSION,
    BadRequest,
    Busy,
    Cancelled,
    EditRequest,
    HairclipError,
    Limits,
    RerenderRequest,
    error_header,
)

log = logging.getLogger("hairclip.server")
MiB = 1 << 20
Message = tuple[bytes, dict, list]  # (peer, header, frames)


@dataclass(eq=False)
class Job:
    """One submitted request, from queued to done, and its last message once it has one."""

    id: str
    peer: bytes  # the client's routing id; a resubmission from a new connection moves it
    header: dict  # the request minus "v": a resubmission must match it exactly
    request: EditRequest | RerenderRequest | None
    nbytes: int
    state: str = "queued"  # queued | running | done
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_error: HairclipError | None = None
    terminal: tuple[dict, list] | None = None  # the last message, kept for replay


def peer_name(peer: bytes) -> str:
    """A routing id for the logs: our clients' are readable, libzmq's own are binary."""
    text = peer.decode("ascii", "replace")
    return text[:40] if text.isprintable() else peer.hex()


def accepted(job: Job, position: int, state: str | None = None) -> dict:
    return {"v": PROTOCOL_VERSION, "op": "accepted", "job": job.id, "position": position,
            "state": state or job.state}


class JobQueue:
    """Holds the waiting, running and finished jobs and the clients' leases, behind one lock."""

    def __init__(self, limits: Limits, replay_bytes: int = 128 * MiB, replay_jobs: int = 64):
        self.limits, self.replay_bytes, self.replay_jobs = limits, replay_bytes, replay_jobs
        self._cond = threading.Condition()  # guards _queue, _queued_bytes, _running, _stopping and job states
        self._queue: deque[Job] = deque()
        self._queued_bytes = 0
        self._running: Job | None = None
        self._stopping = False
        self._nudged = False  # see nudge()
        self._jobs: dict[str, Job] = {}  # queued or running; only the socket thread changes it
        self._done: OrderedDict[str, Job] = OrderedDict()
        self._done_bytes = 0
        self._last_seen: dict[bytes, float] = {}

    # ------------------------------------------------------------------------------------------ socket thread

    def seen(self, peer: bytes, now: float | None = None) -> None:
        """Any message renews the client's lease."""
        self._last_seen[peer] = time.monotonic() if now is None else now

    def again(self, job_id: str, peer: bytes, asked: dict) -> Message | None:
        """A job id seen before: its last message, or its place in the queue; None for a new id.

        Idempotent, so a client may resubmit after a reconnect; the replies go to its new connection.
        """
        old = self._jobs.get(job_id) or self._done.get(job_id)
        if old is None:
            return None
        if old.header != asked:
            raise BadRequest(f"Job id {job_id} was already used for a different request; use a new id.",
                             "job_conflict")
        old.peer = peer
        log.info("job %s asked for again by %s (%s)", job_id, peer_name(peer), old.state)
        if old.terminal is not None:
            return (peer, *old.terminal)
        with self._cond:
            return peer, accepted(old, self._position(old)), []

    def add(self, job_id: str, peer: bytes, asked: dict, request: EditRequest | RerenderRequest,
            nbytes: int) -> tuple[Job, int]:
        """Queue a new job; returns it and the number of jobs ahead of it. Raises Busy when full."""
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
            job = Job(job_id, peer, asked, request, nbytes)
            self._queue.append(job)
            self._queued_bytes += nbytes
            self._jobs[job_id] = job
            position = self._position(job)
            self._cond.notify()
        return job, position

    def cancel(self, job_id: str) -> tuple[str, list[Message]]:
        """A client's cancel: the state to answer with (cancelling, finished, unknown) and what to send."""
        job = self._jobs.get(job_id)
        if job is None:
            return ("finished" if job_id in self._done else "unknown"), []
        with self._cond:
            return "cancelling", self._cancel(job, Cancelled("The job was cancelled."))

    def expire(self, now: float | None = None) -> list[Message]:
        """Cancel the jobs of clients silent for longer than the lease, and forget idle clients."""
        now = time.monotonic() if now is None else now
        lease, out = self.limits.lease_s, []
        with self._cond:
            for job in list(self._jobs.values()):
                silent = now - self._last_seen.get(job.peer, 0.0)
                if silent > lease and not job.cancel.is_set():
                    log.warning("job %s: client %s silent for %.1f s (lease %g s); cancelling", job.id,
                                peer_name(job.peer), silent, lease)
                    out += self._cancel(job, Cancelled(f"The client sent no heartbeat for {lease:g} s.",
                                                       "lease_expired"))
        busy = {job.peer for job in self._jobs.values()}
        for peer, seen in list(self._last_seen.items()):
            if peer not in busy and now - seen > 2 * lease:
                del self._last_seen[peer]
        return out

    def stop(self) -> list[Message]:
        """Refuse new jobs, cancel every job, and release the worker."""
        with self._cond:
            self._stopping, out = True, []
            for job in list(self._jobs.values()):
                out += self._cancel(job, Cancelled("The HairCLIP server is shutting down.", "shutting_down"))
            self._cond.notify_all()
        return out

    def finish(self, job: Job, header: dict, frames: list) -> Message:
        """The job's last message, addressed to its current peer; kept for a replay within the cache's bounds."""
        with self._cond:
            return self._finish(job, header, frames)

    @property
    def active(self) -> int:
        """Jobs queued or running."""
        return len(self._jobs)

    @property
    def replayable(self) -> int:
        return len(self._done)

    # ------------------------------------------------------------------------------------------ worker thread

    def take(self, timeout: float | None = None) -> Job | None:
        """The next job, now running; None once stopping, after `timeout` seconds with nothing queued, or when
        `nudge`d (the idle worker then looks for renders ahead again)."""
        with self._cond:
            self._cond.wait_for(lambda: self._queue or self._stopping or self._nudged, timeout)
            self._nudged = False
            if self._stopping or not self._queue:
                return None
            job = self._queue.popleft()
            self._queued_bytes -= job.nbytes
            job.state, self._running = "running", job
            return job

    def nudge(self) -> None:
        """Wake an idle worker without a job: a look at the renders ahead may have given it new ones to make."""
        with self._cond:
            self._nudged = True
            self._cond.notify_all()

    def waiting(self) -> bool:
        """A job is queued or the server is stopping: what interrupts the idle worker's renders ahead."""
        return bool(self._queue) or self._stopping

    def ran(self, job: Job) -> None:
        """The worker is done with `job`; its result still has to be finish()ed by the socket thread."""
        with self._cond:
            if self._running is job:
                self._running = None

    # ------------------------------------------------------------------------------------------ under the lock

    def _position(self, job: Job) -> int:
        """Jobs ahead of this one, the running one included."""
        return self._queue.index(job) + (self._running is not None) if job.state == "queued" else 0

    def _cancel(self, job: Job, err: HairclipError) -> list[Message]:
        """A queued job ends now; a running one at the engine's next check()."""
        if job.state == "queued":
            self._queue.remove(job)
            self._queued_bytes -= job.nbytes
            return [self._finish(job, error_header(err, job=job.id), [])]
        if job.state == "running" and not job.cancel.is_set():
            job.cancel_error = err
            job.cancel.set()
        return []

    def _finish(self, job: Job, header: dict, frames: list) -> Message:
        job.state, job.terminal, job.request = "done", (header, frames), None
        self._jobs.pop(job.id, None)
        self._done[job.id] = job
        self._done_bytes += sum(memoryview(f).nbytes for f in frames)
        while self._done and (len(self._done) > self.replay_jobs or self._done_bytes > self.replay_bytes):
            _, old = self._done.popitem(last=False)
            self._done_bytes -= sum(memoryview(f).nbytes for f in old.terminal[1])
        return job.peer, header, frames
