"""Client and server over real sockets on 127.0.0.1 (OS-chosen ports), serving a test-double engine.

TintTestEngine is NOT the model pipeline: it is a deterministic image operation (tint the selection
towards `rgb` by strength/2) with controllable per-stage delays, so that progress, cancel, leases,
re-renders and concurrency can be checked exactly. Every wait here is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
import zmq.auth
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hairclip.cli_server import register_cli
from hairclip.engine_api import EngineInfo, JobContext
from hairclip.keys import check_bind, generate_keys, is_local
from hairclip.server import Server
from hairclip_shared import (
    Accepted,
    AuthFailed,
    BadRequest,
    Busy,
    Cancelled,
    Client,
    CurveKeys,
    EditRequest,
    EditResult,
    Face,
    Image,
    Limits,
    NotReady,
    Progress,
    Rect,
    RerenderRequest,
    ServerNotRunning,
)
from hairclip_shared.protocol import ERROR_CODES, PROTOCOL_VERSION

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("faces", "align", "invert", "edit", "synthesize", "composite")
RERENDER_STAGES = ("edit", "synthesize", "composite")
GREY = (128, 128, 128)


# ---------------------------------------------------------------------------------------------- test double

class TintTestEngine:
    """TEST DOUBLE for the model pipeline (see the module docstring); records what the server asked of it."""

    def __init__(self, stage_delay: float = 0.0):
        self.stage_delay = stage_delay
        self.gate = threading.Event()  # clear it to hold running jobs between stages
        self.gate.set()
        self.calls: list[tuple] = []
        self.cancelled: list[str] = []
        self.started = threading.Event()
        self._cache: dict[str, EditRequest] = {}

    def info(self) -> EngineInfo:
        return EngineInfo("cpu (tint test double)", {"tint": "loaded", "e4e": "missing"}, ["afro", "bob cut"],
                          ["purple", "red"])

    def edit(self, request: EditRequest, ctx: JobContext) -> EditResult:
        self.calls.append(("edit", ctx.job_id))
        return self._run(request, request.strength, STAGES, ctx, cache=True)

    def rerender(self, request: RerenderRequest, ctx: JobContext) -> EditResult:
        self.calls.append(("rerender", ctx.job_id, request.base))
        base = self._cache.get(request.base)
        if base is None:
            raise BadRequest(f"No cached edit for job {request.base}.", "unknown_job")
        return self._run(base, request.strength, RERENDER_STAGES, ctx, cache=False)

    def _run(self, request: EditRequest, strength: float, stages: tuple, ctx: JobContext, cache: bool
             ) -> EditResult:
        self.started.set()
        timings = {}
        try:
            for stage in stages:
                t0 = time.perf_counter()
                ctx.progress(stage, 0.0)
                end = time.monotonic() + self.stage_delay
                while time.monotonic() < end or not self.gate.is_set():
                    time.sleep(0.005)
                    ctx.check()
                preview = _to_rgba(request.source)[:8, :8].copy() if stage == "synthesize" else None
                ctx.progress(stage, 1.0, None if preview is None else Image(8, 8, preview))
                timings[stage] = time.perf_counter() - t0
        except Cancelled:
            self.cancelled.append(ctx.job_id)
            raise
        if cache:
            self._cache[ctx.job_id] = request
        out = _tint(request, strength)
        sel = request.selection
        bbox = (sel.x, sel.y, sel.w, sel.h) if isinstance(sel, Rect) else (0, 0, request.source.width,
                                                                              request.source.height)
        layer = Image(request.source.width, request.source.height, out, request.out_channels, "u8")
        return EditResult(layer, [Face(bbox, True)], timings, meta={"engine": "tint test double"})


def _to_rgba(im: Image) -> np.ndarray:
    a = np.frombuffer(im.data, np.uint8).reshape(im.height, im.width, len(im.channels))
    out = np.full((im.height, im.width, 4), 255, np.uint8)
    for i, c in enumerate("RGBA"):
        if c in im.channels:
            out[..., i] = a[..., im.channels.index(c)]
    return out


def _tint(request: EditRequest, strength: float) -> np.ndarray:
    rgba = _to_rgba(request.source).astype(np.float64)
    h, w = rgba.shape[:2]
    weight = np.ones((h, w))
    if isinstance(request.selection, Rect):
        s, weight = request.selection, np.zeros((h, w))
        weight[s.y:s.y + s.h, s.x:s.x + s.w] = 1
    elif isinstance(request.selection, Image):
        weight = np.frombuffer(request.selection.data, np.uint8).reshape(h, w) / 255
    a = (strength / 2 * weight)[..., None]
    rgba[..., :3] = np.rint(rgba[..., :3] * (1 - a) + np.array(request.rgb or GREY) * a)
    order = [request.out_channels.index(c) for c in "RGBA"]
    out = np.empty((h, w, 4), np.uint8)
    out[..., order] = rgba.astype(np.uint8)
    return out


def expected_tint(src: bytes, w: int, h: int, rgb: tuple, strength: float, rect: tuple | None = None,
                  ) -> bytes:
    """Independent per-pixel version of the double's operation, for BGRA u8 in and out."""
    out = bytearray(src)
    for y in range(h):
        for x in range(w):
            if rect and not (rect[0] <= x < rect[0] + rect[2] and rect[1] <= y < rect[1] + rect[3]):
                continue
            i, a = 4 * (y * w + x), strength / 2
            for k, target in zip((2, 1, 0), rgb, strict=True):  # BGRA memory order
                out[i + k] = int(round(src[i + k] * (1 - a) + target * a))
    return bytes(out)


