"""HairCLIP's Lab (no sRGB linearisation), its inverse, and colour parsing."""

import pytest
import torch

from hairclip.color import lab_to_rgb, masked_mean, parse_rgb, rgb_to_lab


def test_white_and_black_are_the_ends_of_lightness():
    lab = rgb_to_lab(torch.tensor([1.0, 0.0]).view(2, 1, 1, 1).expand(2, 3, 1, 1))
    assert lab[0, :, 0, 0] == pytest.approx([100.0, 0.0, 0.0], abs=1e-3)
    assert lab[1, :, 0, 0] == pytest.approx([0.0, 0.0, 0.0], abs=1e-3)


def test_pure_red_by_the_formula():
    # X, Y, Z of (1, 0, 0) are the matrix's first column over its row sums; no gamma is undone first.
    m = torch.tensor([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                      [0.019334, 0.119193, 0.950227]], dtype=torch.float64)
    x, y, z = (m[:, 0] / m.sum(1)).tolist()
    f = lambda t: t ** (1 / 3) if t > 0.008856 else 7.787 * t + 0.137931  # noqa: E731
    expected = [116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))]
    red = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).view(1, 3, 1, 1)
    assert rgb_to_lab(red)[0, :, 0, 0].tolist() == pytest.approx(expected, abs=1e-9)
    assert expected == pytest.approx([53.24, 80.09, 67.20], abs=0.01)


def test_lab_round_trip():
    rgb = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    assert torch.allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-9)


def test_masked_mean_ignores_pixels_outside_and_empty_masks_give_zero():
    x = torch.arange(8.0).view(1, 2, 2, 2)
    mask = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    assert masked_mean(x, mask).flatten().tolist() == [0.0, 4.0]
    assert masked_mean(x, torch.zeros_like(mask)).flatten().tolist() == [0.0, 0.0]


@pytest.mark.parametrize("text, rgb", [("#ff8000", (255, 128, 0)), ("ff8000", (255, 128, 0)),
                                       ("10, 20, 30", (10, 20, 30)), ((1, 2, 3), (1, 2, 3))])
def test_parse_rgb(text, rgb):
    assert parse_rgb(text) == rgb


@pytest.mark.parametrize("bad", ["#ff80", "red", "300,0,0", "1,2"])
def test_parse_rgb_refuses_nonsense(bad):
    with pytest.raises(ValueError, match="not a colour"):
        parse_rgb(bad)
