"""What the HairCLIP Studio plug-ins and the server share: the wire protocol and the client.

Pure Python apart from pyzmq and msgpack, so it runs inside Krita's and GIMP's embedded Pythons.
"""

from .client import Client, Job
from .keys import CurveKeys
from .protocol import (
    DEFAULT_ENDPOINT,
    PROTOCOL_VERSION,
    STRENGTH_RANGE,
    Accepted,
    AuthFailed,
    BadImage,
    BadRequest,
    Busy,
    Cancelled,
    EditRequest,
    EditResult,
    Face,
    HairclipError,
    Image,
    JobFailed,
    Limits,
    NotReady,
    Progress,
    ProtocolError,
    Rect,
    RerenderRequest,
    ServerInfo,
    ServerNotRunning,
    Timeout,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_ENDPOINT", "PROTOCOL_VERSION", "STRENGTH_RANGE", "Accepted", "AuthFailed", "BadImage", "BadRequest",
    "Busy", "Cancelled", "Client", "CurveKeys", "EditRequest", "EditResult", "Face", "HairclipError", "Image", "Job",
    "JobFailed", "Limits", "NotReady", "Progress", "ProtocolError", "Rect", "RerenderRequest", "ServerInfo",
    "ServerNotRunning", "Timeout",
]
