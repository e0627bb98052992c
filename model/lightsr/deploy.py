# SPDX-License-Identifier: MPL-2.0
"""The deployment form of a variant: the module contract of BUNDLE.md.

`U8Deploy` wraps any float network that maps RGB 0..255 NCHW to RGB 0..255 NCHW (the
published F2SRGAN convention) into the module the element calls: uint8 NHWC RGB in, uint8
NHWC RGB out, with the u8 <-> float conversion, clamping and rounding done inside libtorch.
`PhaseDeploy` is the fast form of the same contract for the ladder's image-skip generators
(ESPCN-like tail + bicubic skip): everything runs at input resolution, the bicubic skip becomes a
small convolution added before the pixel shuffle, and the only output-resolution pass is one uint8
copy. `BicubicUpscale` is the weight-free last rung of every ladder.
"""
import copy
import math

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
        check_u8_frames(x)
        y = x.permute(0, 3, 1, 2).to(self.anchor.dtype)
        if not self.channels_last:
            y = y.contiguous()
        y = self.net(y)
        # in place: the network's output is a fresh tensor; one pass writes contiguous NHWC
        y = y.clamp_(0.0, 255.0).round_().permute(0, 2, 3, 1)
        return y.to(torch.uint8, memory_format=torch.contiguous_format).contiguous()


def _cubic(t: float, a: float = -0.75) -> float:
    """Keys' cubic convolution kernel with torch's A = -0.75."""
    t = abs(t)
    if t <= 1:
        return ((a + 2) * t - (a + 3)) * t * t + 1
    if t < 2:
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return 0.0


def bicubic_phase_kernel(scale: int) -> Tensor:
    """(3 * s * s, 3, 5, 5) weights of a conv whose output, pixel-shuffled by s, is torch's bicubic
    upscale (align_corners=False) of a replicate-padded (2 pixels) RGB input.

    Output pixel (h*s + i, w*s + j) samples the input at (h + (i + .5)/s - .5, w + (j + .5)/s - .5):
    for each phase i the four cubic taps fall within offsets -2..2, so channel c*s*s + i*s + j of the
    conv is the outer product of the vertical taps of phase i and the horizontal taps of phase j,
    reading input channel c only (a dense conv: oneDNN runs it faster than a grouped one)."""
    taps = torch.zeros(scale, 5, dtype=torch.float64)
    for phase in range(scale):
        d = (phase + 0.5) / scale - 0.5
        floor = math.floor(d)
        frac = d - floor
        for k in range(-1, 3):
            taps[phase, floor + k + 2] += _cubic(k - frac)
    per_channel = torch.einsum("ia,jb->ijab", taps, taps).reshape(scale * scale, 5, 5)
    kernel = torch.zeros(3, scale * scale, 3, 5, 5, dtype=torch.float64)
    for c in range(3):
        kernel[c, :, c] = per_channel
    return kernel.reshape(3 * scale * scale, 3, 5, 5).float()


