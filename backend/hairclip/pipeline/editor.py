"""The whole edit: any photo in, a hair layer the size of the photo out.

faces -> align -> invert -> conditions -> edit -> synthesize -> parse -> composite. Each stage is its own
module; this one only runs them in order, keeps per-face state for cheap strength-only re-renders, and
reports progress through a callback (which may raise to cancel between stages).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from hairclip.device import prepare
from hairclip.images import check_photo
from hairclip.pipeline import longhair, parse
from hairclip.pipeline.align import (
    AlignedFace,
    FaceTransform,
    align_face,
    aligned_crop1024,
    aligned_input,
    to_rgb8,
)
from hairclip.pipeline.cache import LRUCache, content_key
from hairclip.pipeline.composite import compose_layer, edit_mask, face_box, restrict_to_photo, warp_face
from hairclip.pipeline.conditions import ConditionEncoder, Conditions, image_tensor, match_hair_color
from hairclip.pipeline.edit import apply_offset, edit_offset
from hairclip.pipeline.faces import Mode, NoFaceFound, Rect, select_faces
from hairclip.pipeline.invert import Inverter
from hairclip.pipeline.models import Models
from hairclip.pipeline.synthesize import synthesize

Progress = Callable[[str, float], None]
log = logging.getLogger("hairclip.editor")


def _no_progress(stage: str, fraction: float) -> None:
    pass


@dataclass
class FaceState:
    """What a re-render of one face needs: no detection, inversion or CLIP encode is repeated."""

    index: int  # in the detector's list
    transform: FaceTransform
    box: tuple[int, int, int, int]  # the face square's bounding box on the photo (x0, y0, x1, y1)
    w: torch.Tensor  # W+ of the inversion [1,18,512]
    offset: torch.Tensor  # the mapper's raw offset for these conditions [1,18,512]
    hair_before: torch.Tensor  # [1024,1024] bool, the original face's hair
    aligned: AlignedFace
    rgb: tuple[int, int, int] | None
    source: str = ""  # the detector that found the face ("dlib", "fan", ...); "aligned" for an aligned crop
    hair: longhair.PhotoHair | None = None  # the photo's hair around the face, beyond the square too


@dataclass
class FaceOutput:
    state: FaceState
    edited: torch.Tensor  # [3,1024,1024] in [-1, 1], the raw synthesis of the edit
    mask: torch.Tensor  # [1024,1024] float, the edit mask in the aligned frame
    inversion: torch.Tensor | None = None  # [3,1024,1024], only when asked for


@dataclass
class EditResult:
    layer: np.ndarray  # [H,W,4] in the photo's dtype: alpha is the edit mask
    faces: list[FaceOutput]
    strength: float
    timings: dict[str, float] = field(default_factory=dict)
    whole_hair: bool = False  # hair outside the crops was recoloured too

    @property
    def hair_outside_crop(self) -> float:
        """The fraction of the edited faces' original hair that lies outside their crops (0 to 1)."""
        hair = [f.state.hair for f in self.faces if f.state.hair is not None]
        total = sum(h.total for h in hair)
        return sum(h.outside for h in hair) / total if total > 0 else 0.0

    @property
    def boxes(self) -> list[tuple[int, int, int, int]]:
        return [f.state.box for f in self.faces]


@dataclass(frozen=True)
class EditOptions:
    strength: float = 1.0
    faces: Mode = "all"
    selection: Rect | np.ndarray | None = None
    aligned: bool = False  # the photo is already an FFHQ-aligned crop
    return_aligned: bool = False  # also synthesise the unedited inversion, for debugging
    whole_hair: bool | None = None  # recolour hair outside the crop too; None: only for colour-only edits

    def whole_hair_for(self, conditions: Conditions) -> bool:
        if self.whole_hair is not None:
            return self.whole_hair
        return conditions.hairstyle is None and conditions.hairstyle_ref is None


