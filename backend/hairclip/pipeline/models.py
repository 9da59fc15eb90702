"""Every network the edit needs, loaded once and kept on one device.

`Models.load` reads the official files from the weight store (or a folder holding them under their official
names), or files named explicitly (``--mapper``, ``--e4e``, ``--parsenet``). `Models.random_tiny` builds small
randomly initialised configurations of the same networks, so the whole pipeline can run in tests and demos
without the weights; its pictures are noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from hairclip.device import pick_device, prepare
from hairclip.nets.e4e import Encoder4Editing
from hairclip.nets.mapper import TINY_CLIP, HairMapper, build_clip
from hairclip.nets.parsenet import UNet
from hairclip.nets.stylegan2 import Generator
from hairclip.pipeline import DETECTORS
from hairclip.pipeline.faces import Face, FaceDetector
from hairclip.precision import PrecisionPlan, dtype_of, plan_for

EDIT_WEIGHTS = ("hairclip.pt", "e4e_ffhq_encode.pt", "parsenet.pth")
DetectorKind = Literal["dlib", "fan", "centre"]


@dataclass
class Models:
    """Every network of an edit, on one device, in the dtypes of one precision plan."""

    encoder: Encoder4Editing
    latent_avg: torch.Tensor  # [n_styles, 512]
    mapper: HairMapper
    decoder: Generator
    parser: UNet
    detector: FaceDetector
    device: torch.device
    names: dict[str, str]  # what each network was loaded from, for `hello` and logs
    plan: PrecisionPlan | None = None  # set by `to`: the dtypes every network runs in
    weights: dict[str, dict[str, str]] = field(default_factory=dict)  # file -> {"path", "sha256"}, for `hello`

    @classmethod
    def load(cls, device: str | torch.device | None = None, weights_dir: str | Path | None = None,
             download: bool = False, progress: bool = True,
             detector: DetectorKind | FaceDetector = "dlib", precision: str = "auto",
             files: Mapping[str, str | Path] | None = None) -> Models:
        """The official networks. Each of `EDIT_WEIGHTS` named in ``files`` is loaded from that file as it is
        (the person named it: no manifest check); the others come from the weight store (checksums verified)
        or ``weights_dir``. The face detector (see `make_detector`) is built at the first photo that needs one,
        so an edit of aligned crops needs only the three HairCLIP files."""
        from hairclip.checkpoints import CheckpointError, load_e4e, load_hairclip, load_parsenet
        from hairclip.weights import WeightStore, sha256_of

        dev = pick_device(device) if not isinstance(device, torch.device) else device
        files = {n: Path(p) for n, p in (files or {}).items()}
        if unknown := sorted(set(files) - set(EDIT_WEIGHTS)):
            raise ValueError(f"files may name only {', '.join(EDIT_WEIGHTS)}, not {', '.join(unknown)}")
        store = WeightStore(weights_dir) if weights_dir else WeightStore()
        paths, digests = {}, {}
        for n in EDIT_WEIGHTS:
            if n in files:
                if not files[n].is_file():
                    raise CheckpointError(f"{files[n]}: no such file (given for {n})")
                paths[n], digests[n] = files[n].resolve(), sha256_of(files[n])
            else:
                paths[n] = store.resolve(n, download=download, progress=progress)
                digests[n] = store.check(n).sha256 or sha256_of(paths[n])
        hairclip = load_hairclip(paths["hairclip.pt"])
        e4e = load_e4e(paths["e4e_ffhq_encode.pt"])
        if isinstance(detector, str):
            detector = make_detector(detector, dev, store, download=download)
        models = cls(e4e.encoder, e4e.latent_avg, hairclip.mapper, hairclip.decoder,
                     load_parsenet(paths["parsenet.pth"]), detector, dev,
                     {n: str(p) for n, p in paths.items()},
                     weights={n: {"path": str(paths[n]), "sha256": digests[n]} for n in EDIT_WEIGHTS})
        return models.to(dev, plan_for(dev, precision))

    @classmethod
    def random_tiny(cls, device: str | torch.device | None = None, seed: int = 0,
                    detector: DetectorKind | FaceDetector | None = None, precision: str = "auto") -> Models:
        """Small random configurations of the real networks (W+ stays 18 x 512, images stay 1024 px).

        The detector defaults to `CentredFace`, which places one face in the middle of any image, so synthetic
        pictures work; "dlib" finds the real faces of real photos (its files come with its packages).
        """
        dev = pick_device(device) if not isinstance(device, torch.device) else device
        if isinstance(detector, str):
            detector = make_detector(detector, dev)
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = Encoder4Editing(50, "ir_se", 1024, units=(1, 1, 1, 1), width_div=4, style_dim=512)
            mapper = HairMapper(build_clip(config=TINY_CLIP))
            decoder = Generator(1024, 512, 2, channel_multiplier=2, width_div=16)
            parser = _calibrated_parser(UNet(feature_scale=16), seed)
        latent_avg = torch.randn(18, 512, generator=gen) * 0.1
        models = cls(encoder, latent_avg, mapper, decoder, parser, detector or CentredFace(), dev,
                     {"all": "random tiny networks (results are noise)"})
        return models.to(dev, plan_for(dev, precision))

    def to(self, device: torch.device, plan: PrecisionPlan | None = None) -> Models:
        """Move every network to ``device`` in the dtypes of ``plan`` (default: the device's own plan)."""
        prepare(device)
        self.device, self.plan = device, plan or plan_for(device)
        for net in (self.encoder, self.mapper, self.decoder, self.parser):
            net.to(device).eval().requires_grad_(False)
        self.mapper.float()  # the sub-mappers always run in fp32; CLIP's dtypes are the plan's
        self.plan.apply_clip(self.mapper.clip_model)
        self.plan.apply(self.encoder, "e4e")
        self.plan.apply(self.decoder, "generator")
        self.plan.apply(self.parser, "parser")
        self.latent_avg = self.latent_avg.to(device)
        return self

    def dtypes(self) -> dict[str, str]:
        """The dtypes the networks hold now, in `PrecisionPlan.dtypes` terms."""
        nets = {"clip": self.mapper.clip_model, "mapper": self.mapper.fine_mapping or self.mapper.course_mapping,
                "generator": self.decoder, "e4e": self.encoder, "parser": self.parser}
        return {name: dtype_of(net) for name, net in nets.items()}


def detector_name(detector: FaceDetector) -> str:
    """How a detector introduces itself in `hello` and in logs."""
    return getattr(detector, "name", type(detector).__name__)


def make_detector(kind: DetectorKind, device: torch.device | str = "cpu", store=None,
                  download: bool = False) -> FaceDetector:
    """The detector ``--detector`` names, built lazily (no file is opened until a photo needs detection).

    "dlib": the official alignment's detector and landmarks; when dlib finds no face and both FAN files are in
    ``store``, S3FD + FAN try too. "fan": S3FD + FAN from ``store`` only. "centre": `CentredFace`.
    """
    from hairclip.pipeline.faces import (
        DETECTOR_FILE,
        LANDMARK_FILE,
        DlibDetector,
        FanDetector,
        FirstThatFinds,
        LazyDetector,
    )

    if kind == "centre":
        return CentredFace()
    if kind == "fan":
        return LazyDetector(lambda: FanDetector.from_store(device, store, download=download), "fan")
    if kind != "dlib":
        raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, got {kind!r}")

    def build() -> FaceDetector:
        dlib = DlibDetector()
        if store is not None and all(store.status(n) in ("ok", "unverified") for n in (DETECTOR_FILE, LANDMARK_FILE)):
            return FirstThatFinds(dlib, LazyDetector(lambda: FanDetector.from_store(device, store), "fan"))
        return dlib

    return LazyDetector(build, "dlib")


def _calibrated_parser(parser: UNet, seed: int, hair_fraction: float = 0.3) -> UNet:
    """Give a random parser varied output: BatchNorm statistics from a few random images (at their defaults
    every pixel gets the same class), and a hair logit offset so that about ``hair_fraction`` of an image is
    labelled hair. Masks are then non-trivial, which is what exercising the pipeline needs."""
    from hairclip.nets.parsenet import HAIR_LABEL, PARSE_SIZE

    g = torch.Generator().manual_seed(seed)
    images = torch.rand(3, 3, PARSE_SIZE, PARSE_SIZE, generator=g) * 2 - 1
    for m in parser.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the calibration batch
    with torch.no_grad():
        parser.train()(images)
        logits = parser.eval()(images)
        others = torch.cat([logits[:, :HAIR_LABEL], logits[:, HAIR_LABEL + 1:]], 1).amax(1)
        margin = (others - logits[:, HAIR_LABEL]).flatten()
        parser.final.bias[HAIR_LABEL] += torch.quantile(margin, hair_fraction)
    for m in parser.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    return parser


def face_template() -> np.ndarray:
    """A plausible 68-point layout of a frontal face in a unit box (dlib/iBUG order)."""
    t = np.linspace(0, np.pi, 17)
    chin = np.stack([0.5 - 0.45 * np.cos(t), 0.35 + 0.55 * np.sin(t)], 1)
    brow_l = np.stack([np.linspace(0.18, 0.42, 5), [0.33, 0.30, 0.29, 0.30, 0.32]], 1)
    brow_r = np.stack([1 - brow_l[::-1, 0], brow_l[::-1, 1]], 1)
    nose_bridge = np.stack([np.full(4, 0.5), np.linspace(0.38, 0.55, 4)], 1)
    nostrils = np.stack([np.linspace(0.42, 0.58, 5), [0.60, 0.62, 0.63, 0.62, 0.60]], 1)
    a = np.linspace(0, 2 * np.pi, 6, endpoint=False) + np.pi
    eye = np.stack([0.07 * np.cos(a), 0.03 * np.sin(a)], 1)
    eye_l, eye_r = eye + [0.32, 0.42], eye + [0.68, 0.42]
    m = np.linspace(0, 2 * np.pi, 12, endpoint=False) + np.pi
    mouth_outer = np.stack([0.5 + 0.16 * np.cos(m), 0.75 + 0.06 * np.sin(m)], 1)
    n = np.linspace(0, 2 * np.pi, 8, endpoint=False) + np.pi
    mouth_inner = np.stack([0.5 + 0.1 * np.cos(n), 0.75 + 0.02 * np.sin(n)], 1)
    return np.concatenate([chin, brow_l, brow_r, nose_bridge, nostrils, eye_l, eye_r, mouth_outer, mouth_inner])


class CentredFace:
    """Test and demo detector: one upright face filling the middle of the image (``fraction`` of its short side)."""

    name = "centre"

    def __init__(self, fraction: float = 0.5):
        self.fraction = fraction
        self._unit = face_template()

    def detect(self, image: np.ndarray) -> list[Face]:
        h, w = image.shape[:2]
        side = self.fraction * min(h, w)
        x0, y0 = (w - side) / 2, (h - side) / 2
        return [Face(self._unit * side + [x0, y0], (x0, y0, x0 + side, y0 + side), source=self.name)]
