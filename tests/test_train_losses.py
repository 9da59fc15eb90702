"""Each training loss against a direct computation of the official formula on tiny tensors."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hairclip.color import rgb_to_lab
from hairclip.nets.irse import Backbone
from hairclip.nets.mapper import CLIP_MEAN, CLIP_STD, TINY_CLIP, HairMapper, build_clip, tokenize
from hairclip.nets.parsenet import UNet, hair_mask
from hairclip.train import losses as L


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny networks gain nothing from a second thread, and on a shared 2-core machine lose a lot to it.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def clip_model():
    torch.manual_seed(0)
    model = build_clip(config=TINY_CLIP).eval()
    model.logit_scale.data.fill_(math.log(100.0))  # the published CLIP's value
    return model.requires_grad_(False)


@pytest.fixture(scope="module")
def parser():
    torch.manual_seed(0)
    net = UNet(feature_scale=16).eval()
    with torch.no_grad():  # make "hair" (label 13) win on about half of the pixels, so masks are not empty
        logits = net(torch.randn(2, 3, 32, 32))
        margin = logits[:, 13] - torch.cat([logits[:, :13], logits[:, 14:]], 1).amax(1)
        net.final.bias[13] -= margin.median()
    return net


def smooth(b: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.randn(b, 3, 4, 4, generator=g), size=size, mode="bilinear").clamp(-1, 1)


# ---------------------------------------------------------------------------------------------- Lab


def test_lab_of_known_colours_follows_hairclips_formula_without_srgb_linearisation():
    rgb = torch.tensor([[0.5, 0.5, 0.5], [0.005, 0.005, 0.005], [1.0, 0.0, 0.0]], dtype=torch.float64).view(3, 3, 1, 1)
    lab = rgb_to_lab(rgb)[:, :, 0, 0]
    # Grey 0.5 goes straight to X/Xn = Y/Yn = Z/Zn = 0.5 (no gamma): L = 116 * 0.5^(1/3) - 16 = 76.0693
    # (true sRGB grey 0.5 would be L = 53.39).
    assert lab[0].tolist() == pytest.approx([76.06926101, 0.0, 0.0], abs=1e-6)
    # Below 0.008856 the linear toe: L = 903.3 * Y.
    assert lab[1].tolist() == pytest.approx([903.3 * 0.005, 0.0, 0.0], abs=1e-9)
    # Red: XYZ = the matrix's first column over the row sums (the white point), then the cube roots.
    x, y, z = 0.412453 / 0.950456, 0.212671 / 1.0, 0.019334 / 1.088754
    fx, fy, fz = (t ** (1 / 3) for t in (x, y, z))
    assert lab[2].tolist() == pytest.approx([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], abs=1e-6)
    assert lab[2].tolist() == pytest.approx([53.2406, 80.0942, 67.2015], abs=1e-3)


# ---------------------------------------------------------------------------------------------- masks


def test_hair_masks_are_the_parsers_hair_mask_and_take_any_parse_size(parser):
    img = smooth(2, 64, 1)
    assert torch.equal(L.hair_masks(parser, img), hair_mask(parser, img))
    small = L.hair_masks(parser, img, parse_size=32)
    labels = parser(F.adaptive_avg_pool2d(img, 32)).argmax(1)
    assert torch.equal(small, (labels == 13).float().repeat_interleave(2, 1).repeat_interleave(2, 2).unsqueeze(1))
    assert 0.1 < float(small.mean()) < 0.9


# ---------------------------------------------------------------------------------------------- CLIP losses


@pytest.mark.parametrize("size", [32, 64, 96])
def test_clip_loss_resize_is_nearest_x7_then_average_pool(size):
    img = torch.randn(1, 3, size, size, dtype=torch.float64)
    official = nn.AvgPool2d(size // 32)(nn.Upsample(scale_factor=7)(img))
    r = L.clip_loss_resize(size)
    assert r.shape == (224, size)
    torch.testing.assert_close(torch.einsum("ih,bchw,jw->bcij", r, img, r), official, rtol=1e-12, atol=1e-12)


def test_text_loss_is_one_minus_clips_logit_over_100_per_sample(clip_model):
    img = smooth(2, 64, 2)
    tokens = tokenize(["afro hairstyle", "purple hair"])
    got = L.CLIPTextLoss(clip_model)(img, clip_model.encode_text(tokens))
    # criteria/clip_loss.py: 1 - model(avg_pool(upsample(image)), text)[0] / 100, one sample at a time
    resized = nn.AvgPool2d(64 // 32)(nn.Upsample(scale_factor=7)(img))
    expected = torch.stack([1 - clip_model(resized[i:i + 1], tokens[i:i + 1])[0][0, 0] / 100 for i in range(2)])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_image_embedding_loss_is_cosine_embedding_loss_of_clip_features(clip_model):
    masked, ref = smooth(2, 64, 3), smooth(2, 64, 4)
    mapper = HairMapper(clip_model)
    ref_features = mapper.encode_image(ref)
    got = L.ImageEmbeddingLoss(clip_model)(masked, ref_features)

    def official_features(x):  # criteria/image_embedding_loss.py
        x = nn.AdaptiveAvgPool2d((224, 224))(x) * 0.5 + 0.5
        mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        return clip_model.encode_image((x - mean) / std)

    cos_loss = nn.CosineEmbeddingLoss()
    expected = torch.stack([cos_loss(official_features(masked[i:i + 1]), official_features(ref[i:i + 1]), torch.ones(1))
                            for i in range(2)])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # the reference path is the mapper's own image condition
    torch.testing.assert_close(L.clip_image_features(clip_model, ref), ref_features, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- colour


def test_average_lab_loss_is_l1_between_masked_mean_lab_colours(parser):
    a, b = smooth(2, 16, 5), smooth(2, 16, 6)
    ma = (torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(7)) > 0.5).float()
    mb = (torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(8)) > 0.5).float()
    mb[1] = 0  # an empty mask averages to 0, as the official mask_sum = 1 rule gives
    got = L.AverageLabLoss()(a, ma, b, mb)
    expected = []
    for i in range(2):
        la, lb = rgb_to_lab((a[i:i + 1] + 1) / 2), rgb_to_lab((b[i:i + 1] + 1) / 2)
        mean_a = (la * ma[i]).sum((2, 3)) / ma[i].sum().clamp_min(1)
        mean_b = (lb * mb[i]).sum((2, 3)) / max(float(mb[i].sum()), 1.0)
        expected.append(nn.L1Loss()(mean_a, mean_b))
    torch.testing.assert_close(got, torch.stack(expected), rtol=1e-5, atol=1e-5)
    assert isinstance(L.ColorMaintenanceLoss(), L.AverageLabLoss)


# ---------------------------------------------------------------------------------------------- attributes


@pytest.mark.parametrize("size", [256, 64])
def test_identity_loss_is_one_minus_arcface_cosine_on_the_official_crop(size):
    torch.manual_seed(3)
    facenet = Backbone(112, 50, "ir_se", units=(1, 1, 1, 1), width_div=4).eval()
    x_hat, x = smooth(2, size, 9), smooth(2, size, 10)
    got = L.IdentityLoss(facenet)(x_hat, x)

    def feats(img):  # criteria/id_loss.py
        if img.shape[2] != 256:
            img = nn.AdaptiveAvgPool2d((256, 256))(img)
        return facenet(nn.AdaptiveAvgPool2d((112, 112))(img[:, :, 35:223, 32:220]))

    fy, fyh = feats(x), feats(x_hat)
    torch.testing.assert_close(got, 1 - (fyh * fy).sum(1), rtol=1e-5, atol=1e-6)


def test_background_loss_is_mse_over_pixels_hair_free_in_both():
    x, x_hat = smooth(2, 8, 11), smooth(2, 8, 12)
    hx = (torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.6).float()
    hxh = (torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(2)) > 0.6).float()
    got = L.BackgroundLoss()(x, x_hat, hx, hxh)
    bg = (((1 - hx) + (1 - hxh)) == 2).float()  # bg_loss.py on the non-hair masks
    expected = torch.stack([nn.MSELoss()(x[i] * bg[i], x_hat[i] * bg[i]) for i in range(2)])
    torch.testing.assert_close(got, expected)


def test_latent_l2_is_mse_of_the_latents():
    w, w_hat = torch.randn(3, 18, 512), torch.randn(3, 18, 512)
    expected = torch.stack([nn.MSELoss()(w_hat[i], w[i]) for i in range(3)])
    torch.testing.assert_close(L.LatentL2Loss()(w_hat, w), expected)


# ---------------------------------------------------------------------------------------------- calc_loss


def step_of(clip_model, parser, kinds, seed=0):
    """A batch whose i-th sample has the conditions in kinds[i] ('ht', 'hi', 'ct', 'ci')."""
    torch.manual_seed(seed)
    b = len(kinds)
    w = torch.randn(b, 18, 512)
    x, x_hat = smooth(b, 64, seed + 1), smooth(b, 64, seed + 2)
    col = smooth(b, 64, seed + 3)
    flag = lambda k: torch.tensor([k in ks for ks in kinds])  # noqa: E731
    mapper = HairMapper(clip_model)
    text = mapper.encode_text(tokenize(["afro hairstyle"] * b))
    ref = mapper.encode_image(smooth(b, 64, seed + 4))
    hair = lambda im: L.hair_masks(parser, im, 32)  # noqa: E731
    return L.Step(w=w, w_hat=w + 0.1 * torch.randn(b, 18, 512), x=x, x_hat=x_hat, hair_x=hair(x),
                  hair_x_hat=hair(x_hat), has_hairstyle_text=flag("ht"), has_hairstyle_image=flag("hi"),
                  has_color_text=flag("ct"), has_color_image=flag("ci"),
                  hairstyle_text=torch.where(flag("ht")[:, None], text, ref), hairstyle_reference=ref,
                  color_text=mapper.encode_text(tokenize(["purple hair"] * b)), color_image=col,
                  color_image_hair=hair(col))


def take(s: L.Step, i: int) -> L.Step:
    return L.Step(**{k: (v[i:i + 1] if isinstance(v, torch.Tensor) else v) for k, v in s.__dict__.items()})


KINDS = [("ht",), ("hi",), ("ct",), ("ci",), ("ht", "ci"), ("hi", "ct"), ()]


def test_each_samples_loss_is_the_official_weighted_sum_of_the_terms_that_apply(clip_model, parser):
    torch.manual_seed(4)
    facenet = Backbone(112, 50, "ir_se", units=(1, 1, 1, 1), width_div=4).eval()
    criterion = L.HairCLIPLoss(clip_model, facenet)
    s = step_of(clip_model, parser, KINDS)
    loss, terms = criterion(s)
    for i, kind in enumerate(KINDS):
        one = take(s, i)
        id_ = L.IdentityLoss(facenet)(one.x_hat, one.x)
        bg = L.BackgroundLoss()(one.x, one.x_hat, one.hair_x, one.hair_x_hat)
        lat = L.LatentL2Loss()(one.w_hat, one.w)
        expected = 0.3 * id_ + 1.0 * bg + 0.8 * lat  # always, times attribute_preservation 1.0
        if "ht" in kind:
            expected = expected + 2.0 * L.CLIPTextLoss(clip_model)(one.x_hat, one.hairstyle_text)
        if "ct" in kind:
            expected = expected + 2.0 * L.CLIPTextLoss(clip_model)(one.x_hat, one.color_text)
        if "hi" in kind:
            expected = expected + 5.0 * L.ImageEmbeddingLoss(clip_model)(one.x_hat * one.hair_x_hat,
                                                                          one.hairstyle_reference)
        if "ci" in kind:
            expected = expected + 0.02 * L.AverageLabLoss()(one.color_image, one.color_image_hair, one.x_hat,
                                                             one.hair_x_hat)
        if kind in (("ht",), ("hi",)):  # hairstyle edited, colour kept
            expected = expected + 0.02 * L.AverageLabLoss()(one.x, one.hair_x, one.x_hat, one.hair_x_hat)
        single, _ = criterion(one)
        torch.testing.assert_close(single, expected[0], rtol=1e-5, atol=1e-6)
    # the batch loss is the mean of the samples' losses
    singles = torch.stack([criterion(take(s, i))[0] for i in range(len(KINDS))])
    torch.testing.assert_close(loss, singles.mean(), rtol=1e-5, atol=1e-6)
    applies = {n: r.tolist() for n, (_, r) in terms.items()}
    assert applies["loss_maintain_color_for_hairstyle"] == [True, True, False, False, False, False, False]
    assert applies["loss_img_color"] == [False, False, False, True, True, False, False]
    metrics = L.summarize(loss, terms)
    assert set(metrics) == set(L.TERMS) | {"loss"}


def test_a_zero_weight_switches_its_term_off(clip_model, parser):
    facenet = Backbone(112, 50, "ir_se", units=(1, 1, 1, 1), width_div=4).eval()
    weights = L.LossWeights(id_lambda=0.0, text_manipulation_lambda=0.0)
    _, terms = L.HairCLIPLoss(clip_model, facenet, weights)(step_of(clip_model, parser, [("ht",), ("ct",)]))
    assert "loss_id" not in terms and "loss_text_hairstyle" not in terms and "loss_background" in terms


def test_default_weights_are_the_official_ones():
    assert L.LossWeights() == L.LossWeights(2.0, 1.0, 1.0, 5.0, 0.02, 0.3, 0.02, 1.0, 0.8)