class HairEditor:
    def __init__(self, models: Models):
        self.models = models
        self.inverter = Inverter(models.encoder, models.latent_avg)
        self.conditions = ConditionEncoder(models.mapper, models.parser, self._reference_crop)
        self.face_cache: LRUCache[list] = LRUCache(16)  # another text on the same photo detects nothing again

    def detect(self, rgb8: np.ndarray) -> list:
        detector = self.models.detector
        return self.face_cache.get_or_compute((detector, content_key(rgb8)), lambda: detector.detect(rgb8))

    @property
    def device(self) -> torch.device:
        return self.models.device

    def _reference_crop(self, photo: np.ndarray, aligned: bool) -> np.ndarray:
        """The 1024 crop HairCLIP encodes: an aligned reference as it is (no detection), else its largest face
        found and aligned like the photo's."""
        rgb = to_rgb8(check_photo(photo, "reference image"))
        if aligned:
            return aligned_crop1024(rgb)
        faces = self.detect(rgb)
        if not faces:
            raise NoFaceFound("no face was found in the reference image; if it is an aligned face crop "
                              "(FFHQ-style, ideally 1024x1024), mark it as aligned")
        pick = select_faces(faces, "largest")[0]
        return align_face(rgb, faces[pick].landmarks).image1024

    def edit(self, photo: np.ndarray, conditions: Conditions, options: EditOptions = EditOptions(),
             progress: Progress = _no_progress) -> EditResult:
        """Edit every chosen face of ``photo`` (uint8/uint16/float, 1-4 channels; never modified)."""
        prepare(self.device)
        photo = check_photo(photo, "photo")
        timings: dict[str, float] = {}
        with _timed(timings, "faces"):
            progress("faces", 0.0)
            rgb8 = to_rgb8(photo)
            if options.aligned:
                aligned = [aligned_input(rgb8)]
                indices = [0]
            else:
                faces = self.detect(rgb8)
                if not faces:
                    raise NoFaceFound("no face was found in the photo")
                indices = select_faces(faces, options.faces, options.selection)
                squares = [FaceTransform.from_landmarks(f.landmarks, rgb8.shape[1::-1]) for f in faces]
        with _timed(timings, "conditions"):
            progress("conditions", 0.0)
            style_emb, color_emb = self.conditions.embeddings(conditions)
        states = []
        for n, i in enumerate(indices):
            def check(n: int = n) -> None:  # a cancellation point inside this face's work
                progress("invert", n / len(indices))

            check()
            with _timed(timings, "align"):
                face = aligned[0] if options.aligned else align_face(rgb8, faces[i].landmarks, check=check)
            check()
            with _timed(timings, "invert"):
                w = self.inverter(face.image)
            check()
            with _timed(timings, "parse"):
                original = image_tensor(face.image1024, self.device)
                hair_before = parse.hair(self.models.parser, original)[0]
                hair = None if options.aligned else longhair.photo_hair(
                    self.models.parser, rgb8, squares, i, hair_before, check)
            check()
            with _timed(timings, "mapper"):
                color = color_emb
                if conditions.rgb is not None:
                    color = self.conditions.rgb(original, hair_before[None, None], conditions.rgb, check)
                offset = edit_offset(self.models.mapper, w, style_emb, color)
            box = face_box(face.transform, photo.shape[:2])
            source = "aligned" if options.aligned else faces[i].source
            log.info("face %d: square %s on the photo, found by %s", i, box, source or "an unnamed detector")
            states.append(FaceState(i, face.transform, box, w, offset, hair_before, face, conditions.rgb, source,
                                    hair))
        return self._render(photo, states, options.strength, options.return_aligned, timings, progress,
                            options.whole_hair_for(conditions))

    def rerender(self, photo: np.ndarray, previous: EditResult, strength: float,
                 progress: Progress = _no_progress) -> EditResult:
        """The same edit at another strength: synthesis, parsing and compositing only."""
        prepare(self.device)
        photo = check_photo(photo, "photo")
        return self._render(photo, [f.state for f in previous.faces], strength, False, {}, progress,
                            previous.whole_hair)

    def _render(self, photo: np.ndarray, states: list[FaceState], strength: float, with_inversion: bool,
                timings: dict[str, float], progress: Progress, whole_hair: bool = False) -> EditResult:
        outputs, pieces = [], []
        colour = photo if photo.shape[2] >= 3 else np.repeat(photo[..., :1], 3, 2)
        for n, st in enumerate(states):
            progress("synthesize", n / len(states))
            with _timed(timings, "synthesize"):
                edited = synthesize(self.models.decoder, apply_offset(st.w, st.offset, strength))
                inversion = synthesize(self.models.decoder, st.w)[0] if with_inversion else None
            progress("parse", n / len(states))
            with _timed(timings, "parse"):
                hair_after, recolour = parse.hair_and_weight(self.models.parser, edited)

            def check(n: int = n) -> None:  # cancellation points inside the warp of a big face
                progress("composite", n / (len(states) + 1))

            with _timed(timings, "composite"):
                check()
                mask = edit_mask(st.hair_before, hair_after[0], check=check)
                shown = edited
                if st.rgb is not None:
                    shown = match_hair_color(edited, recolour[:, None], st.rgb, check)
                piece = warp_face((shown[0] + 1) / 2, mask, st.transform, photo.shape[:2], check)
                if whole_hair and st.hair is not None:
                    weight = restrict_to_photo(recolour[0], st.transform)[None, None]
                    piece = longhair.extend_piece(colour, piece, st.hair, shown, weight, st.transform, check)
                pieces.append(piece)
            outputs.append(FaceOutput(st, edited[0], mask, inversion))
        with _timed(timings, "composite"):
            progress("composite", len(states) / (len(states) + 1))
            layer = compose_layer(colour[..., :3], pieces,
                                  lambda: progress("composite", len(states) / (len(states) + 1)))
        progress("done", 1.0)
        return EditResult(layer, outputs, strength, timings, whole_hair)


@contextmanager
def _timed(timings: dict[str, float], stage: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0
