# SPDX-License-Identifier: MPL-2.0
"""SwiftSRGAN-style discriminator used by F2SRGAN."""
from typing import Sequence

import torch
from torch import Tensor, nn

from lightsr.archs.arch_util import SepConv
from lightsr.archs.registry import register_arch


def disc_block(in_ch: int, out_ch: int, stride: int, batch_norm: bool) -> nn.Sequential:
    """SepConv (stride on the depthwise conv) -> [BatchNorm] -> LeakyReLU(0.2)."""
    return nn.Sequential(
        SepConv(in_ch, out_ch, 3, stride=stride, depthwise_bias=not batch_norm,
                bias=not batch_norm),
        nn.BatchNorm2d(out_ch) if batch_norm else nn.Identity(),
        nn.LeakyReLU(0.2, inplace=True),
    )


@register_arch
class SwiftSRGANDiscriminator(nn.Module):
    """Channels (64,64,128,128,256,256,512,512), stride 2 on every second block, BatchNorm from
    the second block on, AdaptiveAvgPool 6x6, Linear(18432->1024), LeakyReLU, Linear(1024->1).

    `forward` returns the published sigmoid probability; `logits` the value before it (what
    relativistic losses need, numerically safer with BCE-with-logits).

    Args:
        in_channels: image channels (3).
        features: channels of the conv blocks.
    """

    def __init__(self, in_channels: int = 3,
                 features: Sequence[int] = (64, 64, 128, 128, 256, 256, 512, 512)):
        super().__init__()
        blocks = []
        for i, ch in enumerate(features):
            blocks.append(disc_block(in_channels, ch, stride=1 + i % 2, batch_norm=i != 0))
            in_channels = ch
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d((6, 6)), nn.Flatten(),
            nn.Linear(features[-1] * 36, 1024), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(1024, 1))

    def logits(self, x: Tensor) -> Tensor:
        return self.classifier(self.blocks(x))

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.logits(x))


@register_arch
class UNetDiscriminatorSN(nn.Module):
    """U-Net critic with spectral normalisation (Wang et al. 2021, Real-ESRGAN; the layout of
    BasicSR's `UNetDiscriminatorSN`, Apache-2.0): one realness logit per pixel instead of one
    per image.

    Why the ladder's GAN phase uses it: with 36 training photographs the image-level
    SwiftSRGAN critic separates real from fake within a few hundred steps (logit gap > 20 in
    the H200 trial, model/REPORT.md history) and its saturated gradient wrecks
    the generator. Spectral normalisation bounds the critic's Lipschitz constant, and
    per-pixel logits give the generator local feedback (where texture is wrong) rather than
    one verdict per patch.

    Args:
        in_channels: image channels (3).
        width: channels of the first level (BasicSR uses 64; the CPU GAN configs use 16).
        skip_connection: add the encoder features to the decoder's (BasicSR default).
    """

    def __init__(self, in_channels: int = 3, width: int = 64, skip_connection: bool = True):
        super().__init__()
        sn = nn.utils.spectral_norm
        w = width
        self.skip_connection = skip_connection
        self.conv0 = nn.Conv2d(in_channels, w, 3, 1, 1)
        self.conv1 = sn(nn.Conv2d(w, w * 2, 4, 2, 1, bias=False))
        self.conv2 = sn(nn.Conv2d(w * 2, w * 4, 4, 2, 1, bias=False))
        self.conv3 = sn(nn.Conv2d(w * 4, w * 8, 4, 2, 1, bias=False))
        self.conv4 = sn(nn.Conv2d(w * 8, w * 4, 3, 1, 1, bias=False))
        self.conv5 = sn(nn.Conv2d(w * 4, w * 2, 3, 1, 1, bias=False))
        self.conv6 = sn(nn.Conv2d(w * 2, w, 3, 1, 1, bias=False))
        self.conv7 = sn(nn.Conv2d(w, w, 3, 1, 1, bias=False))
        self.conv8 = sn(nn.Conv2d(w, w, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(w, 1, 3, 1, 1)

    def logits(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"UNetDiscriminatorSN needs height and width divisible by 8, got {tuple(x.shape[-2:])}: "
                             f"use a gt_size that is a multiple of 8")
        act = nn.functional.leaky_relu
        up = nn.functional.interpolate
        x0 = act(self.conv0(x), 0.2)
        x1 = act(self.conv1(x0), 0.2)
        x2 = act(self.conv2(x1), 0.2)
        x3 = act(self.conv3(x2), 0.2)
        x4 = act(self.conv4(up(x3, scale_factor=2, mode="bilinear", align_corners=False)), 0.2)
        x4 = x4 + x2 if self.skip_connection else x4
        x5 = act(self.conv5(up(x4, scale_factor=2, mode="bilinear", align_corners=False)), 0.2)
        x5 = x5 + x1 if self.skip_connection else x5
        x6 = act(self.conv6(up(x5, scale_factor=2, mode="bilinear", align_corners=False)), 0.2)
        x6 = x6 + x0 if self.skip_connection else x6
        out = act(self.conv7(x6), 0.2)
        out = act(self.conv8(out), 0.2)
        return self.conv9(out)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.logits(x))
