"""HairCLIP's training losses (``criteria/`` and ``Coach.calc_loss`` of the official code), one module per term.

The official loop runs batch 1, so there every term is simply that sample's value. Here each module returns one
value per sample (``[B]``): a batch may mix edits, a term counts only for the samples whose edit calls for it,
and the batch loss is the mean over samples of each sample's official loss, so the weights keep their meaning
at any batch size (and across DDP ranks, whose gradients are averaged).

Images are StyleGAN outputs in about [-1, 1], ``[B, 3, S, S]`` (S = 1024 for the published model); hair
masks are ``[B, 1, S, S]`` from `hair_masks`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from hairclip.color import masked_mean, rgb_to_lab
from hairclip.nets.mapper import CLIP_MEAN, CLIP_STD
from hairclip.nets.parsenet import HAIR_LABEL, PARSE_SIZE, UNet, parse

ID_SIZE, ID_CROP, ID_INPUT = 256, (slice(35, 223), slice(32, 220)), 112  # criteria/id_loss.py


def hair_masks(parser: UNet, images: torch.Tensor, parse_size: int = PARSE_SIZE) -> torch.Tensor:
    """``gen_hair_mask``: parse at ``parse_size`` (512), label 13, area-resize back: ``[B, 1, H, W]``, no grad.

    The parser runs in float32 even under autocast, so a mask never depends on the precision of the step.
    """
    with torch.autocast(images.device.type, enabled=False):
        labels = parse(parser, images.detach().float(), size=parse_size)
    return F.adaptive_avg_pool2d((labels == HAIR_LABEL).unsqueeze(1).float(), images.shape[-2:])


@functools.cache
def clip_loss_resize(size: int, out: int = 224, up: int = 7) -> torch.Tensor:
    """``R`` [out, size] with ``R x Rᵀ`` = the official CLIP-loss resize: nearest upsampling x7, then average
    pooling by size/32 (7168 -> 224 at 1024). Both steps are linear and separable, so one small matrix per
    axis replaces the 7168² intermediate (600 MB per image); for other sizes it is the same two steps with an
    adaptive pool, which is the official pool whenever 32 divides the size."""
    nearest = torch.eye(size, dtype=torch.float64).repeat_interleave(up, dim=0)  # [up * size, size]
    return F.adaptive_avg_pool1d(nearest.T.unsqueeze(0), out)[0].T.contiguous()


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)  # CLIP's own normalisation: no epsilon


def clip_image_features(clip_model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """HairCLIP's CLIP image path (mapper condition and image-embedding loss): area-resize to 224, map
    [-1, 1] to [0, 1], CLIP mean/std, ``encode_image``. Unlike ``HairMapper.encode_image`` it keeps the graph."""
    x = F.adaptive_avg_pool2d(image, clip_model.visual.input_resolution) * 0.5 + 0.5
    x = (x - x.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)) / x.new_tensor(CLIP_STD).view(1, 3, 1, 1)
    return clip_model.encode_image(x)


class CLIPTextLoss(nn.Module):
    """Text manipulation (``criteria/clip_loss.py``): ``1 - logit_scale.exp() · cos(E_I(R x Rᵀ), E_T(t)) / 100``.

    With the published CLIP ``logit_scale.exp()`` is 100, so this is ``1 - cos``. As in the official code the
    image goes to CLIP without CLIP's mean/std normalisation. Per sample (the official ``model(image,
    text)[0]`` is that for batch 1 only).
    """

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        self.clip_model = clip_model

    def forward(self, image: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        r = clip_loss_resize(image.shape[-1]).to(image.device, image.dtype)
        features = self.clip_model.encode_image(torch.einsum("ih,bchw,jw->bcij", r, image, r))
        cos = (_unit(features.float()) * _unit(text_features.float())).sum(-1)
        return 1 - self.clip_model.logit_scale.exp().float() * cos / 100


class ImageEmbeddingLoss(nn.Module):
    """The hairstyle reference term (``criteria/image_embedding_loss.py``): CLIP image distance of the hair.

    ``1 - cos`` of the CLIP image features of the hair-masked edit and of the hair-masked reference
    (``CosineEmbeddingLoss``, target 1).
    """

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        self.clip_model = clip_model

    def forward(self, masked_image: torch.Tensor, reference_features: torch.Tensor) -> torch.Tensor:
        features = clip_image_features(self.clip_model, masked_image).float()
        target = features.new_ones(features.shape[0])
        return F.cosine_embedding_loss(features, reference_features.float(), target, reduction="none")


def average_hair_lab(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean Lab colour inside the hair mask, ``[B, 3, 1, 1]``; HairCLIP's Lab (no sRGB linearisation)."""
    return masked_mean(rgb_to_lab((image.float() + 1) / 2), mask)


