"""The weight store: the official checkpoints, found by name, fetched when missing, never used unverified.

Model loaders call `WeightStore().resolve(name)` and get a path whose sha256 matches the manifest
(`data/weights.json`). Hashing the 2 GB edit set at every start costs ~7 s (300 MiB/s here), so a full hash is
recorded with the file's size and mtime in a sidecar (`.verified.json`) and repeated only when those change:
a file damaged in place with both unchanged is trusted until `verify`, which always re-hashes (README says so).
This module must not import torch: the CLI's client paths start through it.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import math
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from hairclip import __version__
from hairclip.errors import HairclipError

ENV_VAR = "HAIRCLIP_WEIGHTS"
MANIFEST_PATH = Path(__file__).parent / "data" / "weights.json"
CACHE_NAME = ".verified.json"
CHUNK = 1 << 20
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
    """One manifest entry. Unknown keys are rejected, so a typo ("sha265") cannot silently skip checks."""

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


def _hash_into(h, path: Path) -> None:
    buf = memoryview(bytearray(CHUNK))
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(buf[:n])


def _sha256_file(path: Path) -> str:
    """The one full-file hash used for store checks (tests count its calls)."""
    h = hashlib.sha256()
    _hash_into(h, path)
    return h.hexdigest()


def sha256_of(path: str | Path) -> str:
    """The sha256 of any file, e.g. one named with ``--mapper``: shown in ``hello``, never compared."""
    return _sha256_file(Path(path))


def _looks_like_html(chunk: bytes) -> bool:
    return chunk[:512].lstrip().lower().startswith((b"<!doctype html", b"<html"))


class _UrlFailed(Exception):
    """One URL did not deliver the file; the message is the reason shown to the user."""


class _Mismatch(_UrlFailed):
    pass


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # one of STATUSES
    sha256: str | None = None  # of the file on disk, when it was hashed
    detail: str = ""


@dataclass
class ImportReport:
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
                f"Replace it:  {self._cmd('download', name)}\n"
                f"or fetch it by hand from {entry.urls[0]} and run:  {self._cmd('import', 'DIR')}")
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
                digest = self._try_url(entry, url, part, progress)
            except _UrlFailed as e:
                failures.append((url, str(e)))
                mismatch |= isinstance(e, _Mismatch)
                continue
            os.replace(part, target)
            self._record(entry, digest, source=url)
            return target
        tried = "\n".join(f"  {u}\n    -> {why}" for u, why in failures)
        hint = (f"Download it by hand from one of these URLs into a folder DIR, then run:\n"
                f"  {self._cmd('import', 'DIR')}")
        if mismatch:
            doubt = "" if entry.pinned else (
                "\nThis sha256 is not pinned yet (not confirmed by the project): if every source disagrees, "
                "the manifest value may be wrong; please report it.")
            raise WeightsCorrupt(f"{name}: no URL delivered the expected bytes; nothing was saved.\n"
                                 f"{tried}{doubt}\n{hint}")
        raise WeightsDownloadFailed(f"could not download {name}:\n{tried}\n{hint}")

    def _try_url(self, entry: WeightEntry, url: str, part: Path, progress: bool) -> str:
        """Stream `url` into `part` and return its sha256; a bad resumed prefix gets one clean retry."""
        for _ in range(2):
            digest, resumed = self._fetch(entry, url, part, progress)
            problem = self._mismatch(entry, digest, part)
            if problem is None:
                return digest
            part.unlink(missing_ok=True)
            if not resumed:
                break
        raise _Mismatch(f"{problem} (from {url})")

    @staticmethod
    def _mismatch(entry: WeightEntry, digest: str, part: Path) -> str | None:
        if entry.sha256 is not None and digest != entry.sha256:
            return f"checksum mismatch: expected sha256 {entry.sha256}, got {digest}"
        size = part.stat().st_size
        if entry.size is not None and size != entry.size:
            return f"size mismatch: expected {entry.size} bytes, got {size}"
        return None

    def _fetch(self, entry: WeightEntry, url: str, part: Path, progress: bool) -> tuple[str, bool]:
        """Download (or resume) into `part`; returns (sha256 of the whole part, whether it resumed)."""
        offset = part.stat().st_size if part.exists() else 0
        if entry.size is not None and offset > entry.size:
            part.unlink()
            offset = 0
        h = hashlib.sha256()
        if offset and offset == entry.size:  # an earlier run got every byte but stopped before checking
            _hash_into(h, part)
            return h.hexdigest(), True
        headers = {"User-Agent": f"hairclip-studio/{__version__}"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=self.timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:  # the server cannot serve our range: the part is stale
                part.unlink()
                return self._fetch(entry, url, part, progress)
            raise _UrlFailed(f"HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise _UrlFailed(_net_reason(e, self.timeout)) from None
        with resp:
            if resp.headers.get_content_type() == "text/html":
                raise _UrlFailed("served an HTML page, not the file (Google Drive does this for large files, "
                                 "asking to confirm the download in a browser)")
            if resp.status == 206:
                start = _range_start(resp.headers.get("Content-Range"))
                if start != offset:
                    raise _UrlFailed(f"answered a request for bytes {offset}- with Content-Range "
                                     f"{resp.headers.get('Content-Range')!r}")
            elif resp.status == 200:
                offset = 0  # the server ignored Range (or none was sent): start over
            else:
                raise _UrlFailed(f"unexpected HTTP status {resp.status}")
            resumed = offset > 0
            if resumed:
                _hash_into(h, part)
            length = resp.headers.get("Content-Length")
            body = int(length) if length and length.isdigit() else None
            total = entry.size or (offset + body if body is not None else None)
            from tqdm import tqdm

            received = 0
            with open(part, "ab" if resumed else "wb") as f, tqdm(
                    total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=entry.name, file=sys.stderr, disable=not progress) as bar:
                while chunk := _read(resp, self.timeout):
                    if not resumed and received == 0 and _looks_like_html(chunk):
                        raise _UrlFailed("served an HTML page, not the file")
                    f.write(chunk)
                    h.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                f.flush()
                os.fsync(f.fileno())
        if body is not None and received < body:
            raise _UrlFailed(f"connection closed after {offset + received} of {offset + body} bytes "
                             "(the partial file is kept; run again to resume)")
        return h.hexdigest(), resumed

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

    def _cmd(self, action: str, arg: str) -> str:
        flag = "" if self.root == default_store_dir() else f" --weights-dir {self.root}"
        return f"hairclip weights {action} {arg}{flag}"

    def _missing_message(self, entry: WeightEntry) -> str:
        urls = "\n".join(f"  {u}" for u in entry.urls)
        return (f"{entry.name} is missing from the weight store {self.root}\n"
                f"  ({entry.purpose})\n"
                f"Download it:  {self._cmd('download', entry.name)}\n"
                f"or fetch it by hand from:\n{urls}\n"
                f"put it in a folder DIR and run:  {self._cmd('import', 'DIR')}")


def _range_start(content_range: str | None) -> int | None:
    try:  # "bytes 100-199/200"
        unit, rest = content_range.split(" ", 1)
        return int(rest.split("-", 1)[0]) if unit == "bytes" else None
    except (AttributeError, ValueError):
        return None


def _read(resp, timeout: float) -> bytes:
    try:
        return resp.read(CHUNK)
    except (OSError, http.client.HTTPException) as e:
        reason = _net_reason(e, timeout)
        raise _UrlFailed(f"{reason} (the partial file is kept; run again to resume)") from None


def _net_reason(e: BaseException, timeout: float) -> str:
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    if isinstance(reason, TimeoutError):
        return f"timed out after {timeout:g} s"
    return str(reason) or type(reason).__name__


# ---------------------------------------------------------------------------------------------- CLI


CHECKPOINT_OPTIONS = {"mapper": "hairclip.pt", "e4e": "e4e_ffhq_encode.pt", "parsenet": "parsenet.pth"}


def add_checkpoint_options(parser: argparse.ArgumentParser) -> None:
    """``--mapper``, ``--e4e``, ``--parsenet`` for ``edit`` and ``serve``: files loaded as named, not from the store."""
    g = parser.add_argument_group("checkpoint files", "load these instead of the weight store's files; "
                                  "they are read as named (weights only) and never checked against the manifest")
    g.add_argument("--mapper", type=Path, metavar="FILE",
                   help="a mapper in the hairclip.pt layout, e.g. one written by `hairclip train`")
    g.add_argument("--e4e", type=Path, metavar="FILE", help="an encoder in the e4e_ffhq_encode.pt layout")
    g.add_argument("--parsenet", type=Path, metavar="FILE", help="a face parser in the parsenet.pth layout")


def checkpoint_files(args: argparse.Namespace) -> dict[str, Path]:
    """{official name: file} for the checkpoint options given on the command line."""
    return {name: getattr(args, opt) for opt, name in CHECKPOINT_OPTIONS.items() if getattr(args, opt, None)}


def register_cli(subparsers) -> argparse.ArgumentParser:
    """Add `weights {list,download,verify,import}` to argparse subparsers; handlers return exit codes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--weights-dir", metavar="DIR", default=argparse.SUPPRESS,
                        help=f"the weight store (default: ${ENV_VAR}, else the user cache)")
    p = subparsers.add_parser("weights", parents=[common], help="list, download, verify or import weights",
                              description="The model weights HairCLIP Studio needs.")

    def usage(args: argparse.Namespace) -> int:
        p.print_help(sys.stderr)
        return 2

    p.set_defaults(func=usage)
    sub = p.add_subparsers(dest="weights_command", metavar="{list,download,verify,import}")
    q = sub.add_parser("list", parents=[common], help="show each file's status")
    q.set_defaults(func=cmd_list)
    q = sub.add_parser("download", parents=[common], help="download missing files (default: the edit set)")
    q.add_argument("names", nargs="*", metavar="NAME")
    q.add_argument("--all", action="store_true", help="also the files only needed for training")
    q.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_download)
    q = sub.add_parser("verify", parents=[common], help="re-hash files fully and compare with the manifest")
    q.add_argument("names", nargs="*", metavar="NAME")
    q.set_defaults(func=cmd_verify)
    q = sub.add_parser("import", parents=[common], help="copy weight files found under DIR into the store")
    q.add_argument("dir", metavar="DIR")
    q.set_defaults(func=cmd_import)
    return p


