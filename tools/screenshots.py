"""Regenerate the README's pictures (tools/screenshots.sh): Krita's dialog and layer stack and GIMP's dialog
under Xvfb, and a before/after pair, all on the demo networks (`hairclip serve --random-tiny`: noise).

Usage: python tools/screenshots.py [OUT_DIR]   (default docs/img; needs krita, xvfb-run, python3-pyqt5)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
MAX_W = 1200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shrink(path: Path) -> None:
    """PNG, at most MAX_W px wide, as the README wants them."""
    im = Image.open(path).convert("RGB")
    if im.width > MAX_W:
        im = im.resize((MAX_W, round(im.height * MAX_W / im.width)), Image.LANCZOS)
    im.save(path, optimize=True)


def serve(endpoint: str, log: Path) -> subprocess.Popen:
    from hairclip_shared import Client, ServerNotRunning

    proc = subprocess.Popen([sys.executable, "-m", "hairclip", "serve", "--random-tiny", "--device", "cpu",
                             "--bind", endpoint], stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"hairclip serve --random-tiny did not start:\n{log.read_text()[-2000:]}")
        try:
            with Client(endpoint, timeout=2.0):
                return proc
        except ServerNotRunning:
            pass


def krita(endpoint: str, photo: Path, out: Path, tmp: Path) -> None:
    from hairclip.install_plugin import enable_in_kritarc

    home = tmp / "home"
    run = home / "run"
    run.mkdir(mode=0o700, parents=True)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(home),
           "XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".local" / "share"),
           "XDG_CACHE_HOME": str(home / ".cache"), "XDG_RUNTIME_DIR": str(run)}
    pykrita = home / ".local" / "share" / "krita" / "pykrita"
    subprocess.run([sys.executable, "-m", "hairclip", "install-plugin", "krita", "--dest", str(pykrita)],
                   env={**os.environ, **env, "PATH": os.environ["PATH"]}, check=True, capture_output=True)
    (pykrita / "hcharness").mkdir()
    shutil.copy(ROOT / "tests" / "e2e" / "krita_harness.py", pykrita / "hcharness" / "__init__.py")
    (pykrita / "hcharness.desktop").write_text(
        "[Desktop Entry]\nType=Service\nServiceTypes=Krita/PythonPlugin\nX-KDE-Library=hcharness\n"
        "X-Python-2-Compatible=false\nName=HairCLIP screenshots\nComment=takes the README's pictures\n")
    enable_in_kritarc(home / ".config" / "kritarc", "hcharness")
    env.update(HC_HARNESS_SCRIPT=str(ROOT / "tools" / "screenshots_krita.py"), HC_HARNESS_TIMEOUT_MS="400000",
               HC_E2E_ENDPOINT=endpoint, HC_SHOT_PHOTO=str(photo), HC_SHOT_OUT=str(out))
    with open(tmp / "krita.log", "w") as log:
        rc = subprocess.run(["timeout", "450", "xvfb-run", "-a", "-s", "-screen 0 1280x900x24 -nolisten tcp",
                             "krita", "--nosplash"], env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"Krita exited with {rc}:\n{(tmp / 'krita.log').read_text(errors='replace')[-3000:]}")


GIMP_BATCH = r"""
import json
import gi
gi.require_version("Gimp", "3.0")
from gi.repository import Gimp, Gio
P = json.load(open("/e/params.json"))
image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path("/e/photo.png"))
proc = Gimp.get_pdb().lookup_procedure("plug-in-hairclip")
config = proc.create_config()
config.set_property("run-mode", Gimp.RunMode.INTERACTIVE)
config.set_property("image", image)
config.set_core_object_array("drawables", [image.get_layers()[0]])
config.set_property("server", P["endpoint"])
config.set_property("colour-mode", "rgb")
proc.run(config)
image.delete()
"""


def read_xwd(path: Path) -> Image.Image:
    """Xvfb's -fbdir screen (XWD, 24-bit TrueColor in 32-bit pixels) as a PIL image."""
    import struct

    raw = path.read_bytes()
    head = struct.unpack(">25I", raw[:100])
    header_size, width, height, byte_order, bpp, stride, ncolors = (head[0], head[4], head[5], head[7], head[11],
                                                                    head[12], head[19])
    if bpp != 32:
        raise SystemExit(f"unexpected XWD pixel size {bpp}")
    start = header_size + 12 * ncolors
    mode = "BGRX" if byte_order == 0 else "XRGB"
    return Image.frombuffer("RGB", (width, height), raw[start:start + stride * height], "raw", mode, stride, 1)


