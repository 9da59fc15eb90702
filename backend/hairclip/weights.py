"""The weight store: the official checkpoints, found by name, fetched when missing, never used unverified.

Model loaders call `WeightStore().resolve(name)` and get a path whose sha256 matches the manifest
(`data/weights.json`). Hashing the 2 GB edit set at every start costs ~7 s (300 MiB/s here), so a full hash is
recorded with the file's size and mtime in a sidecar (`.verified.json`) and repeated only when those change:
a file damaged in place with both unchanged is trusted until `verify`, which always re-hashes (README says so).
Here: the manifest, the checks, the sidecar, import, and the messages. The HTTP transfer is weights_download.py
(requests underneath; why not pooch or huggingface_hub is said there), the `hairclip weights` command weights_cli.py.
This module must not import torch: the CLI's client paths start through it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from hairclip import weights_cli
from hairclip.errors import HairclipError
from hairclip.weights_cli import (  # noqa: F401 (cli_edit, cli_server and engine import them from here)
    CHECKPOINT_OPTIONS,
    add_checkpoint_options,
    checkpoint_files,
)
from hairclip.weights_download import CHUNK, Mismatch, UrlFailed, fetch, hash_into

ENV_VAR = "HAIRCLIP_WEIGHTS"
MANIFEST_PATH = Path(__file__).parent / "data" / "weights.json"
CACHE_NAME = ".verified.json"
TIMEOUT_S = 30.0
STATUSES = ("ok", "missing", "corrupt", "unverified")


class WeightsError(HairclipError):
    """A weight file cannot be provided."""


class WeightsMissing(WeightsError):
    """The file is not in the store (and, for the subclass, could not be downloaded)."""


class WeightsDownloadFailed(WeightsMissing):
    """Every URL failed for network reasons; the message lists each URL and why."""


class WeightsCorrupt(WeightsError):
    """A file's bytes do not match the manifest: it is never handed to a loader."""


def default_store_dir() -> Path:
    """$HAIRCLIP_WEIGHTS if set, else the per-user cache dir: weights are re-downloadable, not user data."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("hairclip", appauthor=False)) / "weights"


# ---------------------------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class WeightEntry:
    """One manifest entry, whose unknown keys are rejected so that a typo ("sha265") cannot skip a check."""

    name: str
    purpose: str
    urls: tuple[str, ...]
    needed_for: tuple[str, ...]
    size: int | None = None
    sha256: str | None = None
    pinned: bool = False
    size_hint: str | None = None
    license: str | None = None
    notes: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping) -> WeightEntry:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"manifest entry {d.get('name')!r}: unknown keys {sorted(unknown)}")
        e = cls(**{**d, "urls": tuple(d["urls"]), "needed_for": tuple(d["needed_for"])})
        if not e.name or Path(e.name).name != e.name or e.name.startswith("."):
            raise ValueError(f"manifest entry {e.name!r}: the name must be a plain file name")
        if not e.urls or not all(u.startswith(("http://", "https://")) for u in e.urls):
            raise ValueError(f"manifest entry {e.name!r}: needs at least one http(s) URL")
        if e.sha256 is not None and (len(e.sha256) != 64 or e.sha256.strip("0123456789abcdef")):
            raise ValueError(f"manifest entry {e.name!r}: sha256 must be 64 lowercase hex digits")
        if e.pinned and e.sha256 is None:
            raise ValueError(f"manifest entry {e.name!r}: pinned without a sha256")
        return e


ManifestSource = str | Path | Mapping | Iterable | None


def load_manifest(source: ManifestSource = None) -> dict[str, WeightEntry]:
    """Entries by name, in manifest order, from the packaged manifest, a JSON path, a dict or a list."""
    if source is None or isinstance(source, str | Path):
        source = json.loads(Path(source or MANIFEST_PATH).read_text(encoding="utf-8"))
    items = source["weights"] if isinstance(source, Mapping) else source
    entries = [e if isinstance(e, WeightEntry) else WeightEntry.from_dict(e) for e in items]
    by_name = {e.name: e for e in entries}
    if len(by_name) != len(entries):
        raise ValueError("manifest lists a file name twice")
    return by_name


# ---------------------------------------------------------------------------------------------- hashing


def _sha256_file(path: Path) -> str:
    """The one full-file hash used for store checks (tests count its calls)."""
    h = hashlib.sha256()
    hash_into(h, path)
    return h.hexdigest()


def sha256_of(path: str | Path) -> str:
    """The sha256 of any file, e.g. one named with ``--mapper``: shown in ``hello``, never compared."""
    return _sha256_file(Path(path))


@dataclass(frozen=True)
class Check:
    """One file's status in the store, with the reason shown to the user."""

    name: str
    status: str  # one of STATUSES
    sha256: str | None = None  # of the file on disk, when it was hashed
    detail: str = ""