def unshuffled_phase_kernel(scale: int) -> Tensor:
    """(3 * (2s)^2, 12, 3, 3) weights of a conv whose output, pixel-shuffled by 2s, is torch's bicubic
    upscale (align_corners=False) by s of an RGB input, read from `pixel_unshuffle(pad(x, 2), 2)`
    (replicate padding by 2, then space-to-depth by 2: 12 channels, c * 4 + q * 2 + q' for row
    parity q and column parity q'). Output channels are in the (I, J, c) order of
    `phases_to_frames(p, 2 * s)`: output pixel (2h + a, 2w + b) of phase (i, j) of `phase_kernel(s)`
    is phase (a * s + i, b * s + j) at half-resolution pixel (h, w). Padded row 2h + a + dy (a in 0..1,
    dy in 0..4) is unshuffled row h + (a + dy) // 2, parity (a + dy) % 2: a 3x3 window."""
    small = phase_kernel(scale)  # (s*s*3, 3, 5, 5), channels (i, j, c)
    big = 2 * scale
    kernel = torch.zeros(big * big * 3, 12, 3, 3)
    for a in range(2):
        for b in range(2):
            for i in range(scale):
                for j in range(scale):
                    for c in range(3):
                        src = (i * scale + j) * 3 + c
                        dst = ((a * scale + i) * big + (b * scale + j)) * 3 + c
                        for dy in range(5):
                            for dx in range(5):
                                ry, rx = a + dy, b + dx
                                kernel[dst, c * 4 + (ry % 2) * 2 + (rx % 2), ry // 2, rx // 2] = small[src, c, dy, dx]
    return kernel


def last_conv(m: nn.Module) -> nn.Conv2d:
    """The last conv of a 3x3 conv of the generator (`conv3x3`): the pointwise conv of a SepConv, a
    dense conv itself."""
    while not isinstance(m, nn.Conv2d):
        m = m[-1]
    return m


def supports_phases(net: nn.Module) -> bool:
    """Whether `PhaseDeploy` can run `net`: an F2SRGANGenerator without Fourier blocks whose tail is
    one conv to 3*(u*s)^2 channels + PixelShuffle(u*s) (upsampler 'light'; u = `unshuffle`) and that
    adds the bicubic skip."""
    from lightsr.archs.f2srgan_arch import F2SRGANGenerator  # noqa: PLC0415 (archs import deploy-free)
    if not isinstance(net, F2SRGANGenerator) or net.fourier or not getattr(net, "image_skip", False):
        return False
    up = net.upsampler
    return (isinstance(net.final_conv, nn.Identity) and len(up) == 2
            and isinstance(up[1], nn.PixelShuffle)
            and up[1].upscale_factor == net.scale * net.unshuffle)


def check_u8_frames(x: Tensor) -> None:
    """The bundle contract's input: uint8 (N, H, W, 3) RGB."""
    if x.dim() != 4 or x.size(3) != 3:
        raise RuntimeError(
            "lightsr variant: expected a uint8 tensor of shape (N, H, W, 3) RGB, got shape "
            + str(x.shape) + "; pass frames as NHWC RGB bytes")
    if x.dtype != torch.uint8:
        raise RuntimeError(
            "lightsr variant: expected dtype uint8, got " + str(x.dtype)
            + "; pass the raw RGB bytes, the module normalises them itself")


def phases_to_frames(p: Tensor, scale: int) -> Tensor:
    """Float (N, s*s*3, H, W) in NHWC memory, channels ordered (i, j, c) and already offset by +0.5
    -> uint8 (N, H*s, W*s, 3): clamp, truncate (= round), one copy of runs of s*3 bytes."""
    n, h, w = p.size(0), p.size(2), p.size(3)
    p8 = p.clamp_(0.0, 255.0).to(torch.uint8).permute(0, 2, 3, 1)  # (N, H, W, s*s*3), a view
    out = p8.reshape(n, h, w, scale, scale * 3).permute(0, 1, 3, 2, 4)  # (N, H, s, W, s*3)
    return out.reshape(n, h * scale, w * scale, 3)


def phase_order(scale: int) -> Tensor:
    """Indices taking PixelShuffle's channel order (c, i, j) to (i, j, c)."""
    return torch.arange(3 * scale * scale).view(3, scale * scale).t().reshape(-1)


def bicubic_phases(y: Tensor, kernel: Tensor) -> Tensor:
    """Float NCHW frames -> their bicubic upscale as phases, with `kernel` from `phase_kernel`."""
    return F.conv2d(F.pad(y, [2, 2, 2, 2], mode="replicate"), kernel)


def phase_kernel(scale: int) -> Tensor:
    """`bicubic_phase_kernel` with its output channels in the (i, j, c) order of `phases_to_frames`."""
    return bicubic_phase_kernel(scale)[phase_order(scale)].contiguous()


class PhaseBicubic(nn.Module):
    """The weight-free bicubic rung in the bundle contract, as `bicubic_phase_kernel`'s conv at
    input resolution and one uint8 copy: equal to `U8Deploy(BicubicUpscale(s))` up to float
    rounding (a grey level where a value falls on .5), 5-10x faster on a CPU."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = int(scale)
        self.register_buffer("skip", phase_kernel(self.scale), persistent=True)
        self.register_buffer("anchor", torch.zeros(1), persistent=True)

    def forward(self, x: Tensor) -> Tensor:
        check_u8_frames(x)
        y = x.permute(0, 3, 1, 2).to(self.anchor.dtype)
        p = bicubic_phases(y, self.skip).add_(0.5)
        return phases_to_frames(p, self.scale)


class PhaseDeploy(nn.Module):
    """`U8Deploy`'s contract for an image-skip generator (see `supports_phases`), computed at input
    resolution. Equal to `U8Deploy(net)` up to float rounding (checked at export), with:

    * the bicubic skip as a 5x5 conv (`bicubic_phase_kernel`) added to the tail conv's 3*s*s
      output, before the pixel shuffle (torch's bicubic interpolation at output size costs more
      than the whole network on a CPU);
    * each residual block's `res_scale` folded into its last pointwise conv (and undone in the first
      layer of its channel attention, if any, which reads the block's mean), and the rounding's
      +0.5 into the tail conv's bias (clamp, then truncation to uint8 rounds);
    * the tail's 3*s*s output channels (and the skip's) reordered from PixelShuffle's (c, i, j) to
      (i, j, c), the clamp and the uint8 cast on them, then one uint8 copy that shuffles runs of
      s*3 bytes into the NHWC output;
    * with `unshuffle` 2 (head and body at half resolution) all of this at half resolution with
      2s in place of s, the skip a 3x3 conv of the unshuffled input (`unshuffled_phase_kernel`);
      odd frame sizes are replicate-padded to even, and the output cropped.

    The network is deep-copied: the original keeps its weights.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        if not supports_phases(net):
            raise ValueError("PhaseDeploy needs an F2SRGANGenerator with upsampler 'light', image_skip "
                             "and no Fourier blocks; use U8Deploy")
        from lightsr.archs.f2srgan_arch import ChannelAttention  # noqa: PLC0415
        net = copy.deepcopy(net).float().eval()
        self.scale = int(net.scale)
        self.unshuffle = int(net.unshuffle)
        self.sub_mean = net.sub_mean
        self.initial = net.initial
        with torch.no_grad():
            for block in net.residual:
                last = last_conv(block.block2)
                last.weight.mul_(block.res_scale)
                last.bias.mul_(block.res_scale)
                if isinstance(block.attention, ChannelAttention):  # it reads the scaled mean: undo
                    block.attention.fc1.weight.div_(block.res_scale)
        self.blocks1 = nn.ModuleList([b.block1 for b in net.residual])
        self.blocks2 = nn.ModuleList([b.block2 for b in net.residual])
        self.attentions = nn.ModuleList([b.attention for b in net.residual])
        self.tail = net.upsampler[0]
        # PixelShuffle's channel order is (c, i, j); reordered to (i, j, c), each output row's
        # s * 3 bytes of one input pixel lie together, so the final shuffle copies runs of bytes
        s = self.scale * self.unshuffle
        order = phase_order(s)
        last = last_conv(self.tail)
        with torch.no_grad():
            last.weight.copy_(last.weight[order])
            last.bias.copy_(last.bias[order] + 0.5)
        skip = phase_kernel(s) if self.unshuffle == 1 else unshuffled_phase_kernel(self.scale)
        self.register_buffer("skip", skip, persistent=True)
        self.register_buffer("anchor", torch.zeros(1), persistent=True)

    def forward(self, x: Tensor) -> Tensor:
        check_u8_frames(x)
        y = x.permute(0, 3, 1, 2).to(self.anchor.dtype)  # NHWC memory: a channels-last view
        if self.unshuffle == 1:
            f = self.initial(self.sub_mean(y))
            skip = bicubic_phases(y, self.skip)
        else:
            h, w = y.size(2), y.size(3)
            if h % 2 == 1 or w % 2 == 1:
                y = F.pad(y, [0, w % 2, 0, h % 2], mode="replicate")
            f = self.initial(F.pixel_unshuffle(self.sub_mean(y), 2))
            skip = F.conv2d(F.pixel_unshuffle(F.pad(y, [2, 2, 2, 2], mode="replicate"), 2), self.skip)
        r = f
        for block1, block2, attention in zip(self.blocks1, self.blocks2, self.attentions):
            r = r + attention(block2(block1(r)))
        p = self.tail(r + f)
        p.add_(skip)
        out = phases_to_frames(p, self.scale * self.unshuffle)
        if self.unshuffle == 2 and (x.size(1) % 2 == 1 or x.size(2) % 2 == 1):
            out = out[:, : x.size(1) * self.scale, : x.size(2) * self.scale].contiguous()
        return out


