"""``hairclip install-plugin gimp``: put the GIMP 3 plug-in where GIMP looks, with what its Python needs.

GIMP runs a Python plug-in in its own interpreter: Linux distributions' GIMP uses the system ``python3``
(Debian's may already have python3-zmq), the Windows and macOS bundles and the Flatpak their own. So the
installer asks that very interpreter what it is and what it has, and vendors pyzmq and msgpack wheels
for exactly its version and platform only when it lacks them. The copying and the wheel download are
install_common's, shared with the Krita installer.

Which interpreter, the way GIMP picks it: an ``interpreters/*.interp`` file of GIMP's that maps ``python3``
to a program wins (the Windows and macOS bundles ship ``pygimp.interp``). Without one (Debian's GIMP 3
ships only a commented-out ``default.interp``) GIMP executes the plug-in file itself, and its
``#!/usr/bin/env python3`` line takes ``python3`` from GIMP's PATH: a desktop session's standard
directories, not this shell's, whose PATH may start with an activated venv or a pyenv shim. So the search
covers only /usr/local/bin, /usr/bin and /bin, and the interpreter must import ``gi`` (PyGObject), as
every GIMP 3 Python plug-in does. All of it is asked before anything is copied, and the plug-in folder is
built beside the old one and swapped in only when complete.

Layout written under DEST (GIMP's plug-ins folder)::

    hairclip/hairclip.py        the plug-in (GIMP wants the folder and the file to share a name)
    hairclip/hairclip_shared/   the shared client and editing logic
    hairclip/vendor/            pyzmq and msgpack, only when GIMP's Python lacks them
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hairclip.install_common import (
    DEPENDENCIES,
    PLUGIN_NAME,
    InstallError,
    copy_package,
    fetch_wheels,
    plugin_source,
    shared_source,
    staged,
    wheel_platforms,
)

MODULES = dict(zip(DEPENDENCIES, ("zmq", "msgpack"), strict=True))  # pip name -> import name

# Run by GIMP's interpreter: what it is, and whether it can import gi and the client's dependencies.
_PROBE = """
import json, platform, sys, sysconfig
have = []
for mod in ("zmq", "msgpack", "gi"):
    try:
        __import__(mod)
        have.append(mod)
    except Exception:
        pass
print(json.dumps({"version": "%d.%d" % sys.version_info[:2], "platform": sysconfig.get_platform(),
                  "implementation": sys.implementation.name, "executable": sys.executable, "have": have}))
"""


@dataclass(frozen=True)
class PythonInfo:
    """What ``_PROBE`` learnt about an interpreter."""

    version: str  # X.Y
    platform: str  # sysconfig.get_platform(): linux-x86_64, win-amd64, macosx-11.0-arm64
    implementation: str = "cpython"
    executable: str = ""
    have: tuple[str, ...] = ()  # the importable ones of zmq, msgpack, gi

    @property
    def missing(self) -> list[str]:
        return [pip for pip, mod in MODULES.items() if mod not in self.have]

    @property
    def tag(self) -> str:
        return f"Python {self.version} ({self.platform})"

    def pip_platforms(self) -> list[str]:
        """The pip platform tags of the machine that interpreter runs on."""
        plat = self.platform
        if plat.startswith("win"):
            system, machine = "Windows", {"win32": "x86"}.get(plat, plat.rsplit("-", 1)[-1])
        elif plat.startswith("macosx"):
            system, machine = "Darwin", plat.rsplit("-", 1)[-1]
        elif plat.startswith("linux"):
            system, machine = "Linux", plat.split("-", 1)[1]
        else:
            raise InstallError(f"No pyzmq/msgpack wheels are published for GIMP's platform {plat!r}.")
        return wheel_platforms(system, machine)


# ---------------------------------------------------------------------------------------------- where

def profile_roots(home: Path | None = None, platform: str | None = None, env: dict | None = None) -> list[Path]:
    """Folders that hold GIMP's per-version profiles (``<root>/3.0``), sandboxed packagings first."""
    home = Path.home() if home is None else home
    platform = sys.platform if platform is None else platform
    env = os.environ if env is None else env
    if platform.startswith("win"):
        return [Path(env.get("APPDATA") or home / "AppData" / "Roaming") / "GIMP"]
    if platform == "darwin":
        return [home / "Library" / "Application Support" / "GIMP"]
    config = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    return [home / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP",  # Flatpak
            home / "snap" / "gimp" / "current" / ".config" / "GIMP",  # Snap
            config / "GIMP"]


