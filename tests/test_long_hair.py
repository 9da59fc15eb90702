"""Long hair beyond the FFHQ crop: found by the window parse, recoloured for colour edits, reported otherwise.

Small random networks, with `portraits.KeyParser` in place of the random parser (whose hair masks are noise):
it labels hair by the drawn portrait's background and skin colours, so the hair it finds on the photo is the
hair that was drawn. The crop's own edit is the random decoder's noise, recoloured by the RGB mode.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation, binary_erosion

from hairclip.color import masked_mean, rgb_to_lab
from hairclip.images import composite
from hairclip.pipeline import longhair, parse
from hairclip.pipeline.composite import compose_one, warp_face_warm
from hairclip.pipeline.conditions import Conditions, match_hair_colour
from hairclip.pipeline.editor import EditOptions, HairEditor
from hairclip.pipeline.faces import KnownFaces
from hairclip.pipeline.models import Models
from portraits import KeyParser, portrait

TARGET = "#7030a0"


@pytest.fixture(scope="module")
def editor() -> HairEditor:
    models = Models.random_tiny("cpu", seed=0)
    models.parser = KeyParser().to(models.device).eval()
    return HairEditor(models)


def edit(editor: HairEditor, photo: np.ndarray, people, cond: Conditions, **options):
    editor.models.detector = KnownFaces(people)
    return editor.edit(photo, cond, EditOptions(**options))


def lab_distance(image: np.ndarray, where: np.ndarray, rgb: str = TARGET) -> float:
    """Distance in Lab between the mean colour of ``image`` over ``where`` and ``rgb`` (as `hair_lab_distance`)."""
    x = torch.from_numpy(image.astype(np.float64) / 255).permute(2, 0, 1)[None]
    mean = masked_mean(rgb_to_lab(x), torch.from_numpy(where.astype(np.float64))[None, None])
    target = rgb_to_lab(torch.tensor([int(rgb[i:i + 2], 16) for i in (1, 3, 5)], dtype=torch.float64)
                        .view(1, 3, 1, 1) / 255)
    return float((mean - target).flatten().norm())


def in_square(result, shape, which: int | None = None) -> np.ndarray:
    """Photo pixels inside any edited face's square (or face ``which``'s)."""
    inside = np.zeros(shape, bool)
    for f in result.faces if which is None else result.faces[which:which + 1]:
        x0, y0, x1, y1 = f.state.box
        inside[y0:y1, x0:x1] |= longhair.square_weight(f.state.transform, f.state.box, torch.device("cpu"),
                                                       seam=0).numpy() > 0
    return inside


def test_short_hair_photo_is_the_same_with_and_without_whole_hair(editor):
    photo, hair, faces = portrait(360, 420, [(180, 190, 120, 200)], spread=0.9)
    whole = edit(editor, photo, faces, Conditions(rgb=TARGET), whole_hair=True)
    crop = edit(editor, photo, faces, Conditions(rgb=TARGET), whole_hair=False)
    assert whole.whole_hair and not crop.whole_hair
    assert whole.hair_outside_crop < 0.01
    assert np.array_equal(whole.layer, crop.layer)


def test_long_hair_outside_the_crop_reaches_the_target_like_inside(editor):
    photo, hair, faces = portrait(400, 760, [(200, 140, 110, 740)])
    whole = edit(editor, photo, faces, Conditions(rgb=TARGET))  # a colour-only edit: whole hair by default
    crop = edit(editor, photo, faces, Conditions(rgb=TARGET), whole_hair=False)
    assert whole.whole_hair
    assert whole.hair_outside_crop == pytest.approx(crop.hair_outside_crop) and whole.hair_outside_crop > 0.5
    inside = in_square(whole, hair.shape)
    out_whole, out_crop = composite(photo, whole.layer), composite(photo, crop.layer)
    d_in = lab_distance(out_whole, hair & inside)
    d_out = lab_distance(out_whole, hair & ~inside)
    assert d_out <= d_in + 2
    assert lab_distance(out_crop, hair & ~inside) > 30  # today's result: the old colour below the crop
    assert lab_distance(photo, hair & ~inside) > 30
    # Outside the drawn hair (grown by 3 px for the parser's 512 px window and antialiased edges) and the face
    # squares, nothing moved.
    keep = ~binary_dilation(hair, iterations=3) & ~inside
    assert np.array_equal(out_whole[keep], photo[keep])
    # Strand texture stays: the recoloured hair's lightness still varies with the drawn strands.
    lab = rgb_to_lab(torch.from_numpy(out_whole / 255.0).permute(2, 0, 1)[None])[0, 0].numpy()
    before = rgb_to_lab(torch.from_numpy(photo / 255.0).permute(2, 0, 1)[None])[0, 0].numpy()
    low = hair & ~inside
    assert np.corrcoef(lab[low], before[low])[0, 1] > 0.9


def test_crop_only_is_the_plain_crop_edit(editor, monkeypatch):
    """--crop-only is the edit as it was before the long-hair stage: the crop's pieces composited, nothing else."""
    photo, _, faces = portrait(400, 760, [(200, 140, 110, 740)])
    monkeypatch.setattr(longhair, "extend_piece", lambda *a, **k: pytest.fail("the long-hair stage ran"))
    crop = edit(editor, photo, faces, Conditions(rgb=TARGET), whole_hair=False)
    pieces = []
    for f in crop.faces:  # the compositing recipe of a crop edit, from the faces' own synthesis and mask
        _, recolour = parse.hair_and_weight(editor.models.parser, f.edited[None])
        shown = match_hair_colour(f.edited[None], recolour[:, None], f.state.rgb)
        pieces.append(warp_face_warm((shown[0] + 1) / 2, f.mask, f.state.warp))  # the cached photo's warp
    assert len(pieces) == 1 and np.array_equal(crop.layer, compose_one(photo, *pieces[0]))


