"""Photos are read and written at their own depth, atomically, and composited byte-exactly."""

import os
import stat

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from hairclip.images import (
    BadImage,
    PhotoInfo,
    array_to_image,
    check_photo,
    composite,
    image_to_array,
    load_image,
    read_photo,
    save_image,
    upright,
)


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
    image = array_to_image(a, channels, depth)
    assert (image.width, image.height, image.channels, image.depth) == (5, 3, channels, depth)
    back = image_to_array(image)
    scale = {"u8": 1, "u16": 257, "f32": 1 / 255}[depth]
    assert np.allclose(back, a.astype(np.float64) * scale, atol=1e-6)


# ---------------------------------------------------------------------------------------------- phone photos


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = orientation, "Test Camera"
    return exif


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_is_applied_as_pillow_applies_it(tmp_path, orientation):
    a = np.random.default_rng(3).integers(0, 256, (5, 8, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "x.png", exif=_exif(orientation))
    with Image.open(tmp_path / "x.png") as im:
        want = np.array(ImageOps.exif_transpose(im))
    assert np.array_equal(load_image(tmp_path / "x.png"), want)
    assert np.array_equal(upright(a, orientation), want)


def test_sixteen_bit_pngs_are_turned_upright_too(tmp_path):
    a = np.random.default_rng(4).integers(0, 65535, (5, 8, 3), dtype=np.uint16)
    save_image(tmp_path / "x.png", a, PhotoInfo(exif=_exif(6).tobytes()))
    with Image.open(tmp_path / "x.png") as im:
        assert im.getexif()[0x0112] == 6  # written as given; read upright
    assert np.array_equal(load_image(tmp_path / "x.png"), np.rot90(a, -1))


@pytest.mark.parametrize("ext, dtype", [(".jpg", np.uint8), (".png", np.uint8), (".png", np.uint16),
                                        (".tif", np.uint8), (".webp", np.uint8)])
def test_icc_profile_and_exif_are_kept_with_orientation_reset(tmp_path, ext, dtype):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "in.jpg", exif=_exif(8), icc_profile=icc)
    photo, info = read_photo(tmp_path / "in.jpg")
    assert photo.shape == (6, 4, 3) and info.icc_profile == icc
    save_image(tmp_path / f"out{ext}", photo.astype(dtype) * (257 if dtype == np.uint16 else 1), info)
    with Image.open(tmp_path / f"out{ext}") as im:
        assert im.info.get("icc_profile") == icc
        exif = im.getexif()
        assert exif[0x0112] == 1 and exif[0x010F] == "Test Camera"
    assert load_image(tmp_path / f"out{ext}").shape[:2] == (6, 4)


def test_formats_without_metadata_are_written_without_it(tmp_path):
    info = PhotoInfo(b"not written", _exif(1).tobytes())
    save_image(tmp_path / "x.bmp", np.zeros((4, 4, 3), np.uint8), info)
    assert load_image(tmp_path / "x.bmp").shape == (4, 4, 3)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_outputs_get_the_mode_cp_would_give_them(tmp_path):
    """0666 less the umask for a new file (not mkstemp's 0600); an overwritten file keeps its own mode."""
    photo = np.zeros((4, 4, 3), np.uint8)
    old = os.umask(0o022)
    try:
        for name in ("a.png", "a16.png", "a.jpg"):
            save_image(tmp_path / name, photo.astype(np.uint16) if "16" in name else photo)
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
        os.umask(0o027)
        save_image(tmp_path / "b.png", photo)
        assert stat.S_IMODE((tmp_path / "b.png").stat().st_mode) == 0o640
        (tmp_path / "a.png").chmod(0o604)
        save_image(tmp_path / "a.png", photo)
        assert stat.S_IMODE((tmp_path / "a.png").stat().st_mode) == 0o604
    finally:
        os.umask(old)


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


def test_a_profile_for_another_colour_model_is_not_attached(tmp_path):
    grey_icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()  # not an RGB profile
    assert grey_icc[16:20] != b"RGB "
    save_image(tmp_path / "x.jpg", np.zeros((4, 4, 3), np.uint8), PhotoInfo(grey_icc))
    with Image.open(tmp_path / "x.jpg") as im:
        assert "icc_profile" not in im.info
