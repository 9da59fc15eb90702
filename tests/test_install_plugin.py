"""`hairclip install-plugin`: where files go, how Krita's Python gets pyzmq/msgpack, and enabling the plug-in.
pip is replaced by a runner that writes real (tiny) wheels, so nothing here touches the network."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hairclip import install_gimp as ig
from hairclip import install_plugin as ip
from hairclip.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _args(**kw) -> argparse.Namespace:
    base = dict(editor="krita", dest=None, deps="none", python=None, platform=None, system="Linux",
                kritarc=None, enable=True, dry_run=False)
    base.update(kw)
    return argparse.Namespace(**base)


def _wheel(path: Path, module: str) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{module}/__init__.py", f"NAME = {module!r}\n")
        z.writestr(f"{module}-1.0.dist-info/METADATA", "Name: x\n")


class FakePip:
    """Stands in for `pip download`: records the command and drops one small wheel per package."""

    def __init__(self, returncode=0, skip=()):
        self.calls, self.returncode, self.skip = [], returncode, skip

    def __call__(self, cmd, **kw):
        self.calls.append(cmd)
        if "download" in cmd:
            dest = Path(cmd[cmd.index("-d") + 1])
            for pkg in ("pyzmq", "msgpack"):
                if pkg not in self.skip:
                    _wheel(dest / f"{pkg}-1.0-cp310-cp310-win_amd64.whl", {"pyzmq": "zmq"}.get(pkg, pkg))
        return subprocess.CompletedProcess(cmd, self.returncode, "", "no matching distribution")


def test_installs_plugin_shared_client_and_enables_it(tmp_path):
    dest, rc = tmp_path / "pykrita", tmp_path / "config" / "kritarc"
    ip.install_krita(_args(dest=dest, kritarc=rc), log=lambda s: None)
    assert (dest / "hairclip.desktop").read_text().count("X-KDE-Library=hairclip") == 1
    for f in ("__init__.py", "kritadoc.py", "jobs.py", "model.py", "ui.py", "scripting.py", "qt.py"):
        assert (dest / "hairclip" / f).is_file(), f
    shared = dest / "hairclip" / "vendor" / "hairclip_shared"
    assert {"client.py", "protocol.py", "editing.py"} <= {p.name for p in shared.iterdir()}
    assert not list(dest.rglob("__pycache__"))
    assert rc.read_text() == "[python]\nenable_hairclip=true\n"


def test_reinstall_leaves_nothing_stale(tmp_path):
    dest = tmp_path / "pykrita"
    ip.install_krita(_args(dest=dest, kritarc=tmp_path / "rc"), log=lambda s: None)
    (dest / "hairclip" / "old_module.py").write_text("x = 1\n")
    (dest / "hairclip" / "vendor" / "zmq").mkdir()
    ip.install_krita(_args(dest=dest, kritarc=tmp_path / "rc"), log=lambda s: None)
    assert not (dest / "hairclip" / "old_module.py").exists()
    assert not (dest / "hairclip" / "vendor" / "zmq").exists()


def test_dry_run_changes_nothing(tmp_path):
    lines = []
    args = _args(dest=tmp_path / "pykrita", kritarc=tmp_path / "rc", dry_run=True)
    ip.install_krita(args, log=lines.append)
    assert not (tmp_path / "pykrita").exists() and not (tmp_path / "rc").exists()
    assert "pykrita" in lines[0]


def test_kritarc_edit_keeps_everything_else(tmp_path):
    rc = tmp_path / "kritarc"
    rc.write_text("[General]\nfoo=1\n\n[python]\nenable_other=true\nenable_hairclip=false\n\n[Zed]\nz=2\n")
    ip.enable_in_kritarc(rc)
    assert rc.read_text() == ("[General]\nfoo=1\n\n[python]\nenable_other=true\nenable_hairclip=true\n\n"
                              "[Zed]\nz=2\n")
    rc.write_text("[General]\nfoo=1\n[python]\nenable_other=true\n[Zed]\nz=2\n")
    ip.enable_in_kritarc(rc)
    assert rc.read_text() == ("[General]\nfoo=1\n[python]\nenable_other=true\nenable_hairclip=true\n"
                              "[Zed]\nz=2\n")
    rc.write_text("[General]\nfoo=1\n")
    ip.enable_in_kritarc(rc, "hcharness")
    ip.enable_in_kritarc(rc, "hcharness")
    assert rc.read_text() == "[General]\nfoo=1\n\n[python]\nenable_hcharness=true\n"


def test_user_dirs_per_os(tmp_path):
    home = tmp_path
    assert ip.krita_user_dirs("Linux", {}, home) == (home / ".local/share/krita/pykrita",
                                                     home / ".config/kritarc")
    assert ip.krita_user_dirs("Linux", {"XDG_DATA_HOME": "/d", "XDG_CONFIG_HOME": "/c"}, home) == \
        (Path("/d/krita/pykrita"), Path("/c/kritarc"))
    assert ip.krita_user_dirs("Windows", {"APPDATA": "C:/A", "LOCALAPPDATA": "C:/L"}, home) == \
        (Path("C:/A/krita/pykrita"), Path("C:/L/kritarc"))
    assert ip.krita_user_dirs("Darwin", {}, home) == (home / "Library/Application Support/krita/pykrita",
                                                      home / "Library/Preferences/kritarc")


def test_wheels_are_fetched_for_kritas_python_and_unpacked(tmp_path):
    pip = FakePip()
    names = ip.fetch_wheels(tmp_path / "vendor", "3.10", ["win_amd64"], run=pip)
    cmd = pip.calls[0]
    assert cmd[cmd.index("--python-version") + 1] == "3.10" and "--only-binary=:all:" in cmd
    assert cmd[cmd.index("--implementation") + 1] == "cp" and cmd[cmd.index("--platform") + 1] == "win_amd64"
    assert cmd[-2:] == ["pyzmq", "msgpack"] and len(names) == 2
    assert (tmp_path / "vendor" / "zmq" / "__init__.py").read_text() == "NAME = 'zmq'\n"
    assert (tmp_path / "vendor" / "msgpack" / "__init__.py").exists()


def test_wheel_failures_are_reported(tmp_path):
    with pytest.raises(ip.InstallError, match="no matching distribution"):
        ip.fetch_wheels(tmp_path, "3.10", ["win_amd64"], run=FakePip(returncode=1))
    with pytest.raises(ip.InstallError, match="no wheel for msgpack"):
        ip.fetch_wheels(tmp_path, "3.10", ["win_amd64"], run=FakePip(skip=("msgpack",)))
    with pytest.raises(ip.InstallError, match="3.10"):
        ip.fetch_wheels(tmp_path, "python3", ["win_amd64"], run=FakePip())


def test_windows_install_vendors_wheels_for_the_embedded_python(tmp_path):
    pip = FakePip()
    ip.install_krita(_args(dest=tmp_path / "pykrita", kritarc=tmp_path / "rc", deps="auto", system="Windows"),
                     run=pip, log=lambda s: None)
    cmd = pip.calls[-1]
    assert cmd[cmd.index("--python-version") + 1] == ip.EMBEDDED_PYTHON
    assert (tmp_path / "pykrita" / "hairclip" / "vendor" / "zmq" / "__init__.py").exists()


def test_platform_tags():
    assert ip.wheel_platforms("Windows", "AMD64") == ["win_amd64"]
    assert ip.wheel_platforms("Darwin", "arm64")[0] == "macosx_11_0_universal2"
    assert ip.wheel_platforms("Linux", "x86_64") == ["manylinux2014_x86_64", "manylinux_2_17_x86_64",
                                                      "manylinux_2_28_x86_64"]


def test_linux_distribution_build_uses_the_system_python(tmp_path):
    lib = tmp_path / "usr" / "lib" / "x86_64-linux-gnu" / "krita-python-libs" / "PyKrita"
    lib.mkdir(parents=True)
    (lib / "krita.so").write_bytes(b"\x7fELF...libpython3.11.so.1.0\x00...")
    assert ip.distro_krita_python([tmp_path / "usr" / "lib"]) == "3.11"
    assert ip.distro_krita_python([tmp_path / "nowhere"]) is None

    def run_ok(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 0)

    def run_missing(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1)

    assert ip.plan_deps("auto", "Linux", None, run_ok, lambda: "3.11")[:2] == ("system", "3.11")
    assert ip.plan_deps("auto", "Linux", None, run_missing, lambda: "3.11")[:2] == ("wheels", "3.11")
    assert ip.plan_deps("auto", "Linux", None, run_ok, lambda: None)[:2] == ("wheels", ip.EMBEDDED_PYTHON)
    with pytest.raises(ip.InstallError, match="python3-zmq"):
        ip.plan_deps("system", "Linux", None, run_missing, lambda: "3.11")
    assert ip.plan_deps("wheels", "Linux", "3.12", run_ok, lambda: "3.11")[:2] == ("wheels", "3.12")


def test_cli_registers_both_editors(monkeypatch, capsys):
    parser = build_parser()
    args = parser.parse_args(["install-plugin", "krita", "--dest", "/x", "--deps", "wheels", "--python",
                              "3.10", "--platform", "win_amd64", "--no-enable", "--dry-run"])
    assert (args.editor, args.dest, args.deps, args.platform, args.enable) == ("krita", Path("/x"), "wheels",
                                                                               ["win_amd64"], False)
    called = []
    monkeypatch.setattr(ig, "install", lambda a: called.append(a) or 0)
    args = build_parser().parse_args(["install-plugin", "gimp", "--dest", "/g"])
    assert args.func(args) == 0 and called[0].dest == Path("/g")


# ---------------------------------------------------------------------------------------------- GIMP's Python, rollback

def _gimp_args(dest: Path, **kw) -> argparse.Namespace:
    return argparse.Namespace(**({"dest": dest, "deps": "auto", "gimp_python": None, "python": None,
                                  "platform": None} | kw))


def test_gimps_python_on_linux_is_python3_of_the_system_path_not_this_shells_venv_or_shim(tmp_path, monkeypatch):
    """Without an .interp naming Python (Debian's GIMP 3 has none), GIMP runs the plug-in through its
    `#!/usr/bin/env python3` line with the desktop's PATH, not the PATH of the shell running the installer."""
    shim = tmp_path / "pyenv" / "shims"
    shim.mkdir(parents=True)
    (shim / "python3").write_text("#!/bin/sh\nexit 1\n")
    (shim / "python3").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(ig, "gimp_install_dirs", lambda platform=None, env=None: [])  # no .interp files
    found = ig.find_gimp_python(tmp_path / "plug-ins", "linux")
    assert found == [shutil.which("python3", path=ig.SYSTEM_PATH)] and str(shim) not in found[0]


def test_a_python_that_cannot_import_gi_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ig, "find_gimp_python", lambda dest: [sys.executable, "-I", "-S"])  # no gi, no zmq
    monkeypatch.setattr(ig, "fetch_wheels", _no_download)
    dest = tmp_path / "plug-ins"
    with pytest.raises(ip.InstallError, match=r"cannot import gi \(PyGObject\)") as e:
        ig.install(_gimp_args(dest))
    assert "--gimp-python" in e.value.message and not dest.exists()


