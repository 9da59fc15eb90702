"""Stage 2: the e4e alignment geometry and pixels (bit-parity with e4e is checked outside the repo)."""

import numpy as np
import pytest
from PIL import Image

from hairclip.pipeline.align import (
    FaceTransform,
    _shrunk_region,
    align_face,
    aligned_input,
    quad_from_landmarks,
    to_rgb8,
)


def face_landmarks(eye_centre, eye_dist, angle=0.0, seed=0):
    """68 integer points like dlib's: only eyes (36-47) and mouth corners (48, 54) matter to e4e."""
    rng = np.random.default_rng(seed)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])

    def at(p):
        return np.asarray(eye_centre, float) + rot @ np.asarray(p, float)

    lm = np.array([at(rng.uniform(-1, 1, 2) * eye_dist) for _ in range(68)])
    for first, cx in ((36, -eye_dist / 2), (42, eye_dist / 2)):
        for j in range(6):
            t = 2 * np.pi * j / 6
            lm[first + j] = at((cx + 0.25 * eye_dist * np.cos(t), 0.1 * eye_dist * np.sin(t)))
    lm[48] = at((-0.45 * eye_dist, 1.1 * eye_dist))
    lm[54] = at((0.45 * eye_dist, 1.1 * eye_dist + 3))
    return np.rint(lm).astype(np.int64)


def blob_photo(w, h, centre, sigma, amplitude=250.0):
    """Black photo with one Gaussian spot: its centroid is a sub-pixel landmark in any warp of it."""
    ys, xs = np.mgrid[:h, :w]
    g = amplitude * np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma**2))
    return np.repeat(np.rint(g).astype(np.uint8)[..., None], 3, axis=2)


def centroid(img, near, radius):
    x0, y0 = (max(int(v - radius), 0) for v in near)
    win = img[y0:int(near[1] + radius) + 1, x0:int(near[0] + radius) + 1, 0].astype(np.float64)
    ys, xs = np.mgrid[y0:y0 + win.shape[0], x0:x0 + win.shape[1]]
    return np.array([(xs * win).sum(), (ys * win).sum()]) / win.sum()


def test_quad_follows_the_e4e_construction():
    lm = face_landmarks((400, 300), 90, angle=0.3)
    e_l, e_r = lm[36:42].mean(0), lm[42:48].mean(0)
    d_e = e_r - e_l
    d_m = (lm[48] + lm[54]) / 2 - (e_l + e_r) / 2
    x = np.array([d_e[0] + d_m[1], d_e[1] - d_m[0]])
    s = max(2.0 * np.hypot(*d_e), 1.8 * np.hypot(*d_m))
    x = s * x / np.hypot(*x)
    y = np.array([-x[1], x[0]])
    c = (e_l + e_r) / 2 + 0.1 * d_m
    expected = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    np.testing.assert_allclose(quad_from_landmarks(lm), expected, rtol=0, atol=1e-9)
    t = FaceTransform.from_landmarks(lm, (800, 600))
    np.testing.assert_array_equal(t.quad(), quad_from_landmarks(lm))
    assert t.qsize == pytest.approx(2 * s) and t.shrink == 1


@pytest.mark.parametrize("size", [256, 1024, 77])
def test_affine_is_the_sampling_map_of_section_5(size):
    t = FaceTransform.from_landmarks(face_landmarks((400, 300), 90, angle=-0.4), (800, 600))
    c, x, y = (np.array(v) for v in (t.c, t.x, t.y))
    uv = np.random.default_rng(1).uniform(-0.5, size - 0.5, (50, 2))
    a, b = 2 * (uv[:, :1] + 0.5) / size - 1, 2 * (uv[:, 1:] + 0.5) / size - 1
    np.testing.assert_allclose(t.to_photo(uv, size), c + a * x + b * y, atol=1e-9)
    # Section 6's closed-form inverse, and the outer corners are the quad.
    p = c + a * x + b * y
    s2 = np.hypot(*x) ** 2
    inv = np.stack([size / 2 * (1 + (p - c) @ x / s2) - 0.5, size / 2 * (1 + (p - c) @ y / s2) - 0.5], 1)
    np.testing.assert_allclose(t.to_aligned(p, size), inv, atol=1e-9)
    np.testing.assert_allclose(t.corners(), t.quad(), atol=1e-9)


@pytest.mark.parametrize("eye_dist,photo", [(90, (800, 600)), (300, (3001, 2400)), (430, (4000, 3000))])
def test_photo_to_crop_to_photo_round_trip_is_exact(eye_dist, photo):
    t = FaceTransform.from_landmarks(face_landmarks((photo[0] / 2, photo[1] / 2), eye_dist, 0.2), photo)
    p = np.random.default_rng(2).uniform(0, photo[0], (100, 2))
    for size in (256, 1024):
        assert np.abs(t.to_photo(t.to_aligned(p, size), size) - p).max() < 1e-9
    # Every frame covers the same square: 1024 pixel u sits at 256 coordinate (u + 1/2) / 4 - 1/2.
    np.testing.assert_allclose((t.to_aligned(p, 1024) + 0.5) / 4 - 0.5, t.to_aligned(p, 256), atol=1e-9)


def test_shrink_correction_is_the_exact_formula():
    w, h = 3001, 2001
    t = FaceTransform.from_landmarks(face_landmarks((1500, 1000), 300), (w, h))
    assert t.shrink == 2
    raw = FaceTransform(t.c, t.x, t.y, t.photo_size, 1)
    uv = np.random.default_rng(3).uniform(0, 255, (20, 2))
    p = raw.to_photo(uv, 256)
    k = 2
    exact = (p / k + 0.5) * np.array([w / np.rint(w / k), h / np.rint(h / k)]) - 0.5
    np.testing.assert_allclose(t.to_photo(uv, 256), exact, atol=1e-9)