def default_dest(home: Path | None = None, platform: str | None = None, env: dict | None = None) -> Path:
    """The plug-ins folder of the newest GIMP 3 profile that exists (3.0 of the native GIMP if none does).

    Each GIMP 3.x keeps its own profile (3.0, 3.2, ...), and Flatpak and Snap GIMPs keep theirs apart from
    the native one; a profile exists once that GIMP has been started.
    """
    roots = profile_roots(home, platform, env)
    found = [d for root in roots if root.is_dir() for d in root.iterdir()
             if d.is_dir() and re.fullmatch(r"3\.\d+", d.name)]
    if found:
        return max(found, key=lambda d: int(d.name.split(".")[1])) / "plug-ins"
    return roots[-1] / "3.0" / "plug-ins"


def parse_interp(text: str) -> str | None:
    """The program a GIMP ``.interp`` file runs ``#!/usr/bin/env python3`` plug-ins with, if it names one."""
    progs = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ":")) and "=" in line:
            key, _, value = line.partition("=")
            progs[key.strip()] = value.strip()
    for key in ("python3", "/usr/bin/python3", "python", "/usr/bin/python"):
        if progs.get(key):
            return progs[key]
    return None


def gimp_install_dirs(platform: str | None = None, env: dict | None = None) -> list[Path]:
    """Where GIMP 3 itself may be installed (the folder holding ``lib/gimp/3.0``)."""
    platform = sys.platform if platform is None else platform
    env = os.environ if env is None else env
    if platform.startswith("win"):
        bases = [Path(env[k]) for k in ("ProgramFiles", "ProgramW6432", "LOCALAPPDATA") if env.get(k)]
        bases += [Path(env["LOCALAPPDATA"]) / "Programs"] if env.get("LOCALAPPDATA") else []
        found = [d for b in bases if b.is_dir() for d in b.glob("GIMP 3*")]
    elif platform == "darwin":
        found = [app / "Contents" / "Resources" for base in (Path("/Applications"), Path.home() / "Applications")
                 if base.is_dir() for app in base.glob("GIMP*.app")]
    else:
        found = [Path("/usr"), Path("/usr/local")]
    return sorted((d for d in found if d.is_dir()), key=lambda d: d.name, reverse=True)


# A desktop session's PATH before any shell start-up file adds a venv, a pyenv shim or ~/.local/bin.
SYSTEM_PATH = os.pathsep.join(("/usr/local/bin", "/usr/bin", "/bin"))


def find_gimp_python(dest: Path, platform: str | None = None, env: dict | None = None) -> list[str] | None:
    """The command that runs the Python GIMP will start the plug-in with, or None if it cannot be told."""
    platform = sys.platform if platform is None else platform
    if Path.home() / ".var" / "app" / "org.gimp.GIMP" in Path(dest).resolve().parents and shutil.which("flatpak"):
        return ["flatpak", "run", "--command=python3", "org.gimp.GIMP"]
    for root in gimp_install_dirs(platform, env):
        interps = [*root.glob("lib*/gimp/3.*/interpreters/*.interp"),
                   *root.glob("lib/*/gimp/3.*/interpreters/*.interp")]  # Debian's multiarch lib/x86_64-linux-gnu
        for interp in sorted(interps):
            prog = parse_interp(interp.read_text(errors="replace"))
            # Windows' and macOS' files name the program relative to GIMP's bin folder, which GIMP puts on PATH.
            for cand in ((Path(prog), root / "bin" / prog, root.parent / "MacOS" / prog) if prog else ()):
                if cand.is_absolute() and cand.is_file():
                    return [str(cand)]
    if platform.startswith(("linux", "freebsd")):
        # No .interp names Python: GIMP executes hairclip.py, whose `#!/usr/bin/env python3` line finds python3
        # on GIMP's PATH (see the module docstring for why that is not this shell's PATH).
        exe = shutil.which("python3", path=SYSTEM_PATH)
        return [exe] if exe else None
    return None


def probe_python(cmd: list[str], timeout: float = 120.0) -> PythonInfo:
    """Ask an interpreter (any command line that runs one) about itself."""
    try:
        out = subprocess.run([*cmd, "-c", _PROBE], capture_output=True, text=True, timeout=timeout, check=True)
        d = json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        detail = (getattr(e, "stderr", "") or str(e)).strip()[-500:]
        raise InstallError(f"Could not ask GIMP's Python ({shlex.join(cmd)}) about itself: {detail}") from e
    return PythonInfo(d["version"], d["platform"], d["implementation"], d["executable"], tuple(d["have"]))


# ---------------------------------------------------------------------------------------------- install

def copy_plugin(folder: Path, keep_vendor: Path | None = None) -> Path:
    """Copy the plug-in and the shared package into the (new, empty) ``folder``, and the wheels of
    ``keep_vendor`` when a reinstall keeps them."""
    copy_package(plugin_source("gimp") / PLUGIN_NAME, folder)
    copy_package(shared_source(), folder / "hairclip_shared")
    if keep_vendor is not None and keep_vendor.is_dir():
        shutil.copytree(keep_vendor, folder / "vendor", symlinks=True)
    script = folder / f"{PLUGIN_NAME}.py"
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)  # GIMP runs executables only
    # GIMP re-registers a plug-in only when its file's time changes; a copy keeps the source's time.
    os.utime(script)
    return folder