def _no_download(*args, **kw):
    raise ip.InstallError("pip could not download pyzmq (no network here)")


def test_a_failed_gimp_install_leaves_the_previous_one_as_it_was(tmp_path, monkeypatch):
    dest = tmp_path / "plug-ins"
    assert ig.install(_gimp_args(dest, deps="none")) == 0
    folder = dest / "hairclip"
    (folder / "vendor" / "zmq").mkdir(parents=True)
    (folder / "from-the-previous-install.txt").write_text("kept")
    before = sorted(p.relative_to(dest) for p in dest.rglob("*"))
    monkeypatch.setattr(ig, "probe_python", lambda cmd: ig.PythonInfo("3.13", "linux-x86_64", have=("gi",)))
    monkeypatch.setattr(ig, "fetch_wheels", _no_download)
    with pytest.raises(ip.InstallError, match="could not download"):
        ig.install(_gimp_args(dest, gimp_python="gimp-python"))
    assert sorted(p.relative_to(dest) for p in dest.rglob("*")) == before  # no half-made or hidden folders
    assert (folder / "from-the-previous-install.txt").read_text() == "kept"


def test_a_failed_krita_install_adds_no_plugin_without_its_dependencies(tmp_path):
    dest, rc = tmp_path / "pykrita", tmp_path / "kritarc"
    with pytest.raises(ip.InstallError, match="no matching distribution"):
        ip.install_krita(_args(dest=dest, kritarc=rc, deps="wheels", python="3.10"), run=FakePip(returncode=1),
                         log=lambda s: None)
    assert list(dest.iterdir()) == [] and not rc.exists()


