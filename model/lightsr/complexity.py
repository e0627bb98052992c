# SPDX-License-Identifier: MPL-2.0
"""Parameter and multiply-accumulate counts of a generator on a given frame size.

MACs count every Conv2d / Linear (hooks) plus the complex 1x1 conv of every Fourier unit
(4 real MACs per complex MAC on H x (W//2+1) bins); FFTs, activations and additions are not
counted (the usual convention of SR papers).
"""
from typing import List

import torch
from torch import nn

from lightsr.archs.arch_util import MeanShift
from lightsr.archs.fourier_arch import FourierUnit


def count_params(net: nn.Module, trainable_only: bool = True) -> int:
    """Parameters of `net`; with `trainable_only`, without the frozen mean shifts. Decided by
    module type, not `requires_grad`: an EMA or reloaded module may have every flag off."""
    frozen = {id(p) for m in net.modules() if isinstance(m, MeanShift) for p in m.parameters()}
    return sum(p.numel() for p in net.parameters() if not (trainable_only and id(p) in frozen))


def _conv_macs(module: nn.Conv2d, out: torch.Tensor) -> int:
    k = module.kernel_size[0] * module.kernel_size[1]
    return out.numel() // out.size(0) * (module.in_channels // module.groups) * k


def _fourier_macs(module: FourierUnit, inp: torch.Tensor) -> int:
    o, i = module.complex_weight.shape[:2]
    return inp.size(2) * (inp.size(3) // 2 + 1) * o * i * 4


def count_macs(net: nn.Module, height: int, width: int) -> int:
    """MACs of one forward pass of `net` on a (1, 3, height, width) frame."""
    total: List[int] = [0]
    hooks = []

    def on_conv(m, inp, out):
        total[0] += _conv_macs(m, out)

    def on_linear(m, inp, out):
        total[0] += m.in_features * m.out_features

    def on_fourier(m, inp, out):
        total[0] += _fourier_macs(m, inp[0])

    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(on_conv))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(on_linear))
        elif isinstance(m, FourierUnit):
            hooks.append(m.register_forward_hook(on_fourier))
    try:
        dtype = next((p.dtype for p in net.parameters()), torch.float32)
        with torch.no_grad():
            net(torch.zeros(1, 3, height, width, dtype=dtype))
    finally:
        for h in hooks:
            h.remove()
    return total[0]
