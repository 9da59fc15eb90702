"""Stage 1: the faces in the user's photo and their 68 landmarks, numbered as dlib numbers them (iBUG 300-W).

The alignment stage uses only the eye centres (points 36-41 and 42-47) and the mouth corners (48, 54).
Any `FaceDetector` will do; `KnownFaces` replays given faces (tests, and callers that have them).
`DlibDetector` is the official one: HairCLIP's predict.py, e4e's alignment and FFHQ itself find faces with
dlib's HOG detector and put 68 landmarks in them with dlib's shape predictor; the default, so every crop is the
crop the networks were trained on. `FanDetector` runs S3FD (boxes) then 2D-FAN-4 (landmarks), the networks
published with the face-alignment package; it finds profiles that dlib misses, so it is the fallback. Its
classes rebuild the exact state-dict layouts, so the published weight files load unchanged, but the package
itself is not used: it pulls numba, llvmlite, opencv-python and scikit-image (about 450 MB installed), and it
downloads its weights into the torch hub cache at run time. Pre- and post-processing follow face-alignment
1.5.0 number for number; only its final rounding of the landmarks to integers is left out.

Every detector searches a photo of at most `DETECT_SIDE` pixels on its longer side, on every device, so one
photo gives the same faces on the CPU and on a GPU.

Coordinates are index coordinates: the centre of pixel (column i, row j) is (i, j), as with dlib.

This module is the stage: which faces to edit (`select_faces`) and how detectors combine. The `Face` record and
the shared errors are in face_record, the detectors in face_dlib and face_fan; every name is importable from here.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from hairclip.nets.fan import FAN, N_LANDMARKS, ConvBlock, HourGlass  # noqa: F401  (part of this stage's API)
from hairclip.nets.s3fd import S3FD, L2Norm  # noqa: F401
from hairclip.pipeline.face_dlib import (  # noqa: F401
    DLIB_MIN_SCORE,
    DlibDetector,
    dlib_predictor_path,
    shrink_for_detection,
)
from hairclip.pipeline.face_fan import (  # noqa: F401
    FAN_CENTRE_SHIFT,
    FAN_REFERENCE_SCALE,
    MIRROR,
    S3FD_MEAN_BGR,
    FanDetector,
    crop_face,
    crop_frame,
    decode_boxes,
    heatmap_points,
    nms,
)
from hairclip.pipeline.face_record import (  # noqa: F401
    DETECT_SIDE,
    DETECTOR_FILE,
    LANDMARK_FILE,
    MIN_QUAD_SIDE,
    DetectorUnavailable,
    Face,
    FaceDetector,
    FaceTooSmall,
    KnownFaces,
    NoFaceFound,
)

log = logging.getLogger("hairclip.faces")


# ---------------------------------------------------------------------------------------------- selection

Rect = tuple[float, float, float, float]  # x, y, width, height in pixels, as editors describe selections
Mode = Literal["all", "largest"] | int


def left_to_right(faces: Sequence[Face]) -> list[int]:
    """Indices of ``faces`` ordered by the x of their centres, then y, then list position: what a user counts."""
    return sorted(range(len(faces)), key=lambda i: (faces[i].centre[0], faces[i].centre[1]))


def in_selection(point: np.ndarray, selection: Rect | np.ndarray) -> bool:
    """Whether the pixel that contains ``point`` is selected: inside the rectangle's pixels, or True in the mask."""
    col, row = (math.floor(v + 0.5) for v in point)  # index coordinates: pixel k spans [k - 0.5, k + 0.5)
    if isinstance(selection, np.ndarray) and selection.ndim == 2:
        h, w = selection.shape
        return 0 <= row < h and 0 <= col < w and bool(selection[row, col])
    x, y, w, h = selection
    return x <= col < x + w and y <= row < y + h


def select_faces(faces: Sequence[Face], mode: Mode = "all", selection: Rect | np.ndarray | None = None, *,
                 min_side: float = MIN_QUAD_SIDE) -> list[int]:
    """Indices into ``faces`` of the faces to edit, left to right (see `left_to_right`).

    A face belongs to ``selection`` (a rectangle (x, y, w, h) or a bool mask [H, W]) when its `Face.centre`
    does. Of those, ``mode`` takes all, the largest (by `Face.quad_side`), or the n-th from the left
    (0-based). Faces smaller than ``min_side`` are skipped by 'all' and refused when picked singly;
    `NoFaceFound` or `FaceTooSmall` says which when nothing is left.
    """
    order = [i for i in left_to_right(faces) if selection is None or in_selection(faces[i].centre, selection)]
    where = "in the photo" if selection is None else "inside the selection"
    if not order:
        raise NoFaceFound(f"no face was found {where}")
    if mode == "all":
        chosen = [i for i in order if faces[i].quad_side >= min_side]
        if not chosen:
            raise FaceTooSmall(_too_small(faces[max(order, key=lambda i: faces[i].quad_side)], min_side, len(order)))
        return chosen
    if mode == "largest":
        pick = max(order, key=lambda i: faces[i].quad_side)  # max keeps the leftmost of equals
    elif isinstance(mode, int | np.integer) and not isinstance(mode, bool):
        if not 0 <= mode < len(order):
            raise NoFaceFound(f"face {mode} (counting from 0, left to right) was asked for, "
                              f"but {len(order)} face(s) were found {where}")
        pick = order[mode]
    else:
        raise ValueError(f"mode must be 'all', 'largest' or a face index, got {mode!r}")
    if faces[pick].quad_side < min_side:
        raise FaceTooSmall(_too_small(faces[pick], min_side, 1))
    return [pick]


def _too_small(face: Face, min_side: float, n: int) -> str:
    which = "the face is" if n == 1 else f"all {n} faces are too small; the largest is"
    return (f"{which} {face.quad_side:.0f} px across (its alignment square); at least {min_side:.0f} px is needed "
            "so that the 256 px encoder input is not upsampled more than 2x. Use a higher-resolution photo.")


# ---------------------------------------------------------------------------------------------- composition


class LazyDetector:
    """Builds its detector on first use: edits that never detect (aligned crops) need none of its files."""

    def __init__(self, build: Callable[[], FaceDetector], name: str):
        self.build, self._name = build, name
        self._detector: FaceDetector | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """The name it was given until it is built, then the built detector's (e.g. "dlib, then fan")."""
        return self._name if self._detector is None else _name(self._detector)

    @property
    def loaded(self) -> bool:
        return self._detector is not None

    def get(self) -> FaceDetector:
        with self._lock:
            if self._detector is None:
                log.info("loading the %s face detector", self._name)
                self._detector = self.build()
            return self._detector

    def detect(self, image: np.ndarray) -> list[Face]:
        return self.get().detect(image)


class FirstThatFinds:
    """Asks each detector in turn and returns the faces of the first that finds any.

    That is dlib, then FAN for the profiles dlib misses; each `Face.source` says which one it was.
    """

    def __init__(self, *detectors: FaceDetector):
        self.detectors = detectors
        self.name = ", then ".join(_name(d) for d in detectors)

    def detect(self, image: np.ndarray) -> list[Face]:
        for i, detector in enumerate(self.detectors):
            faces = detector.detect(image)
            if faces:
                if i:
                    log.info("%s found no face; %s found %d", _name(self.detectors[0]), _name(detector), len(faces))
                return faces
        return []


def _name(detector: FaceDetector) -> str:
    return getattr(detector, "name", type(detector).__name__)
