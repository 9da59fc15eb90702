"""Errors that are the user's to fix (a missing file, bad input). They carry a stable ``code`` and a
``message`` to show as is; the one base class lives in the wire protocol, so the server forwards them."""

from hairclip_shared.protocol import HairclipError

__all__ = ["HairclipError"]