@pytest.mark.parametrize("w,h,k", [(600, 450, 2), (601, 451, 2), (700, 451, 3), (200, 610, 2), (211, 900, 3)])
def test_shrunk_crop_equals_crop_of_the_full_shrink(w, h, k):
    photo = np.random.default_rng(4).integers(0, 256, (h, w, 3), dtype=np.uint8)
    size = (int(np.rint(w / k)), int(np.rint(h / k)))
    full = np.asarray(Image.fromarray(photo).resize(size, Image.LANCZOS))
    sw, sh = size
    for box in [(sw // 5, sh // 6, sw * 3 // 4, sh * 2 // 3), (0, 0, sw, sh), (5, sh // 3, sw, sh - 1)]:
        np.testing.assert_array_equal(_shrunk_region(photo, size, box), full[box[1]:box[3], box[0]:box[2]])


# (photo size, eye centre, eye distance, angle): plain, shrink 2 (qsize >= 1024), square off the top edge.
CASES = {
    "plain": ((640, 480), (320, 200), 70, 0.15),
    "shrink": ((1600, 1500), (800, 600), 280, -0.1),
    "pad": ((520, 400), (260, 60), 70, 0.05),
}


@pytest.mark.parametrize("case", CASES)
def test_landmark_lands_where_the_transform_says(case):
    (w, h), eye, dist, angle = CASES[case]
    lm = face_landmarks(eye, dist, angle)
    spot = lm[48:55:6].mean(0) + [3.3, -4.6]  # near the mouth: inside the photo in every case
    sigma = 0.011 * FaceTransform.from_landmarks(lm, (w, h)).qsize  # ~3 px in the 256 frame
    a = align_face(blob_photo(w, h, spot, sigma), lm)
    t = a.transform
    assert (t.shrink > 1) == (case == "shrink") and a.padded == (case == "pad")
    for img, size in ((a.image, 256), (a.image1024, 1024)):
        want = t.to_aligned(spot, size)
        got = centroid(img, want, radius=4 * sigma * size / t.qsize)
        assert np.abs(got - want).max() < (0.03 if size == 256 else 0.05), (size, got, want)  # measured <= 0.011
    if case == "shrink":  # the correction (0.5 photo px here) is what puts it there
        raw = FaceTransform(t.c, t.x, t.y, t.photo_size, 1).to_aligned(spot, 256)
        assert np.abs(centroid(a.image, raw, 4 * sigma * 256 / t.qsize) - raw).max() > 0.08


def test_square_off_the_photo_gets_e4e_padding_not_black():
    (w, h), eye, dist, angle = CASES["pad"]
    rng = np.random.default_rng(5)
    photo = np.clip(rng.normal(150, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    a = align_face(photo, face_landmarks(eye, dist, angle))
    for img, size in ((a.image, 256), (a.image1024, 1024)):
        off = ~a.transform.inside(size)
        assert off.sum() > 0.05 * size**2
        assert img[off].mean() > 100  # reflected photo faded to its median, not PIL's black fill
        # On the photo the 1024 crop is the photo itself, bilinearly resampled.
        on = a.transform.inside(size, apron=-2)
        assert abs(img[on].mean() - photo.mean()) < 3


def test_big_face_in_a_big_photo_aligns_through_the_shrink():
    # Its speed is measured, not asserted: bench/bench_align_shrink.py.
    photo = np.zeros((3000, 4000, 3), np.uint8)
    a = align_face(photo, face_landmarks((2000, 1400), 300), crop1024=False)
    assert a.transform.shrink == 2 and a.image.shape == (256, 256, 3) and a.image1024 is None


def test_aligned_input_is_the_official_resize():
    tv = pytest.importorskip("torchvision.transforms")
    rng = np.random.default_rng(6)
    for side in (1024, 512, 256):
        photo = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        a = aligned_input(photo)
        want = np.asarray(tv.Resize((256, 256))(Image.fromarray(photo)))
        np.testing.assert_array_equal(a.image, want)
        assert a.image1024.shape == (1024, 1024, 3)
        np.testing.assert_allclose(a.transform.affine(side), [[1, 0, 0], [0, 1, 0]], atol=1e-12)
        np.testing.assert_allclose(a.transform.to_photo([[0, 0], [255, 255]], 256),
                                   [[side / 512 - 0.5] * 2, [side - side / 512 - 0.5] * 2], atol=1e-12)
    np.testing.assert_array_equal(aligned_input(photo).image, photo)  # 256 in: untouched


def test_to_rgb8_takes_grey_alpha_16_bit_and_float():
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    grey = rgb[..., 0]
    np.testing.assert_array_equal(to_rgb8(rgb), rgb)
    np.testing.assert_array_equal(to_rgb8(np.dstack([rgb, grey])), rgb)  # RGBA: alpha dropped
    np.testing.assert_array_equal(to_rgb8(grey), np.dstack([grey] * 3))
    np.testing.assert_array_equal(to_rgb8(np.dstack([grey, grey])), np.dstack([grey] * 3))  # LA
    np.testing.assert_array_equal(to_rgb8(rgb.astype(np.uint16) * 257), rgb)
    np.testing.assert_array_equal(to_rgb8(rgb.astype(np.float32) / 255), rgb)
    np.testing.assert_array_equal(to_rgb8(Image.fromarray(np.dstack([rgb, grey]), "RGBA")), rgb)
    np.testing.assert_array_equal(to_rgb8(Image.fromarray(grey, "L")), np.dstack([grey] * 3))
    with pytest.raises(ValueError):
        align_face(rgb.astype(np.uint16), face_landmarks((3, 3), 1))
