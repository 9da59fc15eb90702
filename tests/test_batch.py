"""Folder batches: the report, skipping what is done, crashes, and sharding under torchrun and over servers.

The first tests drive `run_batch` with a TEST DOUBLE runner (a fixed recolouring, no networks) to check the
bookkeeping quickly. The acceptance tests run the real command on the small random networks: two CPU
processes under torchrun (gloo), and two `hairclip serve --random-tiny` servers, each compared byte for byte
with a single-process run and killed halfway once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hairclip.batch import PARTS, REPORT, run_batch
from hairclip.cli import build_parser
from hairclip.cli_edit import Outcome
from hairclip.errors import HairclipError
from hairclip.images import save_image
from hairclip_shared.protocol import ServerNotRunning

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--random-tiny", "--device", "cpu"]


def make_photos(folder: Path, n: int, size: int = 160) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size]
    paths = []
    for i in range(n):
        paths.append(folder / f"p{i:02d}.png")
        save_image(paths[-1], np.stack([(xx + 7 * i) % 256, yy % 256, (xx * yy + i) % 256], -1).astype(np.uint8))
    return paths


def report(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / REPORT).read_text().splitlines()]


def part_lines(out: Path) -> list[dict]:
    """The lines written so far by a running (or killed) batch; a line being written is left for later."""
    lines = []
    for f in sorted((out / PARTS).glob("*.jsonl")):
        for line in f.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return lines


def outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*_hairclip.png"))}


# ------------------------------------------------------------------------------------ with a test double


class Recolour:
    """TEST DOUBLE runner: inverts the photo as an opaque layer and counts its calls; ``crash_after`` makes
    it raise KeyboardInterrupt, as a killed process would stop, after that many photos."""

    device = "test-double"

    def __init__(self, crash_after: int | None = None):
        self.calls: list[int] = []
        self.crash_after = crash_after

    def run(self, photo, args, refs) -> Outcome:
        if self.crash_after is not None and len(self.calls) == self.crash_after:
            raise KeyboardInterrupt
        self.calls.append(int(photo[0, 0, 0]))
        layer = np.concatenate([255 - photo, np.full(photo.shape[:2] + (1,), 255, np.uint8)], 2)
        return Outcome(layer, [(0, 0, 8, 8)], {}, [])


def batch(folder: Path, out: Path, runner: Recolour, *extra: str) -> int:
    args = build_parser().parse_args(["edit", str(folder), "-o", str(out), "--hairstyle", "afro", *TINY, *extra])
    return run_batch(args, sorted(folder.iterdir()), {"hairstyle": None, "colour": None}, lambda a, addr: runner)


def test_the_report_has_one_line_per_photo_and_a_second_run_skips_them_all(tmp_path):
    make_photos(tmp_path / "in", 3)
    first = Recolour()
    assert batch(tmp_path / "in", tmp_path / "out", first) == 0
    lines = report(tmp_path / "out")
    assert [(r["output"], r["status"], r["faces"], r["boxes"], r["device"]) for r in lines] == [
        (f"p{i:02d}_hairclip.png", "done", 1, [[0, 0, 8, 8]], "test-double") for i in range(3)]
    assert lines[0]["inputs"]["hairstyle"] == "afro" and len(lines[0]["inputs"]["photo_sha256"]) == 64
    assert not (tmp_path / "out" / PARTS).exists()
    second = Recolour()
    assert batch(tmp_path / "in", tmp_path / "out", second) == 0
    assert second.calls == [] and {r["status"] for r in report(tmp_path / "out")} == {"skipped"}
    third = Recolour()  # the skipped lines keep the record, so a third run skips too
    assert batch(tmp_path / "in", tmp_path / "out", third) == 0 and third.calls == []


def test_changed_inputs_a_changed_output_and_force_are_redone(tmp_path):
    make_photos(tmp_path / "in", 3)
    out = tmp_path / "out"
    batch(tmp_path / "in", out, Recolour())
    runner = Recolour()
    batch(tmp_path / "in", out, runner, "--strength", "0.5")
    assert len(runner.calls) == 3  # another strength: every photo again
    (out / "p01_hairclip.png").write_bytes(b"damaged")
    save_image(tmp_path / "in" / "p02.png", np.zeros((160, 160, 3), np.uint8))  # the photo itself changed
    runner = Recolour()
    batch(tmp_path / "in", out, runner, "--strength", "0.5")
    assert runner.calls == [7, 0]
    assert [r["status"] for r in report(out)] == ["skipped", "done", "done"]
    runner = Recolour()
    batch(tmp_path / "in", out, runner, "--strength", "0.5", "--force")
    assert len(runner.calls) == 3


def test_a_failed_photo_is_reported_and_the_others_are_still_done(tmp_path):
    make_photos(tmp_path / "in", 2)
    (tmp_path / "in" / "p01.png").write_bytes(b"\x89PNG but not really")
    assert batch(tmp_path / "in", tmp_path / "out", Recolour()) == 1
    ok, bad = report(tmp_path / "out")
    assert ok["status"] == "done" and (tmp_path / "out" / "p00_hairclip.png").exists()
    assert bad["status"] == "failed" and bad["code"] == "bad_image" and "cannot be decoded" in bad["message"]
    assert not (tmp_path / "out" / "p01_hairclip.png").exists()
    runner = Recolour()
    assert batch(tmp_path / "in", tmp_path / "out", runner) == 1  # a failure is tried again, and fails again
    assert [r["status"] for r in report(tmp_path / "out")] == ["skipped", "failed"]


def test_a_run_killed_halfway_leaves_its_lines_and_the_next_run_does_only_the_rest(tmp_path):
    make_photos(tmp_path / "in", 4)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        batch(tmp_path / "in", out, Recolour(crash_after=2))
    assert not (out / REPORT).exists()
    assert [r["status"] for r in part_lines(out)] == ["done", "done"]
    with open(next((out / PARTS).glob("*.jsonl")), "a") as f:
        f.write('{"photo": "cut short by the crash')  # a half line, as a crash mid-write could leave
    runner = Recolour()
    assert batch(tmp_path / "in", out, runner) == 0
    assert runner.calls == [14, 21]  # p02 and p03 only (their first pixel is 7 * i)
    assert [r["status"] for r in report(out)] == ["skipped", "skipped", "done", "done"]
    assert not (out / PARTS).exists()


def test_two_photos_with_one_output_name_are_refused_before_anything_runs(tmp_path):
    make_photos(tmp_path / "a", 1)
    make_photos(tmp_path / "b", 1)
    args = build_parser().parse_args(["edit", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "o"),
                                      "--hairstyle", "afro", *TINY])
    runner = Recolour()
    with pytest.raises(HairclipError, match="would both be written to"):
        run_batch(args, [tmp_path / "a" / "p00.png", tmp_path / "b" / "p00.png"],
                  {"hairstyle": None, "colour": None}, lambda a, addr: runner)
    assert runner.calls == []


def test_server_is_repeatable_and_force_is_an_option():
    args = build_parser().parse_args(["edit", "x", "-o", "y", "--server", "tcp://a:1", "--server", "tcp://b:2",
                                      "--force"])
    assert args.server == ["tcp://a:1", "tcp://b:2"] and args.force


class RecolourServer(Recolour):
    """TEST DOUBLE for a server's client: the same recolouring; ``dies_after`` photos, it stops answering."""

    def __init__(self, address: str, dies_after: int | None = None):
        super().__init__()
        self.device, self.dies_after = "cpu", dies_after
        self.info = SimpleNamespace(models={"all": "loaded"}, device="cpu")
        self.client = SimpleNamespace(close=lambda: None)

    def run(self, photo, args, refs) -> Outcome:
        if self.dies_after is not None and len(self.calls) >= self.dies_after:
            raise ServerNotRunning("No HairCLIP server answered")
        time.sleep(0.05)  # let the other thread take its share
        return super().run(photo, args, refs)