@dataclass
class ImportReport:
    """What `import_dir` took, skipped as harmless, and rejected for bad bytes."""

    taken: list[tuple[str, Path]] = field(default_factory=list)  # (name, source file)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # harmless: already present, duplicate
    rejected: list[tuple[Path, str]] = field(default_factory=list)  # bad bytes: wrong size or sha256


# ---------------------------------------------------------------------------------------------- store


class WeightStore:
    """A folder of weight files named as in the manifest, plus the verification sidecar."""

    def __init__(self, root: Path | str | None = None, manifest: ManifestSource = None, *,
                 timeout: float = TIMEOUT_S):
        self.root = Path(root).expanduser() if root is not None else default_store_dir()
        self.entries = load_manifest(manifest)
        self.timeout = timeout

    def path(self, name: str) -> Path:
        return self.root / self._entry(name).name

    def status(self, name: str) -> str:
        return self._check(name, full=False).status

    def check(self, name: str, full: bool = False) -> Check:
        """Status with the reason; full=True ignores the sidecar and re-hashes."""
        return self._check(name, full)

    def resolve(self, name: str, download: bool = False, progress: bool = True) -> Path:
        """The verified path of `name`, for model loaders. Raises rather than return a corrupt file."""
        entry, c = self._entry(name), self._check(name, full=False)
        if c.status in ("ok", "unverified"):
            return self.path(name)
        if c.status == "corrupt":
            raise WeightsCorrupt(
                f"{self.path(name)} is corrupt ({c.detail}); it will not be loaded.\n"
                f"Replace it:  {self.command('download', name)}\n"
                f"or fetch it by hand from {entry.urls[0]} and run:  {self.command('import', 'DIR')}")
        if download:
            return self.download(name, progress=progress)
        raise WeightsMissing(self._missing_message(entry))

    def ensure(self, needed_for: str = "edit", progress: bool = True) -> dict[str, Path]:
        """Resolve every file for `needed_for`, downloading what is missing: the backend's first start."""
        return {n: self.resolve(n, download=True, progress=progress)
                for n, e in self.entries.items() if needed_for in e.needed_for}

    def verify(self, names: Iterable[str] | None = None) -> list[Check]:
        """Full re-hash of the given (default: all) files, refreshing the sidecar."""
        return [self._check(n, full=True) for n in (self.entries if names is None else names)]

    # -- checking ---------------------------------------------------------------------------------------

    def _entry(self, name: str) -> WeightEntry:
        try:
            return self.entries[name]
        except KeyError:
            raise KeyError(f"unknown weight file {name!r}; known: {', '.join(self.entries)}") from None

    def _check(self, name: str, full: bool) -> Check:
        entry, p = self._entry(name), self.path(name)
        try:
            st = p.stat()
        except FileNotFoundError:
            return Check(name, "missing")
        if not p.is_file():
            return Check(name, "corrupt", detail="not a regular file")
        if entry.size is not None and st.st_size != entry.size:
            return Check(name, "corrupt", detail=f"{st.st_size} bytes, expected {entry.size}")
        cache = self._load_cache()
        rec = cache["files"].get(name)
        if not full and rec and (rec["size"], rec["mtime_ns"]) == (st.st_size, st.st_mtime_ns):
            digest = rec["sha256"]
        else:
            digest = _sha256_file(p)
            after = p.stat()
            if (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns):  # not rewritten meanwhile
                cache["files"][name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
                self._save_cache(cache)
        return self._judge(entry, digest, cache, source="found in the store")

    def _judge(self, entry: WeightEntry, digest: str, cache: dict, source: str) -> Check:
        name = entry.name
        if entry.sha256 is not None:
            if digest == entry.sha256:
                return Check(name, "ok", digest, "pinned" if entry.pinned else "matches the unpinned sha256")
            return Check(name, "corrupt", digest, f"sha256 {digest}, expected {entry.sha256}")
        trusted = cache["trusted"].get(name)
        if trusted is None:
            trusted = self._trust(cache, name, digest, source)
            self._save_cache(cache)
        if trusted["sha256"] != digest:
            return Check(name, "corrupt", digest,
                         f"changed since first use: sha256 {digest}, recorded {trusted['sha256']}")
        return Check(name, "unverified", digest,
                     f"no published sha256; trusted on first use {trusted['when']} ({trusted['source']})")

    def _trust(self, cache: dict, name: str, digest: str, source: str) -> dict:
        rec = {"sha256": digest, "when": time.strftime("%Y-%m-%d"), "source": source}
        cache["trusted"][name] = rec
        return rec

    def _record(self, entry: WeightEntry, digest: str, source: str) -> None:
        """Remember a freshly placed file's hash so the next start does not re-hash it."""
        st = self.path(entry.name).stat()
        cache = self._load_cache()
        cache["files"][entry.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        if entry.sha256 is None:
            self._trust(cache, entry.name, digest, source)
        self._save_cache(cache)

    def _load_cache(self) -> dict:
        try:
            cache = json.loads((self.root / CACHE_NAME).read_text(encoding="utf-8"))
            if isinstance(cache.get("files"), dict) and isinstance(cache.get("trusted"), dict):
                return cache
        except (OSError, ValueError, AttributeError):
            pass
        return {"files": {}, "trusted": {}}

    def _save_cache(self, cache: dict) -> None:
        # A read-only store still works, it just re-hashes at each start.
        try:
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=CACHE_NAME, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(cache, f, indent=1)
            os.replace(tmp, self.root / CACHE_NAME)
        except OSError:
            pass

    # -- downloading ------------------------------------------------------------------------------------

    def download(self, name: str, progress: bool = True, force: bool = False) -> Path:
        """Fetch `name` into the store (a good copy there is kept unless force) and return its path."""
        entry, target = self._entry(name), self.path(name)
        if not force and self._check(name, full=False).status in ("ok", "unverified"):
            return target
        self.root.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        failures: list[tuple[str, str]] = []
        mismatch = False
        for url in entry.urls:
            try:
                digest = fetch(url, part, name=name, size=entry.size, sha256=entry.sha256,
                               timeout=self.timeout, progress=progress)
            except UrlFailed as e:
                failures.append((url, str(e)))
                mismatch |= isinstance(e, Mismatch)
                continue
            os.replace(part, target)
            self._record(entry, digest, source=url)
            return target
        tried = "\n".join(f"  {u}\n    -> {why}" for u, why in failures)
        hint = (f"Download it by hand from one of these URLs into a folder DIR, then run:\n"
                f"  {self.command('import', 'DIR')}")
        if mismatch:
            doubt = "" if entry.pinned else (
                "\nThis sha256 is not pinned yet (not confirmed by the project): if every source disagrees, "
                "the manifest value may be wrong; please report it.")
            raise WeightsCorrupt(f"{name}: no URL delivered the expected bytes; nothing was saved.\n"
                                 f"{tried}{doubt}\n{hint}")
        raise WeightsDownloadFailed(f"could not download {name}:\n{tried}\n{hint}")

    # -- importing --------------------------------------------------------------------------------------

    def import_dir(self, src: Path | str) -> ImportReport:
        """Copy files with official names found under `src` into the store, each verified before it lands."""
        src = Path(src).expanduser()
        if not src.is_dir():
            raise WeightsError(f"{src} is not a folder")
        report, found = ImportReport(), self._find(src)
        for name, candidates in found.items():
            entry = self.entries[name]
            present = self._check(name, full=False).status == "ok"
            for cand in candidates:
                if present or cand.resolve() == self.path(name).resolve():
                    why = "already in the store and verified" if present else "this is the store's own copy"
                    report.skipped.append((cand, why))
                    continue
                try:
                    why = self._copy_verified(entry, cand)
                except OSError as e:
                    why = f"could not copy: {e}"
                if why is None:
                    report.taken.append((name, cand))
                    present = True
                else:
                    report.rejected.append((cand, why))
        return report

    def _find(self, src: Path) -> dict[str, list[Path]]:
        found: dict[str, list[Path]] = {}
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in filenames:
                if fn in self.entries:
                    found.setdefault(fn, []).append(Path(dirpath) / fn)
        return {n: found[n] for n in self.entries if n in found}

    def _copy_verified(self, entry: WeightEntry, src: Path) -> str | None:
        """Copy `src` beside its target while hashing it, then os.replace it in; returns why it was refused.
        """
        size = src.stat().st_size
        if entry.size is not None and size != entry.size:
            return f"{size} bytes, expected {entry.size}"
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{entry.name}.", suffix=".import")
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
                while chunk := inp.read(CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = h.hexdigest()
            if entry.sha256 is not None and digest != entry.sha256:
                return f"sha256 {digest}, expected {entry.sha256}"
            os.replace(tmp, self.path(entry.name))
        finally:
            Path(tmp).unlink(missing_ok=True)
        self._record(entry, digest, source=f"imported from {src}")
        return None

    # -- messages ---------------------------------------------------------------------------------------

    def command(self, action: str, arg: str) -> str:
        flag = "" if self.root == default_store_dir() else f" --weights-dir {self.root}"
        return f"hairclip weights {action} {arg}{flag}"

    def _missing_message(self, entry: WeightEntry) -> str:
        urls = "\n".join(f"  {u}" for u in entry.urls)
        return (f"{entry.name} is missing from the weight store {self.root}\n"
                f"  ({entry.purpose})\n"
                f"Download it:  {self.command('download', entry.name)}\n"
                f"or fetch it by hand from:\n{urls}\n"
                f"put it in a folder DIR and run:  {self.command('import', 'DIR')}")


def register_cli(subparsers):
    """Add `hairclip weights ...`; its handlers (weights_cli.py) open this module's store."""
    return weights_cli.register_cli(subparsers, WeightStore, ENV_VAR)