def gimp(endpoint: str, photo: Path, out: Path, tmp: Path) -> None:
    """GIMP 3's dialog (gimp-console in the Debian 13 root of tools/ci_gimp.sh, its dialog on our Xvfb)."""
    import json

    ci = ROOT / "tools" / "ci_gimp.sh"
    folder = tmp / "gimp"
    (folder / "home").mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "hairclip", "install-plugin", "gimp", "--dest",
                    str(folder / "home" / ".config" / "GIMP" / "3.0" / "plug-ins"), "--gimp-python",
                    f"{ci} run -- python3"], check=True, capture_output=True)
    shutil.copy(photo, folder / "photo.png")
    (folder / "batch.py").write_text(GIMP_BATCH)
    (folder / "params.json").write_text(json.dumps({"endpoint": endpoint}))
    n = next(n for n in range(90, 300) if not Path(f"/tmp/.X11-unix/X{n}").exists()
             and not Path(f"/tmp/.X{n}-lock").exists())
    fb = tmp / "fb"
    fb.mkdir()
    xvfb = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "1280x1024x24", "-nolisten", "tcp", "-fbdir",
                             str(fb)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    chroot = [str(ci), "run", "--bind", f"{folder}:/e", "--bind", "/tmp/.X11-unix:/tmp/.X11-unix", "--", "env",
              f"DISPLAY=:{n}"]

    def xdotool(*args: str) -> str:
        r = subprocess.run([*chroot, "xdotool", *args], capture_output=True, text=True, timeout=30)
        return r.stdout if r.returncode == 0 else ""

    try:
        time.sleep(1.0)
        proc = subprocess.Popen([*chroot, "HOME=/e/home", "HAIRCLIP_DIALOG_STATE=/e/dialog.json", "timeout", "180",
                                 "gimp-console-3.0", "-i", "-d", "-f", "--batch-interpreter=python-fu-eval", "-b",
                                 "exec(open('/e/batch.py').read())", "--quit"],
                                stdout=open(tmp / "gimp.log", "w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            state = folder / "dialog.json"
            try:
                if json.loads(state.read_text())["server_state"] == "connected":
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.3)
        time.sleep(1.5)
        wid = xdotool("search", "--name", "^HairCLIP$").split()[0]
        g = dict(x.split("=") for x in xdotool("getwindowgeometry", "--shell", wid).split())
        x, y, w, h = (int(g[k]) for k in ("X", "Y", "WIDTH", "HEIGHT"))
        read_xwd(fb / "Xvfb_screen0").crop((x, y, x + w, y + h)).save(out / "gimp-dialog.png")
        xdotool("mousemove", "--window", wid, str(w - 147), str(h - 30), "click", "1")  # Cancel
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    finally:
        xvfb.terminate()
        xvfb.wait(10)


def before_after(endpoint: str, photo: Path, out: Path, tmp: Path) -> None:
    edited = tmp / "after.png"
    subprocess.run([sys.executable, "-m", "hairclip", "edit", str(photo), "-o", str(edited), "--hairstyle",
                    "bob cut", "--color", "purple", "--server", endpoint], check=True, capture_output=True)
    a, b = Image.open(photo).convert("RGB"), Image.open(edited).convert("RGB")
    pair = Image.new("RGB", (a.width + b.width + 8, a.height + 28), "white")
    pair.paste(a, (0, 28))
    pair.paste(b, (a.width + 8, 28))
    d = ImageDraw.Draw(pair)
    d.text((4, 8), "before", fill="black")
    d.text((a.width + 12, 8), "after: bob cut, purple - DEMO NETWORKS (random weights, noise)", fill="black")
    pair.save(out / "before-after-demo.png")


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "img").resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hairclip-shots-") as t:
        tmp = Path(t)
        from skimage import data

        photo = tmp / "astronaut.png"
        Image.fromarray(data.astronaut()).resize((384, 384)).save(photo)
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        server = serve(endpoint, tmp / "serve.log")
        try:
            before_after(endpoint, photo, out, tmp)
            if shutil.which("krita") and shutil.which("xvfb-run"):
                krita(endpoint, photo, out, tmp)
            else:
                print("no krita/xvfb-run: skipped Krita's pictures", file=sys.stderr)
            gimp_root = Path(os.environ.get("HAIRCLIP_GIMP_ROOT", "/opt/hairclip-gimp3"))
            if (gimp_root / "usr/bin/gimp-console-3.0").exists() and os.geteuid() == 0 and shutil.which("Xvfb"):
                gimp(endpoint, photo, out, tmp)
            else:
                print("no GIMP 3 root (sudo tools/ci_gimp.sh), root or Xvfb: skipped GIMP's picture", file=sys.stderr)
        finally:
            server.terminate()
            server.wait(20)
    for png in sorted(out.glob("*.png")):
        shrink(png)
        print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
