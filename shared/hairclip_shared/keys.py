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
    """A client's CURVE keys (Z85 bytes) for a server bound beyond loopback; `hairclip keys` writes them.

    `secret_file` is where the client's keypair came from, so that a refusal can name it.
    """

    server_public: bytes
    public: bytes
    secret: bytes
    secret_file: Path | None = None

    @classmethod
    def from_dir(cls, keys_dir: str | Path, name: str = "client") -> CurveKeys:
        import zmq.auth

        keys_dir = Path(keys_dir)
        server_public, _ = zmq.auth.load_certificate(keys_dir / SERVER_PUBLIC)
        secret_file = client_secret_path(keys_dir, name)
        public, secret = zmq.auth.load_certificate(secret_file)
        if secret is None:
            raise ValueError(f"{secret_file} holds no secret key")
        return cls(server_public, public, secret, secret_file)

    def refused_message(self, endpoint: str) -> str:
        """Why a ZAP refusal happened and how to fix it: which key was offered, where the allow-list lives."""
        offered = (f"the client key in {self.secret_file}" if self.secret_file is not None
                   else "this client's CURVE key")
        public = self.public.decode("ascii", "replace")
        where = ""
        if self.secret_file is not None:
            keys_dir, name = self.secret_file.parent.parent, self.secret_file.name.removesuffix(".key_secret")
            where = (f" Copy {self.secret_file.with_name(name + '.key')} there, for example to "
                     f"{keys_dir / AUTHORIZED / (name + '.key')} when the server uses {keys_dir}.")
        return (f"Authentication failed: the HairCLIP server at {endpoint} is running but refused {offered} "
                f"(public key {public}). The server's allow-list is the {AUTHORIZED} folder inside the "
                f"folder it was started with (`hairclip serve --keys-dir DIR`: DIR/{AUTHORIZED}); "
                f"the key is not there.{where}")
