"""The official alignment on a real photo: dlib's HOG detector and 68-point predictor on scikit-image's astronaut
(a real portrait bundled with the wheel, no download), the FFHQ crop of its landmarks, the layer put back on the
face, and a phone-style JPEG (rotated pixels + EXIF orientation, an ICC profile) through `hairclip edit`."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageCms

from hairclip.images import read_photo
from hairclip.pipeline.align import align_face
from hairclip.pipeline.faces import (
    DETECT_SIDE,
    DlibDetector,
    Face,
    FirstThatFinds,
    KnownFaces,
    LazyDetector,
    dlib_predictor_path,
    select_faces,
)

dlib = pytest.importorskip("dlib")
skdata = pytest.importorskip("skimage.data")

FACE_BOX = (175, 76, 265, 166)  # where dlib finds her face (REFERENCE.md section 6)
PATCH_BOX = (126, 335, 215, 425)  # the round mission patch on her suit, a weak false alarm


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()


@pytest.fixture(scope="module")
def detector() -> DlibDetector:
    return DlibDetector()


def test_dlib_finds_the_face_where_it_is_and_drops_the_weak_false_box(astronaut, detector):
    boxes = detector.boxes(astronaut)  # everything dlib reports, best first
    assert [tuple(b[:4]) for b in boxes] == [FACE_BOX, PATCH_BOX]
    assert boxes[0, 4] > 1.0 > 0.3 > boxes[1, 4]
    faces = detector.detect(astronaut)
    assert len(faces) == 1 and faces[0].source == "dlib" and faces[0].box == FACE_BOX
    x0, y0, x1, y1 = FACE_BOX
    cx, cy = faces[0].centre
    assert x0 < cx < x1 and y0 < cy < y1


def test_with_every_box_kept_the_largest_face_is_still_hers(astronaut, detector):
    everything = DlibDetector(min_score=0.0).detect(astronaut)
    assert len(everything) == 2
    assert everything[select_faces(everything, "largest")[0]].box == FACE_BOX


def test_a_lone_weak_face_is_kept_rather_than_reporting_no_face(astronaut):
    faces = DlibDetector(min_score=5.0).detect(astronaut)  # no box passes: the best one stays
    assert [f.box for f in faces] == [FACE_BOX]


def test_landmarks_are_the_official_calls_output(astronaut, detector):
    """e4e's get_landmark: detector(img, 1), then the 68-point predictor on the box, points as integers."""
    rects = dlib.get_frontal_face_detector()(astronaut, 1)
    rect = next(r for r in rects if (r.left(), r.top(), r.right(), r.bottom()) == FACE_BOX)
    shape = dlib.shape_predictor(str(dlib_predictor_path()))(astronaut, rect)
    official = np.array([[p.x, p.y] for p in shape.parts()])
    np.testing.assert_array_equal(detector.detect(astronaut)[0].landmarks, official)


def ffhq_recipe(photo: np.ndarray, lm: np.ndarray, size: int = 256) -> np.ndarray:
    """The FFHQ/e4e recipe written out directly (no shrink or padding: the test photo needs neither)."""
    eye_l, eye_r = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_avg, eye_to_eye = (eye_l + eye_r) * 0.5, eye_r - eye_l
    eye_to_mouth = (lm[48] + lm[54]) * 0.5 - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    qsize = np.hypot(*x) * 2
    assert int(np.floor(qsize / size * 0.5)) <= 1  # no shrink
    img = Image.fromarray(photo)
    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))), int(np.ceil(max(quad[:, 0]))),
            int(np.ceil(max(quad[:, 1]))))
    crop = (max(crop[0] - border, 0), max(crop[1] - border, 0), min(crop[2] + border, img.size[0]),
            min(crop[3] + border, img.size[1]))
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad -= crop[0:2]
    pad = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))), int(np.ceil(max(quad[:, 0]))),
           int(np.ceil(max(quad[:, 1]))))
    pad = (max(-pad[0] + border, 0), max(-pad[1] + border, 0), max(pad[2] - img.size[0] + border, 0),
           max(pad[3] - img.size[1] + border, 0))
    assert max(pad) <= border - 4  # no padding
    return np.array(img.transform((size, size), Image.QUAD, (quad + 0.5).flatten(), Image.BILINEAR))


def test_aligned_crop_is_the_ffhq_crop_of_dlibs_landmarks(astronaut, detector):
    face = detector.detect(astronaut)[0]
    aligned = align_face(astronaut, face.landmarks)
    assert not aligned.padded
    np.testing.assert_array_equal(aligned.image, ffhq_recipe(astronaut, face.landmarks.astype(np.int64)))


def test_large_photos_are_searched_at_the_one_detection_size(astronaut, detector):
    """A photo over DETECT_SIDE is searched shrunk (the same on every device); boxes come back in its pixels and
    the landmarks are predicted at full resolution."""
    big = np.kron(astronaut, np.ones((3, 3, 1), np.uint8))  # 1536 px
    assert max(big.shape) > DETECT_SIDE == detector.max_side
    shrunk = np.asarray(Image.fromarray(big).resize((DETECT_SIDE, DETECT_SIDE), Image.BILINEAR))
    scaled_back = np.rint((detector.boxes(shrunk)[:, :4] + 0.5) * 1.5 - 0.5)
    np.testing.assert_array_equal(detector.boxes(big)[:, :4], scaled_back)
    faces = detector.detect(big)
    assert len(faces) == 1
    np.testing.assert_allclose(faces[0].centre, detector.detect(astronaut)[0].centre * 3 + 1, atol=3)


