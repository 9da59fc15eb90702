"""Key handling for the server: where keys live, writing them, and when an endpoint needs them.

The file layout itself is defined once in `hairclip_shared.keys`, which the client reads too.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
from pathlib import Path

from hairclip_shared.keys import AUTHORIZED, CLIENTS, SERVER_PUBLIC, SERVER_SECRET, client_secret_path

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


def default_keys_dir() -> Path:
    import platformdirs

    return platformdirs.user_config_path("hairclip-studio") / "keys"


def generate_keys(keys_dir: Path, client: str = "client", force: bool = False) -> dict[str, Path]:
    """Server keypair (once) plus one client keypair whose public half goes into authorized_clients/."""
    import zmq.auth

    if not _NAME.match(client):
        raise ValueError(f"client name {client!r} must be 1-64 characters of A-Z a-z 0-9 _ -")
    clients, authorized = keys_dir / CLIENTS, keys_dir / AUTHORIZED
    for d in (keys_dir, clients, authorized):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o700)
    if force or not (keys_dir / SERVER_SECRET).exists():
        zmq.auth.create_certificates(keys_dir, "server")  # SERVER_PUBLIC and SERVER_SECRET
    if client_secret_path(keys_dir, client).exists() and not force:
        raise FileExistsError(f"{client_secret_path(keys_dir, client)} exists; pass --force to replace it")
    public, secret = zmq.auth.create_certificates(clients, client)
    shutil.copyfile(public, authorized / f"{client}.key")
    return {"server_public": keys_dir / SERVER_PUBLIC, "client_secret": Path(secret),
            "authorized": authorized / f"{client}.key"}


def is_local(endpoint: str) -> bool:
    """Only loopback TCP, ipc and inproc count as local; anything else needs CURVE."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name or a host name: may be reachable from outside


def check_bind(endpoint: str, keys_dir: Path | None) -> None:
    """Refuse an endpoint beyond loopback without keys, and keys that are not all there."""
    if keys_dir is None and not is_local(endpoint):
        raise ValueError(f"Refusing to bind to {endpoint} without CURVE keys: anyone on the network could "
                         "send jobs. Run `hairclip keys` and pass --keys-dir, or bind to tcp://127.0.0.1.")
    if keys_dir is not None:
        for need in (keys_dir / SERVER_SECRET, keys_dir / AUTHORIZED):
            if not need.exists():
                raise ValueError(f"{need} does not exist; run `hairclip keys --dir {keys_dir}`.")