def test_hairstyle_edit_keeps_the_crop_and_reports_the_hair_outside(editor):
    photo, _, faces = portrait(400, 760, [(200, 140, 110, 740)])
    result = edit(editor, photo, faces, Conditions(hairstyle="bob cut"))
    assert not result.whole_hair
    assert 0.5 < result.hair_outside_crop < 1


def test_the_hair_a_hairstyle_edit_leaves_outside_the_crop_is_a_mask_of_exactly_that_hair(editor):
    photo, hair, faces = portrait(400, 760, [(200, 140, 110, 740)])
    result = edit(editor, photo, faces, Conditions(hairstyle="bob cut"))
    mask = result.hair_outside_mask()
    assert mask.shape == hair.shape and mask.dtype == np.uint8  # on the photo, pixel for pixel
    inside = in_square(result, hair.shape)
    assert not mask[inside].any()  # the crop's own hair is the edit's
    # The drawn hair outside the square, up to the parser's soft edge (3 px, as above): all of its core at 255,
    # nothing beyond its edge.
    assert (mask[binary_erosion(hair, iterations=3) & ~inside] == 255).all()
    assert not mask[~binary_dilation(hair, iterations=3)].any()
    assert ((mask > 127) == (hair & ~inside)).mean() > 0.99
    # A colour edit recolours that hair (no mask); --crop-only leaves it, and gives the same mask.
    assert edit(editor, photo, faces, Conditions(rgb=TARGET)).hair_outside_mask() is None
    crop = edit(editor, photo, faces, Conditions(rgb=TARGET), whole_hair=False).hair_outside_mask()
    assert np.array_equal(crop, mask)


def test_short_hair_leaves_no_mask(editor):
    photo, _, faces = portrait(360, 420, [(180, 190, 120, 200)], spread=0.9)
    assert edit(editor, photo, faces, Conditions(hairstyle="bob cut")).hair_outside_mask() is None


def test_two_faces_with_overlapping_hair_each_keep_their_own_colour(editor):
    heads = [(150, 130, 100, 560), (290, 130, 100, 560)]  # the two curtains of hair overlap between the faces
    photo, hair, faces = portrait(440, 580, heads)
    both = edit(editor, photo, faces, Conditions(rgb=TARGET))
    out_both = composite(photo, both.layer)
    inside = in_square(both, hair.shape)
    below = hair & ~inside
    xs = np.arange(photo.shape[1])[None, :]
    left_hair, right_hair = below & (xs < 200), below & (xs > 240)
    right_square = in_square(both, hair.shape, 1) & ~in_square(both, hair.shape, 0)  # the crops overlap a little
    # Both faces edited: all the hair below both reaches the colour.
    assert lab_distance(out_both, left_hair) < 10 and lab_distance(out_both, right_hair) < 10
    # One face at a time, in two colours: the left face's edit leaves the right face's hair and square as they
    # were, although its window covers them; the right face's edit then leaves the left face's new colour.
    green = "#30a070"
    first = composite(photo, edit(editor, photo, faces, Conditions(rgb=TARGET), faces=0).layer)
    assert lab_distance(first, left_hair) < 10
    assert np.array_equal(first[right_hair], photo[right_hair])
    assert np.array_equal(first[right_square], photo[right_square])
    second = composite(first, edit(editor, first, faces, Conditions(rgb=green), faces=1).layer)
    assert lab_distance(second, right_hair, green) < 10
    assert np.array_equal(second[left_hair], first[left_hair])
    assert lab_distance(second, left_hair) < 10