# ---------------------------------------------------------------------------------------------- from a wheel

def test_install_plugin_works_from_a_built_and_installed_wheel(tmp_path):
    """Not only from a checkout: the wheel carries both plug-ins (setup.py), and its installed package installs
    them. The checkout copy it was built from is gone before the installer runs."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("backend", "shared", "plugin_krita", "plugin_gimp"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheels"),
                            str(src)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "wheels").glob("hairclip_studio-*.whl")
    site = tmp_path / "site"
    installed = subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    shutil.rmtree(src)

    run = "import sys, hairclip; print(hairclip.__file__); from hairclip.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(site)}  # the installed wheel, not this checkout
    for editor, extra in (("krita", ["--deps", "none", "--kritarc", str(tmp_path / "kritarc")]),
                          ("gimp", ["--deps", "none"])):
        out = subprocess.run([sys.executable, "-c", run, "install-plugin", editor, "--dest", str(tmp_path / editor),
                              *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.splitlines()[0] == str(site / "hairclip" / "__init__.py")
    for editor, files in (("krita", ["hairclip.desktop", "hairclip/jobs.py", "hairclip/ui.py"]),
                          ("gimp", ["hairclip/hairclip.py"])):
        for f in files:
            assert (tmp_path / editor / f).read_bytes() == (ROOT / f"plugin_{editor}" / f).read_bytes(), f
    assert (tmp_path / "gimp" / "hairclip" / "hairclip_shared" / "client.py").is_file()
    assert (tmp_path / "krita" / "hairclip" / "vendor" / "hairclip_shared" / "client.py").is_file()
