"""Stage 1: the faces in the user's photo and their 68 landmarks, numbered as dlib numbers them (iBUG 300-W).

The alignment stage uses only the eye centres (points 36-41 and 42-47) and the mouth corners (48, 54).
Any `FaceDetector` will do; `KnownFaces` replays given faces (tests, landmarks sent by a client).
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
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from hairclip.checkpoints import load_fan, load_s3fd
from hairclip.errors import HairclipError
from hairclip.nets.fan import FAN, N_LANDMARKS, ConvBlock, HourGlass  # noqa: F401  (part of this stage's API)
from hairclip.nets.s3fd import S3FD, L2Norm  # noqa: F401

log = logging.getLogger("hairclip.faces")

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


# ---------------------------------------------------------------------------------------------- faces


@dataclass(frozen=True, eq=False)
class Face:
    """One face: 68 landmarks [68, 2] float64 (x, y), its detector box (x0, y0, x1, y1), the detector's score
    (on that detector's own scale) and which detector found it ("dlib", "fan", ...), for logs and users."""

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
    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces in an RGB uint8 image [H, W, 3], in no particular order."""
        ...


class KnownFaces:
    """A detector that returns the faces it was given: for tests, and for landmarks a client already has."""

    name = "given"

    def __init__(self, faces: Sequence[Face]):
        self.faces = list(faces)

    def detect(self, image: np.ndarray) -> list[Face]:
        _check_image(image)
        return list(self.faces)


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


# ---------------------------------------------------------------------------------------------- S3FD


# The network is in hairclip.nets.s3fd; what follows turns its heads into boxes.


S3FD_MEAN_BGR = (104.0, 117.0, 123.0)
S3FD_CANDIDATE = 0.05  # face probability for a cell to be decoded at all
S3FD_NMS_IOU = 0.3
S3FD_VARIANCES = (0.1, 0.2)


def decode_boxes(heads: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
    """S3FD head outputs (batch 1) -> candidate boxes [N, 5] (x0, y0, x1, y1, p_face), in input pixels.

    Cell (i, j) of head k has an anchor of side 4*s centred on ((j + 0.5) s, (i + 0.5) s), s = 4 * 2**k; the
    offsets move its centre by 0.1 * offset * side and scale its sides by exp(0.2 * offset) (SSD encoding).
    """
    rows = []
    for k, (conf, loc) in enumerate(heads):
        stride = 4.0 * 2**k
        p = conf.float().softmax(1)[0, 1].cpu().numpy()
        ii, jj = np.nonzero(p > S3FD_CANDIDATE)
        off = loc[0].float().cpu().numpy()[:, ii, jj].T.astype(np.float64)
        side = 4 * stride
        centre = (np.stack([jj, ii], 1) + 0.5) * stride + off[:, :2] * S3FD_VARIANCES[0] * side
        half = side * np.exp(off[:, 2:] * S3FD_VARIANCES[1]) / 2
        rows.append(np.concatenate([centre - half, centre + half, p[ii, jj, None]], 1))
    return np.concatenate(rows, 0) if rows else np.zeros((0, 5))


def nms(dets: np.ndarray, iou: float = S3FD_NMS_IOU) -> list[int]:
    """Greedy non-maximum suppression, highest score first; areas count pixels inclusively (w + 1) as S3FD's does.

    Saturated scores (exactly 1.0) are common, so ties are broken as face-alignment breaks them (numpy's default
    sort, reversed): the same boxes survive.
    """
    x0, y0, x1, y1, score = dets.T
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    order, keep = np.argsort(score)[::-1], []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        iw = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        inter = iw * ih
        order = rest[inter / (area[i] + area[rest] - inter) <= iou]
    return keep


# ---------------------------------------------------------------------------------------------- FAN


# The network is in hairclip.nets.fan; what follows turns its heatmaps into landmarks.


def _mirror_order() -> list[int]:
    """For each landmark, the index of its mirror image under a left-right flip (iBUG 300-W numbering)."""
    m = list(range(N_LANDMARKS))
    for a, b in ((0, 16), (17, 26), (31, 35), (48, 54), (55, 59), (60, 64), (65, 67)):
        m[a:b + 1] = range(b, a - 1, -1)
    m[36:48] = [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]  # eye corners and lids
    return m


MIRROR = _mirror_order()
FAN_INPUT, FAN_HEATMAP = 256, 64
FAN_REFERENCE_SCALE = 195.0  # box width + height that maps to scale 1, i.e. a 200 px crop
FAN_CENTRE_SHIFT = 0.12  # the crop centre sits this fraction of the box height above the box centre


def crop_frame(box: Sequence[float]) -> tuple[np.ndarray, float]:
    """The FAN crop for a detector box: its centre (x, y) and side ``h`` in source pixels (200 * scale)."""
    x0, y0, x1, y1 = box[:4]
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2 - (y1 - y0) * FAN_CENTRE_SHIFT])
    return centre, 200.0 * ((x1 - x0) + (y1 - y0)) / FAN_REFERENCE_SCALE


def crop_face(image: np.ndarray, centre: np.ndarray, side: float) -> np.ndarray:
    """The square around ``centre`` resized to 256 x 256 uint8 RGB; outside the photo is black.

    Source pixels trunc(c + (1/256 - 1/2) side) .. trunc(c + side/2) - 1 are cut out, then resized bilinearly
    (half-pixel centres, no antialiasing), as face-alignment does with OpenCV.
    """
    ul = np.trunc(centre + (1.0 / FAN_INPUT - 0.5) * side).astype(int)
    br = np.trunc(centre + 0.5 * side).astype(int)
    (w, h), (iw, ih) = br - ul, (image.shape[1], image.shape[0])
    out = np.zeros((h, w, 3), np.uint8)
    xa, xb, ya, yb = max(ul[0], 0), min(br[0], iw), max(ul[1], 0), min(br[1], ih)
    if xa < xb and ya < yb:
        out[ya - ul[1]:yb - ul[1], xa - ul[0]:xb - ul[0]] = image[ya:yb, xa:xb]
    t = torch.from_numpy(out).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=(FAN_INPUT, FAN_INPUT), mode="bilinear", align_corners=False)
    return t[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def heatmap_points(heat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps [B, 68, 64, 64] -> peaks in heatmap pixels [B, 68, 2] (x, y) and peak values [B, 68].

    The argmax is moved a quarter cell towards the larger neighbour (away from the border), then the
    face-alignment convention puts the peak of cell j at j + 0.5.
    """
    b, n, hh, ww = heat.shape
    flat = heat.reshape(b, n, hh * ww)
    idx = flat.argmax(-1)
    score = np.take_along_axis(flat, idx[..., None], -1)[..., 0]
    x, y = idx % ww, idx // ww
    pts = np.stack([x, y], -1).astype(np.float64)
    inner = (x > 0) & (x < ww - 1) & (y > 0) & (y < hh - 1)
    bi, ni = np.nonzero(inner)
    xi, yi = x[bi, ni], y[bi, ni]
    dx = heat[bi, ni, yi, xi + 1] - heat[bi, ni, yi, xi - 1]
    dy = heat[bi, ni, yi + 1, xi] - heat[bi, ni, yi - 1, xi]
    pts[bi, ni] += 0.25 * np.sign(np.stack([dx, dy], -1))
    return pts + 0.5, score


# ---------------------------------------------------------------------------------------------- detector


def _check_image(image: np.ndarray) -> None:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {got}")


class FanDetector:
    """S3FD finds face boxes, 2D-FAN-4 puts 68 landmarks in each. Weights come from local files only.

    ``max_side``: photos are shrunk to this longest side for box detection only (S3FD is a VGG-16 at full
    resolution: a 24 MP photo would need tens of GB); landmarks are found in the full-resolution photo.
    Faces under about 16 px at the shrunk size are missed, far below `MIN_QUAD_SIDE` at 1024. The default,
    `DETECT_SIDE`, is the same on every device, so the CPU and a GPU find the same faces (S3FD at 1024 px
    takes about 6 s on two CPU cores).
    ``flip``: average the heatmaps of the crop and its mirror image, face-alignment's default.
    """

    name = "fan"

    def __init__(self, detector_path: str | Path, landmark_path: str | Path, device: str | torch.device = "cpu", *,
                 max_side: int = DETECT_SIDE, threshold: float = 0.5, flip: bool = True, batch: int = 8):
        self.device = torch.device(device)
        self.s3fd = load_s3fd(detector_path).to(self.device)
        self.fan = load_fan(landmark_path).to(self.device)
        self.max_side, self.threshold, self.flip, self.batch = max_side, threshold, flip, batch

    @classmethod
    def from_store(cls, device: str | torch.device = "cpu", store=None, download: bool = False,
                   **kwargs) -> FanDetector:
        """Both networks from the weight store (``DETECTOR_FILE``, ``LANDMARK_FILE``), checked against the manifest."""
        from hairclip.weights import WeightStore

        store = store or WeightStore()
        return cls(store.resolve(DETECTOR_FILE, download=download), store.resolve(LANDMARK_FILE, download=download),
                   device, **kwargs)

    def detect(self, image: np.ndarray) -> list[Face]:
        return self.landmarks(image, self.boxes(image))

    @torch.inference_mode()
    def boxes(self, image: np.ndarray) -> np.ndarray:
        """Face boxes [N, 5] (x0, y0, x1, y1, score) in the photo's pixels, best first, score > ``threshold``."""
        _check_image(image)
        h, w = image.shape[:2]
        x = torch.tensor(image).permute(2, 0, 1)[None].float()
        f = min(1.0, self.max_side / max(h, w))
        if f < 1:  # shrink on the CPU: antialiased resize is not on every device
            x = F.interpolate(x, size=(max(1, round(h * f)), max(1, round(w * f))), mode="bilinear",
                              align_corners=False, antialias=True)
        sx, sy = w / x.shape[3], h / x.shape[2]
        x = x.flip(1) - torch.tensor(S3FD_MEAN_BGR).view(1, 3, 1, 1)  # the Caffe VGG's BGR mean subtraction
        dets = decode_boxes(self.s3fd(x.to(self.device)))
        # Thresholding first keeps exactly the same boxes: greedy NMS visits scores in falling order, so a box
        # under the threshold can only suppress boxes under it too. It spares NMS thousands of weak candidates.
        dets = dets[dets[:, 4] > self.threshold]
        dets = dets[nms(dets)] if len(dets) else dets
        return dets * np.array([sx, sy, sx, sy, 1.0])  # corner coordinates scale with the image size

    @torch.inference_mode()
    def landmarks(self, image: np.ndarray, boxes: np.ndarray | Sequence[Sequence[float]]) -> list[Face]:
        """A `Face` for each box (x0, y0, x1, y1[, score]): also usable with boxes drawn by the user."""
        _check_image(image)
        boxes = np.atleast_2d(np.asarray(boxes, dtype=np.float64)) if len(boxes) else np.zeros((0, 4))
        faces = []
        for start in range(0, len(boxes), self.batch):
            chunk = boxes[start:start + self.batch]
            frames = [crop_frame(b) for b in chunk]
            crops = np.stack([crop_face(image, c, s) for c, s in frames])
            x = torch.from_numpy(crops).permute(0, 3, 1, 2).to(self.device).float() / 255.0
            heat = self.fan(x)
            if self.flip:
                heat = heat + self.fan(x.flip(3))[:, MIRROR].flip(3)
            pts, _ = heatmap_points(heat.float().cpu().numpy())
            for b, (centre, side), p in zip(chunk, frames, pts, strict=True):
                lm = (p / FAN_HEATMAP - 0.5) * side + centre  # heatmap cells back to source pixels
                faces.append(Face(lm, tuple(b[:4]), float(b[4]) if len(b) > 4 else 1.0, "fan"))
        return faces


# ---------------------------------------------------------------------------------------------- dlib


# dlib's HOG scores real frontal faces around 1 (the astronaut's face: 0.84-1.57 when turned by up to 20 degrees
# or shrunk to 200 px) and its false alarms lower (0.1-0.5 in the same pictures: a round mission patch scores
# 0.12). The official code keeps every box over 0; we drop boxes under this score, unless none passes, in which
# case the best box is kept, so a photo of one hard-to-see face is still edited.
DLIB_MIN_SCORE = 0.3


class DetectorUnavailable(HairclipError):
    """The asked-for detector cannot run here (a missing package or file)."""

    code = "detector_unavailable"


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
        _check_image(image)
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
    """Asks each detector in turn and returns the faces of the first that finds any (dlib, then FAN for the
    profiles dlib misses). Each `Face.source` says which one it was."""

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
