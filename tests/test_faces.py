"""Stage 1, faces: the selection rules, the weight-file layouts and loading, and detection end to end on random
weights (the published weights cannot be downloaded here, so what is tested is the machinery, not accuracy)."""

import hashlib
import math
import re
import socket
import urllib.request

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hairclip.checkpoints import CheckpointError, load_fan, load_s3fd
from hairclip.errors import HairclipError
from hairclip.pipeline.faces import (
    DETECT_SIDE,
    DETECTOR_FILE,
    FAN,
    LANDMARK_FILE,
    MIN_QUAD_SIDE,
    MIRROR,
    S3FD,
    Face,
    FaceTooSmall,
    FanDetector,
    KnownFaces,
    NoFaceFound,
    crop_face,
    crop_frame,
    heatmap_points,
    left_to_right,
    select_faces,
)
from hairclip.weights import WeightsMissing, WeightStore

# Facts of the published networks, from face-alignment 1.5.0's s3fd() and FAN(4) (compared key for key, shape for
# shape, with these classes). 89,836,440 is also the raw tensor size others record for s3fd-619a316812.pth.
S3FD_KEYS, S3FD_TENSOR_BYTES = 65, 89_836_440
FAN4_KEYS, FAN4_NUMEL = 1129, 23_874_320  # keys including BatchNorm num_batches_tracked; numel without them


def make_face(cx: float, cy: float, eye_dist: float = 40.0, score: float = 1.0) -> Face:
    """A frontal face whose alignment centre is (cx, cy): eyes eye_dist apart, mouth eye_dist below them."""
    lm = np.tile([cx, cy], (68, 1)).astype(float)
    lm[36:42] = [cx - eye_dist / 2, cy - eye_dist / 2]
    lm[42:48] = [cx + eye_dist / 2, cy - eye_dist / 2]
    lm[48] = [cx - eye_dist / 3, cy + eye_dist / 2]
    lm[54] = [cx + eye_dist / 3, cy + eye_dist / 2]
    return Face(lm, (cx - eye_dist, cy - eye_dist, cx + eye_dist, cy + eye_dist), score)


# ---------------------------------------------------------------------------------------------- Face


def test_face_geometry_is_that_of_the_alignment_points():
    f = make_face(120, 120, eye_dist=40)
    e_l, e_r = f.eyes
    np.testing.assert_allclose(e_l, [100, 100])
    np.testing.assert_allclose(e_r, [140, 100])
    np.testing.assert_allclose(f.mouth, [120, 140])
    np.testing.assert_allclose(f.centre, [120, 120])
    assert f.quad_side == pytest.approx(2 * max(2 * 40, 1.8 * 40))  # 2 * max(2|d_e|, 1.8|d_m|)


def test_face_owns_a_read_only_float64_copy():
    lm = np.ones((68, 2), np.float32)
    f = Face(lm, (0, 0, 1, 1), 0.9)
    lm[:] = 5
    assert f.landmarks.dtype == np.float64 and f.landmarks[0, 0] == 1
    with pytest.raises(ValueError):
        f.landmarks[0, 0] = 2
    with pytest.raises(ValueError, match="68"):
        Face(np.ones((5, 2)), (0, 0, 1, 1))
    with pytest.raises(ValueError):
        Face(np.full((68, 2), np.nan), (0, 0, 1, 1))


def test_known_faces_returns_the_given_faces_and_checks_the_image():
    faces = [make_face(50, 60), make_face(150, 60)]
    det = KnownFaces(faces)
    got = det.detect(np.zeros((100, 200, 3), np.uint8))
    assert got == faces and got is not det.faces
    got.clear()
    assert len(det.detect(np.zeros((100, 200, 3), np.uint8))) == 2
    with pytest.raises(ValueError, match="uint8"):
        det.detect(np.zeros((100, 200, 3), np.float32))
    with pytest.raises(ValueError):
        det.detect(np.zeros((100, 200), np.uint8))


# ---------------------------------------------------------------------------------------------- selection


