"""Photos are read and written at their own depth, atomically, and composited byte-exactly."""

import numpy as np
import pytest
from PIL import Image

from hairclip.images import BadImage, check_photo, composite, from_wire, load_image, save_image, to_wire


@pytest.mark.parametrize("shape, dtype", [((5, 7, 3), np.uint8), ((5, 7, 4), np.uint16), ((5, 7, 1), np.uint16),
                                          ((5, 7, 2), np.uint8)])
def test_png_round_trip_keeps_depth_and_channels(tmp_path, shape, dtype):
    a = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    save_image(tmp_path / "x.png", a)
    assert np.array_equal(load_image(tmp_path / "x.png"), a)


def test_jpeg_gets_eight_bit_rgb(tmp_path):
    a = np.full((8, 8, 4), 40000, np.uint16)
    save_image(tmp_path / "x.jpg", a)
    assert load_image(tmp_path / "x.jpg").shape == (8, 8, 3)


def test_unreadable_and_empty_files(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(BadImage, match="cannot be decoded"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(BadImage, match="empty"):
        load_image(tmp_path / "empty.jpg")
    with pytest.raises(BadImage, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    with pytest.raises(BadImage, match="unknown image format"):
        save_image(tmp_path / "out.xyz", np.zeros((4, 4, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_composite_reproduces_the_photo_where_alpha_is_zero():
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 65535, (6, 6, 3), dtype=np.uint16)
    layer = np.concatenate([rng.integers(0, 65535, (6, 6, 3), dtype=np.uint16), np.zeros((6, 6, 1), np.uint16)], 2)
    layer[2:4, 2:4, 3] = 65535
    out = composite(photo, layer)
    keep = layer[..., 3] == 0
    assert np.array_equal(out[keep], photo[keep])
    assert np.array_equal(out[2:4, 2:4], layer[2:4, 2:4, :3])


@pytest.mark.parametrize("channels", ["RGBA", "BGRA", "RGB", "BGR"])
@pytest.mark.parametrize("depth", ["u8", "u16", "f32"])
def test_wire_images_round_trip(channels, depth):
    a = np.random.default_rng(2).integers(0, 255, (3, 5, len(channels)), dtype=np.uint8)
    image = to_wire(a, channels, depth)
    assert (image.width, image.height, image.channels, image.depth) == (5, 3, channels, depth)
    back = from_wire(image)
    scale = {"u8": 1, "u16": 257, "f32": 1 / 255}[depth]
    assert np.allclose(back, a.astype(np.float64) * scale, atol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_float_tiff_with_nan_or_inf_is_refused_by_load_and_by_the_cli(tmp_path, capsys, bad):
    from hairclip.cli import main

    a = np.random.default_rng(0).random((40, 30), dtype=np.float32)
    a[5, 7] = bad
    path = tmp_path / "float.tif"
    Image.fromarray(a, "F").save(path)
    with pytest.raises(BadImage, match="NaN or infinite"):
        load_image(path)
    assert main(["edit", str(path), "-o", str(tmp_path / "out.png"), "--color", "red", "--random-tiny",
                 "--device", "cpu"]) == 1
    assert "float.tif has NaN or infinite pixel values" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()
    with pytest.raises(BadImage, match="the photo has NaN"):
        check_photo(np.full((4, 4, 3), bad, np.float32), "photo")
