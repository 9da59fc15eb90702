"""Stage 7: the edited aligned face back onto the photo, and the RGBA layer."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hairclip.pipeline import composite
from hairclip.pipeline.align import FaceTransform
from hairclip.pipeline.composite import (
    clear_layer,
    compose_face,
    compose_layer,
    compose_one,
    edit_mask,
    edit_mask_fast,
    edit_mask_warm,
    face_box,
    prepare_warp,
    restrict_to_photo,
    warp_face,
    warp_face_warm,
    warp_to_photo,
)
from hairclip.pipeline.conditions import Conditions
from hairclip.pipeline.editor import EditOptions, HairEditor
from hairclip.pipeline.faces import KnownFaces
from hairclip.pipeline.models import Models
from portraits import KeyParser, portrait

H, W = 240, 300


def square(cx, cy, half, angle, photo=(W, H)):
    x = (half * np.cos(angle), half * np.sin(angle))
    return FaceTransform((cx, cy), x, (-x[1], x[0]), photo)


INSIDE = square(150.3, 118.7, 70.0, 0.35)  # 140 px square, wholly on the photo
OFF_EDGE = square(40.2, 60.6, 70.0, -0.2)  # pokes out past the left and top edges


def coordinate_frame(size):
    """Aligned frame whose two channels are each pixel's own (u, v)."""
    g = torch.arange(size, dtype=torch.float32)
    return torch.stack([g[None, :].expand(size, size), g[:, None].expand(size, size)])


@pytest.mark.parametrize("size", [64, 512])  # photo square larger than the frame, and smaller (antialiased)
def test_warped_coordinates_land_where_the_transform_says(size):
    out, (x0, y0, x1, y1) = warp_to_photo(coordinate_frame(size), INSIDE, (H, W))
    assert out.shape == (2, y1 - y0, x1 - x0)
    ys, xs = np.mgrid[y0:y1, x0:x1]
    want = INSIDE.to_aligned(np.stack([xs, ys], -1), size)
    # Away from the frame's border, where the filters are whole. Bilinear sampling reproduces a linear
    # ramp exactly; torch's antialiased reduction (512 -> 140 here) is off by up to 0.03 frame px at
    # non-integer ratios, i.e. under 0.01 photo px.
    margin = 2 * max(1.0, size / 140)
    ok = ((want > margin) & (want < size - 1 - margin)).all(-1)
    assert ok.sum() > 0.5 * ok.size
    err = np.abs(out.permute(1, 2, 0).numpy()[ok] - want[ok]) * INSIDE.photo_scale(size)  # photo px
    assert err.max() < (2e-3 if size == 64 else 0.015), err.max()


def test_box_covers_the_square_and_stays_on_the_photo():
    x0, y0, x1, y1 = face_box(INSIDE, (H, W))
    cs = INSIDE.corners()
    assert x0 <= cs[:, 0].min() and x1 - 1 >= cs[:, 0].max() and y0 <= cs[:, 1].min() and y1 - 1 >= cs[:, 1].max()
    assert x1 - x0 < 1.6 * 140 and y1 - y0 < 1.6 * 140  # the box, not the photo
    x0, y0, x1, y1 = face_box(OFF_EDGE, (H, W))
    assert (x0, y0) == (0, 0) and 0 < x1 <= W and 0 < y1 <= H


