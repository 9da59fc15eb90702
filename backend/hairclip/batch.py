"""Batch edits of a folder: sharded over torchrun's processes or spread over running servers, resumable,
with a JSON-lines report.

Scheduling is torch.distributed's: under ``torchrun`` each process (rank) takes every WORLD_SIZE-th photo of
the sorted list, on its own GPU (LOCAL_RANK), and counts its progress in torchrun's key-value store so that
rank 0 can draw one bar. With ``--server A --server B`` one thread per server pulls photos from a queue.

Resuming: every report line carries the photo's *inputs* (its sha256, the conditions and reference sha256s,
the strength, the options that change the pixels, the model files' identity, the hairclip version) and the
sha256 of every file it wrote. A photo is skipped when the last record of its output says done (or skipped),
its inputs are equal and every file it wrote is still there with the same bytes. ``--force`` redoes all.

Crash safety: each rank appends its lines, one ``write`` and an ``fsync`` per photo, to its own file in
``OUT/.hairclip-report.parts/``; a killed run leaves them there and the next run reads them with the last
report. At the end rank 0 gathers the lines over the process group, writes ``OUT/hairclip-report.jsonl``
(atomically, sorted by photo) and the part files are removed. The records and the report are batch_report's;
this module runs the edits.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from hairclip.batch_report import (  # noqa: F401  (REPORT, PARTS: the tests import them from here)
    PARTS,
    REPORT,
    Photo,
    Report,
    inputs_record,
    model_identity,
    plan,
    sha256_file,
    utc_now,
)
from hairclip.errors import HairclipError
from hairclip.images import composite, read_photo, save_image

# What a failure to reach a server looks like: the photo goes back to the queue for the other servers.
SERVER_LOST = ("not_running", "timeout", "auth_failed", "protocol")


# ---------------------------------------------------------------------------------------------- ranks


class Ranks:
    """This process's place among torchrun's workers (RANK, WORLD_SIZE, LOCAL_RANK); one process otherwise.

    The process group is gloo even on GPUs: only small Python objects travel, and gloo needs no device."""

    def __init__(self) -> None:
        env = os.environ
        self.rank, self.world = int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1))
        self.local_rank = int(env.get("LOCAL_RANK", 0))
        self._store = None
        self._counts = {"finished": 0, "failed": 0}

    @property
    def main(self) -> bool:
        return self.rank == 0

    def start(self) -> str:
        """Join the group; returns the run's id (rank 0's), which names the part files."""
        run = f"{time.time_ns():020d}-{os.getpid()}"
        if self.world == 1:
            return run
        import torch.distributed as dist

        store, _, _ = next(dist.rendezvous("env://", timeout=timedelta(hours=2)))
        dist.init_process_group("gloo", store=dist.PrefixStore("hairclip-batch-pg/", store), rank=self.rank,
                                world_size=self.world, timeout=timedelta(hours=2))
        ids = [run]
        dist.broadcast_object_list(ids, src=0)
        self._store = dist.PrefixStore(f"hairclip-batch/{ids[0]}/", store)
        return ids[0]

    def gather(self, obj: object) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def count(self, name: str, n: int = 1) -> int:
        """Add to a batch-wide counter (torchrun's store: no rank waits for another); returns the total."""
        if self._store is None:
            self._counts[name] += n
            return self._counts[name]
        return int(self._store.add(name, n))

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def pick_rank_device(args: argparse.Namespace, ranks: Ranks) -> None:
    """Under torchrun, ``auto`` and ``cuda`` mean this rank's own GPU (LOCAL_RANK)."""
    if ranks.world == 1 or args.server or args.device not in ("auto", "cuda"):
        return
    import torch

    if torch.cuda.is_available():
        if ranks.local_rank >= torch.cuda.device_count():
            raise HairclipError(f"LOCAL_RANK {ranks.local_rank} but only {torch.cuda.device_count()} GPU(s) here; "
                                "start at most one process per GPU (torchrun --nproc-per-node)")
        torch.cuda.set_device(ranks.local_rank)
        args.device = f"cuda:{ranks.local_rank}"
    elif args.device == "auto":
        args.device = "cpu"


# ---------------------------------------------------------------------------------------------- batch


class Batch:
    """One run over a folder: checks what is already done, edits the rest, reports every photo."""

    def __init__(self, args: argparse.Namespace, photos: list[Photo], refs: dict, refs_sha: dict,
                 ranks: Ranks, report: Report, models: dict):
        self.args, self.photos, self.refs, self.refs_sha = args, photos, refs, refs_sha
        self.ranks, self.report, self.models = ranks, report, models
        self.host = socket.gethostname()
        self.quiet = ranks.world > 1  # under torchrun one bar; per-photo lines only for failures
        self.bar = None
        self._lock = threading.Lock()  # the server threads share the bar and the counters

    def check(self, photos: list[Photo]) -> list[tuple[Photo, str | None]]:
        """Skip (and report) the photos already done with the same inputs; returns the others with their hash."""
        todo = []
        for ph in photos:
            t0 = time.perf_counter()
            try:
                digest = sha256_file(ph.path)
            except OSError:
                todo.append((ph, None))  # the edit reports why it cannot be read
                continue
            inputs = inputs_record(self.args, digest, self.refs_sha, self.models)
            prev = None if self.args.force else self.report.current(ph, inputs)
            if prev is None:
                todo.append((ph, digest))
                continue
            self.record(ph, "skipped", inputs, t0, faces=prev.get("faces"), device=prev.get("device"),
                        outputs=prev["outputs"], host=prev.get("host"), boxes=prev.get("boxes"))
        return todo

    def edit(self, runner, ph: Photo, digest: str | None, device: str, reraise: tuple[str, ...] = ()) -> dict:
        """Edit one photo and report it; every error becomes a failed line and the batch goes on, except
        those with a code in ``reraise`` (a server gone away: the photo is not at fault)."""
        args, t0 = self.args, time.perf_counter()
        inputs = inputs_record(args, digest, self.refs_sha, self.models) if digest else None
        try:
            photo, info = read_photo(ph.path)  # upright; its ICC profile and EXIF go onto the outputs
            outcome = runner.run(photo, args, self.refs)
            files = write_outputs(ph.path, ph.output, photo, outcome, args, info)
        except HairclipError as e:
            if e.code in reraise:
                raise
            return self.record(ph, "failed", inputs, t0, code=e.code, message=e.message, device=device)
        except Exception as e:  # a bug or an odd photo must not stop the other photos
            return self.record(ph, "failed", inputs, t0, code="internal", message=f"{type(e).__name__}: {e}",
                               device=device)
        written = {self.report.relative(f): sha256_file(f) for f in files}
        return self.record(ph, "done", inputs, t0, faces=len(outcome.boxes), device=device,
                           boxes=[list(b) for b in outcome.boxes], outputs=written)

    def record(self, ph: Photo, status: str, inputs: dict | None, t0: float, *, faces: int | None = None,
               device: str | None = None, outputs: dict | None = None, code: str | None = None,
               message: str | None = None, host: str | None = None, boxes: list | None = None) -> dict:
        rec = {"photo": str(ph.path), "output": ph.key, "status": status, "code": code, "message": message,
               "faces": faces, "boxes": boxes, "seconds": round(time.perf_counter() - t0, 3), "device": device,
               "host": host or self.host, "rank": self.ranks.rank, "run": self.report.run, "finished": utc_now(),
               "inputs": inputs, "outputs": outputs}
        self.report.add(rec)
        with self._lock:
            failed = self.ranks.count("failed") if status == "failed" else None
            self.ranks.count("finished")
            if status == "failed" or (status == "done" and not self.quiet):
                where = ", ".join(f"{x},{y} {w}x{h}" for x, y, w, h in boxes or [])
                self.say(f"{ph.path.name}: {message} [{code}]" if status == "failed" else
                         f"{ph.path.name}: {faces} face(s) edited ({where}) in {rec['seconds']:.1f} s on {device}"
                         f" -> {ph.output}")
            if self.bar is not None and self.ranks.world == 1:  # under torchrun rank 0's watcher draws the bar
                self.bar.update(1)
                if failed:
                    self.bar.set_postfix(failed=failed)
        return rec

    def say(self, text: str) -> None:
        if self.bar is not None:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)
        else:
            prefix = f"[rank {self.ranks.rank}] " if self.ranks.world > 1 else ""
            print(prefix + text, file=sys.stderr, flush=True)


