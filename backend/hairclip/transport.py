"""The server's transport: one ZeroMQ ROUTER, CURVE authentication, multipart framing and a wake-up pipe.

ZeroMQ sockets are not thread-safe: everything here but wake() belongs to the socket thread. Other
threads call wake() to interrupt its poll. Every frame is bounded by libzmq itself (ZMQ_MAXMSGSIZE), and
a message with too many parts keeps only the first ones. Nothing here knows about jobs.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import zmq

from hairclip.jobqueue import peer_name
from hairclip_shared.keys import AUTHORIZED, load_server_keys
from hairclip_shared.protocol import Limits, pack

log = logging.getLogger("hairclip.server")


class Transport:
    """Owns the server's sockets: receives bounded multipart messages and sends replies to routing ids."""

    def __init__(self, bind: str, limits: Limits, keys_dir: Path | None = None):
        self.limits = limits
        self._ctx = zmq.Context()
        self._auth = self._router = self._wake_rx = self._wake_tx = None
        self._wake_lock = threading.Lock()
        self._closed = False
        try:
            router = self._router = self._ctx.socket(zmq.ROUTER)
            router.maxmsgsize = limits.max_frame_bytes  # libzmq drops a peer that sends a larger frame
            router.router_mandatory = True  # a reply to a vanished client raises, so we can log it
            router.router_handover = True
            router.linger = 500
            if keys_dir is not None:
                from zmq.auth.thread import ThreadAuthenticator

                public, secret = load_server_keys(keys_dir)
                self._auth = ThreadAuthenticator(self._ctx, log=logging.getLogger("hairclip.server.auth"))
                self._auth.start()
                self._auth.configure_curve(domain="*", location=str(keys_dir / AUTHORIZED))
                router.curve_server = True
                router.curve_publickey, router.curve_secretkey = public, secret
            router.bind(bind)
            self.endpoint: str = router.last_endpoint.decode()  # with the port the OS chose
            wake = f"inproc://hairclip-server-wake-{id(self)}"
            self._wake_rx = self._ctx.socket(zmq.PAIR)
            self._wake_rx.bind(wake)
            self._wake_tx = self._ctx.socket(zmq.PAIR)
            self._wake_tx.connect(wake)
        except BaseException:
            self.close()
            raise
        self._poller = zmq.Poller()
        self._poller.register(self._router, zmq.POLLIN)
        self._poller.register(self._wake_rx, zmq.POLLIN)

    @property
    def curve(self) -> bool:
        return self._auth is not None

    def poll(self, timeout_ms: int) -> bool:
        """Wait for a message or a wake-up; True when messages are waiting."""
        ready = dict(self._poller.poll(timeout_ms))
        if self._wake_rx in ready:
            while self._wake_rx.poll(0):
                self._wake_rx.recv()
        return self._router in ready

    def recv(self) -> tuple[bytes, list[zmq.Frame], int] | None:
        """One message as (peer, header + at most max_frames parts, parts dropped unread); None if none waits."""
        try:
            first = self._router.recv(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        parts, extra, more = [], 0, first.more
        while more:
            frame = self._router.recv(copy=False)
            more = frame.more
            if len(parts) <= self.limits.max_frames:
                parts.append(frame)
            else:
                extra += 1
        return first.bytes, parts, extra

    def send(self, peer: bytes, header: dict, frames: list | tuple = ()) -> None:
        """Send without blocking; a client that is gone or stopped reading is logged, not raised."""
        try:
            self._router.send_multipart([peer, pack(header), *frames], flags=zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as e:  # EHOSTUNREACH: the client is gone; EAGAIN: it stopped reading
            log.info("could not deliver %s to %s: %s", header.get("op"), peer_name(peer), e.strerror)

    def wake(self) -> None:
        """Interrupt poll(); safe from any thread, and after close()."""
        with self._wake_lock:
            if not self._closed and self._wake_tx is not None:
                try:
                    self._wake_tx.send(b"", zmq.NOBLOCK)
                except zmq.Again:
                    pass  # wake-ups are pending already

    def close(self) -> None:
        with self._wake_lock:
            self._closed = True
            for sock in (self._router, self._wake_rx, self._wake_tx):
                if sock is not None:
                    sock.close()
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()