def test_selected_faces_come_left_to_right():
    faces = [make_face(300, 50), make_face(100, 80), make_face(200, 20)]
    assert left_to_right(faces) == [1, 2, 0]
    assert select_faces(faces) == [1, 2, 0]
    assert select_faces(faces, 0) == [1] and select_faces(faces, 2) == [0]


def test_same_column_faces_are_ordered_top_to_bottom_then_by_position():
    faces = [make_face(100, 300), make_face(100, 100), make_face(100, 300)]
    assert left_to_right(faces) == [1, 0, 2]


def test_largest_face_wins_and_ties_go_to_the_leftmost():
    faces = [make_face(300, 50, 50), make_face(100, 80, 40), make_face(200, 20, 80), make_face(50, 50, 80)]
    assert select_faces(faces, "largest") == [3]


def test_index_counts_within_the_selection():
    faces = [make_face(100, 100), make_face(300, 100), make_face(500, 100)]
    assert select_faces(faces, 0, (250, 0, 400, 200)) == [1]
    assert select_faces(faces, 1, (250, 0, 400, 200)) == [2]
    with pytest.raises(NoFaceFound, match="2 face"):
        select_faces(faces, 2, (250, 0, 400, 200))
    with pytest.raises(NoFaceFound):
        select_faces(faces, -1)


@pytest.mark.parametrize("mode", [True, "biggest", 1.0])
def test_unknown_modes_are_refused(mode):
    with pytest.raises(ValueError, match="mode"):
        select_faces([make_face(100, 100)], mode)


def test_rectangle_holds_a_face_when_the_pixel_with_its_centre_is_inside():
    # index coordinates: pixel 120 covers x in [119.5, 120.5)
    assert select_faces([make_face(119.5, 100)], selection=(120, 0, 1, 200)) == [0]
    assert select_faces([make_face(120.49, 100)], selection=(120, 0, 1, 200)) == [0]
    for x in (119.49, 120.5):
        with pytest.raises(NoFaceFound, match="inside the selection"):
            select_faces([make_face(x, 100)], selection=(120, 0, 1, 200))


def test_mask_selection_uses_the_pixel_under_the_centre():
    mask = np.zeros((200, 400), bool)
    mask[50:150, 200:300] = True
    faces = [make_face(100, 100), make_face(250, 100), make_face(260, 140), make_face(900, 100)]
    assert select_faces(faces, selection=mask) == [1, 2]
    assert select_faces(faces, "largest", mask) == [1]
    with pytest.raises(NoFaceFound, match="inside the selection"):
        select_faces([make_face(900, 900), make_face(-5, -5)], selection=mask)  # off the mask: not selected


def test_no_face_is_reported_as_such():
    with pytest.raises(NoFaceFound, match="in the photo"):
        select_faces([])
    assert issubclass(NoFaceFound, HairclipError) and issubclass(FaceTooSmall, HairclipError)


def test_too_small_faces_are_skipped_by_all_and_refused_when_picked():
    small, big = make_face(100, 100, eye_dist=10), make_face(300, 100, eye_dist=40)  # quad sides 40 and 160
    assert select_faces([small, big]) == [1]
    assert select_faces([small, big], "largest") == [1]
    with pytest.raises(FaceTooSmall, match="40 px"):
        select_faces([small, big], 0)
    with pytest.raises(FaceTooSmall, match="all 2 faces"):
        select_faces([small, make_face(200, 100, eye_dist=12)])
    with pytest.raises(FaceTooSmall):
        select_faces([small], "largest")
    assert select_faces([small], min_side=0) == [0]


def test_minimum_size_bounds_the_encoder_upsampling_at_2x():
    assert 256 / MIN_QUAD_SIDE == 2
    at_limit = make_face(100, 100, eye_dist=MIN_QUAD_SIDE / 4)  # 2 * 2|d_e| = MIN_QUAD_SIDE
    assert at_limit.quad_side == pytest.approx(MIN_QUAD_SIDE)
    assert select_faces([at_limit], 0) == [0]
    with pytest.raises(FaceTooSmall):
        select_faces([make_face(100, 100, eye_dist=MIN_QUAD_SIDE / 4 - 0.01)], 0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1000), st.floats(0, 1000), st.floats(1, 100)), min_size=1, max_size=8))
