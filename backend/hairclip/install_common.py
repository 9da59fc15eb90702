"""What the Krita and GIMP installers share: the plug-in's and the shared client's sources, a clean copy, a
folder swapped in only when complete, and the pyzmq/msgpack wheels for an editor's own Python.

Each editor's installer (hairclip.install_plugin for Krita, hairclip.install_gimp) imports these and
registers its own `hairclip install-plugin EDITOR` subcommand; neither imports the other's helpers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from hairclip.errors import HairclipError

PLUGIN_NAME = "hairclip"
DEPENDENCIES = ("pyzmq", "msgpack")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".pytest_cache")
Runner = Callable[..., subprocess.CompletedProcess]


class InstallError(HairclipError):
    """A plug-in could not be installed; the message says what to do."""

    code = "install_failed"


# ---------------------------------------------------------------------------------------------- sources

def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def packaged_plugins() -> Path:
    """Where a built package (wheel) holds the plug-ins: setup.py copies plugin_<editor>/ there."""
    return Path(__file__).resolve().parent / "editor_plugins"


def plugin_source(editor: str) -> Path:
    """The plug-in's files: shipped in the installed package, or plugin_<editor>/ of a checkout (pip install -e)."""
    for src in (packaged_plugins() / editor, repo_root() / f"plugin_{editor}"):
        if src.is_dir():
            return src
    raise InstallError(f"The {editor} plug-in's files are neither in the installed package "
                       f"({packaged_plugins() / editor}) nor in a checkout ({repo_root() / f'plugin_{editor}'}): "
                       "reinstall HairCLIP Studio.")


def shared_source() -> Path:
    spec = importlib.util.find_spec("hairclip_shared")
    if spec is None or not spec.submodule_search_locations:
        raise InstallError("The hairclip_shared package is not installed.")
    return Path(next(iter(spec.submodule_search_locations)))


def copy_package(src: Path, dst: Path) -> None:
    """Replace dst with a clean copy of src (no caches, nothing left over from an older version)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=_IGNORE)


@contextlib.contextmanager
def staged(folder: Path) -> Iterator[Path]:
    """Build a replacement for `folder` in a new folder beside it, and swap it in only when the block succeeds.

    A failure anywhere (a copy, a wheel download) leaves `folder` exactly as it was, or absent if it was: never
    a plug-in without its dependencies.
    """
    new = Path(tempfile.mkdtemp(prefix=f".{folder.name}-new-", dir=folder.parent))
    try:
        yield new
        old = folder.with_name(f".{folder.name}-old-{new.name.rsplit('-', 1)[-1]}")
        if folder.exists():
            folder.rename(old)
        try:
            new.rename(folder)
        except BaseException:
            if old.exists():
                old.rename(folder)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(new, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- wheels

def wheel_platforms(system: str, machine: str) -> list[str]:
    """pip platform tags for an editor on this OS and CPU, most compatible first."""
    machine = machine.lower()
    if system == "Windows":
        return ["win_arm64"] if machine in ("arm64", "aarch64") else ["win_amd64"]
    if system == "Darwin":  # universal2 runs on both Apple silicon and Intel Krita builds
        return ["macosx_11_0_universal2", "macosx_11_0_arm64" if machine == "arm64" else "macosx_11_0_x86_64"]
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return [f"manylinux2014_{arch}", f"manylinux_2_17_{arch}", f"manylinux_2_28_{arch}"]


def fetch_wheels(vendor: Path, python_version: str, platforms: Sequence[str],
                 packages: Sequence[str] = DEPENDENCIES, run: Runner = subprocess.run,
                 pip: Sequence[str] = (sys.executable, "-m", "pip")) -> list[str]:
    """Download binary wheels for another Python/OS and unpack them into `vendor`; returns the wheel names."""
    if not re.fullmatch(r"3\.\d+", python_version):
        raise InstallError(f"--python must look like 3.10, not {python_version!r}.")
    with tempfile.TemporaryDirectory(prefix="hairclip-wheels-") as tmp:
        cmd = [*pip, "download", "--only-binary=:all:", "--implementation", "cp",
               "--python-version", python_version, "--no-deps", "--disable-pip-version-check", "-d", tmp]
        for p in platforms:
            cmd += ["--platform", p]
        r = run([*cmd, *packages], capture_output=True, text=True)
        if r.returncode != 0:
            raise InstallError(f"pip could not download {', '.join(packages)} for Python {python_version} "
                               f"({', '.join(platforms)}):\n{(r.stderr or r.stdout).strip()[-2000:]}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        names = {re.split(r"-", w.name, maxsplit=1)[0].lower().replace("_", "-") for w in wheels}
        missing = [p for p in packages if p.lower() not in names]
        if missing:
            raise InstallError(f"pip returned no wheel for {', '.join(missing)}.")
        vendor.mkdir(parents=True, exist_ok=True)
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as z:
                z.extractall(vendor)  # a wheel is the site-packages layout; bundled libs come with it
        return [w.name for w in wheels]