def write_outputs(path: Path, out: Path, photo, outcome, args: argparse.Namespace, info=None) -> list[Path]:
    """The edited photo, and the layer and aligned crops when asked for; returns every file written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(out, composite(photo, outcome.layer), info)
    files = [out]
    if args.layer:
        files.append(args.layer / f"{path.stem}_layer.png")
        save_image(files[-1], outcome.layer, info)
    if args.save_aligned:
        files += write_aligned(args.save_aligned, path.stem, outcome)
    return files


def write_aligned(folder: Path, stem: str, outcome) -> list[Path]:
    """``<stem>_face<i>_<name>.png`` for each face's aligned crop, inversion, edit and mask."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, face in enumerate(outcome.aligned):
        for name, image in face.items():
            if image is not None:
                files.append(folder / f"{stem}_face{i}_{name}.png")
                save_image(files[-1], image)
    return files


def run_batch(args: argparse.Namespace, inputs: list[Path], refs: dict,
              make_runner: Callable[[argparse.Namespace, str | None], object]) -> int:
    """``hairclip edit FOLDER -o OUT``: in this process (a share of it under torchrun) or on ``--server``s.
    Returns 1 when any photo failed."""
    ranks = Ranks()
    if ranks.world > 1 and args.server:
        raise HairclipError("--server spreads the photos over servers by itself; run it without torchrun")
    photos = plan(inputs, args.output)
    args.output.mkdir(parents=True, exist_ok=True)
    if args.layer:
        args.layer.mkdir(parents=True, exist_ok=True)
    refs_sha = {k: sha256_file(getattr(args, f"{k}_ref")) if v is not None else None for k, v in refs.items()}
    pick_rank_device(args, ranks)
    run = ranks.start()
    try:
        report = Report(args.output, run, ranks.rank)
        if args.server:
            return _on_servers(args, photos, refs, refs_sha, ranks, report, make_runner)
        return _in_process(args, photos, refs, refs_sha, ranks, report, make_runner)
    finally:
        ranks.close()