# ---------------------------------------------------------------------------------------------- helpers

FAST = Limits(max_frame_bytes=1 << 20, max_total_bytes=2 << 20, max_pixels=1 << 18, max_queue=64,
              lease_s=5.0)


@contextlib.contextmanager
def serving(engine: TintTestEngine | None = None, limits: Limits = FAST, **kw):
    with Server(engine or TintTestEngine(), "tcp://127.0.0.1:*", limits=limits, shutdown_grace=3, **kw) as srv:
        yield srv


def bgra(w: int, h: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 4), dtype=np.uint8).tobytes()


def request(w: int = 16, h: int = 12, seed: int = 0, **kw) -> EditRequest:
    kw.setdefault("rgb", (200, 40, 90))
    return EditRequest(Image(w, h, bgra(w, h, seed), "BGRA"), **kw)


def raw_send(endpoint: str, frames: list, timeout: float = 1.0) -> list[bytes] | None:
    """One message from a bare DEALER; the first reply, or None when the server dropped or ignored it."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    try:
        sock.send_multipart(frames)
        return sock.recv_multipart() if sock.poll(int(timeout * 1000)) else None
    finally:
        sock.close()


def header(**kw) -> bytes:
    return msgpack.packb({"v": PROTOCOL_VERSION, **kw})


def wait_for(cond, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


# ---------------------------------------------------------------------------------------------- behaviour

def test_hello_reports_versions_device_models_hairstyles_and_limits():
    with serving() as srv, Client(srv.endpoint, timeout=2) as client:
        info = client.info
        assert info.protocol == PROTOCOL_VERSION and info.server
        assert info.device == "cpu (tint test double)"
        assert info.models == {"tint": "loaded", "e4e": "missing"}
        assert info.hairstyles == ["afro", "bob cut"] and info.colours == ["purple", "red"]
        assert info.limits == FAST
        assert client.ping() < 1.0


def test_edit_result_layer_arrives_in_the_requested_format_with_metadata():
    w, h = 16, 12
    with serving() as srv, Client(srv.endpoint, timeout=2) as client:
        req = request(w, h, strength=1.5, selection=(2, 3, 7, 5))
        res = client.edit(req, timeout=5)
    assert (res.layer.width, res.layer.height, res.layer.channels, res.layer.depth) == (w, h, "BGRA", "u8")
    assert res.layer.tobytes() == expected_tint(bgra(w, h), w, h, (200, 40, 90), 1.5, (2, 3, 7, 5))
    assert res.faces == [Face((2, 3, 7, 5), True)] and res.faces_edited == 1
    assert set(res.timings) == set(STAGES) and res.meta == {"engine": "tint test double"}


def test_progress_streams_every_stage_in_order_with_a_preview_through_poll():
    with serving(TintTestEngine(stage_delay=0.01)) as srv, Client(srv.endpoint, timeout=2) as client:
        job = client.submit(request(), job_id="progress-1")
        events = []
        assert wait_for(lambda: events.extend(job.poll()) or job.done)
        events += job.poll()
    assert isinstance(events[0], Accepted) and events[0].position == 0
    assert isinstance(events[-1], EditResult) and events[-1].job == "progress-1"
    progress = [e for e in events if isinstance(e, Progress)]
    stages = [p.stage for p in progress]
    assert list(dict.fromkeys(stages)) == list(STAGES)
    assert all(0.0 <= p.fraction <= 1.0 for p in progress)
    preview = [p.preview for p in progress if p.preview is not None]
    assert len(preview) == 1 and (preview[0].width, preview[0].height) == (8, 8)
    src = np.frombuffer(bgra(16, 12), np.uint8).reshape(12, 16, 4)
    assert preview[0].tobytes() == src[:8, :8][..., [2, 1, 0, 3]].tobytes()


def test_cancel_mid_job_stops_the_engine_and_raises_cancelled():
    engine = TintTestEngine(stage_delay=5.0)
    with serving(engine) as srv, Client(srv.endpoint, timeout=2) as client:
        job = client.submit(request())
        assert engine.started.wait(3)
        t0 = time.monotonic()
        job.cancel()
        with pytest.raises(Cancelled) as err:
            job.result(timeout=3)
        assert time.monotonic() - t0 < 1.0
        assert err.value.code == "cancelled" and job.state == "cancelled"
        assert engine.cancelled == [job.id]
        engine.stage_delay = 0.0
        assert client.edit(request(), timeout=5).faces_edited == 1  # the worker is free again


def test_a_vanished_client_loses_its_job_when_the_lease_expires():
    engine = TintTestEngine(stage_delay=5.0)
    with serving(engine, Limits(lease_s=0.3)) as srv:
        req = request()
        params, specs, frames = req.to_wire()
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.connect(srv.endpoint)
        sock.send_multipart([header(op="edit", job="orphan", params=params, images=specs), *frames])
        assert sock.poll(2000) and msgpack.unpackb(sock.recv_multipart()[0])["op"] == "accepted"
        assert engine.started.wait(2)
        sock.close(linger=0)  # no heartbeats, no goodbye: like GIMP killing a plug-in
        assert wait_for(lambda: engine.cancelled == ["orphan"], 3.0)


def test_heartbeats_keep_a_job_longer_than_the_lease_alive():
    engine = TintTestEngine(stage_delay=0.15)  # 6 stages: about 0.9 s, three leases
    with serving(engine, Limits(lease_s=0.3)) as srv, Client(srv.endpoint, timeout=2, heartbeat=0.05) as client:
        assert client.heartbeat <= 0.1
        assert client.edit(request(), timeout=5).faces_edited == 1
    assert engine.cancelled == []


def test_strength_rerender_uses_the_engine_cache_not_a_full_run():
    engine = TintTestEngine()
    with serving(engine) as srv, Client(srv.endpoint, timeout=2) as client:
        first = client.submit(request(strength=0.5))
        first.result(5)
        again = client.rerender(first, 2.0)
        stages = []
        res = None
        for ev in again.events(timeout=5):
            if isinstance(ev, Progress):
                stages.append(ev.stage)
            res = ev
        with pytest.raises(BadRequest) as err:
            client.rerender("never-submitted", 1.0).result(5)
    assert err.value.code == "unknown_job"
    assert engine.calls[:2] == [("edit", first.id), ("rerender", again.id, first.id)]
    assert list(dict.fromkeys(stages)) == list(RERENDER_STAGES)
    assert res.layer.tobytes() == expected_tint(bgra(16, 12), 16, 12, (200, 40, 90), 2.0)


def test_a_ready_only_look_never_queues_a_job_on_an_engine_that_renders_nothing_ahead():
    engine = TintTestEngine()  # no ready(): nothing is ever rendered ahead
    with serving(engine) as srv, Client(srv.endpoint, timeout=2) as client:
        first = client.submit(request(strength=0.5))
        first.result(5)
        with pytest.raises(NotReady) as err:
            client.rerender(first, 0.6, ready_only=True).result(5)
    assert err.value.code == "not_ready" and "nothing was queued" in err.value.message
    assert [c[0] for c in engine.calls] == ["edit"]


def test_resubmitting_a_job_id_is_idempotent_and_a_changed_request_conflicts():
    engine = TintTestEngine()
    with serving(engine) as srv:
        with Client(srv.endpoint, timeout=2) as a:
            first = a.submit(request(), job_id="same-id").result(5)
        with Client(srv.endpoint, timeout=2) as b:  # another connection: the result is replayed to it
            again = b.submit(request(), job_id="same-id").result(5)
            with pytest.raises(BadRequest) as err:
                b.submit(request(strength=0.1), job_id="same-id").result(5)
    assert again.layer.tobytes() == first.layer.tobytes()
    assert [c for c in engine.calls if c[0] == "edit"] == [("edit", "same-id")]
    assert err.value.code == "job_conflict"


def test_a_full_queue_answers_busy():
    engine = TintTestEngine()
    engine.gate.clear()
    with serving(engine, Limits(max_queue=1, lease_s=5)) as srv, Client(srv.endpoint, timeout=2) as client:
        running = client.submit(request())
        assert engine.started.wait(2)
        waiting = client.submit(request(seed=1))
        with pytest.raises(Busy) as err:
            client.submit(request(seed=2)).result(3)
        assert "busy" in err.value.message
        assert next(waiting.events(timeout=2)).position == 1
        engine.gate.set()
        assert running.result(5) and waiting.result(5)


def test_eight_clients_five_jobs_each_every_result_reaches_its_sender():
    results: dict[tuple[int, int], bytes] = {}
    errors: list[BaseException] = []

    def one_client(endpoint: str, c: int) -> None:
        try:
            with Client(endpoint, timeout=5) as client:
                jobs = {j: client.submit(request(8, 8, seed=10 * c + j), job_id=f"c{c}-j{j}") for j in range(5)}
                for j, job in jobs.items():
                    res = job.result(20)
                    assert res.job == f"c{c}-j{j}"
                    results[c, j] = res.layer.tobytes()
        except BaseException as e:
            errors.append(e)

    with serving() as srv:
        threads = [threading.Thread(target=one_client, args=(srv.endpoint, c)) for c in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert len(results) == 40
    for (c, j), layer in results.items():
        assert layer == expected_tint(bgra(8, 8, 10 * c + j), 8, 8, (200, 40, 90), 1.0)


def _edit_frames(**override) -> list:
    params, specs, frames = request().to_wire()
    h = {"op": "edit", "job": uuid.uuid4().hex, "params": params, "images": specs, **override}
    return [header(**h), *frames]


BAD_MESSAGES = {
    "not msgpack": ([b"\xc1\xff garbage"], "bad_header"),
    "header not a map": ([msgpack.packb([1, 2, 3])], "bad_header"),
    "empty header": ([b""], "bad_header"),
    "wrong version": ([msgpack.packb({"v": 99, "op": "hello", "req": "r"})], "unsupported_version"),
    "unknown op": ([header(op="explode")], "unknown_op"),
    "unknown field": ([header(op="ping", colour="red")], "unknown_field"),
    "wrong type": ([header(op="hello", req=5)], "bad_request"),
    "missing field": ([header(op="cancel")], "bad_request"),
    "wrong strength type": (_edit_frames(params={"rgb": [1, 2, 3], "strength": "high"}), "bad_request"),
    "missing frames": (_edit_frames()[:1], "bad_frames"),
    "frame of wrong size": (_edit_frames()[:1] + [b"\0" * 10], "bad_frames"),
    "extra frames on ping": ([header(op="ping"), b"x"], "bad_frames"),
    "too many frames": ([header(op="ping")] + [b"x"] * 20, "too_large"),
    "oversized header": ([header(op="hello", req="r", client="x" * 70_000)], "too_large"),
    "oversized declaration": (_edit_frames(images=[{"role": "source", "width": 4096, "height": 4096,
                                                    "channels": "RGBA", "depth": "f32"}])[:1], "too_large"),
    "bad job id": (_edit_frames(job="../../etc/passwd"), "bad_request"),
    "pickle-ish ext type": ([msgpack.packb({"v": 1, "op": "ping", "x": msgpack.ExtType(1, b"os.system")})],
                            "bad_header"),
}


@pytest.mark.parametrize("case", list(BAD_MESSAGES))
def test_malformed_messages_get_a_structured_error_and_the_server_keeps_serving(case):
    frames, code = BAD_MESSAGES[case]
    with serving() as srv:
        reply = raw_send(srv.endpoint, frames)
        assert reply is not None
        err = msgpack.unpackb(reply[0])
        assert (err["op"], err["code"]) == ("error", code), err
        assert err["message"] and err["code"] in ERROR_CODES
        with Client(srv.endpoint, timeout=2) as client:
            assert client.edit(request(), timeout=5).faces_edited == 1


def test_a_frame_over_maxmsgsize_drops_the_connection_and_the_server_keeps_serving():
    with serving() as srv:
        assert raw_send(srv.endpoint, [header(op="ping"), b"\0" * ((1 << 20) + 1)], timeout=0.5) is None
        with Client(srv.endpoint, timeout=2) as client:
            assert client.ping() < 1.0


def test_a_client_refuses_an_image_over_the_server_limits_before_sending():
    with serving() as srv, Client(srv.endpoint, timeout=2) as client:
        with pytest.raises(BadRequest) as err:
            client.submit(request(600, 600))  # 360,000 px > FAST.max_pixels
        assert err.value.code == "too_large"


def test_random_bytes_and_random_headers_never_break_the_server():
    scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=8)
               | st.binary(max_size=8))
    any_value = st.recursive(scalars, lambda c: st.lists(c, max_size=3)
                             | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=8)
    headers = st.fixed_dictionaries({"v": st.just(PROTOCOL_VERSION),
                                     "op": st.sampled_from(["hello", "ping", "echo", "edit", "rerender",
                                                            "cancel", "nope"])},
                                    optional={"req": any_value, "job": any_value, "params": any_value,
                                              "images": any_value, "base": any_value, "strength": any_value,
                                              "client": any_value}).map(msgpack.packb)
    messages = st.one_of(st.lists(st.binary(max_size=64), min_size=1, max_size=3),
                         st.tuples(headers, st.lists(st.binary(max_size=16), max_size=2)).map(
                             lambda t: [t[0], *t[1]]))
    with serving() as srv:
        @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(messages)
        def fuzz(frames):
            reply = raw_send(srv.endpoint, frames, timeout=2.0)
            assert reply is not None, frames
            h = msgpack.unpackb(reply[0])
            assert h["op"] in ("error", "hello", "pong", "echo", "accepted", "cancel"), h
            if h["op"] == "error":
                assert h["code"] in ERROR_CODES and h["message"]

        fuzz()
        with Client(srv.endpoint, timeout=2) as client:
            assert client.edit(request(), timeout=5).faces_edited == 1


def test_echo_returns_the_same_pixels():
    with serving() as srv, Client(srv.endpoint, timeout=2) as client:
        data = bgra(32, 16, 7)
        back = client.echo({"data": Image(32, 16, data, "BGRA")})
    assert list(back) == ["data"] and back["data"].tobytes() == data


# ---------------------------------------------------------------------------------------------- lifecycle

def test_connecting_to_nothing_raises_server_not_running_within_the_timeout():
    # A plain socket frees its port on close (a ZeroMQ socket unbinds later, in its I/O thread, so the client
    # could still reach it).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(ServerNotRunning) as err:
        Client(f"tcp://127.0.0.1:{port}", timeout=0.5)
    assert time.monotonic() - t0 < 2.0 and "No HairCLIP server answered" in err.value.message


def test_a_peer_that_closes_before_any_reply_is_no_server_not_a_lost_connection():
    """The client only says it lost a connection it had: one on which the server answered at least once."""
    ctx = zmq.Context.instance()
    peer = ctx.socket(zmq.ROUTER)  # completes ZeroMQ's handshake, then drops the hello unanswered
    port = peer.bind_to_random_port("tcp://127.0.0.1")
    heard = threading.Event()

    def take_and_close():
        if peer.poll(5000):
            peer.recv_multipart()
            heard.set()
        peer.close(linger=0)

    closer = threading.Thread(target=take_and_close)
    closer.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(ServerNotRunning) as err:
            Client(f"tcp://127.0.0.1:{port}", timeout=3.0)
    finally:
        closer.join(10)
    assert heard.is_set() and time.monotonic() - t0 < 3.0  # failed at the disconnection, not at the timeout
    assert "No HairCLIP server answered" in err.value.message and "Lost" not in err.value.message


def test_the_client_reconnects_to_a_restarted_server():
    engine = TintTestEngine(stage_delay=5.0)
    first = Server(engine, "tcp://127.0.0.1:*", limits=FAST, shutdown_grace=3).__enter__()
    port = first.endpoint.rsplit(":", 1)[1]
    with Client(first.endpoint, timeout=1.0, heartbeat=0.1) as client:
        job = client.submit(request(), job_id="survivor")
        assert engine.started.wait(3)
        first.__exit__(None, None, None)
        with pytest.raises(Cancelled) as err:
            job.result(3)
        assert err.value.code == "shutting_down"
        with Server(TintTestEngine(), f"tcp://127.0.0.1:{port}", limits=FAST):
            assert client.ping(timeout=3) < 3
            assert client.submit(request(), job_id="survivor").result(5).faces_edited == 1
            client.reconnect()
            assert client.hello().device == "cpu (tint test double)"


@contextlib.contextmanager
def server_process(tmp_path: Path, stage_delay: float):
    """`hairclip serve` in a subprocess, through register_cli, with the test double as its engine."""
    code = ("import argparse, sys\n"
            "from test_client_server import TintTestEngine\n"
            "from hairclip.cli_server import register_cli\n"
            "p = argparse.ArgumentParser(); sub = p.add_subparsers()\n"
            f"register_cli(sub, engine_factory=lambda args: TintTestEngine({stage_delay}))\n"
            "args = p.parse_args(['serve', '--bind', 'tcp://127.0.0.1:*'])\n"
            "sys.exit(args.func(args))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / d) for d in ("backend", "shared", "tests"))}
    log = (tmp_path / "server.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=log, env=env, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("listening on "), (line, (tmp_path / "server.log").read_text())
        yield proc, line.split()[-1], tmp_path / "server.log"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        proc.stdout.close()
        log.close()


def test_a_server_killed_mid_job_makes_the_client_raise_within_its_timeout(tmp_path):
    with server_process(tmp_path, stage_delay=5.0) as (proc, endpoint, _):
        with Client(endpoint, timeout=1.0, heartbeat=0.2) as client:
            job = client.submit(request())
            assert next(job.events(timeout=3)).state == "queued"
            assert isinstance(next(job.events(timeout=3)), Progress)  # the engine is at work
            os.kill(proc.pid, signal.SIGKILL)
            t0 = time.monotonic()
            with pytest.raises(ServerNotRunning) as err:
                job.result(timeout=5)
            assert time.monotonic() - t0 < 1.0 + 0.5
            assert "Lost the connection" in err.value.message  # this one had answered


def test_sigterm_shuts_down_cleanly_cancelling_the_running_job(tmp_path):
    with server_process(tmp_path, stage_delay=5.0) as (proc, endpoint, log):
        with Client(endpoint, timeout=2.0) as client:
            job = client.submit(request())
            assert isinstance(next(job.events(timeout=3)), Accepted)
            assert isinstance(next(job.events(timeout=3)), Progress)
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(Cancelled) as err:
                job.result(timeout=5)
            assert err.value.code == "shutting_down"
        assert proc.wait(5) == 0
        text = log.read_text()
    assert "received SIGTERM" in text and f"job {job.id} ended" in text and "stopped" in text


def test_binding_beyond_loopback_without_keys_is_refused(tmp_path, capsys):
    assert is_local("tcp://127.0.0.1:5570") and is_local("tcp://[::1]:5570") and is_local("ipc:///tmp/h")
    assert not any(is_local(e) for e in ("tcp://0.0.0.0:5570", "tcp://*:5570", "tcp://eth0:5570",
                                         "tcp://192.168.1.4:5570", "udp://127.0.0.1:1"))
    with pytest.raises(ValueError, match="without CURVE keys"):
        Server(TintTestEngine(), "tcp://0.0.0.0:*")
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(), engine_factory=lambda args: TintTestEngine())
    args = parser.parse_args(["serve", "--bind", "tcp://*:5570"])
    assert args.func(args) == 2 and "Refusing to bind" in capsys.readouterr().err
    generate_keys(tmp_path, "alice")
    check_bind("tcp://0.0.0.0:5570", tmp_path)  # with keys it is allowed


def test_curve_serves_a_listed_key_and_refuses_an_unlisted_one(tmp_path):
    generate_keys(tmp_path, "alice")
    server_public, _ = zmq.auth.load_certificate(tmp_path / "server.key")
    (tmp_path / "rogue").mkdir()
    rogue_public, rogue_secret = zmq.auth.load_certificate(
        zmq.auth.create_certificates(tmp_path / "rogue", "mallory")[1])
    with serving(keys_dir=tmp_path) as srv:
        with Client(srv.endpoint, timeout=2, keys=CurveKeys.from_dir(tmp_path, "alice")) as client:
            assert client.edit(request(), timeout=5).faces_edited == 1
        for keys in (CurveKeys(server_public, rogue_public, rogue_secret), None):
            t0 = time.monotonic()
            with pytest.raises(AuthFailed):
                Client(srv.endpoint, timeout=1.0, keys=keys)
            assert time.monotonic() - t0 < 2.0


def test_a_refused_key_is_an_authentication_failure_naming_the_key_file_and_the_allow_list(tmp_path, capsys):
    server_dir, rogue_dir = tmp_path / "server", tmp_path / "laptop"
    generate_keys(server_dir, "alice")
    generate_keys(rogue_dir, "mallory")  # a keypair the server never listed...
    (rogue_dir / "server.key").write_bytes((server_dir / "server.key").read_bytes())  # ...for the right server
    offered = rogue_dir / "clients" / "mallory.key_secret"
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())
    with serving(keys_dir=server_dir) as srv:
        with pytest.raises(AuthFailed) as err:  # what a plug-in gets from the shared client
            Client(srv.endpoint, timeout=2.0, keys=CurveKeys.from_dir(rogue_dir, "mallory"))
        args = parser.parse_args(["status", "--connect", srv.endpoint, "--keys-dir", str(rogue_dir),
                                  "--key-name", "mallory", "--timeout", "2"])
        assert args.func(args) == 1
        stderr = capsys.readouterr().err
        good = parser.parse_args(["status", "--connect", srv.endpoint, "--keys-dir", str(server_dir),
                                  "--key-name", "alice"])
        assert good.func(good) == 0  # the server kept serving the listed key
    for message in (err.value.message, stderr):
        assert "Authentication failed" in message and "refused" in message
        assert str(offered) in message and "authorized_clients" in message
        assert str(rogue_dir / "authorized_clients" / "mallory.key") in message
        assert "not running" not in message and "hairclip serve\n" not in message
    assert err.value.code == "auth_failed"


def test_status_prints_the_hello_or_a_clear_not_running(capsys):
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())
    with serving() as srv:
        args = parser.parse_args(["status", "--connect", srv.endpoint])
        assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "protocol 1" in out and "cpu (tint test double)" in out and "e4e missing" in out
    args = parser.parse_args(["status", "--connect", srv.endpoint, "--timeout", "0.3"])
    assert args.func(args) == 1
    assert "not running" in capsys.readouterr().err


def test_status_lists_every_trained_hairstyle(capsys):
    # the engine's list (hairclip.nets.mapper.HAIRSTYLES), read without importing torch
    HAIRSTYLES = [p.removesuffix(" hairstyle") for p in (ROOT / "backend/hairclip/data/hairstyles.txt"
                                                           ).read_text().splitlines()]

    class FullListEngine(TintTestEngine):
        def info(self) -> EngineInfo:
            return EngineInfo("cpu (tint test double)", {}, list(HAIRSTYLES), ["purple"])

    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())
    with serving(FullListEngine()) as srv:
        args = parser.parse_args(["status", "--connect", srv.endpoint])
        assert args.func(args) == 0
    out = capsys.readouterr().out
    listed = out.split("hairstyles:", 1)[1].split("colours:", 1)[0]
    names = [n.strip() for n in listed.split(":", 1)[1].replace("\n", " ").split(",")]
    assert len(HAIRSTYLES) == 44 and names == list(HAIRSTYLES)
    assert "44 trained" in out and "..." not in listed


def test_serve_without_weights_offline_names_the_files_to_import(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HAIRCLIP_WEIGHTS", str(tmp_path / "empty-store"))
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())
    args = parser.parse_args(["serve", "--no-download", "--device", "cpu"])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert "hairclip.pt" in err and "hairclip weights import DIR" in err


def test_serve_on_a_busy_address_says_so(capsys):
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(), engine_factory=lambda args: TintTestEngine())
    with serving() as srv:
        args = parser.parse_args(["serve", "--bind", srv.endpoint])
        assert args.func(args) == 1
    assert "Is a server already running there?" in capsys.readouterr().err


def test_keys_command_writes_a_listed_client_keypair(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())
    args = parser.parse_args(["keys", "--dir", str(tmp_path), "--client", "krita"])
    assert args.func(args) == 0
    assert (tmp_path / "authorized_clients" / "krita.key").read_text() == (tmp_path / "clients" / "krita.key"
                                                                           ).read_text()
    keys = CurveKeys.from_dir(tmp_path, "krita")
    assert len(keys.secret) == len(keys.public) == len(keys.server_public) == 40
    assert args.func(args) == 1 and "exists" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim")
def test_freed_frames_go_back_to_the_os_after_a_job():
    """What the worker does after each job: heap memory that big frames freed leaves the process's RSS."""
    code = """if True:
        from pathlib import Path
        import numpy as np
        from hairclip.server import release_freed_memory
        def rss():
            status = Path("/proc/self/status").read_text().splitlines()
            return int(next(line for line in status if line.startswith("VmRSS")).split()[1]) // 1024
        big = np.ones(30 << 20, np.uint8); del big  # glibc now serves frames up to 30 MB from the heap
        frames = [np.ones(8 << 20, np.uint8) for _ in range(40)]  # 320 MB, like a 4096 px job's frames
        keep = frames.pop()  # the heap's top stays in use, so glibc cannot shrink it by itself
        del frames
        before = rss(); release_freed_memory(); print(before, rss())
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    before, after = map(int, out.stdout.split())
    assert before - after > 250, (before, after)  # MiB
