"""The whole edit: any photo in, a hair layer the size of the photo out.

faces -> align -> invert -> conditions -> edit -> synthesize -> parse -> composite. Each stage is its own
module; this one only runs them in order, keeps per-face state for cheap strength-only re-renders, and
reports progress through a callback (which may raise to cancel between stages).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from hairclip.device import prepare
from hairclip.images import check_photo
from hairclip.nets.parsenet import HAIR_LABEL
from hairclip.nets.stylegan2 import Partial
from hairclip.pipeline import composite, longhair, parse
from hairclip.pipeline.align import (
    AlignedFace,
    FaceTransform,
    align_face,
    aligned_crop1024,
    aligned_input,
    to_rgb8,
)
from hairclip.pipeline.cache import LRUCache, content_key
from hairclip.pipeline.composite import (
    FaceWarp,
    clear_layer,
    compose_face,
    compose_layer,
    compose_one,
    edit_mask_fast,
    edit_mask_warm,
    face_box,
    prepare_warp,
    preview_frame,
    restrict_to_photo,
    warp_face_warm,
)
from hairclip.pipeline.conditions import ConditionEncoder, Conditions, image_tensor, match_hair_colour
from hairclip.pipeline.edit import apply_offset, edit_offset
from hairclip.pipeline.faces import Mode, NoFaceFound, Rect, select_faces
from hairclip.pipeline.invert import Inverter
from hairclip.pipeline.models import Models
from hairclip.pipeline.synthesize import synthesize, synthesize_partial
from hairclip_shared.protocol import MAX_PREVIEW_SIDE

Progress = Callable[[str, float], None]
FIRST_PICTURE_SIDE = 256  # the generator's resolution for a new edit's first picture
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
    warp: FaceWarp | None = None  # the warp grid and the original's grown hair, from the photo cache
    layer: np.ndarray | None = None  # `clear_layer` of the photo, cached per photo and shared by its faces


@dataclass
class PhotoFace:
    """Everything about one face that depends only on the photo: a warm edit (new text, reference or
    strength) reuses it and runs no alignment, inversion, parse of the original, or grid set-up."""

    aligned: AlignedFace
    w: torch.Tensor
    hair_before: torch.Tensor
    warp: FaceWarp
    hair: longhair.PhotoHair | None  # the photo's hair around the face (long hair)


@dataclass
class FaceOutput:
    """One edited face in the aligned frame: its state, the synthesis, the edit mask and the inversion."""

    state: FaceState
    edited: torch.Tensor  # [3,1024,1024] in [-1, 1], the raw synthesis of the edit
    mask: torch.Tensor  # [1024,1024] float, the edit mask in the aligned frame
    inversion: torch.Tensor | None = None  # [3,1024,1024], only when asked for


@dataclass
class EditResult:
    """The photo-sized hair layer of one edit, with its faces and the time each stage took."""

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

    def hair_outside_mask(self) -> np.ndarray | None:
        """uint8 [H, W]: the original hair outside the crops that this edit left as it was (None: none, or it
        was recoloured). The plug-ins offer it as a selection to paint over; no pixels are made up for it."""
        if self.whole_hair:
            return None
        hair = [(f.state.hair, f.state.transform) for f in self.faces if f.state.hair is not None]
        return longhair.outside_mask(hair, self.layer.shape[:2])

    @property
    def boxes(self) -> list[tuple[int, int, int, int]]:
        return [f.state.box for f in self.faces]


@dataclass(frozen=True)
class EditOptions:
    """How to edit, apart from what to change: strength, which faces, alignment and long hair."""

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
    """Runs the pipeline's stages on a photo, with the caches that make a warm edit cheap."""

    def __init__(self, models: Models):
        self.models = models
        self.inverter = Inverter(models.encoder, models.latent_avg)
        self.conditions = ConditionEncoder(models.mapper, models.parser, self._reference_crop)
        self.face_cache: LRUCache[list] = LRUCache(16)  # another text on the same photo detects nothing again
        self.photo_cache: LRUCache[PhotoFace] = LRUCache(4)  # ~30 MB a 2048 px face, mostly the warp grid
        self.layer_cache: LRUCache[np.ndarray] = LRUCache(2)  # 16 MB a 2048 px uint8 photo

    def detect(self, rgb8: np.ndarray, key: str | None = None) -> list:
        detector = self.models.detector
        key = key or content_key(rgb8)
        return self.face_cache.get_or_compute((detector, key), lambda: detector.detect(rgb8))

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
             progress: Progress = _no_progress,
             first_picture: Callable[[np.ndarray], None] | None = None) -> EditResult:
        """Edit every chosen face of ``photo`` (uint8/uint16/float, 1-4 channels; never modified).

        ``first_picture`` gets a quick look before the final render: the photo reduced to at most
        `MAX_PREVIEW_SIDE` px with the edit synthesised at 256 px laid over it (uint8 RGB; see `first_look`).
        """
        prepare(self.device)
        photo = check_photo(photo, "photo")
        timings: dict[str, float] = {}
        with _timed(timings, "faces"):
            progress("faces", 0.0)
            rgb8 = to_rgb8(photo)
            key = content_key(photo)  # the photo itself: its depth and alpha shape the layer's warp too
            if options.aligned:
                aligned = [aligned_input(rgb8)]
                indices = [0]
            else:
                faces = self.detect(rgb8, key)
                if not faces:
                    raise NoFaceFound("no face was found in the photo")
                indices = select_faces(faces, options.faces, options.selection)
                squares = [FaceTransform.from_landmarks(f.landmarks, rgb8.shape[1::-1]) for f in faces]
        with _timed(timings, "conditions"):
            progress("conditions", 0.0)
            style_emb, colour_emb = self.conditions.embeddings(conditions)
        states = []
        for n, i in enumerate(indices):
            def check(n: int = n) -> None:  # a cancellation point inside this face's work
                progress("invert", n / len(indices))

            check()
            landmarks = b"" if options.aligned else np.asarray(faces[i].landmarks, np.float64).tobytes()
            cached = self.photo_cache.get_or_compute(
                (key, options.aligned, i, landmarks),
                lambda found=aligned[0] if options.aligned else faces[i], check=check, i=i: self._photo_face(
                    photo.shape[:2], rgb8, found, options.aligned, timings, check,
                    None if options.aligned else squares, i))
            face, w, hair_before = cached.aligned, cached.w, cached.hair_before
            original = image_tensor(face.image1024, self.device)
            check()
            with _timed(timings, "mapper"):
                colour = colour_emb
                if conditions.rgb is not None:
                    colour = self.conditions.rgb(original, hair_before[None, None], conditions.rgb, check)
                offset = edit_offset(self.models.mapper, w, style_emb, colour)
            box = face_box(face.transform, photo.shape[:2])
            source = "aligned" if options.aligned else faces[i].source
            log.info("face %d: square %s on the photo, found by %s", i, box, source or "an unnamed detector")
            states.append(FaceState(i, face.transform, box, w, offset, hair_before, face, conditions.rgb, source,
                                    cached.hair, cached.warp, self._clear_layer(key, photo)))
        starts: list[Partial] = []  # the first picture's synthesis, which the final one goes on from
        if first_picture is not None:
            with _timed(timings, "first_picture"):
                first_picture(self.first_look(rgb8, states, options.strength, lambda: progress("first_picture", 0.0),
                                              keep=starts))
        return self._render(photo, states, options.strength, options.return_aligned, timings, progress,
                            options.whole_hair_for(conditions), starts)

    def first_look(self, rgb8: np.ndarray, states: list[FaceState], strength: float,
                   check: Callable[[], None], keep: list[Partial] | None = None) -> np.ndarray:
        """The first picture: the generator stopped at 256 px, the parser run on that (no 512 resize), colour
        matching left out; laid over the reduced photo. ``keep`` gets each face's stopped synthesis, so the
        final render goes on from it and the first picture costs only its parse and paste."""
        h, w = rgb8.shape[:2]
        scale = min(1.0, MAX_PREVIEW_SIDE / max(h, w))
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        small = torch.from_numpy(np.array(rgb8)).to(self.device).permute(2, 0, 1)[None].float() / 255
        if scale < 1.0:
            small = torch.nn.functional.interpolate(small, size=size, mode="bilinear", antialias=True)
        res = min(FIRST_PICTURE_SIDE, self.models.decoder.size)
        faces = []
        for st in states:
            check()
            part = synthesize_partial(self.models.decoder, apply_offset(st.w, st.offset, strength), res)
            if keep is not None:
                keep.append(part)
            edited = part.skip.contiguous().float()
            check()
            with torch.inference_mode():
                labels = self.models.parser(edited.to(next(self.models.parser.parameters()).dtype)).argmax(1)[0]
                before = torch.nn.functional.adaptive_avg_pool2d(st.hair_before.float()[None, None], res)[0, 0]
            faces.append(((edited[0] + 1) / 2, (labels == HAIR_LABEL) | (before > 0.5), st.transform))
        return preview_frame(small[0], faces, (size[1] / w + size[0] / h) / 2, check)

    def _photo_face(self, photo_hw: tuple[int, int], rgb8: np.ndarray, found, is_aligned: bool,
                    timings: dict[str, float], check: Callable[[], None], squares: list | None = None,
                    index: int = 0) -> PhotoFace:
        """The photo-only work for one face (a cold edit): align, invert, parse the original (and its hair on the
        photo around the face, when ``squares`` holds every face's square), set up the warp."""
        with _timed(timings, "align"):
            face = found if is_aligned else align_face(rgb8, found.landmarks, check=check)
        check()
        with _timed(timings, "invert"):
            w = self.inverter(face.image)
        check()
        with _timed(timings, "parse"):
            hair_before = parse.hair(self.models.parser, image_tensor(face.image1024, self.device))[0]
            hair = None if squares is None else longhair.photo_hair(
                self.models.parser, rgb8, squares, index, hair_before, check)
        check()
        with _timed(timings, "composite"):
            warp = prepare_warp(face.transform, photo_hw, hair_before, check=check)
        return PhotoFace(face, w, hair_before, warp, hair)

    def _clear_layer(self, key: str, photo: np.ndarray) -> np.ndarray | None:
        if not composite.FAST:
            return None
        colour = photo if photo.shape[2] >= 3 else np.repeat(photo[..., :1], 3, 2)
        return self.layer_cache.get_or_compute(key, lambda: clear_layer(colour[..., :3]))

    def rerender(self, photo: np.ndarray, previous: EditResult, strength: float,
                 progress: Progress = _no_progress) -> EditResult:
        """The same edit at another strength: synthesis, parsing and compositing only. ``photo`` must be the
        photo ``previous`` was made from (its cached warp and clear layer are reused)."""
        prepare(self.device)
        photo = check_photo(photo, "photo")
        return self._render(photo, [f.state for f in previous.faces], strength, False, {}, progress,
                            previous.whole_hair)

    def _render(self, photo: np.ndarray, states: list[FaceState], strength: float, with_inversion: bool,
                timings: dict[str, float], progress: Progress, whole_hair: bool = False,
                starts: Sequence[Partial] = ()) -> EditResult:
        outputs, pieces = [], []
        deferred = None
        colour = photo if photo.shape[2] >= 3 else np.repeat(photo[..., :1], 3, 2)
        for n, st in enumerate(states):
            progress("synthesize", n / len(states))
            with _timed(timings, "synthesize"):
                edited = synthesize(self.models.decoder, apply_offset(st.w, st.offset, strength),
                                    check=lambda n=n: progress("synthesize", n / len(states)),
                                    start=starts[n] if starts else None)
                inversion = synthesize(self.models.decoder, st.w)[0] if with_inversion else None
            progress("parse", n / len(states))
            with _timed(timings, "parse"):
                hair_after, recolour = parse.hair_and_weight(self.models.parser, edited)

            def check(n: int = n) -> None:  # cancellation points inside the warp of a big face
                progress("composite", n / (len(states) + 1))

            with _timed(timings, "composite"):
                check()
                warp = st.warp or prepare_warp(st.transform, photo.shape[:2], st.hair_before, check=check)
                fast = composite.FAST and hair_after.device.type == "cpu"
                mask = (edit_mask_fast if fast else edit_mask_warm)(warp, hair_after[0], check=check)
                shown = edited
                if st.rgb is not None:
                    shown = match_hair_colour(edited, recolour[:, None], st.rgb, check)
                if fast and len(states) == 1 and not (whole_hair and st.hair is not None):
                    deferred = ((shown[0] + 1) / 2, mask, warp)  # warped while composed, only where it shows
                    outputs.append(FaceOutput(st, edited[0], mask, inversion))
                    continue
                rgba, box = warp_face_warm((shown[0] + 1) / 2, mask, warp, check)
                piece = (rgba[:3], rgba[3], box)
                if whole_hair and st.hair is not None:
                    weight = restrict_to_photo(recolour[0], st.transform)[None, None]
                    piece = longhair.extend_piece(colour, piece, st.hair, shown, weight, st.transform, check)
                    rgba = None  # extended beyond the square: only `compose_layer` takes it
                pieces.append((piece, rgba))
            outputs.append(FaceOutput(st, edited[0], mask, inversion))
        with _timed(timings, "composite"):
            progress("composite", len(states) / (len(states) + 1))
            done = lambda: progress("composite", len(states) / (len(states) + 1))  # noqa: E731
            if deferred is not None:
                layer = compose_face(colour[..., :3], *deferred, base=states[0].layer, check=done)
            elif len(pieces) == 1 and pieces[0][1] is not None:
                layer = compose_one(colour[..., :3], pieces[0][1], pieces[0][0][2], done)
            else:
                layer = compose_layer(colour[..., :3], [p for p, _ in pieces], done,
                                      base=states[0].layer if states else None)
        progress("done", 1.0)
        return EditResult(layer, outputs, strength, timings, whole_hair)


@contextmanager
def _timed(timings: dict[str, float], stage: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0
