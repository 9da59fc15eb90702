"""Packaging hook; everything else is in pyproject.toml.

plugin_krita/ and plugin_gimp/ live at the top of the checkout, outside the Python packages. A built package
(a wheel) carries them as hairclip/editor_plugins/{krita,gimp}, where `hairclip install-plugin` looks first,
so that it also works where the project was installed from a wheel. An editable install reads the checkout.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPyWithEditorPlugins(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for editor in ("krita", "gimp"):
            dst = Path(self.build_lib) / "hairclip" / "editor_plugins" / editor
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(HERE / f"plugin_{editor}", dst, ignore=shutil.ignore_patterns("__pycache__", "*.py[co]"))


setup(cmdclass={"build_py": BuildPyWithEditorPlugins})
