"""CI runs what a new user runs: the README's set-up and test commands, exactly."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUP, TESTS = "bash tools/setup.sh", ".venv/bin/python -m pytest -q"


def _commands(text: str) -> list[str]:
    """Each command of a shell text: split at && and newlines, comments and surrounding blanks dropped."""
    return [c.strip() for line in text.splitlines() for c in line.split("#")[0].split("&&") if c.strip()]


def test_ci_runs_exactly_the_readmes_setup_and_test_commands():
    readme = [c for block in re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
              for c in _commands(block)]
    assert SETUP in readme and TESTS in readme
    ci = _commands((ROOT / ".ci" / "run").read_text())
    assert SETUP in ci and TESTS in ci, ci  # not `setup.sh dev,train`: the tests pass on the default install
    assert [c for c in ci if c.startswith("bash tools/setup.sh")] == [SETUP]


def test_the_default_setup_installs_what_the_tests_use():
    setup = (ROOT / "tools" / "setup.sh").read_text()
    assert 'extras="${1:-dev}"' in setup
    dev = re.search(r"^dev = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.M | re.S).group(1)
    for package in ("pytest", "hypothesis", "ruff", "PyQt6", "tensorboard"):
        assert f'"{package}' in dev, package
