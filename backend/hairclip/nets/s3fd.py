"""S3FD face detector (Zhang et al. 2017) with the state-dict layout of face-alignment's published
``s3fd-619a316812.pth``. Box decoding and NMS live in ``hairclip.pipeline.face_fan``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class L2Norm(nn.Module):
    """Per-position L2 normalisation with a learned per-channel scale (ParseNet), so the shallow conv3-5
    features can feed detection heads next to the much larger-valued deep ones."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10) * self.weight.view(1, -1, 1, 1)


class S3FD(nn.Module):
    """S3FD (Zhang et al. 2017): VGG-16 and six heads at strides 4..128, each cell one square anchor 4x its stride.

    Attribute names are the weight file's keys. fc6 is a 3x3 conv with padding 3 and no dilation, as
    face-alignment runs the published weights; its maps (and those after) are 2 cells larger on each side.
    """

    VGG = (("conv1", 3, 64, 2), ("conv2", 64, 128, 2), ("conv3", 128, 256, 3), ("conv4", 256, 512, 3),
           ("conv5", 512, 512, 3))
    HEADS = (("conv3_3_norm", 256), ("conv4_3_norm", 512), ("conv5_3_norm", 512), ("fc7", 1024),
             ("conv6_2", 512), ("conv7_2", 256))

    def __init__(self):
        super().__init__()
        for stage, cin, cout, n in self.VGG:
            for i in range(n):
                self.add_module(f"{stage}_{i + 1}", nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1))
        self.fc6 = nn.Conv2d(512, 1024, 3, padding=3)
        self.fc7 = nn.Conv2d(1024, 1024, 1)
        self.conv6_1, self.conv6_2 = nn.Conv2d(1024, 256, 1), nn.Conv2d(256, 512, 3, stride=2, padding=1)
        self.conv7_1, self.conv7_2 = nn.Conv2d(512, 128, 1), nn.Conv2d(128, 256, 3, stride=2, padding=1)
        self.conv3_3_norm, self.conv4_3_norm, self.conv5_3_norm = L2Norm(256, 10), L2Norm(512, 8), L2Norm(512, 5)
        for k, (name, ch) in enumerate(self.HEADS):
            # the finest head scores 3 background classes ("max-out"), so tiny anchors are not swamped by false hits
            self.add_module(f"{name}_mbox_conf", nn.Conv2d(ch, 4 if k == 0 else 2, 3, padding=1))
            self.add_module(f"{name}_mbox_loc", nn.Conv2d(ch, 4, 3, padding=1))

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """BGR minus the VGG means [B, 3, H, W] -> per head (class logits [B, 2, h, w], box offsets [B, 4, h, w])."""
        feats = []
        for stage, _, _, n in self.VGG:
            for i in range(n):
                x = F.relu(getattr(self, f"{stage}_{i + 1}")(x))
            if stage in ("conv3", "conv4", "conv5"):
                feats.append(x)
            x = F.max_pool2d(x, 2, 2)
        x = F.relu(self.fc7(F.relu(self.fc6(x))))
        feats.append(x)
        x = F.relu(self.conv6_2(F.relu(self.conv6_1(x))))
        feats.append(x)
        feats.append(F.relu(self.conv7_2(F.relu(self.conv7_1(x)))))
        feats[:3] = [self.conv3_3_norm(feats[0]), self.conv4_3_norm(feats[1]), self.conv5_3_norm(feats[2])]
        out = [(getattr(self, f"{name}_mbox_conf")(f), getattr(self, f"{name}_mbox_loc")(f))
               for (name, _), f in zip(self.HEADS, feats, strict=True)]
        conf, loc = out[0]
        out[0] = (torch.cat([conf[:, :3].amax(1, keepdim=True), conf[:, 3:]], 1), loc)
        return out
