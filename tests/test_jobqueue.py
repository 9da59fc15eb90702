"""The server's job bookkeeping (hairclip.jobqueue) on its own: no sockets, no threads but the caller's.

Requests are stand-ins (the queue never looks inside them); time is passed in explicitly for the leases.
"""

from __future__ import annotations

import pytest

from hairclip.jobqueue import JobQueue
from hairclip_shared.protocol import BadRequest, Busy, Cancelled, Limits, RerenderRequest

ALICE, BOB = b"alice", b"bob"


def submit(q: JobQueue, job_id: str, peer: bytes = ALICE, nbytes: int = 0, strength: float = 1.0):
    asked = {"op": "rerender", "job": job_id, "base": "b", "strength": strength}
    assert q.again(job_id, peer, asked) is None
    return q.add(job_id, peer, asked, RerenderRequest("b", strength), nbytes)


def test_positions_count_the_running_job_and_those_ahead():
    q = JobQueue(Limits())
    a, pos_a = submit(q, "a")
    assert pos_a == 0 and q.take(0) is a and a.state == "running"
    _, pos_b = submit(q, "b")
    _, pos_c = submit(q, "c")
    assert (pos_b, pos_c) == (1, 2)
    q.ran(a)
    assert q.finish(a, {"op": "result", "job": "a"}, [])[0] == ALICE
    peer, header, _ = q.again("c", BOB, {"op": "rerender", "job": "c", "base": "b", "strength": 1.0})
    assert peer == BOB and header["op"] == "accepted" and header["position"] == 1


def test_a_full_queue_says_busy_by_count_and_by_bytes():
    q = JobQueue(Limits(max_queue=2, max_queued_bytes=100))
    submit(q, "a", nbytes=60)
    with pytest.raises(Busy, match="MiB of images"):
        submit(q, "b", nbytes=41)
    submit(q, "b", nbytes=40)
    with pytest.raises(Busy, match="2 jobs are waiting"):
        submit(q, "c")
    q.take(0)  # "a" runs: its bytes and its place are free again
    submit(q, "c", nbytes=60)


def test_a_reused_job_id_with_another_request_is_a_conflict():
    q = JobQueue(Limits())
    submit(q, "a", strength=1.0)
    with pytest.raises(BadRequest) as err:
        q.again("a", ALICE, {"op": "rerender", "job": "a", "base": "b", "strength": 1.5})
    assert err.value.code == "job_conflict"


def test_a_finished_job_is_replayed_to_the_new_connection():
    q = JobQueue(Limits())
    job, _ = submit(q, "a")
    q.take(0)
    q.ran(job)
    assert q.finish(job, {"op": "result", "job": "a"}, [b"pixels"]) == (ALICE, {"op": "result", "job": "a"},
                                                                           [b"pixels"])
    assert q.again("a", BOB, job.header) == (BOB, {"op": "result", "job": "a"}, [b"pixels"])
    assert job.peer == BOB and q.active == 0


def test_cancel_ends_a_queued_job_at_once_and_flags_a_running_one():
    q = JobQueue(Limits())
    running, _ = submit(q, "run")
    q.take(0)
    queued, _ = submit(q, "wait", peer=BOB)
    state, sent = q.cancel("wait")
    assert state == "cancelling" and queued.state == "done"
    [(peer, header, frames)] = sent
    assert peer == BOB and header["op"] == "error" and header["code"] == "cancelled" and frames == []
    state, sent = q.cancel("run")
    assert state == "cancelling" and sent == [] and running.cancel.is_set()
    assert isinstance(running.cancel_error, Cancelled) and running.state == "running"
    assert q.cancel("wait") == ("finished", []) and q.cancel("never") == ("unknown", [])


def test_a_silent_client_loses_its_jobs_when_its_lease_expires():
    q = JobQueue(Limits(lease_s=2.0))
    q.seen(ALICE, now=100.0)
    q.seen(BOB, now=100.0)
    running, _ = submit(q, "alice-running", ALICE)
    q.take(0)
    submit(q, "alice-queued", ALICE)
    submit(q, "bob-queued", BOB)
    q.seen(BOB, now=101.5)
    assert q.expire(now=101.9) == []  # nobody silent for more than 2 s yet
    sent = q.expire(now=102.5)
    assert [(peer, h["job"], h["code"]) for peer, h, _ in sent] == [(ALICE, "alice-queued", "lease_expired")]
    assert running.cancel.is_set() and running.cancel_error.code == "lease_expired"
    assert q.expire(now=103.0) == []  # a running job is flagged once, and ends through the engine


def test_the_replay_cache_keeps_the_newest_jobs_within_its_bounds():
    q = JobQueue(Limits(), replay_bytes=10, replay_jobs=2)
    for name, size in (("a", 4), ("b", 4), ("c", 4), ("d", 7)):
        job, _ = submit(q, name)
        q.take(0)
        q.ran(job)
        q.finish(job, {"op": "result", "job": name}, [bytes(size)])
    assert q.replayable == 1  # "d" alone: with "c" the bytes would be 11 > 10
    assert q.cancel("d") == ("finished", []) and q.cancel("c") == ("unknown", [])


def test_stopping_cancels_everything_and_releases_the_worker():
    q = JobQueue(Limits())
    running, _ = submit(q, "run")
    q.take(0)
    submit(q, "wait", peer=BOB)
    sent = q.stop()
    assert [(peer, h["code"]) for peer, h, _ in sent] == [(BOB, "shutting_down")]
    assert running.cancel_error.code == "shutting_down"
    assert q.take() is None  # returns at once: no timeout needed
    with pytest.raises(Cancelled) as err:
        submit(q, "late")
    assert err.value.code == "shutting_down"
