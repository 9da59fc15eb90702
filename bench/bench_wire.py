"""How much does the wire cost? Median round trip of a 4096x4096 RGBA u8 layer (64 MiB) on loopback.

It uses the protocol's `echo` op: the client sends the layer exactly as a plug-in would send an edit (header plus
a zero-copy pixel frame), and the server validates the declaration and sends the same frame back without copying it.
There is no model work at all. Its baseline, in the same run, is a plain memcpy of the same 64 MiB
(`bytes(bytearray)`, and numpy's copy).

    PYTHONPATH=backend:shared .venv/bin/python bench/bench_wire.py [--repeat 15] [--server process|thread]

By default the server runs in a child process, so the two ends do not share one GIL, as with the real backend.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from timing import median_s  # bench/timing.py: the script's folder is on sys.path

from hairclip.engine_api import EngineInfo
from hairclip.server import Server
from hairclip_shared import Client, Image, JobFailed

W = H = 4096


class NoModels:
    """The server needs an Engine for `hello`; echo never reaches it, and edits are refused."""

    def info(self) -> EngineInfo:
        return EngineInfo("none (wire benchmark)", {}, [], [])

    def edit(self, request, ctx):
        raise JobFailed("This benchmark server has no models.", "model_missing")

    rerender = edit




def serve(ready_file: str) -> None:
    with Server(NoModels(), "tcp://127.0.0.1:*") as srv:
        Path(ready_file).write_text(srv.endpoint)
        while True:
            time.sleep(3600)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--server", choices=("process", "thread"), default="process")
    ap.add_argument("--serve", metavar="READY_FILE", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return serve(args.serve)

    layer = np.random.default_rng(0).integers(0, 256, (H, W, 4), dtype=np.uint8)
    raw = bytearray(layer.tobytes())
    image = Image(W, H, bytes(raw), "RGBA")
    nbytes = len(raw)

    child = srv = None
    if args.server == "process":
        ready = Path(f"/tmp/bench_wire_{os.getpid()}.endpoint")
        ready.unlink(missing_ok=True)
        child = subprocess.Popen([sys.executable, __file__, "--serve", str(ready)])
        deadline = time.monotonic() + 30
        while not (ready.exists() and ready.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        endpoint = ready.read_text()
        ready.unlink()
    else:
        srv = Server(NoModels(), "tcp://127.0.0.1:*").__enter__()
        endpoint = srv.endpoint
    try:
        with Client(endpoint, timeout=30) as client:
            back = client.echo({"layer": image})["layer"]  # warm up, and check the bytes once
            assert back.tobytes() == image.data, "echo changed the pixels"
            client.echo({"layer": image})
            rtt = median_s(lambda: client.echo({"layer": image}), args.repeat)
            ping = median_s(client.ping, args.repeat)
    finally:
        if child is not None:
            child.terminate()
            child.wait(10)
        if srv is not None:
            srv.__exit__(None, None, None)

    copy_bytes = median_s(lambda: bytes(raw), args.repeat)
    copy_numpy = median_s(layer.copy, args.repeat)
    mib = nbytes / (1 << 20)
    print(f"layer: {W}x{H} RGBA u8 = {mib:.0f} MiB; server in a {args.server}; {args.repeat} repeats, medians")
    print(f"  echo round trip (send + receive): {rtt * 1e3:8.1f} ms  ({2 * mib / rtt / 1024:.2f} GiB/s moved)")
    print(f"  memcpy bytes(bytearray):          {copy_bytes * 1e3:8.1f} ms")
    print(f"  memcpy numpy copy:                {copy_numpy * 1e3:8.1f} ms")
    print(f"  ping round trip:                  {ping * 1e3:8.2f} ms")
    print(f"  ratio echo / bytes memcpy:        {rtt / copy_bytes:8.1f}x")
    print(f"  ratio echo / numpy memcpy:        {rtt / copy_numpy:8.1f}x")


if __name__ == "__main__":
    main()
