# SPDX-License-Identifier: MPL-2.0
"""The deployment form of a variant: the module contract of BUNDLE.md.

`U8Deploy` wraps any float network that maps RGB 0..255 NCHW to RGB 0..255 NCHW (the
published F2SRGAN convention) into the module the element calls: uint8 NHWC RGB in, uint8
NHWC RGB out, with the u8 <-> float conversion, clamping and rounding done inside libtorch.
`BicubicUpscale` is the weight-free last rung of every ladder.
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BicubicUpscale(nn.Module):
    """Exact torch bicubic (align_corners=False) upscaling of a float NCHW batch."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = int(scale)

    def forward(self, x: Tensor) -> Tensor:
        size = [x.size(2) * self.scale, x.size(3) * self.scale]
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False)


class U8Deploy(nn.Module):
    """uint8 (N, H, W, 3) RGB -> uint8 (N, H*s, W*s, 3) RGB around a float 0..255 network.

    Computes in the dtype of the `anchor` buffer (fp32 unless the whole module is cast with
    `.to(torch.half)`), so a network without parameters (bicubic) follows casts too.

    Args:
        net: float network, NCHW RGB 0..255 in, NCHW RGB 0..255 (unclamped) out.
        scale: the network's integer upscaling factor.
        channels_last: feed the network an NHWC-strided view (no copy) instead of a
            contiguous NCHW tensor; faster for convolutions on CPU.
    """

    def __init__(self, net: nn.Module, scale: int, channels_last: bool = True):
        super().__init__()
        self.net = net
        self.scale = int(scale)
        self.channels_last = channels_last
        self.register_buffer("anchor", torch.zeros(1), persistent=True)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.size(3) != 3:
            raise RuntimeError(
                "lightsr variant: expected a uint8 tensor of shape (N, H, W, 3) RGB, got shape "
                + str(x.shape) + "; pass frames as NHWC RGB bytes")
        if x.dtype != torch.uint8:
            raise RuntimeError(
                "lightsr variant: expected dtype uint8, got " + str(x.dtype)
                + "; pass the raw RGB bytes, the module normalises them itself")
        y = x.permute(0, 3, 1, 2).to(self.anchor.dtype)
        if not self.channels_last:
            y = y.contiguous()
        y = self.net(y)
        # in place: the network's output is a fresh tensor; one pass writes contiguous NHWC
        y = y.clamp_(0.0, 255.0).round_().permute(0, 2, 3, 1)
        return y.to(torch.uint8, memory_format=torch.contiguous_format).contiguous()


def bicubic_variant(scale: int) -> U8Deploy:
    """The deployable bicubic rung: no weights, exact torch bicubic, u8 in/out."""
    return U8Deploy(BicubicUpscale(scale), scale).eval()