def test_a_server_that_goes_away_hands_its_photos_to_the_others(tmp_path):
    make_photos(tmp_path / "in", 6)
    servers = {"tcp://a:1": RecolourServer("tcp://a:1", dies_after=1), "tcp://b:2": RecolourServer("tcp://b:2")}
    args = build_parser().parse_args(["edit", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--hairstyle",
                                      "afro", "--server", "tcp://a:1", "--server", "tcp://b:2"])
    code = run_batch(args, sorted((tmp_path / "in").iterdir()), {"hairstyle": None, "colour": None},
                     lambda a, address: servers[address])
    assert code == 0
    lines = report(tmp_path / "out")
    assert [r["status"] for r in lines] == ["done"] * 6
    assert len(servers["tcp://a:1"].calls) == 1 and len(servers["tcp://b:2"].calls) == 5
    assert sorted(r["device"] for r in lines) == ["cpu at tcp://a:1"] + ["cpu at tcp://b:2"] * 5


def test_when_every_server_is_gone_the_rest_is_reported_failed(tmp_path):
    make_photos(tmp_path / "in", 3)
    server = RecolourServer("tcp://a:1", dies_after=1)
    args = build_parser().parse_args(["edit", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--hairstyle",
                                      "afro", "--server", "tcp://a:1"])
    assert run_batch(args, sorted((tmp_path / "in").iterdir()), {"hairstyle": None, "colour": None},
                     lambda a, address: server) == 1
    lines = report(tmp_path / "out")
    assert [(r["status"], r["code"]) for r in lines] == [("done", None), ("failed", "not_running"),
                                                         ("failed", "not_running")]