def _store(args: argparse.Namespace) -> WeightStore:
    return WeightStore(getattr(args, "weights_dir", None))


def _human(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    k = min(int(math.log10(n)) // 3, 3)
    return f"{n / 1000 ** k:.1f} {('kB', 'MB', 'GB')[k - 1]}"


def _checksum_kind(e: WeightEntry) -> str:
    return "pinned" if e.pinned else "unpinned" if e.sha256 else "first use"


def _unknown(store: WeightStore, names: Iterable[str]) -> int:
    bad = [n for n in names if n not in store.entries]
    if bad:
        print(f"unknown weight file(s): {', '.join(bad)}; known: {', '.join(store.entries)}", file=sys.stderr)
    return 2 if bad else 0


def cmd_list(args: argparse.Namespace) -> int:
    store = _store(args)
    checks = [store.check(n) for n in store.entries]
    rows = [("NAME", "STATUS", "SIZE", "CHECKSUM", "NEEDED FOR", "PURPOSE")]
    for e, c in zip(store.entries.values(), checks, strict=True):
        size = _human(e.size) if e.size is not None else f"~{e.size_hint}" if e.size_hint else "?"
        rows.append((e.name, c.status, size, _checksum_kind(e), ",".join(e.needed_for), e.purpose))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    print(f"weight store: {store.root}")
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)) + "  " + r[5])
    for c in checks:
        if c.status in ("corrupt", "unverified"):
            print(f"{c.name}: {c.status}: {c.detail}")
    if any(not e.pinned and e.sha256 for e in store.entries.values()):
        print("unpinned: the sha256 comes from the reference notes and is not yet confirmed by this project; "
              "files are still checked against it.")
    if any(c.status == "missing" for c in checks):
        print(f"get missing files with:  {store._cmd('download', '[NAME...]')}\n"
              f"                    or:  {store._cmd('import', 'DIR')}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    store = _store(args)
    if rc := _unknown(store, args.names):
        return rc
    names = args.names or [n for n, e in store.entries.items() if args.all or "edit" in e.needed_for]
    failed = 0
    for name in names:
        if store.status(name) in ("ok", "unverified"):
            print(f"{name}: already in the store")
            continue
        try:
            path = store.download(name, progress=not args.quiet)
        except WeightsError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        c = store.check(name)
        print(f"{name}: {c.status} -> {path}" + (f" ({c.detail})" if c.status == "unverified" else ""))
    return 1 if failed else 0


def cmd_verify(args: argparse.Namespace) -> int:
    store = _store(args)
    if rc := _unknown(store, args.names):
        return rc
    checks = store.verify(args.names or None)
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"{c.name.ljust(width)}  {c.status:<10}  {c.detail}".rstrip())
    bad = [c for c in checks if c.status == "corrupt" or (args.names and c.status == "missing")]
    return 1 if bad else 0


def cmd_import(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        report = store.import_dir(args.dir)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, src in report.taken:
        print(f"took     {name}  from {src}")
    for src, why in report.skipped:
        print(f"skipped  {src}: {why}")
    for src, why in report.rejected:
        print(f"REJECTED {src}: {why}", file=sys.stderr)
    if not (report.taken or report.skipped or report.rejected):
        print(f"no weight files under {args.dir} (looking for: {', '.join(store.entries)})", file=sys.stderr)
        return 1
    return 1 if report.rejected else 0
