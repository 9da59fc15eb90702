"""End to end in real Krita (Debian's krita package) under Xvfb: install the plug-in the way a user would,
start `hairclip serve --random-tiny`, open a photo and edit it through the plug-in's scripting entry point
and its dialog. The checks themselves run inside Krita (krita_inside.py) and come back as a JSON report.

Needs krita, xvfb-run, python3-pyqt5 (tools/ci_krita.sh installs them); skipped without krita/xvfb-run.
HAIRCLIP_E2E_ENDPOINT=tcp://... runs it against a server that is already running instead.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from long_hair_server import long_hair_server

HERE = Path(__file__).resolve().parent
KRITA, XVFB = shutil.which("krita"), shutil.which("xvfb-run")
pytestmark = pytest.mark.skipif(KRITA is None or XVFB is None,
                                reason="needs Krita and xvfb-run (install them with tools/ci_krita.sh)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    endpoint = os.environ.get("HAIRCLIP_E2E_ENDPOINT")
    if endpoint:
        yield endpoint
        return
    from hairclip_shared import Client, ServerNotRunning

    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "w") as out:
        cmd = [sys.executable, "-m", "hairclip", "serve", "--random-tiny", "--bind", endpoint]
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"hairclip serve --random-tiny exited with {proc.returncode}:\n"
                            f"{log.read_text()[-3000:]}")
            try:
                with Client(endpoint, timeout=2.0):
                    break
            except ServerNotRunning:
                if time.monotonic() > deadline:
                    pytest.fail(f"hairclip serve did not answer within 180 s:\n{log.read_text()[-3000:]}")
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _photo(path: Path) -> Path:
    """A small portrait-like picture: noise for random networks, but a real photo file to open."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (256, 256), (96, 128, 160))
    d = ImageDraw.Draw(im)
    d.ellipse((64, 40, 192, 200), fill=(224, 180, 150))
    d.chord((56, 24, 200, 150), 180, 360, fill=(60, 40, 30))
    d.ellipse((96, 100, 112, 112), fill=(40, 40, 40))
    d.ellipse((144, 100, 160, 112), fill=(40, 40, 40))
    d.arc((100, 130, 156, 170), 20, 160, fill=(150, 60, 60), width=4)
    im.save(path)
    return path


def _krita_env(home: Path, **extra: str) -> dict[str, str]:
    run = home / "run"
    run.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(home),
           "XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".local" / "share"),
           "XDG_CACHE_HOME": str(home / ".cache"), "XDG_RUNTIME_DIR": str(run)}
    env.update(extra)
    return env


@pytest.fixture
def long_hair(tmp_path):
    """The long-hair portrait and a server that knows its hair (long_hair_server.py)."""
    photo = tmp_path / "long.png"
    with long_hair_server(photo) as (endpoint, recorder):
        yield photo, endpoint, recorder


def test_plugin_in_real_krita(server, long_hair, tmp_path):
    check = subprocess.run(["/usr/bin/python3", "-c", "import PyQt5.QtCore"], capture_output=True)
    if check.returncode != 0:
        pytest.fail("Krita is installed, but its Python lacks PyQt5: install python3-pyqt5 "
                    "(tools/ci_krita.sh does)")
    home = tmp_path / "home"
    env = _krita_env(home)
    pykrita = home / ".local" / "share" / "krita" / "pykrita"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "hairclip", "install-plugin", "krita", "--dest", str(pykrita)],
                       env={**os.environ, **env, "PATH": os.environ["PATH"]}, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (pykrita / "hairclip" / "vendor" / "hairclip_shared" / "editing.py").exists()
    assert "enable_hairclip=true" in (home / ".config" / "kritarc").read_text()

    from hairclip.install_plugin import enable_in_kritarc

    (pykrita / "hcharness").mkdir()
    shutil.copy(HERE / "krita_harness.py", pykrita / "hcharness" / "__init__.py")
    (pykrita / "hcharness.desktop").write_text(
        "[Desktop Entry]\nType=Service\nServiceTypes=Krita/PythonPlugin\nX-KDE-Library=hcharness\n"
        "X-Python-2-Compatible=false\nName=HairCLIP test harness\nComment=runs the e2e checks\n")
    enable_in_kritarc(home / ".config" / "kritarc", "hcharness")

    report = tmp_path / "report.json"
    log = tmp_path / "krita.log"
    long_photo, long_endpoint, recorder = long_hair
    env = _krita_env(home, HC_HARNESS_SCRIPT=str(HERE / "krita_inside.py"), HC_HARNESS_TIMEOUT_MS="540000",
                     HC_E2E_ENDPOINT=server, HC_E2E_PHOTO=str(_photo(tmp_path / "portrait.png")),
                     HC_E2E_OUT=str(report), HC_E2E_ONLY=os.environ.get("HC_E2E_ONLY", ""),
                     HC_E2E_LONG_ENDPOINT=long_endpoint, HC_E2E_LONG_PHOTO=str(long_photo))
    with open(log, "w") as out:
        proc = subprocess.run(["timeout", "600", XVFB, "-a", "-s", "-screen 0 1280x1024x24 -nolisten tcp",
                               KRITA, "--nosplash"], env=env, stdout=out, stderr=subprocess.STDOUT)
    wall = time.monotonic() - t0
    tail = log.read_text(errors="replace")[-4000:]
    assert report.exists(), f"Krita exited with {proc.returncode} and wrote no report:\n{tail}"
    data = json.loads(report.read_text())
    print(f"\nKrita {data['krita']}: {len(data['checks'])} checks, {wall:.1f} s (install, start, checks)")
    for name, secs in data["timings"].items():
        print(f"  {name}: {secs:.3f} s")
    failed = [c for c in data["checks"] if not c["ok"]]
    details = "\n".join(f"{c['name']}: {c['detail']}" for c in failed)
    assert not failed, f"{details}\n--- krita log ---\n{tail}"
    assert proc.returncode == 0, tail
    # The long-hair edits (krita_inside.check_long_hair): the dialog's "crop only" and the script's True reached
    # the server, and the selection mask Krita holds is the server's mask, byte for byte.
    assert [r.whole_hair for r in recorder.requests] == [False, True]
    sent = recorder.results[0].hair_outside
    assert sent is not None and recorder.results[1].hair_outside is None
    assert (report.parent / "old_hair.bin").read_bytes() == sent.tobytes()
