"""The S3FD + 2D-FAN-4 face detector (face-alignment 1.5.0's networks, its pre- and post-processing number for
number): S3FD finds boxes, FAN puts 68 landmarks in each. The fallback for profiles dlib misses.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hairclip.checkpoints import load_fan, load_s3fd
from hairclip.nets.fan import N_LANDMARKS
from hairclip.pipeline.face_record import (
    DETECT_SIDE,
    DETECTOR_FILE,
    LANDMARK_FILE,
    Face,
    check_rgb_image,
)

log = logging.getLogger("hairclip.faces")


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


class FanDetector:
    """S3FD finds face boxes and 2D-FAN-4 puts 68 landmarks in each, with weights from local files only.

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
        check_rgb_image(image)
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
        check_rgb_image(image)
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
