"""The weight store against a local HTTP server: downloads, resume, checks, import and the CLI."""

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hairclip import weights
from hairclip.weights import WeightsCorrupt, WeightsDownloadFailed, WeightsMissing, WeightStore

A = bytes(range(256)) * 800  # 204,800 bytes
B = os.urandom(3000)
C = b"trust me" * 100


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


class Handler(BaseHTTPRequestHandler):
    """Serves `files`; honours Range unless told not to; can serve HTML or cut a body short."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        s = self.server
        rng = self.headers.get("Range")
        rec = {"path": self.path, "range": rng, "sent": 0}
        s.requests.append(rec)
        if self.path in s.redirects:  # as a Hugging Face resolve URL sends the client on to its CDN
            self.send_response(302)
            self.send_header("Location", s.redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path in s.html:
            page = b"<!DOCTYPE html><html><body>Google Drive can't scan this file for viruses.</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", s.html[self.path])
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        data = s.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng and not s.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if s.cut_after is not None:
            body = body[: s.cut_after]  # then the connection closes: an interrupted transfer
        if s.stall_after is not None:  # send some, then nothing while the connection stays open
            rec["sent"] = s.stall_after
            self.wfile.write(body[: s.stall_after])
            self.wfile.flush()
            time.sleep(1.0)
            return
        rec["sent"] = len(body)  # before writing: the client may finish before this thread runs again
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.files, srv.html, srv.requests = {"/a.bin": A, "/b.bin": B, "/c.bin": C}, {}, []
    srv.ignore_range, srv.cut_after, srv.stall_after, srv.redirects = False, None, None, {}
    srv.url = lambda path: f"http://127.0.0.1:{srv.server_address[1]}{path}"
    t = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def entry(name, urls, data=None, size=True, **kw):
    e = {"name": name, "purpose": f"test file {name}", "urls": urls, "needed_for": ["edit"], **kw}
    if data is not None:
        e["sha256"] = sha(data)
        if size:
            e["size"] = len(data)
    return e


def manifest(server, **urls):
    a = urls.get("a", [server.url("/a.bin")])
    b = urls.get("b", [server.url("/b.bin")])
    c = urls.get("c", [server.url("/c.bin")])
    return {"weights": [entry("a.bin", a, A), entry("b.bin", b, B, size=False), entry("c.bin", c)]}


@pytest.fixture
def store(tmp_path, server):
    return WeightStore(tmp_path / "store", manifest(server))


def files_in(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()}


# ---------------------------------------------------------------------------------------------- download


def test_download_verifies_and_places_atomically(store, monkeypatch, capsys):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((Path(src).name, Path(dst).name, Path(dst).exists(), Path(src).read_bytes() == A))
        real_replace(src, dst)

    monkeypatch.setattr(weights.os, "replace", spy)
    path = store.download("a.bin")
    assert path == store.root / "a.bin" and path.read_bytes() == A
    assert ("a.bin.part", "a.bin", False, True) in seen  # the full file appears in one step, never half
    assert store.status("a.bin") == "ok"
    assert files_in(store.root) == {"a.bin", weights.CACHE_NAME}
    err = capsys.readouterr().err
    assert "a.bin" in err  # the progress bar goes to stderr


def test_resume_requests_only_the_missing_bytes(store, server):
    store.root.mkdir()
    (store.root / "a.bin.part").write_bytes(A[:100_000])
    store.download("a.bin", progress=False)
    assert (store.root / "a.bin").read_bytes() == A
    assert [(r["range"], r["sent"]) for r in server.requests] == [("bytes=100000-", len(A) - 100_000)]
    assert not (store.root / "a.bin.part").exists()


def test_interrupted_download_keeps_part_and_resumes(store, server):
    server.cut_after = 50_000
    with pytest.raises(WeightsDownloadFailed, match="50000 of 204800 bytes"):
        store.download("a.bin", progress=False)
    assert (store.root / "a.bin.part").stat().st_size == 50_000 and not (store.root / "a.bin").exists()
    server.cut_after = None
    store.download("a.bin", progress=False)
    assert (store.root / "a.bin").read_bytes() == A
    assert server.requests[-1]["range"] == "bytes=50000-"


def test_resume_follows_a_redirect_with_its_range(store, server):
    server.redirects["/resolve/a.bin"] = "/a.bin"
    st = WeightStore(store.root, manifest(server, a=[server.url("/resolve/a.bin")]))
    st.root.mkdir()
    (st.root / "a.bin.part").write_bytes(A[:100_000])
    st.download("a.bin", progress=False)
    assert (st.root / "a.bin").read_bytes() == A
    assert [(r["path"], r["range"]) for r in server.requests] == [("/resolve/a.bin", "bytes=100000-"),
                                                                 ("/a.bin", "bytes=100000-")]
    assert server.requests[-1]["sent"] == len(A) - 100_000


def test_server_ignoring_range_restarts_cleanly(store, server):
    server.ignore_range = True
    store.root.mkdir()
    (store.root / "a.bin.part").write_bytes(b"junk that must not survive" * 10)
    store.download("a.bin", progress=False)
    assert (store.root / "a.bin").read_bytes() == A
    assert len(server.requests) == 1 and server.requests[0]["range"] is not None
    assert server.requests[0]["sent"] == len(A)


def test_bad_partial_prefix_is_discarded_and_fetched_afresh(store, server):
    store.root.mkdir()
    (store.root / "b.bin.part").write_bytes(b"\0" * 1000)  # wrong bytes; b.bin has no size to catch it early
    store.download("b.bin", progress=False)
    assert (store.root / "b.bin").read_bytes() == B
    assert [r["range"] for r in server.requests] == ["bytes=1000-", None]


def test_part_longer_than_the_file_is_restarted(store, server):
    store.root.mkdir()
    (store.root / "b.bin.part").write_bytes(B + b"tail")  # no size in the manifest: the server says 416
    store.download("b.bin", progress=False)
    assert (store.root / "b.bin").read_bytes() == B
    assert [r["range"] for r in server.requests] == [f"bytes={len(B) + 4}-", None]


def test_ensure_fetches_only_what_editing_needs(tmp_path, server):
    m = {"weights": [entry("a.bin", [server.url("/a.bin")], A),
                     {**entry("c.bin", [server.url("/c.bin")]), "needed_for": ["train"]}]}
    st = WeightStore(tmp_path / "store", m)
    assert st.ensure("edit", progress=False) == {"a.bin": st.root / "a.bin"}
    assert st.status("a.bin") == "ok" and st.status("c.bin") == "missing"


def test_checksum_mismatch_saves_nothing(tmp_path, server):
    m = {"weights": [entry("a.bin", [server.url("/b.bin")], A, size=False)]}
    st = WeightStore(tmp_path / "store", m)
    with pytest.raises(WeightsCorrupt) as e:
        st.download("a.bin", progress=False)
    msg = str(e.value)
    assert sha(A) in msg and sha(B) in msg and server.url("/b.bin") in msg and "weights import DIR" in msg
    assert "not pinned" in msg  # an unpinned checksum may itself be wrong; the message says so
    assert files_in(st.root) == set()


def test_all_urls_failing_names_file_urls_reasons_and_import(tmp_path, server, closed_port):
    urls = [server.url("/nothing.bin"), f"http://127.0.0.1:{closed_port}/a.bin"]
    st = WeightStore(tmp_path / "store", {"weights": [entry("a.bin", urls, A)]})
    with pytest.raises(WeightsDownloadFailed) as e:
        st.resolve("a.bin", download=True, progress=False)
    msg = str(e.value)
    assert "a.bin" in msg and all(u in msg for u in urls)
    assert "HTTP 404" in msg and "refused" in msg.lower()
    assert f"hairclip weights import DIR --weights-dir {st.root}" in msg
    assert isinstance(e.value, WeightsMissing)  # loaders can catch one error for "not available"
    assert not (st.root / "a.bin").exists()


def test_falls_back_to_the_second_url(store, server):
    st = WeightStore(store.root, manifest(server, a=[server.url("/gone.bin"), server.url("/a.bin")]))
    assert st.download("a.bin", progress=False).read_bytes() == A
    assert [r["path"] for r in server.requests] == ["/gone.bin", "/a.bin"]


@pytest.mark.parametrize("ctype", ["text/html; charset=utf-8", "application/octet-stream"])
def test_html_confirm_page_is_a_failed_url_not_weights(tmp_path, server, ctype):
    server.html["/drive"] = ctype  # labelled or not, an HTML page is never saved as weights
    st = WeightStore(tmp_path / "store", {"weights": [entry("c.bin", [server.url("/drive")])]})
    with pytest.raises(WeightsDownloadFailed, match="HTML page"):
        st.download("c.bin", progress=False)
    assert not (st.root / "c.bin").exists()


def test_socket_timeout_is_a_reason_not_a_hang(tmp_path):
    with socket.socket() as lsn:  # accepts connections (backlog) but never answers
        lsn.bind(("127.0.0.1", 0))
        lsn.listen()
        url = f"http://127.0.0.1:{lsn.getsockname()[1]}/a.bin"
        st = WeightStore(tmp_path / "store", {"weights": [entry("a.bin", [url], A)]}, timeout=0.3)
        with pytest.raises(WeightsDownloadFailed, match="timed out after 0.3 s"):
            st.download("a.bin", progress=False)


def test_a_stall_mid_file_times_out_and_keeps_the_part(tmp_path, server):
    server.stall_after = 30_000
    st = WeightStore(tmp_path / "store", manifest(server), timeout=0.3)
    with pytest.raises(WeightsDownloadFailed, match="stopped after 30000 of 204800 bytes: timed out after 0.3 s"):
        st.download("a.bin", progress=False)
    assert (st.root / "a.bin.part").stat().st_size == 30_000 and not (st.root / "a.bin").exists()


def test_no_network_is_named_as_such(tmp_path, monkeypatch):
    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)  # what a machine without a network answers
    url = "https://huggingface.co/public-data/HairCLIP/resolve/main/a.bin"
    st = WeightStore(tmp_path / "store", {"weights": [entry("a.bin", [url], A)]})
    with pytest.raises(WeightsDownloadFailed) as e:
        st.download("a.bin", progress=False)
    msg = str(e.value)
    assert "cannot resolve huggingface.co" in msg and "no network" in msg and url in msg
    assert "weights import DIR" in msg and not (st.root / "a.bin").exists()


# ---------------------------------------------------------------------------------------------- resolve


def test_missing_without_download_tells_how_to_get_it(store):
    with pytest.raises(WeightsMissing) as e:
        store.resolve("a.bin")
    msg = str(e.value)
    assert "a.bin" in msg and store.entries["a.bin"].urls[0] in msg
    assert "hairclip weights download a.bin" in msg and "hairclip weights import DIR" in msg


def test_corrupt_file_in_store_is_never_returned(store):
    store.root.mkdir()
    bad = bytearray(A)
    bad[1234] ^= 1
    (store.root / "a.bin").write_bytes(bad)
    assert store.status("a.bin") == "corrupt"
    for download in (False, True):
        with pytest.raises(WeightsCorrupt, match="will not be loaded"):
            store.resolve("a.bin", download=download)
    (store.root / "a.bin").write_bytes(A[:-1])
    assert store.check("a.bin").detail == f"{len(A) - 1} bytes, expected {len(A)}"


def test_explicit_download_replaces_a_corrupt_file(store):
    store.root.mkdir()
    (store.root / "a.bin").write_bytes(bytes(len(A)))
    store.download("a.bin", progress=False)
    assert store.resolve("a.bin").read_bytes() == A


def test_sidecar_avoids_rehash_but_notices_changes(store, monkeypatch):
    calls = []
    real = weights._sha256_file
    monkeypatch.setattr(weights, "_sha256_file", lambda p: calls.append(p.name) or real(p))
    store.root.mkdir()
    p = store.root / "b.bin"
    p.write_bytes(B)
    assert store.status("b.bin") == "ok" and calls == ["b.bin"]
    assert store.status("b.bin") == "ok"
    assert WeightStore(store.root, store.entries.values()).resolve("b.bin") == p
    assert calls == ["b.bin"]  # a fresh store (next backend start) trusts the sidecar

    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert store.status("b.bin") == "ok" and len(calls) == 2  # mtime changed: hashed again

    p.write_bytes(B[:-1])
    assert store.status("b.bin") == "corrupt" and len(calls) == 3  # size changed
    p.write_bytes(B)
    assert [c.status for c in store.verify(["b.bin"])] == ["ok"]
    assert [c.status for c in store.verify(["b.bin"])] == ["ok"] and len(calls) == 5  # verify always hashes


def test_downloaded_and_imported_files_need_no_rehash(store, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(weights, "_sha256_file", lambda p: calls.append(p) or "x")
    store.download("a.bin", progress=False)
    src = tmp_path / "in"
    src.mkdir()
    (src / "b.bin").write_bytes(B)
    store.import_dir(src)
    assert store.status("a.bin") == store.status("b.bin") == "ok" and calls == []


def test_no_checksum_is_trusted_on_first_use(store, server):
    store.download("c.bin", progress=False)
    c = store.check("c.bin")
    assert c.status == "unverified" and "first use" in c.detail and server.url("/c.bin") in c.detail
    assert store.resolve("c.bin").read_bytes() == C
    (store.root / "c.bin").write_bytes(b"swapped!" * 100)
    assert store.status("c.bin") == "corrupt" and "changed since first use" in store.check("c.bin").detail


# ---------------------------------------------------------------------------------------------- import


def test_import_takes_good_files_and_rejects_corrupt(store, tmp_path):
    src = tmp_path / "downloads"
    (src / "pretrained_models").mkdir(parents=True)
    (src / "pretrained_models" / "a.bin").write_bytes(A)
    (src / "b.bin").write_bytes(B[::-1])
    (src / "unrelated.txt").write_text("ignored")
    rep = store.import_dir(src)
    assert rep.taken == [("a.bin", src / "pretrained_models" / "a.bin")]
    bad = f"sha256 {sha(B[::-1])}, expected {sha(B)}"
    assert [(p.name, why) for p, why in rep.rejected] == [("b.bin", bad)]
    assert store.status("a.bin") == "ok" and store.status("b.bin") == "missing"
    assert files_in(store.root) == {"a.bin", weights.CACHE_NAME}  # no temp file left behind
    again = store.import_dir(src)
    assert not again.taken and "already in the store" in again.skipped[0][1]


# ---------------------------------------------------------------------------------------------- manifest


def test_packaged_manifest_is_complete_and_honest():
    m = weights.load_manifest()
    assert list(m) == ["hairclip.pt", "e4e_ffhq_encode.pt", "parsenet.pth", "s3fd-619a316812.pth",
                       "2DFAN4-11f355bf06.pth.tar", "stylegan2-ffhq-config-f.pt", "model_ir_se50.pth"]
    assert all(e.sha256 and not e.pinned for e in m.values())  # nothing was verified from this machine
    assert m["e4e_ffhq_encode.pt"].size == 1_201_649_680 and m["parsenet.pth"].size == 7_813_380
    assert m["hairclip.pt"].urls == (
        "https://huggingface.co/public-data/HairCLIP/resolve/main/hairclip.pt",
        "https://drive.google.com/uc?export=download&id=1hqZT6ZMldhX3M_x378Sm4Z2HMYr-UwQ4")
    assert {n for n, e in m.items() if "train" in e.needed_for} == {"stylegan2-ffhq-config-f.pt",
                                                                    "model_ir_se50.pth"}


def test_manifest_typos_are_rejected():
    with pytest.raises(ValueError, match="unknown keys"):
        weights.load_manifest({"weights": [{**entry("a.bin", ["http://x/a"]), "sha265": "0" * 64}]})
    with pytest.raises(ValueError, match="sha256"):
        weights.load_manifest({"weights": [entry("a.bin", ["http://x/a"], sha256="ABC")]})


def test_store_dir_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv(weights.ENV_VAR, str(tmp_path / "w"))
    assert weights.default_store_dir() == tmp_path / "w" == WeightStore().root
    monkeypatch.delenv(weights.ENV_VAR)
    d = weights.default_store_dir()
    assert d.name == "weights" and "hairclip" in d.parts


def test_module_does_not_import_torch():
    code = "import sys, hairclip.weights; sys.exit('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(weights.__file__).parents[1])}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


def test_requests_is_imported_only_when_a_download_starts():
    code = "import sys, hairclip.cli; hairclip.cli.build_parser(); sys.exit('requests' in sys.modules)"
    root = Path(weights.__file__).parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(root / d) for d in ("backend", "shared"))}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(tmp_path, server, monkeypatch):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest(server, a=[server.url("/a.bin")], b=[server.url("/missing")])))
    monkeypatch.setattr(weights, "MANIFEST_PATH", path)
    monkeypatch.setenv(weights.ENV_VAR, str(tmp_path / "env-store"))
    parser = argparse.ArgumentParser(prog="hairclip")
    weights.register_cli(parser.add_subparsers(dest="command"))

    def run(*argv):
        args = parser.parse_args(argv)
        return args.func(args)

    return run


def test_cli_list_shows_names_and_statuses(cli, capsys, tmp_path):
    assert cli("weights", "list") == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "env-store") in out
    assert all(n in out for n in ("a.bin", "b.bin", "c.bin")) and "missing" in out and "first use" in out
    assert cli("weights", "download", "a.bin", "c.bin", "-q") == 0
    capsys.readouterr()
    assert cli("weights", "list") == 0
    rows = {ln.split()[0]: ln.split()[1] for ln in capsys.readouterr().out.splitlines()[2:5]}
    assert rows == {"a.bin": "ok", "b.bin": "missing", "c.bin": "unverified"}


def test_cli_exit_codes(cli, capsys, tmp_path, server):
    store = tmp_path / "env-store"
    assert cli("weights") == 2
    assert cli("weights", "download", "nope.bin") == 2
    assert cli("weights", "download", "b.bin", "-q") == 1
    assert server.url("/missing") in capsys.readouterr().err
    assert cli("weights", "download", "-q") == 1  # the edit set includes the unavailable b.bin
    assert (store / "a.bin").read_bytes() == A
    assert cli("weights", "verify") == 0
    (store / "a.bin").write_bytes(bytes(len(A)))
    assert cli("weights", "verify") == 1
    assert "corrupt" in capsys.readouterr().out
    src = tmp_path / "src"
    src.mkdir()
    (src / "b.bin").write_bytes(B)
    assert cli("weights", "import", str(src)) == 0 and (store / "b.bin").read_bytes() == B
    (src / "a.bin").write_bytes(A[::-1])
    assert cli("weights", "import", str(src)) == 1
    assert cli("weights", "import", str(tmp_path / "nowhere")) == 2


def test_cli_weights_dir_flag_beats_env(cli, tmp_path):
    assert cli("weights", "download", "a.bin", "-q", "--weights-dir", str(tmp_path / "flag")) == 0
    assert cli("weights", "--weights-dir", str(tmp_path / "flag2"), "download", "a.bin", "-q") == 0
    assert (tmp_path / "flag" / "a.bin").exists() and (tmp_path / "flag2" / "a.bin").exists()
    assert not (tmp_path / "env-store").exists()


def test_serve_trusts_an_unchanged_record_until_verify_finds_the_in_place_corruption(tmp_path, monkeypatch,
                                                                                     capsys):
    """What the README promises: `serve` re-hashes only files whose size or mtime changed; a file damaged in
    place with both restored is caught by `hairclip weights verify`, and from then on `serve` refuses it."""
    from hairclip.cli import main

    store = WeightStore(tmp_path)
    files = {}
    for name, entry in store.entries.items():
        if "edit" not in entry.needed_for:
            continue
        p = tmp_path / name
        with open(p, "wb") as f:  # junk of the right size (sparse): the bytes changed, the size did not
            f.truncate(entry.size or 4096)
        st = p.stat()
        files[name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": entry.sha256}
    # The record a full hash wrote when the files were good: same size and mtime, the manifest's sha256.
    (tmp_path / weights.CACHE_NAME).write_text(json.dumps({"files": files, "trusted": {}}))
    hashed = []
    real = weights._sha256_file
    monkeypatch.setattr(weights, "_sha256_file", lambda p: hashed.append(p.name) or real(p))
    monkeypatch.setenv("HAIRCLIP_WEIGHTS", str(tmp_path))

    assert main(["serve", "--no-download", "--device", "cpu"]) == 1  # the junk fails to load...
    err = capsys.readouterr().err
    assert "the engine did not start" in err and "missing" not in err and "corrupt" not in err
    assert hashed == []  # ...because serve trusted the record and loaded it, as the README says

    assert main(["weights", "verify", "parsenet.pth"]) == 1
    assert "parsenet.pth  corrupt" in capsys.readouterr().out and hashed == ["parsenet.pth"]

    assert main(["serve", "--no-download", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "parsenet.pth is corrupt" in err and "it will not be loaded" in err