def test_all_is_a_left_to_right_subset_of_big_enough_faces(specs):
    faces = [make_face(x, y, d) for x, y, d in specs]
    big = [i for i, f in enumerate(faces) if f.quad_side >= MIN_QUAD_SIDE]
    if not big:
        with pytest.raises(FaceTooSmall):
            select_faces(faces)
        return
    got = select_faces(faces)
    assert sorted(got) == big
    xs = [faces[i].centre[0] for i in got]
    assert xs == sorted(xs)


# ---------------------------------------------------------------------------------------------- layouts


def test_networks_have_the_published_layouts():
    with torch.device("meta"):
        s3fd, fan = S3FD(), FAN(4)
    sd = s3fd.state_dict()
    assert len(sd) == S3FD_KEYS and sum(t.numel() for t in sd.values()) * 4 == S3FD_TENSOR_BYTES
    assert sd["fc6.weight"].shape == (1024, 512, 3, 3) and sd["conv3_3_norm.weight"].shape == (256,)
    assert sd["conv3_3_norm_mbox_conf.weight"].shape == (4, 256, 3, 3)  # the max-out head
    assert sd["conv7_2_mbox_loc.weight"].shape == (4, 256, 3, 3)
    fd = fan.state_dict()
    assert len(fd) == FAN4_KEYS
    assert sum(t.numel() for k, t in fd.items() if not k.endswith("num_batches_tracked")) == FAN4_NUMEL
    assert fd["m3.b2_plus_1.conv3.weight"].shape == (64, 64, 3, 3) and fd["l3.weight"].shape == (68, 256, 1, 1)
    assert fd["al2.weight"].shape == (256, 68, 1, 1) and "al3.weight" not in fd
    assert fd["conv4.downsample.2.weight"].shape == (256, 128, 1, 1)


def test_mirror_order_swaps_left_and_right():
    assert sorted(MIRROR) == list(range(68)) and [MIRROR[m] for m in MIRROR] == list(range(68))
    assert sorted(MIRROR[i] for i in range(36, 42)) == list(range(42, 48))
    assert (MIRROR[0], MIRROR[8], MIRROR[48], MIRROR[54], MIRROR[30]) == (16, 8, 54, 48, 30)
    assert (MIRROR[36], MIRROR[39]) == (45, 42)  # outer corner to outer corner, inner to inner


# ---------------------------------------------------------------------------------------------- geometry


def test_heatmap_peak_moves_a_quarter_cell_towards_the_larger_neighbour():
    heat = np.zeros((1, 68, 64, 64), np.float32)
    heat[0, :, 20, 10] = 1.0
    heat[0, 0, 20, 11], heat[0, 0, 19, 10] = 0.5, 0.3  # right and up are larger
    heat[0, 1, 20, 9], heat[0, 1, 21, 10] = 0.5, 0.3  # left and down are larger
    heat[0, 2, 0, 0] = 2.0  # a border peak is not refined
    heat[0, 2, 0, 1] = 1.5
    pts, score = heatmap_points(heat)
    np.testing.assert_allclose(pts[0, 0], [10.25 + 0.5, 19.75 + 0.5])
    np.testing.assert_allclose(pts[0, 1], [9.75 + 0.5, 20.25 + 0.5])
    np.testing.assert_allclose(pts[0, 2], [0.5, 0.5])
    np.testing.assert_allclose(pts[0, 3], [10.5, 20.5])
    assert score[0, 2] == 2.0 and score[0, 0] == 1.0


def test_crop_frame_is_centred_above_the_box_and_scaled_by_its_size():
    centre, side = crop_frame((70.0, 100.0, 170.0, 220.0, 0.9))
    np.testing.assert_allclose(centre, [120.0, 160.0 - 0.12 * 120])
    assert side == pytest.approx(200 * (100 + 120) / 195)


