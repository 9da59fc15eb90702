"""The ``hairclip weights`` command (list, download, verify, import) and the ``--mapper/--e4e/--parsenet`` options.

The store is handed in by weights.register_cli, so this module does not import weights.py at run time (the
store imports this module to register its command: one direction, no circle).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from hairclip.errors import HairclipError

if TYPE_CHECKING:
    from hairclip.weights import WeightEntry, WeightStore

OpenStore = Callable[[str | None], "WeightStore"]  # the store at --weights-dir, or the default one

CHECKPOINT_OPTIONS = {"mapper": "hairclip.pt", "e4e": "e4e_ffhq_encode.pt", "parsenet": "parsenet.pth"}


def add_checkpoint_options(parser: argparse.ArgumentParser) -> None:
    """``--mapper``, ``--e4e``, ``--parsenet`` for ``edit`` and ``serve``: files loaded as named, not from the store."""
    g = parser.add_argument_group("checkpoint files", "load these instead of the weight store's files; "
                                  "they are read as named (weights only) and never checked against the manifest")
    g.add_argument("--mapper", type=Path, metavar="FILE",
                   help="a mapper in the hairclip.pt layout, e.g. one written by `hairclip train`")
    g.add_argument("--e4e", type=Path, metavar="FILE", help="an encoder in the e4e_ffhq_encode.pt layout")
    g.add_argument("--parsenet", type=Path, metavar="FILE", help="a face parser in the parsenet.pth layout")


def checkpoint_files(args: argparse.Namespace) -> dict[str, Path]:
    """{official name: file} for the checkpoint options given on the command line."""
    return {name: getattr(args, opt) for opt, name in CHECKPOINT_OPTIONS.items() if getattr(args, opt, None)}


def register_cli(subparsers, open_store: OpenStore, env_var: str) -> argparse.ArgumentParser:
    """Add `weights {list,download,verify,import}` to argparse subparsers; handlers return exit codes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--weights-dir", metavar="DIR", default=argparse.SUPPRESS,
                        help=f"the weight store (default: ${env_var}, else the user cache)")
    p = subparsers.add_parser("weights", parents=[common], help="list, download, verify or import weights",
                              description="The model weights HairCLIP Studio needs.")

    def usage(args: argparse.Namespace) -> int:
        p.print_help(sys.stderr)
        return 2

    p.set_defaults(func=usage)
    sub = p.add_subparsers(dest="weights_command", metavar="{list,download,verify,import}")
    q = sub.add_parser("list", parents=[common], help="show each file's status")
    q.set_defaults(func=partial(cmd_list, open_store))
    q = sub.add_parser("download", parents=[common], help="download missing files (default: the edit set)")
    q.add_argument("names", nargs="*", metavar="NAME")
    q.add_argument("--all", action="store_true", help="also the files only needed for training")
    q.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=partial(cmd_download, open_store))
    q = sub.add_parser("verify", parents=[common], help="re-hash files fully and compare with the manifest")
    q.add_argument("names", nargs="*", metavar="NAME")
    q.set_defaults(func=partial(cmd_verify, open_store))
    q = sub.add_parser("import", parents=[common], help="copy weight files found under DIR into the store")
    q.add_argument("dir", metavar="DIR")
    q.set_defaults(func=partial(cmd_import, open_store))
    return p


def _human(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    k = min(int(math.log10(n)) // 3, 3)
    return f"{n / 1000 ** k:.1f} {('kB', 'MB', 'GB')[k - 1]}"


def _checksum_kind(e: WeightEntry) -> str:
    return "pinned" if e.pinned else "unpinned" if e.sha256 else "first use"


def _unknown(store: WeightStore, names: Iterable[str]) -> int:
    bad = [n for n in names if n not in store.entries]
    if bad:
        print(f"unknown weight file(s): {', '.join(bad)}; known: {', '.join(store.entries)}", file=sys.stderr)
    return 2 if bad else 0


def cmd_list(open_store: OpenStore, args: argparse.Namespace) -> int:
    store = open_store(getattr(args, "weights_dir", None))
    checks = [store.check(n) for n in store.entries]
    rows = [("NAME", "STATUS", "SIZE", "CHECKSUM", "NEEDED FOR", "PURPOSE")]
    for e, c in zip(store.entries.values(), checks, strict=True):
        size = _human(e.size) if e.size is not None else f"~{e.size_hint}" if e.size_hint else "?"
        rows.append((e.name, c.status, size, _checksum_kind(e), ",".join(e.needed_for), e.purpose))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    print(f"weight store: {store.root}")
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)) + "  " + r[5])
    for c in checks:
        if c.status in ("corrupt", "unverified"):
            print(f"{c.name}: {c.status}: {c.detail}")
    if any(not e.pinned and e.sha256 for e in store.entries.values()):
        print("unpinned: the sha256 comes from the reference notes and is not yet confirmed by this project; "
              "files are still checked against it.")
    if any(c.status == "missing" for c in checks):
        print(f"get missing files with:  {store.command('download', '[NAME...]')}\n"
              f"                    or:  {store.command('import', 'DIR')}")
    return 0


def cmd_download(open_store: OpenStore, args: argparse.Namespace) -> int:
    store = open_store(getattr(args, "weights_dir", None))
    if rc := _unknown(store, args.names):
        return rc
    names = args.names or [n for n, e in store.entries.items() if args.all or "edit" in e.needed_for]
    failed = 0
    for name in names:
        if store.status(name) in ("ok", "unverified"):
            print(f"{name}: already in the store")
            continue
        try:
            path = store.download(name, progress=not args.quiet)
        except HairclipError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        c = store.check(name)
        print(f"{name}: {c.status} -> {path}" + (f" ({c.detail})" if c.status == "unverified" else ""))
    return 1 if failed else 0


def cmd_verify(open_store: OpenStore, args: argparse.Namespace) -> int:
    store = open_store(getattr(args, "weights_dir", None))
    if rc := _unknown(store, args.names):
        return rc
    checks = store.verify(args.names or None)
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"{c.name.ljust(width)}  {c.status:<10}  {c.detail}".rstrip())
    bad = [c for c in checks if c.status == "corrupt" or (args.names and c.status == "missing")]
    return 1 if bad else 0


def cmd_import(open_store: OpenStore, args: argparse.Namespace) -> int:
    store = open_store(getattr(args, "weights_dir", None))
    try:
        report = store.import_dir(args.dir)
    except HairclipError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, src in report.taken:
        print(f"took     {name}  from {src}")
    for src, why in report.skipped:
        print(f"skipped  {src}: {why}")
    for src, why in report.rejected:
        print(f"REJECTED {src}: {why}", file=sys.stderr)
    if not (report.taken or report.skipped or report.rejected):
        print(f"no weight files under {args.dir} (looking for: {', '.join(store.entries)})", file=sys.stderr)
        return 1
    return 1 if report.rejected else 0