def test_edit_mask_is_union_grown_then_feathered():
    s = 128
    before = torch.zeros(s, s, dtype=torch.bool)
    after = torch.zeros_like(before)
    before[40:60, 30:50] = True
    after[55:90, 45:52] = True
    after[0:10, 100:128] = True  # hair cut by the frame's edge
    m = edit_mask(before, after, dilate_px=4, feather_px=8)
    assert m.dtype == torch.float32 and m.shape == (s, s)
    union = (before | after).numpy()
    # Chebyshev distance to the union, by brute force.
    pts = np.argwhere(union)
    yy, xx = np.mgrid[:s, :s]
    dist = np.full((s, s), np.inf)
    for y, x in pts[:: max(1, len(pts) // 2000)]:
        dist = np.minimum(dist, np.maximum(np.abs(yy - y), np.abs(xx - x)))
    m = m.numpy()
    assert (m[union] == 1).all() and (m[dist <= 4] == 1).all()
    assert (m[dist > 4 + 8] == 0).all()
    ramp = m[(dist > 4) & (dist <= 12)]
    assert ((ramp > 0) & (ramp < 1)).mean() > 0.5
    row = m[45, 50:70]  # going right from the first patch: never rises
    assert (np.diff(row) <= 1e-6).all()
    assert (edit_mask(before, after)[before | after] == 1).all()  # 1024 defaults keep the union opaque too


def test_mask_is_zero_off_the_photo_but_the_photo_edge_keeps_full_alpha():
    s = 128
    ones = torch.ones(s, s)
    m = restrict_to_photo(ones, OFF_EDGE)
    apron = 2.0 * max(1.0, OFF_EDGE.photo_scale(s))
    np.testing.assert_array_equal(m.numpy() > 0, OFF_EDGE.inside(s, apron))
    far_off = ~OFF_EDGE.inside(s, apron)
    assert far_off.sum() > 0.1 * s * s and (m.numpy()[far_off] == 0).all()
    # Pasted back, the photo's own edge pixels inside the square are still fully covered.
    _, alpha, (x0, y0, x1, y1) = warp_face(torch.rand(3, s, s), ones, OFF_EDGE, (H, W))
    ys, xs = np.mgrid[y0:y1, x0:x1]
    uv = OFF_EDGE.to_aligned(np.stack([xs, ys], -1), s)
    deep = ((uv > 2) & (uv < s - 3)).all(-1)
    edge = deep & ((xs == 0) | (ys == 0))
    assert edge.sum() > 20 and alpha.numpy()[edge].min() > 0.999


def _edited_faces(size=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    edited = torch.rand(3, size, size, generator=g)
    hair = torch.zeros(size, size, dtype=torch.bool)
    hair[5:40, 20:80] = True
    return [warp_face(edited, edit_mask(hair, hair, 2, 4), INSIDE, (H, W))]


def _photo(dtype, channels, seed=1):
    rng = np.random.default_rng(seed)
    v = rng.random((H, W, channels))
    if dtype == np.float32:
        return v.astype(np.float32)
    top = np.iinfo(dtype).max
    return np.rint(v * top).astype(dtype)


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_layer_is_the_photo_wherever_alpha_is_zero(dtype, channels):
    photo = _photo(dtype, channels)
    before = photo.copy()
    photo.setflags(write=False)  # any write into the source would raise
    faces = _edited_faces()
    layer = compose_layer(photo, faces)
    np.testing.assert_array_equal(photo, before)
    assert layer.shape == (H, W, 4) and layer.dtype == photo.dtype
    alpha = layer[..., 3]
    clear = alpha == 0
    assert 0.5 < clear.mean() < 0.98
    np.testing.assert_array_equal(layer[..., :3][clear], photo[..., :3][clear])
    x0, y0, x1, y1 = faces[0][2]
    outside = np.ones((H, W), bool)
    outside[y0:y1, x0:x1] = False
    assert (alpha[outside] == 0).all()
    # Under the mask: the warped edit, rounded to the photo's dtype.
    rgb, a, _ = faces[0]
    top = 1.0 if dtype == np.float32 else float(np.iinfo(dtype).max)
    got = layer[y0:y1, x0:x1].astype(np.float64) / top
    shown = got[..., 3] > 0
    np.testing.assert_allclose(got[..., 3], a.numpy(), atol=0.5 / top + 1e-6)
    np.testing.assert_allclose(got[..., :3][shown], rgb.permute(1, 2, 0).numpy()[shown], atol=0.5 / top + 1e-6)


def test_tiny_alpha_that_rounds_to_zero_keeps_the_photo_colour():
    photo = _photo(np.uint8, 3)
    box = (10, 10, 20, 20)
    layer = compose_layer(photo, [(torch.zeros(3, 10, 10), torch.full((10, 10), 1e-3), box)])
    assert (layer[..., 3] == 0).all()
    np.testing.assert_array_equal(layer[..., :3], photo)


def test_overlapping_faces_take_the_larger_alpha():
    photo = _photo(np.uint8, 3)
    red, blue = torch.tensor([1.0, 0, 0])[:, None, None], torch.tensor([0, 0, 1.0])[:, None, None]
    a = (red.expand(3, 50, 50), torch.full((50, 50), 0.3), (10, 10, 60, 60))
    b = (blue.expand(3, 50, 50), torch.full((50, 50), 0.8), (40, 40, 90, 90))
    for faces in ([a, b], [b, a]):
        layer = compose_layer(photo, faces).astype(np.float64)
        assert layer[20, 20, 3] == np.rint(np.float32(0.3) * 255.0)
        assert layer[80, 80, 3] == np.rint(np.float32(0.8) * 255.0)
        assert layer[50, 50, 3] == np.rint(np.float32(0.8) * 255.0)
        np.testing.assert_allclose(layer[50, 50, :3], np.rint(np.array([0.3, 0, 0.8]) / 1.1 * 255), atol=1)
        np.testing.assert_array_equal(layer[20, 20, :3], [255, 0, 0])


def test_preview_frame_lays_the_face_where_the_square_sits_on_the_reduced_photo():
    from hairclip.pipeline.composite import preview_frame

    photo = torch.zeros(3, H // 2, W // 2)  # the photo at half size
    red = torch.zeros(3, 64, 64)
    red[0] = 1.0
    out = preview_frame(photo, [(red, torch.ones(64, 64, dtype=torch.bool), INSIDE)], 0.5)
    assert out.shape == (H // 2, W // 2, 3)
    cx, cy = (round((v + 0.5) * 0.5 - 0.5) for v in INSIDE.c)
    assert tuple(out[cy, cx]) == (255, 0, 0)  # the square's centre is the face's
    assert tuple(out[2, 2]) == (0, 0, 0) and tuple(out[-3, -3]) == (0, 0, 0)  # far outside: the photo


# The fast path (`edit_mask_fast`, `compose_face`, the cached clear layer) against the plain reference path
# (`edit_mask_warm`, `warp_face_warm`, `compose_one` / `compose_layer`): byte for byte.


def _blobs(size: int, seed: int, cells: int = 12, level: float = 0.6) -> torch.Tensor:
    """A random [size, size] bool mask of smooth blobs that reach the frame's edges (hair-like regions)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 1, cells, cells, generator=g)
    return F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)[0, 0] > level


@pytest.mark.parametrize(("dilate", "feather"), [(12, 24), (3, 6), (5, 0), (0, 40), (0, 0), (2, 130)])
def test_fast_edit_mask_is_the_reference_to_the_bit(dilate, feather):
    for seed, level in [(0, 0.6), (1, 0.45), (2, 2.0)]:  # 2.0: no new hair at all
        before, after = _blobs(1024, seed, level=0.65), _blobs(1024, seed + 10, level=level)
        warp = prepare_warp(INSIDE, (H, W), before, dilate, feather)
        ref = edit_mask_warm(warp, after, dilate, feather)
        fast = edit_mask_fast(warp, after, dilate, feather)
        assert fast.dtype == ref.dtype and torch.equal(fast, ref), (seed, (fast - ref).abs().max())
        assert 0 < float(ref.mean()) < 1 or level > 1


TILTED_NEAR_EDGE = square(265.0, 200.0, 90.0, 2.4)  # upside down and tilted, off the right and bottom edges
BIG = square(150.0, 120.0, 150.0, -0.6)  # larger on the photo than the 128 frame: no reduction, off three edges


@pytest.mark.parametrize("transform", [INSIDE, OFF_EDGE, TILTED_NEAR_EDGE, BIG])
@pytest.mark.parametrize(("dtype", "channels"), [(np.uint8, 3), (np.uint16, 4), (np.float32, 3)])
def test_fast_composite_is_the_reference_byte_for_byte(transform, dtype, channels):
    s = 128 if transform is BIG else 256  # the square smaller on the photo than S is antialiased first
    photo = _photo(dtype, channels)
    photo.setflags(write=False)
    g = torch.Generator().manual_seed(3)
    edited = torch.rand(3, s, s, generator=g) * 1.2 - 0.1  # out of range too: both clamp
    warp = prepare_warp(transform, (H, W), _blobs(s, 4), 3, 6)
    masks = [edit_mask_warm(warp, _blobs(s, 5), 3, 6), torch.zeros(s, s), torch.ones(s, s),
             (torch.rand(s, s, generator=g) < 0.002).float()]  # isolated pixels: tiny alpha islands
    for mask in masks:
        ref = compose_one(photo, *warp_face_warm(edited, mask, warp))
        for base in (None, clear_layer(photo[..., :3])):
            fast = compose_face(photo, edited, mask, warp, base)
            assert fast.dtype == ref.dtype and np.array_equal(fast, ref)
    assert (ref[..., 3] > 0).any()


@pytest.fixture(scope="module")
def portrait_editor() -> HairEditor:
    models = Models.random_tiny("cpu", seed=0)
    models.parser = KeyParser().to(models.device).eval()  # hair where the portrait's hair is drawn
    return HairEditor(models)


def _tilted(face, angle: float, shift: tuple[float, float]):
    c = face.landmarks.mean(0)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = (face.landmarks - c) @ rot.T + c + shift
    return type(face)(pts, (*pts.min(0), *pts.max(0)))


@pytest.mark.parametrize("case", ["one face", "long hair", "two faces", "tilted at the edge"])
def test_editor_layers_are_the_same_on_the_fast_and_the_reference_path(portrait_editor, monkeypatch, case):
    heads = [(150, 130, 100, 560), (290, 130, 100, 560)] if case == "two faces" else [(200, 140, 110, 740)]
    photo, _, faces = portrait(440 if case == "two faces" else 400, 580 if case == "two faces" else 760, heads)
    if case == "tilted at the edge":
        faces = [_tilted(faces[0], 0.5, (-150.0, -60.0))]  # the square pokes out at the top left
    portrait_editor.models.detector = KnownFaces(faces)
    cond = Conditions(rgb="#7030a0")
    options = EditOptions(whole_hair=case == "long hair")
    layers = []
    for fast in (False, True):
        monkeypatch.setattr(composite, "FAST", fast)
        result = portrait_editor.edit(photo, cond, options)
        layers.append(result.layer)
        layers.append(portrait_editor.rerender(photo, result, 0.5).layer)  # a warm strength-only re-render
    assert (case == "long hair") == result.whole_hair and result.hair_outside_crop > 0.3
    assert (layers[0][..., 3] > 0).any() and not np.array_equal(layers[0], layers[1])
    assert np.array_equal(layers[0], layers[2]) and np.array_equal(layers[1], layers[3])
