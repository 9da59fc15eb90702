"""One weight file from one URL into a `.part` file, resumably: requests moves the bytes, we keep the checks.

requests (urllib3 beneath it) does the HTTP: connections, TLS, proxies, redirects (a Hugging Face ``resolve`` URL
redirects to its CDN), timeouts, status codes, and a body cut short (it raises rather than end quietly).
What stays here is what no library kept for us, each piece tested in tests/test_weights.py against a local
HTTP server:
- resuming a `.part` with ``Range``, and starting over when the server ignores it (200), cannot serve it (416),
  answers another range, or the resumed bytes prove wrong (one clean retry);
- refusing an HTML page (Google Drive's "can't scan this file" page), labelled as HTML or not;
- hashing while writing, so a placed file needs no second read;
- reasons a user can act on: "HTTP 404 Not Found", "timed out after 30 s", "cannot resolve ... no network?".

Libraries evaluated (pooch 1.9.0 and huggingface_hub 2.4.0, read from their sources):
- ``pooch.retrieve(url, known_hash)`` checks a known hash, but writes every attempt to a fresh temporary file
  and deletes it on any failure (``core.stream_download``), so an interrupted 1.2 GB e4e download would start
  over. Its ``HTTPDownloader`` is ``requests.get`` plus a write loop whose progress bar counts only the bytes of
  the current response. So we use requests, which does pooch's transfer, directly.
- ``hf_hub_download`` resumes, but into its own cache layout (``.incomplete`` blobs), after a HEAD request that
  needs the Hub's own headers (``X-Repo-Commit``, the linked ETag: a local test server would have to fake the
  Hub's API), and it brings hf-xet and httpx2. Four of our seven files have a Hub mirror, and a ``resolve`` URL
  is plain HTTPS: the same code fetches it, so one transfer serves every URL in the manifest.
Trust on first use, for a file with no known sha256, is the store's business (weights.py), not the transfer's.
This module must not import torch; requests and tqdm are imported when a download starts.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

from hairclip import __version__

CHUNK = 1 << 20


class UrlFailed(Exception):
    """One URL did not deliver the file; the message is the reason shown to the user."""


class Mismatch(UrlFailed):
    """The URL delivered bytes whose sha256 or size is not the manifest's."""


def hash_into(h, path: Path) -> None:
    """Feed the bytes of `path` to the hash object `h`."""
    buf = memoryview(bytearray(CHUNK))
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(buf[:n])


def fetch(url: str, part: Path, *, name: str, size: int | None, sha256: str | None, timeout: float,
          progress: bool) -> str:
    """Download `url` into `part` (resuming what is there) and return the sha256 of the whole, checked against
    `sha256` and `size` where given. A bad resumed prefix is thrown away and fetched afresh once."""
    for _ in range(2):
        digest, resumed = _get(url, part, name, size, timeout, progress)
        got = part.stat().st_size
        if sha256 is not None and digest != sha256:
            problem = f"checksum mismatch: expected sha256 {sha256}, got {digest}"
        elif size is not None and got != size:
            problem = f"size mismatch: expected {size} bytes, got {got}"
        else:
            return digest
        part.unlink(missing_ok=True)
        if not resumed:
            break
    raise Mismatch(f"{problem} (from {url})")