def register(editors: argparse._SubParsersAction) -> None:
    """Add `install-plugin gimp` and its options."""
    p = editors.add_parser("gimp", help="the GIMP 3 plug-in")
    p.add_argument("--dest", type=Path, default=None, help="GIMP's plug-ins folder (default: this user's)")
    p.add_argument("--deps", choices=("auto", "wheels", "none"), default="auto",
                   help="pyzmq and msgpack for GIMP's Python: auto (ask it, and fetch wheels only for what it "
                        "lacks), wheels (always fetch), none")
    p.add_argument("--gimp-python", metavar="CMD", default=None,
                   help="the Python GIMP runs plug-ins with, as a command line (default: found from GIMP's "
                        "install: its pygimp.interp, or python3 on Linux)")
    p.add_argument("--python", metavar="X.Y", default=None,
                   help="GIMP's Python version, for fetching wheels without running it")
    p.add_argument("--platform", action="append", default=None,
                   help="pip platform tag for the wheels (repeatable; default: GIMP's Python's, or this machine's)")
    p.set_defaults(func=lambda args: int(install(args) or 0))  # looked up when run, so a test can replace it


def plan_deps(args: argparse.Namespace, dest: Path) -> tuple[list[str], str | None, list[str], str]:
    """(packages to fetch, Python X.Y, pip platforms, why) for GIMP's interpreter."""
    mode = getattr(args, "deps", "auto")
    if mode == "none":
        return [], None, [], "not checking pyzmq/msgpack (--deps none)"
    version, platforms = getattr(args, "python", None), getattr(args, "platform", None)
    cmd = getattr(args, "gimp_python", None)
    cmd = shlex.split(cmd) if cmd else (None if version else find_gimp_python(dest))
    if cmd is None:
        if version is None:
            raise InstallError("Could not find the Python GIMP runs plug-ins with. Name it with --gimp-python "
                               "PATH, or give its version with --python X.Y (and --platform TAG for another OS).")
        return list(DEPENDENCIES), version, platforms or wheel_platforms_here(), f"fetching wheels for Python {version}"
    info = probe_python(cmd)
    if info.implementation != "cpython":
        raise InstallError(f"GIMP's Python is {info.implementation}; pyzmq publishes wheels for CPython only.")
    if "gi" not in info.have:
        problem = (f"{shlex.join(cmd)} ({info.tag}) cannot import gi (PyGObject), which every GIMP 3 Python "
                   "plug-in needs")
        if not getattr(args, "gimp_python", None):
            raise InstallError(f"{problem}, so it is not the Python GIMP runs plug-ins with. Is GIMP 3 installed "
                               "(Debian/Ubuntu: sudo apt install gimp)? Otherwise name GIMP's Python with "
                               "--gimp-python CMD, or give its version with --python X.Y.")
        print(f"  warning: {problem}; installing for it as asked (--gimp-python).")
    wanted = list(DEPENDENCIES) if mode == "wheels" else info.missing
    why = f"GIMP's {info.tag} at {info.executable} "
    if mode == "wheels":
        why += "gets wheels of its own (--deps wheels)"
    else:
        why += f"lacks {', '.join(wanted)}: fetching wheels" if wanted else "already has pyzmq and msgpack"
    return wanted, info.version, platforms or info.pip_platforms(), why


def wheel_platforms_here() -> list[str]:
    import platform

    return wheel_platforms(platform.system(), platform.machine())


def install(args: argparse.Namespace) -> int:
    """Install (or update) the GIMP plug-in; the exit code of ``hairclip install-plugin gimp``."""
    dest = Path(args.dest).expanduser() if getattr(args, "dest", None) else default_dest()
    print(f"Installing the HairCLIP GIMP plug-in into {dest}")
    wanted, version, platforms, why = plan_deps(args, dest)  # GIMP's Python is asked before anything is written
    print(f"  dependencies: {why}")
    folder = dest / PLUGIN_NAME
    # --deps none keeps wheels fetched before; otherwise GIMP's Python has both (stale copies would shadow
    # them) or fresh ones are fetched.
    keep = folder / "vendor" if getattr(args, "deps", "auto") == "none" else None
    try:
        dest.mkdir(parents=True, exist_ok=True)
        with staged(folder) as new:  # any failure leaves the previous install (or none) as it was
            copy_plugin(new, keep)
            if wanted:
                names = fetch_wheels(new / "vendor", version, platforms, packages=wanted)
        if wanted:
            print(f"  unpacked {', '.join(names)} into {folder / 'vendor'}")
    except OSError as e:
        raise InstallError(f"Could not install into {dest}: {e}") from e
    print("Done. Restart GIMP, then use Filters > HairCLIP... (start the server first: hairclip serve).")
    return 0
