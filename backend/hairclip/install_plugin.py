"""`hairclip install-plugin krita|gimp`: put an editor plug-in where the editor finds it, with the shared
client (hairclip_shared) and the two packages it needs (pyzmq, msgpack) for the editor's own Python.

Krita's Windows, macOS and AppImage builds embed Python 3.10 without pip, so the installer downloads
wheels for that Python, OS and architecture (`pip download --only-binary=:all:`) and unpacks them into a
folder private to the plug-in (`vendor/`, which the plug-in puts first on sys.path). Linux distribution
builds of Krita link the system Python; there its python3-zmq/python3-msgpack are used when present.

The helpers both installers use live in hairclip.install_common; the GIMP target is hairclip.install_gimp's,
which registers its own subcommand here.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from hairclip import install_gimp
from hairclip.install_common import (
    PLUGIN_NAME,
    InstallError,
    Runner,
    copy_package,
    fetch_wheels,
    plugin_source,
    shared_source,
    staged,
    wheel_platforms,
)

EMBEDDED_PYTHON = "3.10"  # Krita 5.2's Windows, macOS and AppImage builds


# -------------------------------------------------------------------------------------------- Krita's folders

def krita_user_dirs(system: str | None = None, env: dict | None = None, home: Path | None = None,
                    ) -> tuple[Path, Path]:
    """(pykrita folder, kritarc) of the current user, as Krita 5 finds them on each OS."""
    system = system or platform.system()
    env = os.environ if env is None else env
    home = home or Path.home()
    if system == "Windows":
        appdata = Path(env.get("APPDATA", home / "AppData" / "Roaming"))
        local = Path(env.get("LOCALAPPDATA", home / "AppData" / "Local"))
        return appdata / "krita" / "pykrita", local / "kritarc"
    if system == "Darwin":
        return (home / "Library" / "Application Support" / "krita" / "pykrita",
                home / "Library" / "Preferences" / "kritarc")
    data = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
    config = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    return data / "krita" / "pykrita", config / "kritarc"


def distro_krita_python(roots: Sequence[Path] = (Path("/usr/lib"), Path("/usr/lib64"))) -> str | None:
    """The X.Y of the system Python a Linux distribution's Krita links, read from its pykrita module."""
    for root in roots:
        pattern = "krita-python-libs/PyKrita/krita*.so"
        for lib in sorted([*root.glob(pattern), *root.glob(f"*/{pattern}")]):
            m = re.search(rb"libpython(3\.\d+)", lib.read_bytes())
            if m:
                return m.group(1).decode()
    return None