class AverageLabLoss(nn.Module):
    """Image manipulation, colour (``criteria/parse_related_loss/average_lab_color_loss.py``): the L1 distance,
    averaged over L, a and b, between the mean hair colours of two images."""

    def forward(self, a: torch.Tensor, mask_a: torch.Tensor, b: torch.Tensor, mask_b: torch.Tensor) -> torch.Tensor:
        return (average_hair_lab(a, mask_a) - average_hair_lab(b, mask_b)).abs().flatten(1).mean(1)


class ColorMaintenanceLoss(AverageLabLoss):
    """Attribute preservation when only the hairstyle changes: the same average-Lab distance, between the
    original and the edit (the official code's second ``AvgLabLoss`` instance)."""


class IdentityLoss(nn.Module):
    """The identity term (``criteria/id_loss.py``): how far the edit moves the face's ArcFace embedding.

    ``1 - <f(x_hat), f(x)>`` for the unit ArcFace embedding f of IR-SE50, on the face crop [35:223, 32:220] of
    the image area-resized to 256, resized to 112.
    """

    def __init__(self, facenet: nn.Module):
        super().__init__()
        self.facenet = facenet.eval()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (ID_SIZE, ID_SIZE):
            x = F.adaptive_avg_pool2d(x, ID_SIZE)
        return self.facenet(F.adaptive_avg_pool2d(x[:, :, ID_CROP[0], ID_CROP[1]], ID_INPUT)).float()

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.features(x)
        return 1 - (self.features(x_hat) * target).sum(1)


class BackgroundLoss(nn.Module):
    """Attribute preservation, background (``criteria/parse_related_loss/bg_loss.py``): the mean squared
    difference over all pixels of both images multiplied by the mask of pixels that are hair in neither."""

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor, hair_x: torch.Tensor,
                hair_x_hat: torch.Tensor) -> torch.Tensor:
        # The official (bg(x) + bg(x_hat)) == 2 with bg = 1 - hair: exactly the pixels hair-free in both.
        background = ((hair_x == 0) & (hair_x_hat == 0)).float()
        return ((x.float() - x_hat.float()) * background).pow(2).flatten(1).mean(1)