def _in_process(args, photos, refs, refs_sha, ranks: Ranks, report: Report, make_runner) -> int:
    models = model_identity(args)
    runner = None
    if None in models.values():  # a weight file is missing: loading fetches it (or says how), then hash it
        runner = make_runner(args, None)
        models = model_identity(args)
    batch = Batch(args, photos, refs, refs_sha, ranks, report, models)
    stop = threading.Event()
    watcher = None
    if ranks.main:
        batch.bar = _bar(len(photos))
        if ranks.world > 1:  # the other ranks' photos arrive through the store's counter
            batch.bar.set_description(f"{ranks.world} processes")
            watcher = threading.Thread(target=_watch, args=(batch, stop), daemon=True)
            watcher.start()
    try:
        todo = batch.check(photos[ranks.rank::ranks.world])
        # What is left is dealt again, so that a resumed batch is spread evenly whatever ran before.
        everything = sorted(t for share in ranks.gather([(str(p.path), d) for p, d in todo]) for t in share)
        by_path = {str(p.path): p for p in photos}
        mine = [(by_path[p], d) for p, d in everything[ranks.rank::ranks.world]]
        if mine and runner is None:
            runner = make_runner(args, None)
        device = runner.device if runner is not None else None
        for ph, digest in mine:
            batch.edit(runner, ph, digest, device)
        _stop(watcher, stop)  # _finish draws the bar's last step itself
        return _finish(batch)
    finally:
        _stop(watcher, stop)
        if batch.bar is not None:
            batch.bar.close()


def _stop(watcher: threading.Thread | None, stop: threading.Event) -> None:
    stop.set()
    if watcher is not None:
        watcher.join()


def _watch(batch: Batch, stop: threading.Event) -> None:
    """Under torchrun, rank 0's bar follows the batch-wide counters in the store, every half second."""
    while not stop.wait(0.5):
        finished, failed = batch.ranks.count("finished", 0), batch.ranks.count("failed", 0)
        if finished > batch.bar.n:
            batch.bar.update(finished - batch.bar.n)
            if failed:
                batch.bar.set_postfix(failed=failed)


def _finish(batch: Batch) -> int:
    """Gather every rank's lines on rank 0, write the report, and agree on the exit code."""
    ranks, report = batch.ranks, batch.report
    everything = [rec for lines in ranks.gather(report.lines) for rec in lines]
    if ranks.main:
        path = report.write_merged(everything)
        if batch.bar is not None:
            batch.bar.update(len(everything) - batch.bar.n)
    ranks.barrier()  # the report is written: the part files are no longer needed
    report.remove_part()
    counts = {s: sum(r["status"] == s for r in everything) for s in ("done", "skipped", "failed")}
    if ranks.main:
        batch.say(f"{counts['done']} done, {counts['skipped']} skipped (already done), {counts['failed']} failed; "
                  f"report: {path}")
    return 1 if counts["failed"] else 0


def _on_servers(args, photos, refs, refs_sha, ranks: Ranks, report: Report, make_runner) -> int:
    """One thread and one client per server, pulling photos from one queue; a server that goes away
    hands its photo back to the others."""
    runners = [make_runner(args, address) for address in args.server]
    served = {json.dumps(r.info.models, sort_keys=True) for r in runners}
    if len(served) > 1:
        raise HairclipError("the servers serve different models: " + ", ".join(
            f"{a} {r.info.models}" for a, r in zip(args.server, runners, strict=True)))
    models = {"server": runners[0].info.models}
    batch = Batch(args, photos, refs, refs_sha, ranks, report, models)
    batch.bar = _bar(len(photos))
    try:
        todo = batch.check(photos)
        work: queue.Queue = queue.Queue()
        for item in todo:
            work.put(item)
        alive = [len(runners)]
        lock = threading.Lock()

        def serve(address: str, runner) -> None:
            device = f"{runner.device} at {address}"
            while True:
                try:
                    ph, digest = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    batch.edit(runner, ph, digest, device, SERVER_LOST)
                except HairclipError as e:  # the server went away: the others take this photo
                    work.put((ph, digest))
                    with lock:
                        alive[0] -= 1
                    batch.say(f"{address}: {e.message}; its photos go to the other servers")
                    return

        threads = [threading.Thread(target=serve, args=(a, r), daemon=True) for a, r in zip(args.server, runners,
                                                                                              strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        while not work.empty():  # every server is gone
            ph, digest = work.get_nowait()
            inputs = inputs_record(args, digest, refs_sha, models) if digest else None
            batch.record(ph, "failed", inputs, time.perf_counter(), code="not_running",
                         message="no server is left to edit it")
        return _finish(batch)
    finally:
        batch.bar.close()
        for r in runners:
            r.client.close()


def _bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="photo", file=sys.stderr)
