# SPDX-License-Identifier: MPL-2.0
"""Fast Fourier convolution blocks as published in F2SRGAN (after Chi et al., NeurIPS 2020).

`FourierUnit` always computes in fp32 (input and weight cast in, result cast back): an
FFT's DC term is the sum of all pixels and overflows fp16 on large frames, so a
`module.half()` generator runs fp16 convolutions around fp32 FFTs (the paper's deployment).
"""
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightsr.archs.arch_util import SepConv


class FourierUnit(nn.Module):
    """rfft2 -> complex 1x1 conv -> irfft2, 'ortho' normalisation, no bias.

    The published code wraps the complex conv in fftshift / ifftshift over ALL dimensions
    (batch and channels included). The spatial and batch shifts commute with a 1x1 conv and
    cancel; the channel shifts amount to rolling the weight by (-C_out//2, -C_in//2), which is
    what `forward` does instead of moving the spectrum around.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.complex_weight = nn.Parameter(
            torch.randn(out_channels, in_channels, 1, 1, 2) * (1.0 / in_channels) ** 0.5)

    def real_weight(self) -> Tensor:
        """The complex conv as one real conv on cat(re, im): [[Wr, -Wi], [Wi, Wr]], fp32."""
        w = self.complex_weight.float()
        w = torch.roll(w, shifts=[-(w.size(0) // 2), -(w.size(1) // 2)], dims=[0, 1])
        wr, wi = w[..., 0], w[..., 1]
        return torch.cat([torch.cat([wr, -wi], dim=1), torch.cat([wi, wr], dim=1)], dim=0)

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        h, w = x.size(-2), x.size(-1)
        y = torch.fft.rfftn(x.float(), dim=[-2, -1], norm="ortho")
        z = F.conv2d(torch.cat([y.real, y.imag], dim=1), self.real_weight())
        c = z.size(1) // 2
        out = torch.fft.irfftn(torch.complex(z[:, :c], z[:, c:]), s=[h, w], dim=[-2, -1],
                               norm="ortho")
        return out.to(dtype)


class SpectralTransform(nn.Module):
    """Global branch of the FFC: 1x1 SepConv + ReLU, Fourier unit + local Fourier unit, 1x1.

    The local Fourier unit takes the first quarter of the channels, stacks the four
    (h//2, w//2) quadrants on channels, transforms them, tiles the result 2x2 and pads one
    zero row / column at the bottom / right when h / w is odd.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        hidden = out_channels // 2
        if hidden % 4 != 0:
            raise ValueError(f"SpectralTransform needs out_channels divisible by 8, got {out_channels}")
        self.conv1 = nn.Sequential(SepConv(in_channels, hidden, 1, depthwise_bias=False),
                                   nn.ReLU(inplace=True))
        self.fu = FourierUnit(hidden, hidden)
        self.lfu = FourierUnit(hidden, hidden)
        self.conv2 = SepConv(hidden, out_channels, 1, depthwise_bias=False)

    def local_fourier(self, x: Tensor) -> Tensor:
        h, w = x.size(-2), x.size(-1)
        h2, w2 = h // 2, w // 2
        xs = x[:, : x.size(1) // 4]
        xs = torch.cat([xs[:, :, :h2], xs[:, :, h2:2 * h2]], dim=1)
        xs = torch.cat([xs[:, :, :, :w2], xs[:, :, :, w2:2 * w2]], dim=1)
        xs = self.lfu(xs).repeat(1, 1, 2, 2)
        return F.pad(xs, [0, w - 2 * w2, 0, h - 2 * h2])

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        return self.conv2(x + self.fu(x) + self.local_fourier(x))


class FFC(nn.Module):
    """Fast Fourier convolution, half local / half global channels, stride 1, no BN.

    Needs H, W >= 2 (reflect padding, local Fourier quadrants); the generator pads smaller
    inputs.
    """

    def __init__(self, channels: int, ratio_global: float = 0.5, kernel_size: int = 3):
        super().__init__()
        global_ch = int(channels * ratio_global)
        local_ch = channels - global_ch
        self.local_channels = local_ch
        self.convl2l = SepConv(local_ch, local_ch, kernel_size, padding_mode="reflect")
        self.convl2g = SepConv(local_ch, global_ch, kernel_size, padding_mode="reflect")
        self.convg2l = SepConv(global_ch, local_ch, kernel_size, padding_mode="reflect")
        self.convg2g = SpectralTransform(global_ch, global_ch)

    def forward(self, x: Tensor) -> Tensor:
        x_l, x_g = x[:, : self.local_channels], x[:, self.local_channels:]
        out_l = self.convl2l(x_l) + self.convg2l(x_g)
        out_g = self.convl2g(x_l) + self.convg2g(x_g)
        return torch.cat([out_l, out_g], dim=1)


__all__: List[str] = ["FourierUnit", "SpectralTransform", "FFC"]
