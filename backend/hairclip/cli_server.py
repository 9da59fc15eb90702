"""The server's commands: `hairclip serve`, `hairclip status` and `hairclip keys`.

`serve` gets its engine from a factory; the command line injects the model pipeline
(`hairclip.engine.make_engine`, imported only when serving, since it brings torch), tests inject doubles.
`status` is a client of a running server, so it alone uses `hairclip_shared.client`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from hairclip import precision
from hairclip.engine_api import Engine
from hairclip.jobqueue import MiB
from hairclip.keys import check_bind, default_keys_dir, generate_keys
from hairclip.pipeline import DETECTORS
from hairclip.server import serve
from hairclip.weights import add_checkpoint_options
from hairclip_shared.client import Client
from hairclip_shared.keys import CurveKeys
from hairclip_shared.protocol import DEFAULT_ENDPOINT, AuthFailed, HairclipError, Limits

log = logging.getLogger("hairclip.server")
EngineFactory = Callable[[argparse.Namespace], Engine]


def pipeline_engine(args: argparse.Namespace) -> Engine:
    """The real engine, from --device, --weights-dir, --random-tiny and --preload."""
    from hairclip.engine import make_engine  # torch and the models load here, not at import

    return make_engine(args)


def register_cli(subparsers: argparse._SubParsersAction, engine_factory: EngineFactory = pipeline_engine) -> None:
    """Add `serve`, `status` and `keys`; each sets args.func(args) -> exit code."""
    d = Limits()
    p = subparsers.add_parser("serve", help="run the HairCLIP server")
    p.add_argument("--bind", default=DEFAULT_ENDPOINT, help=f"ZeroMQ endpoint (default {DEFAULT_ENDPOINT})")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", default="auto", choices=precision.CHOICES, help=precision.HELP)
    p.add_argument("--weights-dir", type=Path, default=None, help="where the model weights are")
    p.add_argument("--preload", action="store_true", help="warm the models up before serving the first job")
    p.add_argument("--no-download", action="store_true", help="fail instead of fetching missing weights")
    add_checkpoint_options(p)
    p.add_argument("--random-tiny", action="store_true",
                   help="serve small randomly initialised networks instead of the weights: results are noise; "
                        "for tests and demos of the plug-ins")
    p.add_argument("--detector", choices=DETECTORS, default=None,
                   help="how faces are found: dlib (default; the official alignment, with S3FD+FAN trying when "
                        "dlib finds nothing, if their weights are present), fan, or centre (one face in the middle; "
                        "the default with --random-tiny)")
    p.add_argument("--keys-dir", type=Path, default=None,
                   help="enable CURVE with the keys `hairclip keys` wrote (needed beyond loopback)")
    p.add_argument("--lease", type=float, default=d.lease_s, help="seconds a silent client keeps its jobs")
    p.add_argument("--max-queue", type=int, default=d.max_queue, help="jobs that may wait; more get 'busy'")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=lambda args: _cmd_serve(args, engine_factory))

    p = subparsers.add_parser("status", help="show what the running server says about itself")
    p.add_argument("--connect", default=DEFAULT_ENDPOINT)
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--keys-dir", type=Path, default=None, help="connect with CURVE keys from this folder")
    p.add_argument("--key-name", default="client")
    p.set_defaults(func=_cmd_status)

    p = subparsers.add_parser("keys", help="generate CURVE keys for a server reachable beyond loopback")
    p.add_argument("--dir", type=Path, default=None, help="default: the user config folder")
    p.add_argument("--client", default="client", help="name of the client keypair to add")
    p.add_argument("--force", action="store_true", help="replace existing keys")
    p.set_defaults(func=_cmd_keys)


def _cmd_serve(args: argparse.Namespace, engine_factory: EngineFactory) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        check_bind(args.bind, args.keys_dir)
    except ValueError as e:
        print(f"hairclip serve: {e}", file=sys.stderr)
        return 2
    limits = replace(Limits(), lease_s=args.lease, max_queue=args.max_queue)
    log.info("starting the engine (device %s)", args.device)
    try:
        engine = engine_factory(args)
    except HairclipError as e:  # missing weights and the like: the message says what to do
        print(f"hairclip serve: the engine did not start: {e.message}", file=sys.stderr)
        return 1
    except Exception as e:
        log.exception("the engine did not start")
        print(f"hairclip serve: the engine did not start: {e}", file=sys.stderr)
        return 1
    return serve(engine, args.bind, limits=limits, keys_dir=args.keys_dir)


def _wrap_names(names: list[str], width: int = 88) -> list[str]:
    """Comma-separated lines of at most ``width`` characters that never split a name."""
    lines: list[str] = []
    for name in names:
        if lines and len(lines[-1]) + len(name) + 2 <= width:
            lines[-1] += f", {name}"
        else:
            lines.append(name)
    return [line + "," for line in lines[:-1]] + lines[-1:]


def _cmd_status(args: argparse.Namespace) -> int:
    try:
        keys = CurveKeys.from_dir(args.keys_dir, args.key_name) if args.keys_dir else None
    except (OSError, ValueError) as e:
        print(f"hairclip status: cannot read the CURVE keys in {args.keys_dir}: {e}", file=sys.stderr)
        return 1
    try:
        with Client(args.connect, timeout=args.timeout, keys=keys, name="hairclip status") as client:
            info = client.info
    except AuthFailed as e:  # the server is up: telling the user to start it would mislead
        print(f"hairclip status: {e.message}", file=sys.stderr)
        return 1
    except HairclipError as e:
        print(f"The HairCLIP server is not running at {args.connect}: {e.message}\n"
              "Start it with: hairclip serve", file=sys.stderr)
        return 1
    lim = info.limits
    print(f"HairCLIP server {info.server} at {args.connect} (protocol {info.protocol})")
    print(f"device:     {info.device}")
    print("models:     " + (", ".join(f"{k} {v}" for k, v in info.models.items()) or "none"))
    for name, w in info.weights.items():
        print(f"  {name}: {w['path']} (sha256 {w['sha256']})")
    print(f"hairstyles: {len(info.hairstyles)} trained" + (":" if info.hairstyles else ""))
    for line in _wrap_names(info.hairstyles):  # all of them: the README points here for the list
        print(" " * 12 + line)
    print(f"colours:    {', '.join(info.colours) or 'none listed'}")
    print(f"limits:     {lim.max_pixels} px per image, {lim.max_frame_bytes // MiB} MiB per frame, "
          f"queue {lim.max_queue}, lease {lim.lease_s:g} s")
    return 0


def _cmd_keys(args: argparse.Namespace) -> int:
    keys_dir = args.dir or default_keys_dir()
    try:
        paths = generate_keys(keys_dir, args.client, args.force)
    except (ValueError, FileExistsError) as e:
        print(f"hairclip keys: {e}", file=sys.stderr)
        return 1
    print(f"Keys in {keys_dir}:\n"
          f"  server public key: {paths['server_public']} (give it to every client)\n"
          f"  client '{args.client}' secret key: {paths['client_secret']} (keep it private)\n"
          f"  authorised: {paths['authorized']}\n"
          f"Serve with: hairclip serve --bind tcp://0.0.0.0:5570 --keys-dir {keys_dir}")
    return 0
