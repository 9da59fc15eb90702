"""CURVE key files: the folder layout `hairclip keys` writes, read by the client and the server alike.

    DIR/server.key, DIR/server.key_secret        the server's keypair
    DIR/clients/NAME.key, NAME.key_secret         one keypair per client
    DIR/authorized_clients/NAME.key               the public keys the server lets in

Lives in hairclip_shared (pyzmq only) so that the plug-ins read the same layout the backend writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SERVER_PUBLIC = "server.key"
SERVER_SECRET = "server.key_secret"
CLIENTS = "clients"
AUTHORIZED = "authorized_clients"


def client_secret_path(keys_dir: str | Path, name: str) -> Path:
    return Path(keys_dir) / CLIENTS / f"{name}.key_secret"


def load_server_keys(keys_dir: str | Path) -> tuple[bytes, bytes]:
    """The server's (public, secret) pair, Z85 bytes."""
    import zmq.auth  # only key users pay for it

    return zmq.auth.load_certificate(Path(keys_dir) / SERVER_SECRET)


@dataclass(frozen=True)
class CurveKeys:
    """A client's CURVE keys (Z85 bytes) for a server bound beyond loopback; `hairclip keys` writes them."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def from_dir(cls, keys_dir: str | Path, name: str = "client") -> CurveKeys:
        import zmq.auth

        keys_dir = Path(keys_dir)
        server_public, _ = zmq.auth.load_certificate(keys_dir / SERVER_PUBLIC)
        public, secret = zmq.auth.load_certificate(client_secret_path(keys_dir, name))
        if secret is None:
            raise ValueError(f"{client_secret_path(keys_dir, name)} holds no secret key")
        return cls(server_public, public, secret)