def test_face_crop_cuts_the_square_and_pads_with_black():
    image = np.zeros((300, 400, 3), np.uint8)
    image[150, 200] = [255, 128, 7]
    centre, side = np.array([132.75, 140.25]), 256 * 256 / 255  # cuts exactly 256 px: no resampling
    ul = np.trunc(centre + (1 / 256 - 0.5) * side).astype(int)
    assert (np.trunc(centre + side / 2).astype(int) - ul == 256).all()
    crop = crop_face(image, centre, side)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    assert (crop[150 - ul[1], 200 - ul[0]] == [255, 128, 7]).all() and crop.sum() == 255 + 128 + 7
    gray = np.full((300, 400, 3), 90, np.uint8)
    corner = crop_face(gray, np.array([0.0, 0.0]), 256.0)  # three quarters lie outside the photo
    assert corner[:120, :120].max() == 0 and corner[140:, 140:].min() == 90


# ---------------------------------------------------------------------------------------------- loading


def _random_bn(net: torch.nn.Module) -> torch.nn.Module:
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """S3FD and a 1-stack FAN with random weights, saved as the published files are: bare state dicts in
    PyTorch's legacy (pre-1.6) format, the FAN without num_batches_tracked (pre-0.4.1)."""
    torch.manual_seed(1)
    root = tmp_path_factory.mktemp("faceweights")
    s3fd, fan = S3FD(), _random_bn(FAN(1))
    torch.save(s3fd.state_dict(), root / DETECTOR_FILE, _use_new_zipfile_serialization=False)
    old = {k: v for k, v in fan.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(old, root / LANDMARK_FILE, _use_new_zipfile_serialization=False)
    return root / DETECTOR_FILE, root / LANDMARK_FILE, s3fd, fan.eval()


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


def test_loaders_read_the_published_formats_exactly(weight_files, no_network):
    s3fd_path, fan_path, s3fd, fan = weight_files
    loaded_s3fd, loaded_fan = load_s3fd(s3fd_path), load_fan(fan_path)
    assert loaded_fan.stacks == 1 and not loaded_s3fd.training and not loaded_fan.training
    x = torch.randn(1, 3, 32, 48) * 60
    with torch.inference_mode():
        for (c1, l1), (c2, l2) in zip(s3fd(x), loaded_s3fd(x), strict=True):
            assert torch.equal(c1, c2) and torch.equal(l1, l2)
        y = torch.rand(1, 3, 64, 64)  # fully convolutional: a small input checks the weights as well
        assert torch.equal(fan(y), loaded_fan(y))


def test_zip_format_with_batchnorm_counters_loads_too(weight_files, tmp_path):
    fan = weight_files[3]
    torch.save(fan.state_dict(), tmp_path / "fan.pt")
    assert load_fan(tmp_path / "fan.pt").stacks == 1


def test_wrong_or_damaged_files_are_named_in_the_error(weight_files, tmp_path):
    s3fd_path, fan_path, *_ = weight_files
    with pytest.raises(CheckpointError, match=re.escape(LANDMARK_FILE) + r": the S3FD face detector weights do not "
                                              r"match the expected layout\n  missing keys"):
        load_s3fd(fan_path)
    with pytest.raises(CheckpointError, match="no hourglass"):
        load_fan(s3fd_path)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"<html>not a checkpoint</html>")
    with pytest.raises(CheckpointError, match="bad.pth: cannot be read"):
        load_s3fd(bad)
    with pytest.raises(CheckpointError, match="no such file"):
        load_fan(tmp_path / "absent.pth")
    sd = weight_files[2].state_dict()
    sd["fc7.weight"] = sd["fc7.weight"][:10]
    torch.save(sd, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match=r"shape mismatches \(1\): fc7.weight"):
        load_s3fd(tmp_path / "cut.pth")


# ---------------------------------------------------------------------------------------------- end to end