class LatentL2Loss(nn.Module):
    """Attribute preservation, latent (``nn.MSELoss`` in ``coach.py``): the mean squared W+ offset."""

    def forward(self, w_hat: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (w_hat.float() - w.float()).pow(2).flatten(1).mean(1)


@dataclass(frozen=True)
class LossWeights:
    """The official defaults (``mapper/options/train_options.py``); a zero weight switches its term off."""

    text_manipulation_lambda: float = 2.0
    image_manipulation_lambda: float = 1.0
    attribute_preservation_lambda: float = 1.0
    image_hairstyle_lambda: float = 5.0
    image_color_lambda: float = 0.02
    id_lambda: float = 0.3
    maintain_color_lambda: float = 0.02
    background_lambda: float = 1.0
    latent_l2_lambda: float = 0.8

    @classmethod
    def from_options(cls, opts: object) -> LossWeights:
        return cls(**{f.name: float(getattr(opts, f.name)) for f in fields(cls)})


@dataclass
class Step:
    """One step's tensors: the latents, images and hair masks before and after the edit, and what it asks for.

    A ``has_*`` vector (bool ``[B]``) says which rows of its tensor are real.
    """

    w: torch.Tensor
    w_hat: torch.Tensor
    x: torch.Tensor
    x_hat: torch.Tensor
    hair_x: torch.Tensor
    hair_x_hat: torch.Tensor
    has_hairstyle_text: torch.Tensor
    has_hairstyle_image: torch.Tensor
    has_color_text: torch.Tensor
    has_color_image: torch.Tensor
    hairstyle_text: torch.Tensor | None = None  # [B, D] CLIP text features of the hairstyle prompt
    hairstyle_reference: torch.Tensor | None = None  # [B, D] CLIP features of the hair-masked hairstyle reference
    color_text: torch.Tensor | None = None  # [B, D] CLIP text features of the colour prompt
    color_image: torch.Tensor | None = None  # [B, 3, S, S] colour reference image
    color_image_hair: torch.Tensor | None = None  # [B, 1, S, S] its hair mask


# Official loss-dict names, in calc_loss order.
TERMS = ("loss_id", "loss_text_hairstyle", "loss_text_color", "loss_img_hairstyle", "loss_img_color",
         "loss_maintain_color_for_hairstyle", "loss_background", "loss_l2_latent")


class HairCLIPLoss(nn.Module):
    """The official training loss (``Coach.calc_loss``), per sample.

    Terms and when they apply to a sample:

    ======================================  ==================================  ===============================
    term                                    applies when                        weight (defaults)
    ======================================  ==================================  ===============================
    identity                                always                              id · attribute (0.3)
    text, hairstyle / colour                that prompt is given                text (2.0)
    image embedding, hairstyle              a hairstyle reference is given      image_hairstyle · image (5.0)
    average Lab, colour reference vs edit   a colour reference is given         image_color · image (0.02)
    colour maintenance, original vs edit    hairstyle edited, colour not        maintain_color · attribute (0.02)
    background                              always                              background · attribute (1.0)
    latent L2                               always                              latent_l2 · attribute (0.8)
    ======================================  ==================================  ===============================
    """

    def __init__(self, clip_model: nn.Module, facenet: nn.Module, weights: LossWeights | None = None):
        super().__init__()
        self.weights = weights or LossWeights()
        self.identity = IdentityLoss(facenet)
        self.text = CLIPTextLoss(clip_model)
        self.image_embedding = ImageEmbeddingLoss(clip_model)
        self.average_color = AverageLabLoss()
        self.maintain_color = ColorMaintenanceLoss()
        self.background = BackgroundLoss()
        self.latent_l2 = LatentL2Loss()

    def forward(self, s: Step) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """The batch loss and, per official term name, (per-sample values ``[B]``, where it applies ``[B]``)."""
        lw = self.weights
        attribute, image = lw.attribute_preservation_lambda, lw.image_manipulation_lambda
        every = torch.ones_like(s.has_hairstyle_text)
        color_edit = s.has_color_text | s.has_color_image
        hairstyle_only = (s.has_hairstyle_text | s.has_hairstyle_image) & ~color_edit
        plan = (  # name, weight, rows, loss on those rows
            ("loss_id", lw.id_lambda * attribute, every, lambda i: self.identity(s.x_hat[i], s.x[i])),
            ("loss_text_hairstyle", lw.text_manipulation_lambda, s.has_hairstyle_text,
             lambda i: self.text(s.x_hat[i], s.hairstyle_text[i])),
            ("loss_text_color", lw.text_manipulation_lambda, s.has_color_text,
             lambda i: self.text(s.x_hat[i], s.color_text[i])),
            ("loss_img_hairstyle", lw.image_hairstyle_lambda * image, s.has_hairstyle_image,
             lambda i: self.image_embedding(s.x_hat[i] * s.hair_x_hat[i], s.hairstyle_reference[i])),
            ("loss_img_color", lw.image_color_lambda * image, s.has_color_image,
             lambda i: self.average_color(s.color_image[i], s.color_image_hair[i], s.x_hat[i], s.hair_x_hat[i])),
            ("loss_maintain_color_for_hairstyle", lw.maintain_color_lambda * attribute, hairstyle_only,
             lambda i: self.maintain_color(s.x[i], s.hair_x[i], s.x_hat[i], s.hair_x_hat[i])),
            ("loss_background", lw.background_lambda * attribute, every,
             lambda i: self.background(s.x[i], s.x_hat[i], s.hair_x[i], s.hair_x_hat[i])),
            ("loss_l2_latent", lw.latent_l2_lambda * attribute, every, lambda i: self.latent_l2(s.w_hat[i], s.w[i])),
        )
        b = s.w.shape[0]
        total = s.w_hat.new_zeros(b, dtype=torch.float32)
        terms: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, weight, rows, term in plan:
            rows = rows.to(s.w.device)
            if weight <= 0 or not bool(rows.any()):
                continue
            if bool(rows.all()):
                values = term(slice(None)).float()
            else:
                idx = rows.nonzero().squeeze(1)
                values = total.new_zeros(b).index_copy(0, idx, term(idx).float())
            terms[name] = (values, rows)
            total = total + weight * values
        return total.mean(), terms


def summarize(loss: torch.Tensor, terms: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """Official loss-dict names -> floats: each term averaged over the samples it applies to, and ``loss``."""
    out = {name: float(values.detach()[rows].mean()) for name, (values, rows) in terms.items()}
    out["loss"] = float(loss.detach())
    return out
