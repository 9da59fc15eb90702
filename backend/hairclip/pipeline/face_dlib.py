"""The official face detector: dlib's HOG detector and 68-point shape predictor, called as HairCLIP's predict.py
and e4e's alignment call them, on a photo shrunk to at most `DETECT_SIDE` for the box search.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hairclip.pipeline.face_record import DETECT_SIDE, DetectorUnavailable, Face, check_rgb_image

# ---------------------------------------------------------------------------------------------- dlib


# dlib's HOG scores real frontal faces around 1 (the astronaut's face: 0.84-1.57 when turned by up to 20 degrees
# or shrunk to 200 px) and its false alarms lower (0.1-0.5 in the same pictures: a round mission patch scores
# 0.12). The official code keeps every box over 0; we drop boxes under this score, unless none passes, in which
# case the best box is kept, so a photo of one hard-to-see face is still edited.
DLIB_MIN_SCORE = 0.3


def dlib_predictor_path() -> Path:
    """dlib's 68-point predictor, ``shape_predictor_68_face_landmarks.dat``, as the face_recognition_models
    package installs it (a registry package holding only the data files: nothing is downloaded at run time)."""
    try:
        import warnings

        with warnings.catch_warnings():  # it imports pkg_resources, which warns about itself
            warnings.simplefilter("ignore")
            import face_recognition_models
    except ImportError as exc:
        raise DetectorUnavailable("dlib's 68-point landmark file comes with the face_recognition_models package, "
                                  "which is not installed: pip install face_recognition_models "
                                  "(or use --detector fan)") from exc
    return Path(face_recognition_models.pose_predictor_model_location())


@functools.cache
def _shape_predictor(path: str):
    """Read once per process: the 100 MB file takes seconds to parse, and the predictor is read-only."""
    import dlib

    return dlib.shape_predictor(path)


def shrink_for_detection(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float, float]:
    """``image`` reduced to at most ``max_side`` on its longer side (PIL's antialiased bilinear, on the CPU, so the
    same on every machine), with the x and y factors from its pixels back to the photo's. Small photos pass as is."""
    from PIL import Image

    h, w = image.shape[:2]
    f = max_side / max(h, w)
    if f >= 1:
        return image, 1.0, 1.0
    size = (max(1, round(w * f)), max(1, round(h * f)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    return small, w / size[0], h / size[1]


class DlibDetector:
    """dlib's HOG face detector, called as the official code calls it (``detector(rgb, 1)``: one upsample), and
    its 68-point shape predictor: the landmarks FFHQ, e4e and HairCLIP align with.

    Photos over ``max_side`` are searched shrunk and the boxes scaled back (see `DETECT_SIDE`); the landmarks are
    always predicted in the full-resolution photo. Boxes are (left, top, right, bottom), dlib's inclusive pixels.
    """

    name = "dlib"

    def __init__(self, predictor_path: str | Path | None = None, *, upsample: int = 1,
                 max_side: int = DETECT_SIDE, min_score: float = DLIB_MIN_SCORE):
        try:
            import dlib
        except ImportError as exc:
            raise DetectorUnavailable("the dlib face detector is not installed: pip install dlib-bin "
                                      "(binary wheels, no compiling), or use --detector fan") from exc
        path = Path(predictor_path) if predictor_path else dlib_predictor_path()
        if not path.is_file():
            raise DetectorUnavailable(f"{path}: dlib's landmark file is missing; reinstall face_recognition_models")
        self._dlib = dlib
        self.hog = dlib.get_frontal_face_detector()
        self.predictor = _shape_predictor(str(path.resolve()))
        self.upsample, self.max_side, self.min_score = upsample, max_side, min_score

    def boxes(self, image: np.ndarray) -> np.ndarray:
        """Every box dlib reports (score over 0, as in the official code) [N, 5]: left, top, right, bottom (photo
        index coordinates, integers) and score; best first, equal scores in dlib's order."""
        check_rgb_image(image)
        small, sx, sy = shrink_for_detection(np.ascontiguousarray(image), self.max_side)
        rects, scores, _ = self.hog.run(small, self.upsample, 0.0)
        rows = [(r.left(), r.top(), r.right(), r.bottom(), s) for r, s in zip(rects, scores, strict=True)]
        dets = np.array(rows, dtype=np.float64).reshape(-1, 5)
        if sx != 1.0 or sy != 1.0:  # pixel centres back to the photo's pixel centres
            dets[:, [0, 2]] = np.rint((dets[:, [0, 2]] + 0.5) * sx - 0.5)
            dets[:, [1, 3]] = np.rint((dets[:, [1, 3]] + 0.5) * sy - 0.5)
        return dets[np.argsort(-dets[:, 4], kind="stable")]

    def landmarks(self, image: np.ndarray, box: Sequence[float]) -> np.ndarray:
        """The predictor's 68 points [68, 2] (integers, as dlib gives them) for one box (left, top, right, bottom)."""
        rect = self._dlib.rectangle(*(int(v) for v in box[:4]))
        shape = self.predictor(np.ascontiguousarray(image), rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)

    def detect(self, image: np.ndarray) -> list[Face]:
        dets = self.boxes(image)
        keep = dets[dets[:, 4] >= self.min_score] if len(dets) else dets
        if len(dets) and not len(keep):
            keep = dets[:1]
        return [Face(self.landmarks(image, d), tuple(d[:4]), float(d[4]), self.name) for d in keep]
