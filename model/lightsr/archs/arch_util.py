# SPDX-License-Identifier: MPL-2.0
"""Building blocks shared by the architectures."""
import torch
from torch import nn


class SepConv(nn.Sequential):
    """Separable convolution: depthwise k x k (groups=in) then pointwise 1x1.

    Index 0 is the depthwise conv and 1 the pointwise conv, as in the published checkpoints
    (`initial.0.0.weight`, `initial.0.1.weight`).

    Args:
        in_channels, out_channels: channel counts.
        kernel_size: odd kernel of the depthwise conv ('same' padding).
        padding_mode: 'zeros' everywhere except inside the FFC ('reflect').
        depthwise_bias: False for the 1x1 SepConvs of the spectral transform.
        stride: stride of the depthwise conv (discriminator only).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 padding_mode: str = "zeros", depthwise_bias: bool = True, stride: int = 1,
                 bias: bool = True):
        if kernel_size % 2 != 1:
            raise ValueError(f"SepConv kernel_size must be odd for 'same' padding, got {kernel_size}")
        super().__init__(
            nn.Conv2d(in_channels, in_channels, kernel_size, stride=stride,
                      padding=kernel_size // 2, groups=in_channels, bias=depthwise_bias,
                      padding_mode=padding_mode),
            nn.Conv2d(in_channels, out_channels, 1, bias=bias),
        )


class MeanShift(nn.Conv2d):
    """Frozen 1x1 conv adding `sign * rgb_range * rgb_mean` (EDSR's sub_mean / add_mean)."""

    def __init__(self, sign: int, rgb_mean=(0.4488, 0.4371, 0.4040), rgb_range: float = 255.0):
        super().__init__(3, 3, 1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(rgb_mean))
        for p in self.parameters():
            p.requires_grad = False