def _one_anchor_detector(det: FanDetector, loc=(0.5, -0.25, 0.1, -0.2)) -> None:
    """Silence every S3FD head but the coarsest (stride 128, 512 px anchors), which fires everywhere with fixed
    offsets: on a 64 px image that is 2x2 overlapping anchors (fc6's padding adds cells), of which NMS keeps one."""
    with torch.no_grad():
        for k, (name, _) in enumerate(S3FD.HEADS):
            conf, box = getattr(det.s3fd, f"{name}_mbox_conf"), getattr(det.s3fd, f"{name}_mbox_loc")
            conf.weight.zero_(), box.weight.zero_()
            conf.bias.copy_(torch.tensor([0.0, 5.0] if k == 5 else [10.0] * (conf.out_channels - 1) + [0.0]))
            box.bias.copy_(torch.tensor(loc if k == 5 else [0.0] * 4))


def test_detection_end_to_end_decodes_the_anchor_and_lands_in_the_crop(weight_files, no_network):
    det = FanDetector(weight_files[0], weight_files[1], "cpu", flip=False)  # the loaded random FAN
    _one_anchor_detector(det)
    faces = det.detect(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert len(faces) == 1
    f = faces[0]
    assert f.score == pytest.approx(1 / (1 + math.exp(-5)), rel=1e-6)
    # SSD decoding of anchor (i, j): centre ((j + .5) 128 + .1 * .5 * 512, (i + .5) 128 - .1 * .25 * 512),
    # half sides 256 exp(.2 * .1) and 256 exp(-.2 * .2)
    hw, hh = 256 * math.exp(0.02), 256 * math.exp(-0.04)
    expected = [(64 + 128 * j + 25.6 - hw, 64 + 128 * i - 12.8 - hh, 64 + 128 * j + 25.6 + hw, 64 + 128 * i - 12.8 + hh)
                for i in range(2) for j in range(2)]
    assert min(np.abs(np.subtract(f.box, e)).max() for e in expected) < 1e-3
    assert f.landmarks.shape == (68, 2) and f.landmarks.dtype == np.float64
    centre, side = crop_frame(f.box)
    assert (np.abs(f.landmarks - centre) <= side / 2).all()  # every point comes from the face's own crop


class PeakAtBrightest(torch.nn.Module):
    """A stand-in FAN whose 68 heatmaps all peak where the crop is brightest: makes the geometry checkable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), 4).expand(-1, 68, -1, -1)


def test_no_box_above_threshold_means_no_face(weight_files, no_network):
    det = FanDetector(weight_files[0], weight_files[1], "cpu")
    det.fan = PeakAtBrightest()
    _one_anchor_detector(det)
    with torch.no_grad():
        det.s3fd.conv7_2_mbox_conf.bias.copy_(torch.tensor([0.0, 0.1]))  # p_face 0.52
    image = np.zeros((64, 64, 3), np.uint8)
    assert len(det.detect(image)) == 1
    det.threshold = 0.6
    assert det.detect(image) == []


def test_random_detector_boxes_are_sorted_and_above_threshold(weight_files, no_network):
    det = FanDetector(weight_files[0], weight_files[1], "cpu", max_side=64)
    boxes = det.boxes(np.random.default_rng(1).integers(0, 256, (60, 96, 3), dtype=np.uint8))
    assert boxes.ndim == 2 and boxes.shape[1] == 5 and boxes.dtype == np.float64
    assert (boxes[:, 4] > det.threshold).all() and (np.diff(boxes[:, 4]) <= 0).all()


def test_large_photos_are_shrunk_for_detection_and_boxes_scaled_back(weight_files, no_network):
    det = FanDetector(weight_files[0], weight_files[1], "cpu", max_side=64)
    _one_anchor_detector(det, loc=(0.0, 0.0, 0.0, 0.0))
    boxes = det.boxes(np.zeros((128, 128, 3), np.uint8))  # detected at 64 px: anchors of 512 at stride 128
    assert len(boxes) == 1
    x0, y0 = boxes[0, :2] / 2 + 256  # back in the 64 px frame, the anchor's corner plus its half side
    assert (x0 % 128, y0 % 128) == (pytest.approx(64), pytest.approx(64))
    np.testing.assert_allclose(boxes[0, 2:4] - boxes[0, :2], [1024, 1024])


@pytest.mark.parametrize("flip", [False, True])
def test_landmarks_map_heatmap_peaks_back_to_the_photo(weight_files, no_network, flip):
    det = FanDetector(weight_files[0], weight_files[1], "cpu", flip=flip, batch=2)
    det.fan = PeakAtBrightest()
    image = np.zeros((400, 600, 3), np.uint8)
    dots = [(200, 270), (470, 150), (13, 7)]  # each inside its own crop only; the last two in its right half,
    # where a mirrored peak left unflipped would win the argmax (it comes first in raster order)
    for x, y in dots:
        image[y - 1:y + 2, x - 1:x + 2] = 255  # 3x3 so the peak survives the bilinear crop resize
    boxes = np.array([[150, 200, 250, 320, 0.9], [350, 60, 500, 230, 0.8], [-40, -40, 40, 40, 0.7]])
    faces = det.landmarks(image, boxes)  # three boxes in chunks of two; the last hangs off the photo
    assert [f.score for f in faces] == [0.9, 0.8, 0.7]
    for f, (x, y), b in zip(faces, dots, boxes, strict=True):
        cell = crop_frame(b)[1] / 64  # one heatmap cell in photo pixels
        assert np.abs(f.landmarks - [x, y]).max() <= cell
    assert det.landmarks(image, boxes[:1, :4])[0].score == 1.0 and det.landmarks(image, []) == []


def test_detector_comes_from_the_weight_store(weight_files, tmp_path, no_network):
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    entries = []
    for path in weight_files[:2]:
        (store_dir / path.name).write_bytes(path.read_bytes())
        entries.append({"name": path.name, "purpose": "test", "urls": ["https://example.invalid/" + path.name],
                        "needed_for": ["edit"], "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    det = FanDetector.from_store("cpu", WeightStore(store_dir, entries), flip=False)
    assert det.fan.stacks == 1 and det.device.type == "cpu"
    (store_dir / DETECTOR_FILE).unlink()
    with pytest.raises(WeightsMissing):
        FanDetector.from_store("cpu", WeightStore(store_dir, entries))


def test_detection_size_is_the_same_on_every_device(weight_files, no_network):
    """The CPU and a GPU search the same shrunk photo, so they find the same faces (issue 10)."""
    cpu = FanDetector(weight_files[0], weight_files[1], "cpu")
    other = FanDetector(weight_files[0], weight_files[1], "meta")  # stands in for any accelerator
    assert cpu.max_side == other.max_side == DETECT_SIDE


def _store_with(weight_files, tmp_path, present: bool) -> WeightStore:
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    entries = []
    for path in weight_files[:2]:
        if present:
            (store_dir / path.name).write_bytes(path.read_bytes())
        entries.append({"name": path.name, "purpose": "test", "urls": ["https://example.invalid/" + path.name],
                        "needed_for": ["edit"], "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    return WeightStore(store_dir, entries)


def test_fan_files_are_needed_only_when_a_photo_is_searched(weight_files, tmp_path, no_network):
    from hairclip.pipeline.models import make_detector

    detector = make_detector("fan", "cpu", _store_with(weight_files, tmp_path, present=False))
    assert not detector.loaded
    with pytest.raises(WeightsMissing):
        detector.detect(np.zeros((32, 32, 3), np.uint8))


@pytest.mark.parametrize("present", [False, True])
def test_dlib_is_the_default_with_fan_behind_it_when_its_files_are_there(weight_files, tmp_path, no_network,
                                                                          present):
    pytest.importorskip("dlib")
    from hairclip.pipeline.models import make_detector

    detector = make_detector("dlib", "cpu", _store_with(weight_files, tmp_path, present))
    assert detector.name == "dlib" and not detector.loaded
    faces = detector.detect(np.full((64, 64, 3), 128, np.uint8))  # dlib finds nothing in grey; random FAN does
    assert detector.name == ("dlib, then fan" if present else "dlib")
    assert {f.source for f in faces} == ({"fan"} if present else set())
