"""The ``hairclip`` command. Subcommands register themselves; heavy imports (torch) happen inside handlers,
so client-only commands such as ``hairclip status`` start in well under a second."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

from hairclip import __version__
from hairclip.errors import HairclipError

# Each module exposes register_cli(subparsers) and imports nothing heavy at module level.
_COMMAND_MODULES = ("hairclip.cli_edit", "hairclip.cli_server", "hairclip.weights", "hairclip.bench",
                    "hairclip.install_plugin", "hairclip.train.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hairclip",
        description="HairCLIP Studio: edit hair in photos by text or reference image.",
    )
    parser.add_argument("--version", action="version", version=f"hairclip {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:  # one that fails to import fails the command: no command may vanish
        importlib.import_module(name).register_cli(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if hasattr(signal, "SIGPIPE"):  # `hairclip weights list | head` should end quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "func", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except HairclipError as exc:
        print(f"hairclip: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hairclip: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