def deps_available(python: str, run: Runner = subprocess.run) -> bool:
    """Can this interpreter import pyzmq and msgpack?"""
    try:
        r = run([python, "-c", "import zmq, msgpack"], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


def enable_in_kritarc(kritarc: Path, name: str = PLUGIN_NAME) -> None:
    """Set `enable_<name>=true` in the [python] group, keeping every other line as it is."""
    key = f"enable_{name}"
    lines = kritarc.read_text(encoding="utf-8").splitlines() if kritarc.exists() else []
    out, in_python, done = [], False, False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            if in_python and not done:
                out.append(f"{key}=true")
                done = True
            in_python = stripped == "[python]"
        elif in_python and stripped.split("=", 1)[0].strip() == key:
            if not done:
                out.append(f"{key}=true")
                done = True
            continue
        out.append(line)
    if not done:
        if not in_python:
            if out and out[-1].strip():
                out.append("")
            out.append("[python]")
        out.append(f"{key}=true")
    kritarc.parent.mkdir(parents=True, exist_ok=True)
    kritarc.write_text("\n".join(out) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------- install

def plan_deps(mode: str, system: str, python: str | None, run: Runner = subprocess.run,
              distro_python: Callable[[], str | None] = distro_krita_python) -> tuple[str, str | None, str]:
    """Decide how Krita gets pyzmq and msgpack: ("system" | "wheels" | "none", python X.Y, why)."""
    if mode == "none":
        return "none", python, "not installing pyzmq/msgpack (--deps none)"
    if system == "Linux" and mode in ("auto", "system"):
        version = python or distro_python()
        if version is not None:
            exe = f"/usr/bin/python{version}"
            if deps_available(exe, run):
                return "system", version, f"Krita uses the system Python {version}, which has them"
            if mode == "system":
                raise InstallError(f"The system Python {version} cannot import pyzmq and msgpack: install "
                                   "them (Debian/Ubuntu: sudo apt install python3-zmq python3-msgpack).")
            return "wheels", version, f"the system Python {version} lacks pyzmq/msgpack: fetching wheels"
        if mode == "system":
            raise InstallError("No distribution-packaged Krita was found: there is no system Python to use.")
    if mode == "system":
        raise InstallError("--deps system is for Linux distribution builds of Krita.")
    version = python or EMBEDDED_PYTHON
    return "wheels", version, f"fetching wheels for Krita's embedded Python {version}"


def install_krita(args: argparse.Namespace, run: Runner = subprocess.run,
                  log: Callable[[str], None] = print) -> Path:
    system = args.system or platform.system()
    default_dest, default_rc = krita_user_dirs(system)
    dest = Path(args.dest) if args.dest else default_dest
    kritarc = Path(args.kritarc) if args.kritarc else default_rc
    src, shared = plugin_source("krita"), shared_source()
    how, version, why = plan_deps(args.deps, system, args.python, run)
    log(f"Installing the HairCLIP Krita plug-in into {dest}")
    log(f"  dependencies: {why}")
    if args.dry_run:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    pkg = dest / PLUGIN_NAME
    with staged(pkg) as new:  # a failed download leaves the previous install (or none) in place
        copy_package(src / PLUGIN_NAME, new)
        copy_package(shared, new / "vendor" / "hairclip_shared")
        if how == "wheels":
            platforms = args.platform or wheel_platforms(system, platform.machine())
            names = fetch_wheels(new / "vendor", version, platforms, run=run)
    if how == "wheels":
        log(f"  unpacked {', '.join(names)} into {pkg / 'vendor'}")
    # The .desktop file last: Krita sees the plug-in only once everything it needs is in place.
    if (src / "README.md").exists():
        shutil.copy2(src / "README.md", dest / f"{PLUGIN_NAME}_README.md")
    shutil.copy2(src / f"{PLUGIN_NAME}.desktop", dest / f"{PLUGIN_NAME}.desktop")
    if args.enable:
        enable_in_kritarc(kritarc)
        log(f"  enabled it in {kritarc}")
    log("Done. Restart Krita, then use Filters > HairCLIP... (start the server with `hairclip serve`).")
    return dest


def _cmd_krita(args: argparse.Namespace) -> int:
    install_krita(args)
    return 0


def register(editors: argparse._SubParsersAction) -> None:
    """Add `install-plugin krita` and its options."""
    k = editors.add_parser("krita", help="the Krita 5/6 plug-in (Filters > HairCLIP...)")
    k.add_argument("--dest", type=Path, default=None,
                   help="Krita's pykrita folder to install into (default: this user's)")
    k.add_argument("--deps", choices=("auto", "system", "wheels", "none"), default="auto",
                   help="how Krita gets pyzmq and msgpack: auto (the system Python on Linux distribution "
                        "builds, else wheels), system, wheels, none")
    k.add_argument("--python", default=None, help="Krita's Python version X.Y (default: detected, or "
                                                  f"{EMBEDDED_PYTHON} for Krita's own builds)")
    k.add_argument("--platform", action="append", default=None,
                   help="pip platform tag for the wheels (repeatable; default: this OS and CPU)")
    k.add_argument("--system", choices=("Linux", "Windows", "Darwin"), default=None,
                   help="use another OS's folder layout and wheels (default: this one)")
    k.add_argument("--kritarc", type=Path, default=None, help="Krita's settings file (default: this user's)")
    k.add_argument("--no-enable", dest="enable", action="store_false", help="copy only; do not enable it")
    k.add_argument("--dry-run", action="store_true", help="say what would be done, change nothing")
    k.set_defaults(func=_cmd_krita)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("install-plugin", help="install the Krita or GIMP plug-in for this user",
                              description=__doc__.split("\n\n")[0])
    editors = p.add_subparsers(dest="editor", metavar="EDITOR", required=True)
    register(editors)  # each editor's installer adds its own subcommand
    install_gimp.register(editors)