def bicubic_variant(scale: int) -> PhaseBicubic:
    """The deployable bicubic rung: no weights, torch bicubic (to a grey level), u8 in/out."""
    return PhaseBicubic(scale).eval()


def phase_deploy_from_state(state: dict, scale: int) -> PhaseDeploy:
    """The eager `PhaseDeploy` whose state dict is `state` (e.g. a bundle rung's TorchScript
    `.state_dict()`): widths, pruned ones included, are read off the weights' shapes, so a rung can
    be re-formed (`pad_channels`) or compiled without its training checkpoint."""
    from lightsr.archs.f2srgan_arch import ChannelAttention, F2SRGANGenerator, conv3x3  # noqa: PLC0415
    blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith("blocks1.")})
    conv = "dense" if "initial.0.weight" in state else "sep"
    pointwise = "" if conv == "dense" else ".1"  # a SepConv's last conv is its index 1
    width = state[f"initial.0{pointwise}.weight"].shape[0]
    unshuffle = 2 if conv == "dense" and state["initial.0.weight"].shape[1] == 12 else 1
    net = F2SRGANGenerator(scale=scale, num_blocks=len(blocks), fourier=False, width=width,
                           upsampler="light", image_skip=True, conv=conv, unshuffle=unshuffle)
    for i, block in enumerate(net.residual):
        mid = state[f"blocks1.{i}.0{pointwise}.weight"].shape[0]
        block.block1 = nn.Sequential(conv3x3(width, mid, conv), nn.PReLU(mid))
        block.block2 = nn.Sequential(conv3x3(mid, width, conv))
        if f"attentions.{i}.fc1.weight" in state:
            block.attention = ChannelAttention(width, state[f"attentions.{i}.fc1.weight"].shape[0])
        block.res_scale = 1.0  # already folded into the state's weights
    deploy = PhaseDeploy(net)
    deploy.load_state_dict(state)
    return deploy.eval()


