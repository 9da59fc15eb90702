"""The batch's records: which photos go where, what an output depends on (its *inputs*), and the JSON-lines
report that makes a batch resumable.

A photo is skipped when the last record of its output says done (or skipped), its inputs are equal and every
file it wrote is still there with the same bytes. Each rank appends its lines, one ``write`` and an ``fsync``
per photo, to its own part file; rank 0 merges them into ``OUT/hairclip-report.jsonl`` at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from hairclip import __version__
from hairclip.errors import HairclipError

REPORT = "hairclip-report.jsonl"
PARTS = ".hairclip-report.parts"


@dataclass(frozen=True)
class Photo:
    """One photo of the batch and the file its edit is written to."""

    path: Path
    output: Path

    @property
    def key(self) -> str:
        return self.output.name


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def plan(inputs: list[Path], out: Path) -> list[Photo]:
    """Every photo and its output, sorted by path: the order every rank agrees on."""
    photos = [Photo(p, out / f"{p.stem}_hairclip{p.suffix}") for p in sorted(inputs, key=str)]
    seen: dict[str, Path] = {}
    for ph in photos:
        if ph.key in seen:
            raise HairclipError(f"{seen[ph.key]} and {ph.path} would both be written to {ph.output}; "
                                "edit them in separate batches")
        seen[ph.key] = ph.path
    return photos


def model_identity(args: argparse.Namespace) -> dict[str, str | None]:
    """Which networks an in-process edit uses: the sha256 of each weight file (the store keeps them, so this
    costs a stat per file), or the random tiny networks' seed."""
    if args.random_tiny:
        return {"random_tiny": "seed 0"}
    from hairclip.pipeline.faces import DETECTOR_FILE, LANDMARK_FILE
    from hairclip.pipeline.models import EDIT_WEIGHTS
    from hairclip.weights import WeightStore

    store = WeightStore(args.weights_dir) if args.weights_dir else WeightStore()
    return {n: store.check(n).sha256 for n in (*EDIT_WEIGHTS, DETECTOR_FILE, LANDMARK_FILE)}


def inputs_record(args: argparse.Namespace, photo_sha: str, refs_sha: dict[str, str | None],
                  models: dict) -> dict:
    """Everything the output's bytes depend on, in the form it is stored in the report.

    The keys "color" and "color_ref_sha256" keep the spelling of the reports already written, so that a batch
    run before the code said "colour" still resumes (a changed key would redo every photo).
    """
    rec = {"photo_sha256": photo_sha, "hairstyle": args.hairstyle, "color": args.colour, "rgb": args.rgb,
           "hairstyle_ref_sha256": refs_sha["hairstyle"], "color_ref_sha256": refs_sha["colour"],
           "strength": args.strength, "faces": args.faces, "selection": args.selection, "aligned": args.aligned,
           "layer": bool(args.layer), "save_aligned": bool(args.save_aligned), "models": models,
           "hairclip": __version__}
    if getattr(args, "whole_hair", None) is not None:  # --whole-hair/--crop-only; absent: the default
        rec["whole_hair"] = args.whole_hair
    return json.loads(json.dumps(rec))  # tuples become lists, as they come back from the file


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------- report


class Report:
    """The last records of earlier runs, and this run's lines (appended to this rank's part file)."""

    def __init__(self, out: Path, run: str, rank: int):
        self.out, self.run = out, run
        self.parts = out / PARTS
        self.part = self.parts / f"{run}-rank{rank:05d}.jsonl"
        self.earlier_parts = sorted(self.parts.glob("*.jsonl")) if self.parts.is_dir() else []
        self.previous: dict[str, dict] = {}
        for f in [out / REPORT, *self.earlier_parts]:  # oldest first: the last record of a photo wins
            for rec in _read_lines(f):
                if isinstance(rec.get("output"), str):
                    self.previous[rec["output"]] = rec
        self.lines: list[dict] = []
        self._lock = threading.Lock()

    def add(self, rec: dict) -> None:
        """One line, one write: a crash loses at most the photo being written, never a half line."""
        data = (json.dumps(rec, sort_keys=True) + "\n").encode()
        with self._lock:
            self.parts.mkdir(exist_ok=True)
            fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            self.lines.append(rec)

    def relative(self, path: Path) -> str:
        return os.path.relpath(path, self.out)

    def current(self, photo: Photo, inputs: dict) -> dict | None:
        """The earlier record that makes this photo's edit unnecessary, if there is one."""
        rec = self.previous.get(photo.key)
        if not rec or rec.get("status") not in ("done", "skipped") or rec.get("inputs") != inputs:
            return None
        outputs = rec.get("outputs") or {}
        if self.relative(photo.output) not in outputs:
            return None
        for name, digest in outputs.items():
            f = self.out / name
            if not f.is_file() or sha256_file(f) != digest:
                return None
        return rec

    def write_merged(self, lines: list[dict]) -> Path:
        """The run's report, atomically; then the parts it replaces (this run's and earlier ones) go."""
        path = self.out / REPORT
        tmp = path.with_name(f".{REPORT}.{self.run}.tmp")
        with open(tmp, "w") as f:
            for rec in sorted(lines, key=lambda r: r["photo"]):
                f.write(json.dumps(rec, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        for p in self.earlier_parts:
            p.unlink(missing_ok=True)
        return path

    def remove_part(self) -> None:
        self.part.unlink(missing_ok=True)
        try:
            self.parts.rmdir()
        except OSError:  # other ranks' parts are still there, or it never existed
            pass


def _read_lines(path: Path) -> list[dict]:
    """Records of a report or part file; a line cut short by a crash is ignored."""
    try:
        text = path.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out