def test_cli_prints_the_hair_outside_the_crop_and_takes_both_flags(tmp_path, capsys):
    from hairclip.cli import main
    from hairclip.images import save_image

    photo, _, _ = portrait(240, 420, [(120, 100, 70, 410)])
    save_image(tmp_path / "long.png", photo)
    tiny = ["--random-tiny", "--device", "cpu", "--detector", "centre"]
    assert main(["edit", str(tmp_path / "long.png"), "-o", str(tmp_path / "a.png"), "--hairstyle", "bob cut",
                 *tiny]) == 0
    assert "of the hair lies outside the face crop(s) and keeps its old look" in capsys.readouterr().out
    assert main(["edit", str(tmp_path / "long.png"), "-o", str(tmp_path / "b.png"), "--rgb", TARGET,
                 "--crop-only", *tiny]) == 0
    assert "keeps its old look" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["edit", str(tmp_path / "long.png"), "-o", str(tmp_path / "c.png"), "--rgb", TARGET,
              "--crop-only", "--whole-hair", *tiny])


def test_whole_hair_travels_in_the_protocol_only_when_set():
    from hairclip_shared.editing import EditSettings, build_request, hair_outside_message
    from hairclip_shared.protocol import BadRequest, EditRequest, Image

    source = Image(4, 4, bytes(64), "RGBA")
    for mode, value in (("auto", None), ("yes", True), ("no", False)):
        req = build_request(EditSettings(colour_mode="rgb", hairstyle_mode="none", whole_hair=mode), source)
        assert req.whole_hair is value
        params, _, _ = req.to_wire()
        assert params.get("whole_hair") is value and ("whole_hair" in params) == (value is not None)
        assert EditRequest.from_wire(params, {"source": source}).whole_hair is value
    assert EditSettings.from_json('{"whole_hair": "sometimes"}').whole_hair == "auto"
    with pytest.raises(BadRequest):
        EditRequest(source, rgb="#102030", whole_hair="yes")
    assert hair_outside_message({"hair_outside_crop": 0.4, "whole_hair": False}).startswith("40% of the hair")
    assert hair_outside_message({"hair_outside_crop": 0.4, "whole_hair": True}) == ""
    assert hair_outside_message({"detectors": ["dlib"]}) == ""  # an older server: no warning


def test_the_server_carries_whole_hair_and_reports_the_hair_outside_the_crop(editor):
    from hairclip.engine import PipelineEngine
    from hairclip.images import array_to_image, image_to_array
    from hairclip.server import Server
    from hairclip_shared.client import Client
    from hairclip_shared.protocol import EditRequest

    photo, _, faces = portrait(260, 520, [(130, 110, 95, 510)])  # a square of 128 px at least
    editor.models.detector = KnownFaces(faces)
    with Server(PipelineEngine(editor.models), "tcp://127.0.0.1:0") as server, Client(server.endpoint) as client:
        for whole in (False, None):  # None: left out of the request, the default (on for a colour-only edit)
            remote = client.submit(EditRequest(array_to_image(photo), rgb=TARGET, whole_hair=whole,
                                               preview=False)).result(timeout=300)
            local = editor.edit(photo, Conditions(rgb=TARGET), EditOptions(whole_hair=whole))
            assert np.array_equal(image_to_array(remote.layer), local.layer)
            assert remote.meta["whole_hair"] is (whole is None)
            assert remote.meta["hair_outside_crop"] == pytest.approx(local.hair_outside_crop, abs=1e-4)
            assert remote.meta["hair_outside_crop"] > 0.5


def test_the_server_sends_the_hair_left_outside_the_crop_only_when_it_is_left(editor):
    from hairclip.engine import PipelineEngine
    from hairclip.images import array_to_image
    from hairclip.server import Server
    from hairclip_shared.client import Client
    from hairclip_shared.protocol import EditRequest

    photo, _, faces = portrait(260, 520, [(130, 110, 95, 510)])
    editor.models.detector = KnownFaces(faces)
    with Server(PipelineEngine(editor.models), "tcp://127.0.0.1:0") as server, Client(server.endpoint) as client:
        request = EditRequest(array_to_image(photo), hairstyle="bob cut", preview=False)
        remote = client.submit(request).result(timeout=300)
        local = editor.edit(photo, Conditions(hairstyle="bob cut")).hair_outside_mask()
        m = remote.hair_outside
        assert (m.width, m.height, m.channels, m.depth) == (260, 520, "A", "u8")
        assert m.tobytes() == local.tobytes()
        colour = client.submit(EditRequest(array_to_image(photo), rgb=TARGET, preview=False)).result(timeout=300)
        assert colour.hair_outside is None and colour.aligned == []
