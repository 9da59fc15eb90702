"""Stage 1's vocabulary: a `Face` (68 landmarks, numbered as dlib numbers them), the `FaceDetector` protocol the
detectors in face_dlib and face_fan implement, `KnownFaces`, and the errors and sizes every detector shares.

Coordinates are index coordinates: the centre of pixel (column i, row j) is (i, j), as with dlib.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hairclip.errors import HairclipError
from hairclip.nets.fan import N_LANDMARKS

DETECTOR_FILE = "s3fd-619a316812.pth"  # names in the weight store: the published file names
LANDMARK_FILE = "2DFAN4-11f355bf06.pth.tar"

EYE_LEFT, EYE_RIGHT = slice(36, 42), slice(42, 48)  # left/right as seen in the image
MOUTH_LEFT, MOUTH_RIGHT = 48, 54

# e4e encodes a 256 px crop of an alignment square of side 2*max(2|eye-eye|, 1.8|eye-mouth|) source pixels.
# Below 128 px that crop is upsampled more than 2x: the encoder then sees blur and the edit is pasted
# back at a resolution lower than its own detail. 128 px is an eye distance of about 32 px.
MIN_QUAD_SIDE = 128.0

# Boxes are searched in the photo shrunk to this longer side (landmarks are then found at full resolution), the
# same on every device. dlib's HOG, one upsample, grows with the pixel count: bench/bench_detect.py measured
# 3.3 s at 1024 px against 30 s at 3072 px for the official full-size search, on a heavily loaded 2-core machine;
# at 1024 px it still finds faces down to about 40 px (its 80 px window, upsampled once), i.e. 160 px in a
# 4000 px photo. Photos no larger are searched as they are, exactly as the official code does.
DETECT_SIDE = 1024


class NoFaceFound(HairclipError):
    """No face in the photo, in the selection, or at the index that was asked for."""

    code = "no_face"


class FaceTooSmall(HairclipError):
    """The face is too small in the photo to be encoded without heavy upsampling."""

    code = "face_too_small"


class DetectorUnavailable(HairclipError):
    """The asked-for detector cannot run here (a missing package or file)."""

    code = "detector_unavailable"


# ---------------------------------------------------------------------------------------------- faces


@dataclass(frozen=True, eq=False)
class Face:
    """One face found in a photo: its 68 landmarks, its detector box, the score and the detector's name.

    Landmarks are [68, 2] float64 (x, y), the box (x0, y0, x1, y1), the score on that detector's own scale, and
    the source ("dlib", "fan", ...) is for logs and users.
    """

    landmarks: np.ndarray
    box: tuple[float, float, float, float]
    score: float = 1.0
    source: str = ""

    def __post_init__(self):
        lm = np.array(self.landmarks, dtype=np.float64)  # a private copy: a Face never changes under its owner
        if lm.shape != (N_LANDMARKS, 2) or not np.isfinite(lm).all():
            raise ValueError(f"landmarks must be 68 finite (x, y) points, got shape {lm.shape}")
        lm.flags.writeable = False
        object.__setattr__(self, "landmarks", lm)
        object.__setattr__(self, "box", tuple(float(v) for v in self.box))
        object.__setattr__(self, "score", float(self.score))

    @property
    def eyes(self) -> tuple[np.ndarray, np.ndarray]:
        return self.landmarks[EYE_LEFT].mean(0), self.landmarks[EYE_RIGHT].mean(0)

    @property
    def mouth(self) -> np.ndarray:
        return (self.landmarks[MOUTH_LEFT] + self.landmarks[MOUTH_RIGHT]) / 2

    @property
    def centre(self) -> np.ndarray:
        """Halfway between the eye midpoint and the mouth midpoint: the points alignment uses, not the box."""
        e_l, e_r = self.eyes
        return ((e_l + e_r) / 2 + self.mouth) / 2

    @property
    def quad_side(self) -> float:
        """Side in source pixels of the square the FFHQ/e4e alignment cuts out: 2*max(2|d_e|, 1.8|d_m|)."""
        e_l, e_r = self.eyes
        d_e, d_m = e_r - e_l, self.mouth - (e_l + e_r) / 2
        return 2 * max(2.0 * math.hypot(*d_e), 1.8 * math.hypot(*d_m))


class FaceDetector(Protocol):
    """Anything that finds faces, with their landmarks, in an RGB photo."""

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces in an RGB uint8 image [H, W, 3], in no particular order."""
        ...


class KnownFaces:
    """A detector that returns the faces it was given: for tests, and for landmarks a client already has."""

    name = "given"

    def __init__(self, faces: Sequence[Face]):
        self.faces = list(faces)

    def detect(self, image: np.ndarray) -> list[Face]:
        check_rgb_image(image)
        return list(self.faces)


def check_rgb_image(image: np.ndarray) -> None:
    """Every detector takes an RGB uint8 image [H, W, 3]; anything else is a programming error."""
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {got}")
