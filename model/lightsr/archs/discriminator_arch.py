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