def test_a_batch_on_servers_imports_no_torch():
    code = "import sys, hairclip.batch, hairclip.cli_edit\nassert 'torch' not in sys.modules, 'torch was imported'"
    res = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


# ------------------------------------------------------------------- acceptance: the real command, tiny nets


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # the same arithmetic in every process
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "backend"), str(ROOT / "shared"), env.get("PYTHONPATH", "")])
    return env


def _edit_cmd(photos: Path, out: Path, *extra: str) -> list[str]:
    return ["-m", "hairclip", "edit", str(photos), "-o", str(out), "--hairstyle", "afro", "--color", "red", *extra]


def _torchrun(photos: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
            *_edit_cmd(photos, out, *TINY)]


def _run_until(cmd: list[str], out: Path, lines: int, log: Path) -> None:
    """Start ``cmd`` and SIGKILL it and every process it started once the part files hold ``lines`` lines."""
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=_env(), stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / PARTS).is_dir() and len(part_lines(out)) >= lines:
                break
            time.sleep(0.2)
        assert proc.poll() is None, log.read_text()  # it was still running: the kill comes halfway
    finally:
        for pid in _process_tree(proc.pid):  # torchrun starts its workers in sessions of their own
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()


def _process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux /proc)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            found += _process_tree(int(child))
    return found


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """Four photos edited by one plain process (no torchrun, no server)."""
    root = tmp_path_factory.mktemp("reference")
    photos = root / "photos"
    make_photos(photos, 4, size=256)
    res = subprocess.run([sys.executable, *_edit_cmd(photos, root / "out", *TINY)], env=_env(),
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr
    assert [r["status"] for r in report(root / "out")] == ["done"] * 4
    return photos, outputs(root / "out")


def _check_resumed(out: Path, killed: list[dict], expected: dict[str, bytes]) -> None:
    """After a killed run and a full one: the same bytes as one process, and no photo edited twice."""
    done_first = {r["output"] for r in killed if r["status"] == "done"}
    lines = report(out)
    assert len(lines) == 4 and {r["output"] for r in lines} == set(expected)  # one line per photo
    assert {r["output"] for r in lines if r["status"] == "skipped"} == done_first
    assert {r["output"] for r in lines if r["status"] == "done"} == set(expected) - done_first
    assert outputs(out) == expected


def test_two_torchrun_processes_write_what_one_process_writes_and_resume_after_a_kill(reference, tmp_path):
    photos, expected = reference
    out = tmp_path / "out"
    _run_until(_torchrun(photos, out), out, 2, tmp_path / "killed.log")
    killed = part_lines(out)
    assert 2 <= len(killed) < 4 and not (out / REPORT).exists()
    res = subprocess.run(_torchrun(photos, out), env=_env(), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr
    _check_resumed(out, killed, expected)
    lines = report(out)
    assert {r["rank"] for r in lines if r["status"] == "done"} == {0, 1}  # both processes edited
    assert all(r["device"] == "cpu" for r in lines)
    summary = f"{4 - len(killed)} done, {len(killed)} skipped (already done), 0 failed"
    assert summary in res.stderr  # rank 0's summary counts both ranks' photos
    assert "2 processes: 100%" in res.stderr and "| 4/4 [" in res.stderr  # and its one bar too


@contextmanager
def tiny_servers(tmp_path: Path, n: int):
    """``n`` real `hairclip serve --random-tiny` processes on OS-chosen ports; yields their endpoints."""
    procs, endpoints = [], []
    try:
        for i in range(n):
            log = open(tmp_path / f"server{i}.log", "w")
            procs.append(subprocess.Popen([sys.executable, "-m", "hairclip", "serve", "--bind", "tcp://127.0.0.1:*",
                                           *TINY], env=_env(), stdout=subprocess.PIPE, stderr=log, text=True))
        for i, proc in enumerate(procs):
            line = proc.stdout.readline()
            assert line.startswith("listening on "), (tmp_path / f"server{i}.log").read_text()
            endpoints.append(line.split()[-1])
        yield endpoints
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_two_servers_write_what_one_process_writes_and_resume_after_a_kill(reference, tmp_path):
    photos, expected = reference
    out = tmp_path / "out"
    with tiny_servers(tmp_path, 2) as (a, b):
        cmd = [sys.executable, *_edit_cmd(photos, out, "--server", a, "--server", b)]
        _run_until(cmd, out, 2, tmp_path / "killed.log")
        killed = part_lines(out)
        assert 2 <= len(killed) < 4
        res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr
    _check_resumed(out, killed, expected)
    devices = {r["device"] for r in report(out) if r["status"] == "done"}
    assert {d.rsplit(" at ", 1)[1] for d in devices} == {a, b}  # both servers edited
    assert all(d.startswith("cpu; precision: fp32 plan") for d in devices)  # the device each server reports