def _get(url: str, part: Path, name: str, size: int | None, timeout: float, progress: bool) -> tuple[str, bool]:
    """Download (or resume) into `part`; returns (sha256 of the whole part, whether it resumed)."""
    import requests
    import urllib3
    from tqdm import tqdm

    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    h = hashlib.sha256()
    if offset and offset == size:  # an earlier run got every byte but stopped before checking
        hash_into(h, part)
        return h.hexdigest(), True
    # identity: a compressed body would not match Content-Length, nor could a Range of it be appended.
    headers = {"User-Agent": f"hairclip-studio/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = requests.get(url, headers=headers, stream=True, timeout=timeout)
    except requests.RequestException as e:
        raise UrlFailed(_reason(e, url, timeout)) from None
    with resp:
        if resp.status_code == 416 and offset:  # the server cannot serve our range: the part is stale
            part.unlink()
            return _get(url, part, name, size, timeout, progress)
        if resp.status_code >= 400:
            raise UrlFailed(f"HTTP {resp.status_code} {resp.reason}")
        if resp.headers.get("Content-Type", "").split(";")[0].strip().lower() == "text/html":
            raise UrlFailed("served an HTML page, not the file (Google Drive does this for large files, "
                            "asking to confirm the download in a browser)")
        if resp.status_code == 206:
            if _range_start(resp.headers.get("Content-Range")) != offset:
                raise UrlFailed(f"answered a request for bytes {offset}- with Content-Range "
                                f"{resp.headers.get('Content-Range')!r}")
        elif resp.status_code == 200:
            offset = 0  # the server ignored Range (or none was sent): start over
        else:
            raise UrlFailed(f"unexpected HTTP status {resp.status_code}")
        resumed = offset > 0
        if resumed:
            hash_into(h, part)
        length = resp.headers.get("Content-Length", "")
        total = size or (offset + int(length) if length.isdigit() else None)
        received = 0
        with open(part, "ab" if resumed else "wb") as f, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, file=sys.stderr, disable=not progress) as bar:
            try:  # read1, not iter_content: the bytes before a dropped connection reach the file, to resume from
                while chunk := resp.raw.read1(CHUNK):
                    if not resumed and received == 0 and _looks_like_html(chunk):
                        raise UrlFailed("served an HTML page, not the file")
                    f.write(chunk)
                    h.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (requests.RequestException, urllib3.exceptions.HTTPError) as e:
                of = f" of {total}" if total else ""
                raise UrlFailed(f"stopped after {offset + received}{of} bytes: {_reason(e, url, timeout)} "
                                "(the partial file is kept; run again to resume)") from None
            f.flush()
            os.fsync(f.fileno())
    return h.hexdigest(), resumed


def _looks_like_html(chunk: bytes) -> bool:
    return chunk[:512].lstrip().lower().startswith((b"<!doctype html", b"<html"))


def _range_start(content_range: str | None) -> int | None:
    try:  # "bytes 100-199/200"
        unit, rest = content_range.split(" ", 1)
        return int(rest.split("-", 1)[0]) if unit == "bytes" else None
    except (AttributeError, ValueError):
        return None


def _reason(e: BaseException, url: str, timeout: float) -> str:
    """A requests error in words, from its innermost cause (requests wraps urllib3, which wraps the socket's)."""
    import requests
    from urllib3.exceptions import ProtocolError
    from urllib3.exceptions import TimeoutError as Urllib3Timeout

    chain: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and cur not in chain:
        chain.append(cur)
        nxt = getattr(cur, "reason", None)
        if not isinstance(nxt, BaseException):
            nxt = cur.args[0] if cur.args and isinstance(cur.args[0], BaseException) else None
        cur = nxt or cur.__cause__ or cur.__context__
    for c in chain:  # the socket's own error first: urllib3's NewConnectionError is also a timeout class
        if isinstance(c, socket.gaierror):
            return f"cannot resolve {urlsplit(url).hostname} ({c.strerror}): no network, or no DNS?"
        if isinstance(c, OSError) and not isinstance(c, TimeoutError) and c.strerror:
            return f"{c.strerror} ({urlsplit(url).netloc})"
    if any(isinstance(c, TimeoutError | Urllib3Timeout | requests.Timeout) for c in chain):
        return f"timed out after {timeout:g} s"
    if any(isinstance(c, ProtocolError | requests.exceptions.ChunkedEncodingError) for c in chain):
        return "the connection closed"
    return str(chain[-1]) or type(chain[-1]).__name__