def _grown_conv(conv: nn.Conv2d, cin: int, cout: int) -> nn.Conv2d:
    """`conv` with zero input channels and zero output channels (weights and bias) appended; a
    depthwise conv stays depthwise."""
    depthwise = conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1
    grown = nn.Conv2d(cin, cout, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                      groups=cin if depthwise else conv.groups, bias=conv.bias is not None,
                      padding_mode=conv.padding_mode)
    with torch.no_grad():
        grown.weight.zero_()
        w = conv.weight
        grown.weight[: w.shape[0], : w.shape[1]].copy_(w)
        if conv.bias is not None:
            grown.bias.zero_()
            grown.bias[: conv.bias.shape[0]].copy_(conv.bias)
    return grown


def _grown_prelu(prelu: nn.PReLU, channels: int) -> nn.PReLU:
    grown = nn.PReLU(channels)
    with torch.no_grad():
        grown.weight[: prelu.weight.shape[0]].copy_(prelu.weight)
    return grown


def pad_channels(deploy: PhaseDeploy, multiple: int = 8) -> PhaseDeploy:
    """A copy of `deploy` with every feature width (the trunk's and each block's, pruned or not)
    rounded up to a multiple of `multiple` by zero channels: the same function exactly (the extra
    channels stay zero from the first conv to the tail), in shapes that GPU tensor cores take
    (cuDNN's fp16 kernels want channel counts that are multiples of 8)."""
    out = copy.deepcopy(deploy)
    up = lambda c: -(-c // multiple) * multiple  # noqa: E731
    if isinstance(out.initial[0], nn.Conv2d):  # dense convs
        w8 = up(out.initial[0].out_channels)
        out.initial[0] = _grown_conv(out.initial[0], out.initial[0].in_channels, w8)
        for block1, block2, attention in zip(out.blocks1, out.blocks2, out.attentions):
            mid8 = up(block1[0].out_channels)
            block1[0] = _grown_conv(block1[0], w8, mid8)
            block1[1] = _grown_prelu(block1[1], mid8)
            block2[0] = _grown_conv(block2[0], mid8, w8)
            if not isinstance(attention, nn.Identity):  # the zero channels' gains multiply zeros
                attention.fc1 = _grown_conv(attention.fc1, w8, attention.fc1.out_channels)
                attention.fc2 = _grown_conv(attention.fc2, attention.fc2.in_channels, w8)
        out.tail = _grown_conv(out.tail, w8, out.tail.out_channels)
        return out.eval()
    width = out.initial[0][1].out_channels
    w8 = up(width)
    sep = out.initial[0]
    sep[1] = _grown_conv(sep[1], sep[1].in_channels, w8)
    for block1, block2 in zip(out.blocks1, out.blocks2):
        first, prelu, second = block1[0], block1[1], block2[0]
        mid8 = up(first[1].out_channels)
        first[0] = _grown_conv(first[0], w8, w8)
        first[1] = _grown_conv(first[1], w8, mid8)
        block1[1] = _grown_prelu(prelu, mid8)
        second[0] = _grown_conv(second[0], mid8, mid8)
        second[1] = _grown_conv(second[1], mid8, w8)
    tail = out.tail
    tail[0] = _grown_conv(tail[0], w8, w8)
    tail[1] = _grown_conv(tail[1], w8, tail[1].out_channels)
    return out.eval()


def gpu_phase_deploy(deploy: PhaseDeploy, multiple: int = 8) -> nn.Module:
    """The CUDA form of a phase-form rung: `GpuPhaseDeploy` for SepConv rungs; for rungs of dense
    convs (cuDNN's own kernels, no depthwise / pointwise pair to re-form) the rung itself with its
    widths padded to a multiple of `multiple` (`pad_channels`)."""
    if isinstance(deploy.initial[0], nn.Conv2d):
        return pad_channels(deploy, multiple)
    return GpuPhaseDeploy(deploy, multiple)


class GpuPhaseDeploy(nn.Module):
    """`PhaseDeploy` re-formed for CUDA (the manifest's `cuda_file`): the same function to float
    rounding, in the shapes and ops that run fast there. Measured on an H200 (model/REPORT.md):
    libtorch adds a convolution's bias in a separate, unvectorised pass over channels-last
    activations (a third of the frame's time), and cuDNN pads channel counts that are not a
    multiple of 8 on every call. So:

    * every width is padded to a multiple of 8 with zero channels (`pad_channels`);
    * each depthwise conv runs without bias, its bias folded into the following pointwise conv's
      (exact: a 1x1 conv of a constant is a constant);
    * each pointwise conv is a `linear` over the NHWC activation (a GEMM whose epilogue adds the
      bias), so activations stay contiguous NHWC and no separate bias pass remains.
    """

    def __init__(self, deploy: PhaseDeploy, multiple: int = 8):
        super().__init__()
        padded = pad_channels(deploy, multiple)
        self.scale = padded.scale
        self.mean_w = nn.Parameter(padded.sub_mean.weight.detach().flatten(1).clone())
        self.mean_b = nn.Parameter(padded.sub_mean.bias.detach().clone())
        self.initial = _GpuSepConv(padded.initial[0])
        self.blocks = nn.ModuleList([_GpuBlock(b1, b2) for b1, b2 in zip(padded.blocks1, padded.blocks2)])
        self.tail = _GpuSepConv(padded.tail)
        self.register_buffer("skip", padded.skip.clone(), persistent=True)
        self.register_buffer("anchor", torch.zeros(1), persistent=True)

    def forward(self, x: Tensor) -> Tensor:
        check_u8_frames(x)
        y = x.to(self.anchor.dtype)  # (N, H, W, 3)
        f = self.initial(F.linear(y, self.mean_w, self.mean_b))
        r = f
        for block in self.blocks:
            r = block(r)
        p = self.tail(r + f)  # (N, H, W, 3*s*s)
        p.add_(bicubic_phases(y.permute(0, 3, 1, 2), self.skip).permute(0, 2, 3, 1))
        return phases_to_frames(p.permute(0, 3, 1, 2), self.scale)


class _GpuSepConv(nn.Module):
    """A SepConv on contiguous NHWC activations: depthwise 3x3 without bias (its bias folded into
    the pointwise one), then the pointwise conv as `linear`."""

    def __init__(self, sep: nn.Sequential):
        super().__init__()
        dw, pw = sep[0], sep[1]
        weight = pw.weight.detach().flatten(1)  # (Cout, Cin)
        self.dw = nn.Parameter(dw.weight.detach().clone())
        self.pw = nn.Parameter(weight.clone())
        self.pb = nn.Parameter(pw.bias.detach() + weight @ dw.bias.detach())
        self.groups = dw.groups
        self.padding = dw.padding[0]

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv2d(x.permute(0, 3, 1, 2), self.dw, None, 1, self.padding, 1, self.groups)
        return F.linear(y.permute(0, 2, 3, 1).contiguous(), self.pw, self.pb)


class _GpuBlock(nn.Module):
    """`r + SepConv(PReLU(SepConv(r)))` on contiguous NHWC activations."""

    def __init__(self, block1: nn.Sequential, block2: nn.Sequential):
        super().__init__()
        self.first = _GpuSepConv(block1[0])
        self.prelu = nn.Parameter(block1[1].weight.detach().clone())
        self.second = _GpuSepConv(block2[0])

    def forward(self, r: Tensor) -> Tensor:
        h = F.prelu(self.first(r).permute(0, 3, 1, 2), self.prelu).permute(0, 2, 3, 1)
        return r + self.second(h)
