"""Aligned reference images take HairCLIP's own reference path: no detection, the 1024 crop as it is.

The official recipe (``mapper/datasets/latents_dataset_inference.py``, ``AvgLabLoss.gen_hair_mask`` and
``HairMapper.gen_image_embedding``) is written out here with torchvision and plain modules, on the same
networks, and the pipeline's embedding must equal it bit for bit.
"""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from torch import nn
from torchvision import transforms

from hairclip.nets.mapper import CLIP_MEAN, CLIP_STD
from hairclip.pipeline.conditions import Conditions
from hairclip.pipeline.editor import EditOptions, HairEditor
from hairclip.pipeline.faces import NoFaceFound
from hairclip.pipeline.models import Models
from hairclip_shared.protocol import BadRequest, EditRequest, Image, Limits, ServerInfo, pack, parse_images


class NeverDetect:
    """A detector that fails the test if anything asks it for faces."""

    def detect(self, image):
        raise AssertionError("an aligned image was sent to the face detector")


class NoFaces:
    def __init__(self):
        self.calls = 0

    def detect(self, image):
        self.calls += 1
        return []


@pytest.fixture(scope="module")
def editor() -> HairEditor:
    return HairEditor(Models.random_tiny("cpu", seed=0, detector=NeverDetect()))


def reference_image(size: int = 1024, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] * (1024 / size)
    base = np.stack([xx * 0.2, yy * 0.2, (xx + yy) * 0.1], -1)
    return np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)


@torch.no_grad()
def official_reference_embedding(models: Models, image: PILImage.Image) -> torch.Tensor:
    """HairCLIP's inference on a reference file, step by step as the official code writes it."""
    x = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])(image)[None]
    labels = models.parser(nn.AdaptiveAvgPool2d((512, 512))(x)).detach()
    mask_512 = (torch.unsqueeze(torch.max(labels, 1)[1], 1) == 13).float()
    hairmasked = x * nn.AdaptiveAvgPool2d((1024, 1024))(mask_512)
    pooled = nn.AdaptiveAvgPool2d((224, 224))(hairmasked)
    return models.mapper.clip_model.encode_image(transforms.Normalize(CLIP_MEAN, CLIP_STD)(pooled * 0.5 + 0.5))


def test_aligned_reference_embedding_is_the_official_recipe(editor, tmp_path):
    ref = reference_image()
    path = tmp_path / "ref.png"
    PILImage.fromarray(ref).save(path)
    official = official_reference_embedding(editor.models, PILImage.open(path)).float()
    ours = editor.conditions.reference(ref, "hairstyle", aligned=True)
    assert torch.equal(ours, official)


def test_aligned_photo_and_reference_edit_uses_the_official_embedding_without_detection(editor):
    photo, ref = reference_image(seed=1), reference_image(seed=2)
    result = editor.edit(photo, Conditions(hairstyle_ref=ref, hairstyle_ref_aligned=True, colour="purple"),
                         EditOptions(aligned=True))
    state = result.faces[0].state
    official = official_reference_embedding(editor.models, PILImage.fromarray(ref)).float()
    purple = editor.conditions.text("purple hair")
    assert torch.equal(state.offset, editor.models.mapper.edit_offset(state.w, official, purple))


def test_aligned_reference_of_another_size_is_resized_to_1024(editor):
    small = reference_image(512, seed=4)
    resized = PILImage.fromarray(small).resize((1024, 1024), PILImage.LANCZOS)  # the official code takes only 1024
    ours = editor.conditions.reference(small, "colour", aligned=True)
    assert torch.equal(ours, official_reference_embedding(editor.models, resized).float())


def test_the_same_image_aligned_or_not_is_encoded_separately(editor):
    ref = reference_image(seed=5)
    aligned = editor.conditions.reference(ref, "hairstyle", aligned=True)
    editor.models.detector, old = NoFaces(), editor.models.detector
    try:
        with pytest.raises(NoFaceFound):  # not served from the aligned entry of the cache
            editor.conditions.reference(ref, "hairstyle", aligned=False)
    finally:
        editor.models.detector = old
    assert torch.equal(editor.conditions.reference(ref, "hairstyle", aligned=True), aligned)


def test_unaligned_reference_without_a_face_fails_before_any_inversion(editor):
    none = NoFaces()
    editor.models.detector, old = none, editor.models.detector
    inversions = editor.inverter.cache.misses + editor.inverter.cache.hits
    try:
        with pytest.raises(NoFaceFound, match="no face was found in the reference image.*mark it as aligned") as err:
            editor.edit(reference_image(seed=6), Conditions(hairstyle_ref=reference_image(seed=7)),
                        EditOptions(aligned=True))
    finally:
        editor.models.detector = old
    assert err.value.code == "no_face" and none.calls == 1
    assert editor.inverter.cache.misses + editor.inverter.cache.hits == inversions


# ---------------------------------------------------------------------------------------------- the wire

def img(w: int, h: int, channels: str = "RGB") -> Image:
    return Image(w, h, bytes(w * h * len(channels)), channels)


def round_trip(req: EditRequest) -> tuple[dict, EditRequest]:
    params, specs, frames = req.to_wire()
    params = msgpack.unpackb(pack(params))
    return params, EditRequest.from_wire(params, parse_images(specs, [memoryview(f) for f in frames], Limits()))


def test_aligned_flags_travel_per_image_and_are_absent_when_unset():
    req = EditRequest(img(8, 8), hairstyle_ref=img(4, 4), colour_ref=img(4, 4),
                      aligned=["hairstyle_ref", "source"])
    params, back = round_trip(req)
    assert params["aligned"] == ["source", "hairstyle_ref"] and back == req
    assert back.aligned == ("source", "hairstyle_ref")
    params, back = round_trip(EditRequest(img(8, 8), hairstyle="afro"))
    assert "aligned" not in params and back.aligned == ()


@pytest.mark.parametrize("kwargs, message", [
    (dict(hairstyle="afro", aligned=["hairstyle_ref"]), "has no hairstyle_ref image"),
    (dict(hairstyle="afro", aligned=["mask"]), "only source, hairstyle_ref, colour_ref"),
    (dict(hairstyle="afro", aligned="source"), "must be a list of image roles"),
    (dict(hairstyle="afro", aligned=["source", "source"]), "twice"),
])
def test_aligned_flags_must_name_images_of_the_request(kwargs, message):
    with pytest.raises(BadRequest, match=message):
        EditRequest(img(8, 8), **kwargs)


def test_hello_carries_each_weight_file_path_and_sha256():
    weights = {"hairclip.pt": {"path": "/w/mine.pt", "sha256": "ab" * 32}}
    info = ServerInfo("0.1", 1, "cpu", {"hairclip.pt": "loaded"}, [], [], Limits(), weights)
    assert ServerInfo.from_wire(msgpack.unpackb(pack(info.to_wire("r")))) == info
    bad = info.to_wire("r") | {"weights": {"hairclip.pt": {"path": "/w/mine.pt"}}}
    with pytest.raises(BadRequest, match="sha256"):
        ServerInfo.from_wire(bad)
