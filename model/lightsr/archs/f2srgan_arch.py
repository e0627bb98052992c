# SPDX-License-Identifier: MPL-2.0
"""F2SRGAN generator (Nguyen et al., IEEE Access 2023) and the Light F2SRGAN student.

Module names follow the published checkpoints, so their state dicts load directly.
"""
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightsr.archs.arch_util import MeanShift, SepConv
from lightsr.archs.fourier_arch import FFC
from lightsr.archs.registry import register_arch

UPSAMPLERS = ("published", "light")
CONVS = ("sep", "dense")


def conv3x3(in_channels: int, out_channels: int, conv: str = "sep") -> nn.Module:
    """The generator's 3x3 convolution: a SepConv (depthwise + pointwise, as published) or, with
    `conv='dense'`, a plain `nn.Conv2d`."""
    if conv == "dense":
        return nn.Conv2d(in_channels, out_channels, 3, padding=1)
    return SepConv(in_channels, out_channels, 3)


class ChannelAttention(nn.Module):
    """RCAN's channel attention: `y * sigmoid(fc2(relu(fc1(mean over the frame of y))))`, a per-channel
    gain read from the whole frame (how strongly it was coded, how much detail it has), for the cost
    of one pass to average and one to scale."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, y: Tensor) -> Tensor:
        return y * torch.sigmoid(self.fc2(F.relu(self.fc1(y.mean((2, 3), keepdim=True)))))


class ResidualBlock(nn.Module):
    """`x + res_scale * A(B2(PReLU(B1(x))))`, B1 an FFC (Fourier block) or a 3x3 conv (`conv3x3`), A
    the identity or, with `attention` > 0 hidden channels, `ChannelAttention`."""

    def __init__(self, channels: int, fourier: bool, res_scale: float = 0.1, conv: str = "sep",
                 attention: int = 0):
        super().__init__()
        first = FFC(channels) if fourier else conv3x3(channels, channels, conv)
        self.block1 = nn.Sequential(first, nn.PReLU(channels))
        self.block2 = nn.Sequential(conv3x3(channels, channels, conv))
        self.attention = ChannelAttention(channels, attention) if attention > 0 else nn.Identity()
        self.res_scale = res_scale

    def __setstate__(self, state: dict) -> None:
        # whole modules pickled before `attention` existed (the pruned checkpoints) have none
        super().__setstate__(state)
        if "attention" not in self._modules:
            self._modules["attention"] = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.res_scale * self.attention(self.block2(self.block1(x)))


def published_upsampler(width: int, scale: int) -> nn.Sequential:
    """Per x2 stage: SepConv(w -> 4w) -> PixelShuffle(2) -> PReLU(w)."""
    stages = {2: 1, 4: 2, 8: 3}.get(scale)
    if stages is None:
        raise ValueError(f"the published upsampler supports scales 2, 4, 8, got {scale}; "
                         "use upsampler='light' for other scales")
    layers: List[nn.Module] = []
    for _ in range(stages):
        layers += [SepConv(width, 4 * width, 3), nn.PixelShuffle(2), nn.PReLU(width)]
    return nn.Sequential(*layers)


@register_arch
class F2SRGANGenerator(nn.Module):
    """F2SRGAN generator; with num_blocks=8, fourier=False it is the Light F2SRGAN student.

    Input: RGB float 0..255, NCHW, any H, W >= 1. Output: RGB float (not clamped), H*s x W*s.

    Args:
        scale: upscaling factor (2 or 4 as published; 8 too; any with upsampler='light').
        num_blocks: residual blocks (16 published, 8 for the student).
        fourier: an FFC as the first conv of every even block (published: True).
        width: feature channels (64 published; a multiple of 8 when fourier).
        upsampler: 'published' (per-x2 SepConv(w->4w)+PixelShuffle(2)+PReLU, then
            final_conv SepConv(w->3)) or 'light' (one SepConv(w->3*s*s)+PixelShuffle(s),
            ESPCN-like, about 15x fewer MACs in the tail at x4).
        res_scale: residual scaling (0.1 published).
        image_skip: add the bicubic upscale of the input to the output (VDSR's global residual):
            the network learns only a correction, and its last conv starts at zero, so a new
            network starts as exactly bicubic. Not in the published model; the project's
            compression-aware ladder uses it (a tiny network trained to restore coded frames from
            clean weights stayed below bicubic, model/REPORT.md).
        conv: 'sep' (published: every 3x3 conv a SepConv) or 'dense' (plain 3x3 convs; the
            project's heavier compression-aware rungs, model/REPORT.md). The FFCs of Fourier
            blocks stay as published either way.
        unshuffle: 1, or 2 to run the head and the body at half the input resolution: the input is
            space-to-depth'ed (PixelUnshuffle(2), 12 channels), the tail conv writes
            3*(2s)^2 channels and PixelShuffle(2s) makes the output. Each 3x3 conv then sees twice
            the input distance (codec blocks are 8-16 pixels) and its layers are 4x wider for the
            same MACs, which a CPU runs nearer its peak. Odd sizes are replicate-padded to even
            and cropped back. Needs conv 'dense', the light upsampler, image_skip, no Fourier blocks.
        attention: 0, or the hidden width of a `ChannelAttention` at the end of every residual block
            (global context for a local network; with tiles, each tile's own context).
    """

    def __init__(self, scale: int = 4, num_blocks: int = 16, fourier: bool = True,
                 width: int = 64, upsampler: str = "published", res_scale: float = 0.1,
                 image_skip: bool = False, conv: str = "sep", unshuffle: int = 1, attention: int = 0):
        super().__init__()
        if upsampler not in UPSAMPLERS:
            raise ValueError(f"upsampler must be one of {UPSAMPLERS}, got '{upsampler}'")
        if conv not in CONVS or (conv == "dense" and upsampler != "light"):
            raise ValueError(f"conv must be one of {CONVS} ('dense' with upsampler='light'), got '{conv}'")
        if unshuffle not in (1, 2) or (unshuffle == 2 and (upsampler != "light" or not image_skip
                                                           or conv != "dense" or fourier)):
            raise ValueError(f"unshuffle must be 1 or 2 (2 with conv='dense', upsampler='light', image_skip "
                             f"and no Fourier blocks), got {unshuffle}")
        if attention < 0 or (attention > 0 and (conv != "dense" or res_scale == 0)):
            raise ValueError(f"attention must be 0 or a hidden width > 0 with conv='dense' and a res_scale "
                             f"other than 0, got {attention}")
        if fourier and width % 16 != 0:
            raise ValueError(f"with fourier=True the width must be a multiple of 16, got {width}")
        self.scale = int(scale)
        self.fourier = bool(fourier)
        self.sub_mean = MeanShift(-1)
        self.conv = conv
        self.unshuffle = int(unshuffle)
        self.initial = nn.Sequential(conv3x3(3 * self.unshuffle ** 2, width, conv))
        self.residual = nn.Sequential(*[
            ResidualBlock(width, fourier and i % 2 == 0, res_scale, conv, attention) for i in range(num_blocks)])
        if upsampler == "published":
            self.upsampler = published_upsampler(width, self.scale)
            self.final_conv = SepConv(width, 3, 3)
        else:
            up = self.scale * self.unshuffle
            self.upsampler = nn.Sequential(conv3x3(width, 3 * up ** 2, conv), nn.PixelShuffle(up))
            self.final_conv = nn.Identity()
        self.add_mean = MeanShift(+1)
        self.image_skip = bool(image_skip)
        if self.image_skip:
            last = [m for m in self.modules() if isinstance(m, nn.Conv2d)][-2]  # before add_mean
            nn.init.zeros_(last.weight)
            if last.bias is not None:
                nn.init.zeros_(last.bias)

    def __setstate__(self, state: dict) -> None:
        # whole modules pickled before `unshuffle` existed (the pruned checkpoints) have none
        super().__setstate__(state)
        self.__dict__.setdefault("unshuffle", 1)

    def _tail(self, features: Tensor, x: Tensor) -> Tensor:
        """Upsampler + final conv; with image_skip, plus the bicubic upscale of the input `x`."""
        out = self.final_conv(self.upsampler(features))
        if self.image_skip:
            return out + F.interpolate(x, scale_factor=float(self.scale), mode="bicubic", align_corners=False)
        return self.add_mean(out)

    def _min_size_pad(self, x: Tensor) -> Tuple[Tensor, int, int]:
        """FFC blocks need H, W >= 2, an unshuffled body even H, W: replicate-pad (cropped afterwards)."""
        h, w = x.size(2), x.size(3)
        if self.fourier and (h < 2 or w < 2):
            x = F.pad(x, [0, max(0, 2 - w), 0, max(0, 2 - h)], mode="replicate")
        if self.unshuffle == 2 and (h % 2 == 1 or w % 2 == 1):
            x = F.pad(x, [0, w % 2, 0, h % 2], mode="replicate")
        return x, h, w

    def _head(self, x: Tensor) -> Tensor:
        y = self.sub_mean(x)
        if self.unshuffle == 2:
            y = F.pixel_unshuffle(y, 2)
        return self.initial(y)

    @torch.jit.export
    def forward_features(self, x: Tensor) -> Tuple[Tensor, List[Tensor]]:
        """Output and the output of every residual block (for feature distillation)."""
        x, h, w = self._min_size_pad(x)
        f = self._head(x)
        feats: List[Tensor] = []
        r = f
        for block in self.residual:
            r = block(r)
            feats.append(r)
        out = self._tail(r + f, x)
        return out[:, :, : h * self.scale, : w * self.scale], feats

    def forward(self, x: Tensor) -> Tensor:
        x, h, w = self._min_size_pad(x)
        f = self._head(x)
        out = self._tail(self.residual(f) + f, x)
        return out[:, :, : h * self.scale, : w * self.scale]


def deepen_from(teacher: F2SRGANGenerator, student_state: Dict[str, Tensor]) -> List[int]:
    """Function-preserving warm start of a deeper generator from a shallower trained one
    (Net2DeeperNet, Chen et al. 2016): head, upsampler and final conv are copied; student
    block i goes to the teacher block at the same relative depth (`pair_layers`: 8 -> 16 gives
    1, 3, ..., 15, the plain blocks between the Fourier ones); every other teacher block starts
    as the identity (its last conv zeroed, so `x + res_scale * 0`). The teacher then computes
    exactly what the student does and training adds what its extra blocks can learn.

    Returns the teacher block indices that received student blocks. Raises ValueError when the
    shapes do not line up (other width, upsampler or scale).
    """
    from lightsr.losses import pair_layers
    n_student = 1 + max((int(k.split(".")[1]) for k in student_state if k.startswith("residual.")), default=-1)
    n_teacher = len(teacher.residual)
    targets = pair_layers(n_student, n_teacher)
    mapped: Dict[str, Tensor] = {}
    for key, value in student_state.items():
        if key.startswith("residual."):
            parts = key.split(".")
            parts[1] = str(targets[int(parts[1])])
            key = ".".join(parts)
        mapped[key] = value
    own = teacher.state_dict()
    for key, value in mapped.items():
        if key not in own:
            raise ValueError(f"deepen_from: student entry {key} has no place in the teacher "
                             f"(a Fourier block where the student has a plain one?)")
        if own[key].shape != value.shape:
            raise ValueError(f"deepen_from: {key} is {tuple(value.shape)} in the student and "
                             f"{tuple(own[key].shape)} in the teacher (same width, upsampler, scale needed)")
    with torch.no_grad():
        for key, value in mapped.items():
            own[key].copy_(value)
        for i, block in enumerate(teacher.residual):
            if i not in targets:
                last = block.block2[0]  # a dense conv, or a SepConv whose pointwise conv is last
                last = last if isinstance(last, nn.Conv2d) else last[1]
                last.weight.zero_()
                if last.bias is not None:
                    last.bias.zero_()
    return targets