def test_fan_answers_only_when_dlib_finds_nothing(astronaut, detector):
    stand_in = Face(np.tile([50.0, 50.0], (68, 1)) + np.arange(68)[:, None], (0, 0, 99, 99), source="fan")
    chain = FirstThatFinds(detector, KnownFaces([stand_in]))
    assert [f.source for f in chain.detect(astronaut)] == ["dlib"]
    assert chain.detect(np.full((200, 200, 3), 128, np.uint8)) == [stand_in]


def test_the_detector_is_built_at_the_first_photo_only():
    built = []
    lazy = LazyDetector(lambda: built.append(1) or KnownFaces([]), "dlib")
    assert not built and lazy.name == "dlib"
    assert lazy.detect(np.zeros((8, 8, 3), np.uint8)) == [] and lazy.detect(np.zeros((8, 8, 3), np.uint8)) == []
    assert built == [1] and lazy.name == "given"


# ---------------------------------------------------------------------------------------------- the whole edit


@pytest.fixture(scope="module")
def tiny_dlib_editor(detector):
    from hairclip.pipeline.editor import HairEditor
    from hairclip.pipeline.models import Models

    return HairEditor(Models.random_tiny("cpu", detector=detector))


def test_the_paste_back_layer_lands_on_her_face(astronaut, tiny_dlib_editor):
    from hairclip.pipeline.conditions import Conditions

    result = tiny_dlib_editor.edit(astronaut, Conditions(hairstyle="afro"))
    assert [f.state.source for f in result.faces] == ["dlib"]  # one face: the patch is not edited
    alpha = result.layer[..., 3]
    x0, y0, x1, y1 = FACE_BOX
    assert alpha[y0 - 40:y1 + 40, x0 - 40:x1 + 40].astype(bool).mean() > 0.05
    bx0, by0, bx1, by1 = result.boxes[0]  # the face square's bounding box on the photo
    assert bx0 < x0 and by0 < y0 and bx1 > x1 and by1 > y1
    outside = np.ones_like(alpha, bool)
    outside[max(by0 - 1, 0):by1 + 1, max(bx0 - 1, 0):bx1 + 1] = False
    assert not alpha[outside].any()
    px0, py0, px1, py1 = PATCH_BOX
    assert not alpha[py0:py1, px0:px1].any() and not alpha[400:, 300:].any()


def phone_jpeg(path, upright: np.ndarray) -> bytes:
    """What a phone writes when held sideways: the pixels turned 90 degrees, EXIF orientation 6, an ICC profile."""
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112], exif[0x010F], exif[0x0110] = 6, "HairCLIP Test Phone", "Model T"
    Image.fromarray(upright).transpose(Image.ROTATE_90).save(path, quality=95, exif=exif, icc_profile=icc)
    return icc


def test_a_rotated_phone_photo_gives_the_upright_face(astronaut, detector, tmp_path):
    phone_jpeg(tmp_path / "phone.jpg", astronaut)
    with Image.open(tmp_path / "phone.jpg") as raw:
        assert raw.size == (512, 512) and raw.getexif()[0x0112] == 6
    photo, info = read_photo(tmp_path / "phone.jpg")
    assert np.abs(photo.astype(int) - astronaut).mean() < 3  # upright again (JPEG noise only)
    boxes = detector.boxes(photo)
    np.testing.assert_allclose(boxes[0, :4], FACE_BOX, atol=4)


def test_edit_command_keeps_orientation_icc_and_exif(astronaut, tmp_path, capsys):
    """The acceptance run: `hairclip edit astronaut --random-tiny --detector dlib` edits her real face."""
    from hairclip.cli import main

    icc = phone_jpeg(tmp_path / "phone.jpg", astronaut)
    out, layer = tmp_path / "out.jpg", tmp_path / "layer.png"
    assert main(["edit", str(tmp_path / "phone.jpg"), "-o", str(out), "--layer", str(layer), "--hairstyle", "afro",
                 "--random-tiny", "--detector", "dlib", "--device", "cpu"]) == 0
    said = capsys.readouterr().out
    assert "1 face(s) edited" in said and "by dlib" in said
    with Image.open(out) as im:
        assert im.size == (512, 512) and im.info["icc_profile"] == icc
        exif = im.getexif()
        assert exif[0x0112] == 1 and exif[0x010F] == "HairCLIP Test Phone" and exif[0x0110] == "Model T"
    with Image.open(layer) as im:
        alpha = np.array(im)[..., 3]
        assert im.info["icc_profile"] == icc
    x0, y0, x1, y1 = FACE_BOX  # in upright coordinates: the face, not where it sits in the stored pixels
    assert alpha[y0:y1, x0:x1].any() and not alpha[400:, 300:].any()


def test_an_aligned_edit_never_builds_the_detector(tiny_dlib_editor):
    from hairclip.pipeline.conditions import Conditions
    from hairclip.pipeline.editor import EditOptions

    def missing():
        raise AssertionError("an aligned edit asked for the face detector")

    lazy, kept = LazyDetector(missing, "dlib"), tiny_dlib_editor.models.detector
    tiny_dlib_editor.models.detector = lazy
    try:
        crop = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
        result = tiny_dlib_editor.edit(crop, Conditions(hairstyle="afro"), EditOptions(aligned=True))
    finally:
        tiny_dlib_editor.models.detector = kept
    assert not lazy.loaded and [f.state.source for f in result.faces] == ["aligned"]
