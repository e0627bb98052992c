# SPDX-License-Identifier: MPL-2.0
"""Losses of the F2SRGAN / Light F2SRGAN recipe, and the distillation losses.

Images are compared in the 0..1 range (the training step divides the generator's 0..255
output and target by 255), so loss weights do not depend on the pixel scale.

Perceptual term. The published recipe uses the MSE of VGG19 conv5_4 (pre-activation)
features. No pretrained VGG exists on this project's machines, and a randomly initialised
VGG measures nothing perceptual, so `FrequencyStructureLoss` replaces it with two terms
that push the generator where L1 is weakest, towards high-frequency texture and sharp edges:

* a frequency-domain term (L1 of the complex difference of the orthonormal 2-D FFTs,
  i.e. amplitude and phase errors together; cf. Fuoli et al. 2021 "Fourier Space Losses",
  Jiang et al. 2021 "Focal Frequency Loss"). Pixel losses are dominated by low frequencies;
  on the spectrum every frequency bin counts the same, so lost texture shows up.
* a multi-scale gradient term (L1 of horizontal / vertical finite differences at 1x, 1/2x
  and 1/4x resolution): edges and structure at several scales.

It is honest about what it is: a fidelity-to-texture prior, not a learned perceptual
metric. Both terms still want detail exactly where the ground truth has it, so on their own
they pull towards blur like L1. `LocalSpectrumLoss` (train.texture_opt) is the phase-free
complement: it matches the amount of detail per frequency in each 16x16 neighbourhood and
leaves its placement to the adversarial term, which is what adds plausible detail.
`LowPassL1Loss` (train.lowpass_opt) is fidelity on the low frequencies only. An amplitude-only
target is met by a regular grid as well as by natural texture, and PixelShuffle tails paint
such grids readily: `FixedPatternLoss` (train.pattern_opt) penalises any pattern repeated
every `scale` pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lightsr.degradations import RGB_TO_YCBCR

# ------------------------------------------------------------------ registry
LOSS_REGISTRY: dict[str, type[nn.Module]] = {}


def register_loss(cls: type[nn.Module]) -> type[nn.Module]:
    """Make a loss buildable by name from a config's `train.losses` list (BasicSR's LOSS_REGISTRY).
    A registered loss is called as `loss(pred, target)` on 0..1 images."""
    LOSS_REGISTRY[cls.__name__] = cls
    return cls


# ------------------------------------------------------------------ pixel losses
@register_loss
class L1Loss(nn.Module):
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(pred, target)


@register_loss
class CharbonnierLoss(nn.Module):
    """mean(sqrt((pred - target)^2 + eps^2)): a differentiable L1 (Lai et al. 2017)."""

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((pred - target) ** 2 + self.eps ** 2).mean()


@register_loss
class PSNRLoss(nn.Module):
    """Mean over the batch of 10 log10(MSE per sample + eps) (HINet's PSNR loss, Chen et al. 2021).

    Minimising it maximises the mean PSNR of the samples, the figure the ladder is judged on, and
    weighs every sample by its own error: a lightly compressed or clean sample counts as much, in
    dB, as a heavily compressed one. Under L1 the heavy samples' large errors dominate the mean,
    and a small network settles on a blur that costs clean input about 0.8 dB (model/REPORT.md)."""

    def __init__(self, eps: float = 1e-8, chroma_weight: float | None = None):
        super().__init__()
        self.eps = eps
        if chroma_weight is not None and not 0.0 <= float(chroma_weight) <= 1.0:
            raise ValueError(f"PSNRLoss chroma_weight {chroma_weight}: between 0 and 1, or unset for RGB")
        # unset: the error in RGB; set: in BT.601 Y, Cb, Cr, the chroma planes weighted by it (the
        # ladder is judged on Y, and 4:2:0 coding leaves chroma the least recoverable)
        self.chroma_weight = None if chroma_weight is None else float(chroma_weight)
        # the codec pass's BT.601 rows (lightsr.degradations), without the offsets
        self.register_buffer("ycbcr", torch.from_numpy(RGB_TO_YCBCR).float(), persistent=False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff = pred.float() - target.float()
        if self.chroma_weight is None:
            mse = diff.square().flatten(1).mean(1)
        else:
            planes = torch.einsum("kc,nchw->nkhw", self.ycbcr.to(diff.device), diff).square()
            per = planes.flatten(2).mean(2)  # (N, 3): Y, Cb, Cr
            w = self.chroma_weight
            mse = (per[:, 0] + w * (per[:, 1] + per[:, 2])) / (1.0 + 2.0 * w)
        return 10.0 * torch.log10(mse + self.eps).mean()


# ------------------------------------------------------------------ adversarial
def relativistic_generator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Relativistic average GAN (Jolicoeur-Martineau 2018; ESRGAN), generator side.

    D_ra(a, b) = sigmoid(C(a) - mean C(b)); the generator wants real images to look less
    real than fakes: L_G = (BCE(D_ra(real, fake), 0) + BCE(D_ra(fake, real), 1)) / 2.
    Inputs are critic logits C(.) (before the sigmoid).
    """
    real_rel = real_logits - fake_logits.mean()
    fake_rel = fake_logits - real_logits.mean()
    return 0.5 * (F.binary_cross_entropy_with_logits(real_rel, torch.zeros_like(real_rel))
                  + F.binary_cross_entropy_with_logits(fake_rel, torch.ones_like(fake_rel)))


def relativistic_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator side: L_D = (BCE(D_ra(real, fake), 1) + BCE(D_ra(fake, real), 0)) / 2."""
    real_rel = real_logits - fake_logits.mean()
    fake_rel = fake_logits - real_logits.mean()
    return 0.5 * (F.binary_cross_entropy_with_logits(real_rel, torch.ones_like(real_rel))
                  + F.binary_cross_entropy_with_logits(fake_rel, torch.zeros_like(fake_rel)))


DIFF_AUGMENT_POLICIES = ("translation", "cutout", "color")


def diff_augment(x: torch.Tensor, policy: tuple[str, ...] = ("translation", "cutout")) -> torch.Tensor:
    """Differentiable augmentation of what the critic sees (Zhao et al. 2020, "Differentiable
    Augmentation for Data-Efficient GAN Training"): the same random transforms for real and fake
    images, each sample drawn independently, gradients flowing back to the generator.

    With a few dozen training photographs a critic memorises the real patches and then wins
    outright; augmenting both sides keeps it from doing so without changing what the generator
    is asked to produce. Policies: `translation` (shift by up to 1/8 of the size, zero fill),
    `cutout` (zero a random square of half the size), `color` (brightness, saturation, contrast).
    """
    n, _, h, w = x.shape
    for name in policy:
        if name == "translation":
            sy, sx = max(1, h // 8), max(1, w // 8)
            ty = torch.randint(-sy, sy + 1, (n, 1, 1), device=x.device)
            tx = torch.randint(-sx, sx + 1, (n, 1, 1), device=x.device)
            gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
            gy = (gy.unsqueeze(0) + ty).clamp(-1, h)  # h and -1 index the zero padding
            gx = (gx.unsqueeze(0) + tx).clamp(-1, w)
            padded = F.pad(x, (1, 1, 1, 1))
            index = ((gy + 1) * (w + 2) + gx + 1).flatten(1)  # (n, h*w) into the padded plane
            x = padded.flatten(2).gather(2, index.unsqueeze(1).expand(-1, x.shape[1], -1)).view_as(x)
        elif name == "cutout":
            ch, cw = h // 2, w // 2
            cy = torch.randint(0, h - ch + 1, (n, 1, 1), device=x.device)
            cx = torch.randint(0, w - cw + 1, (n, 1, 1), device=x.device)
            ys = torch.arange(h, device=x.device).view(1, h, 1)
            xs = torch.arange(w, device=x.device).view(1, 1, w)
            hole = (ys >= cy) & (ys < cy + ch) & (xs >= cx) & (xs < cx + cw)
            x = x * (~hole).unsqueeze(1).to(x.dtype)
        elif name == "color":
            x = x + (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean
        else:
            raise ValueError(f"diff_augment: unknown policy '{name}' ({', '.join(DIFF_AUGMENT_POLICIES)})")
    return x


def probabilities_to_logits(prob: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The published discriminator ends with a sigmoid; the relativistic loss needs logits."""
    return torch.logit(prob.clamp(eps, 1 - eps))


# ------------------------------------------------------------------ total variation
@register_loss
class TVLoss(nn.Module):
    """SRGAN-style total variation: 2 * (sum dy^2 / count_y + sum dx^2 / count_x) / batch,
    with count_y = C * (H - 1) * W and count_x = C * H * (W - 1) (the published 2e-8 weight
    goes with this normalisation)."""

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).pow(2).sum()
        dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).sum()
        return 2 * (dy / (c * (h - 1) * w) + dx / (c * h * (w - 1))) / n


# ------------------------------------------------------------------ perceptual substitute
@register_loss
class FFTLoss(nn.Module):
    """mean |rfft2(pred) - rfft2(target)| with the orthonormal FFT, computed in fp32."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff = torch.fft.rfft2(pred.float() - target.float(), norm="ortho")
        return diff.abs().mean()


@register_loss
class GradientLoss(nn.Module):
    """L1 of finite differences (x and y) averaged over `scales` (average-pooled copies)."""

    def __init__(self, scales: tuple[int, ...] = (1, 2, 4)):
        super().__init__()
        self.scales = scales

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = pred.new_zeros(())
        for s in self.scales:
            p = F.avg_pool2d(pred, s) if s > 1 else pred
            t = F.avg_pool2d(target, s) if s > 1 else target
            total = total + F.l1_loss(p[..., :, 1:] - p[..., :, :-1], t[..., :, 1:] - t[..., :, :-1])
            total = total + F.l1_loss(p[..., 1:, :] - p[..., :-1, :], t[..., 1:, :] - t[..., :-1, :])
        return total / (2 * len(self.scales))


@register_loss
class FrequencyStructureLoss(nn.Module):
    """The project's perceptual term (see the module docstring): FFT + multi-scale gradient."""

    def __init__(self, fft_weight: float = 1.0, gradient_weight: float = 1.0, scales: tuple[int, ...] = (1, 2, 4)):
        super().__init__()
        self.fft_weight, self.gradient_weight = fft_weight, gradient_weight
        self.fft, self.gradient = FFTLoss(), GradientLoss(scales)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.fft_weight * self.fft(pred, target) + self.gradient_weight * self.gradient(pred, target)


@register_loss
class LocalSpectrumLoss(nn.Module):
    """Phase-free texture term: L1 between the amplitude spectra of overlapping `window` x `window`
    tiles (stride window / 2, tile mean removed), fp32.

    Every fidelity term above (L1, the complex FFT term, signed gradients) also penalises detail
    that is plausible but not where the ground truth has it, so their optimum is the blurred
    conditional mean. The amplitude of a local spectrum ignores phase, i.e. where inside the
    tile the texture lies: it asks for the right amount of detail at each frequency in each
    neighbourhood and leaves its exact placement to the adversarial term. It is a texture
    statistic (cf. Gatys-style Gram statistics, Fuoli et al. 2021's amplitude term), not a
    learned perceptual metric."""

    def __init__(self, window: int = 16):
        super().__init__()
        if window < 2:
            raise ValueError(f"LocalSpectrumLoss: window {window} must be at least 2")
        self.window = window

    def spectrum(self, x: torch.Tensor) -> torch.Tensor:
        w, step = self.window, max(1, self.window // 2)
        if x.shape[-2] < w or x.shape[-1] < w:
            raise ValueError(f"LocalSpectrumLoss: images of {x.shape[-2]}x{x.shape[-1]} are smaller than "
                             f"one {w}x{w} tile")
        tiles = x.float().unfold(-2, w, step).unfold(-2, w, step)  # N,C,Th,Tw,w,w
        tiles = tiles - tiles.mean(dim=(-2, -1), keepdim=True)
        f = torch.fft.rfft2(tiles, norm="ortho")
        return (f.real.square() + f.imag.square() + 1e-12).sqrt()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(self.spectrum(pred), self.spectrum(target))


@register_loss
class FixedPatternLoss(nn.Module):
    """Penalises a `period` x `period` pattern repeated across the image (the grid a
    PixelShuffle tail paints on smooth areas): the high-pass image (minus a 5x5 box mean) is
    averaged over all tiles, and the mean square of that tile is the loss. Texture that follows
    the content averages out; a fixed grid does not. The same measure, in grey levels RMS, is
    what model/tests/test_export.py holds the shipped ladder to."""

    def __init__(self, period: int):
        super().__init__()
        self.period = int(period)

    def forward(self, pred: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        p = self.period
        y = pred.float().mean(1, keepdim=True)
        hp = y - F.avg_pool2d(F.pad(y, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
        n, _, h, w = hp.shape
        hp = hp[..., : h // p * p, : w // p * p].reshape(n, h // p, p, w // p, p)
        tile = hp.mean(dim=(1, 3))
        return (tile - tile.mean(dim=(1, 2), keepdim=True)).square().mean()


@register_loss
class LowPassL1Loss(nn.Module):
    """L1 of `factor` x `factor` box-averaged copies: fidelity of what the LR frame determines
    (the low frequencies), with none of the pull towards blur on the high ones."""

    def __init__(self, factor: int = 4):
        super().__init__()
        self.factor = int(factor)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        f = self.factor
        return F.l1_loss(F.avg_pool2d(pred, f), F.avg_pool2d(target, f)) if f > 1 else F.l1_loss(pred, target)


# ------------------------------------------------------------------ distillation
def attention_map(feature: torch.Tensor, p: int = 2) -> torch.Tensor:
    """Spatial attention of Zagoruyko & Komodakis: mean over channels of |F|^p, flattened,
    L2-normalised per sample -> (N, H*W)."""
    return F.normalize(feature.abs().pow(p).mean(1).flatten(1), dim=1)


def pair_layers(n_student: int, n_teacher: int) -> list[int]:
    """Teacher index for each student layer, at the same relative depth (8 -> 16: 1,3,..,15)."""
    return [int(round((i + 1) * n_teacher / n_student)) - 1 for i in range(n_student)]


class AttentionTransferLoss(nn.Module):
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017).

    Sum over paired layers of mean((Q_s/|Q_s| - Q_t/|Q_t|)^2), Q = attention_map(F, p), as in
    the authors' code (`(at(x) - at(y)).pow(2).mean()`); the paper's beta (1e3) is the loss
    weight in the config. Student and teacher may differ in depth (paired by relative
    depth, `pair_layers`) and width (the map is channel-free); student maps are average
    pooled to the teacher's size when they differ.
    """

    def __init__(self, p: int = 2):
        super().__init__()
        self.p = p

    def forward(self, student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
        total = student[0].new_zeros(())
        for s_idx, t_idx in enumerate(pair_layers(len(student), len(teacher))):
            s_feat, t_feat = student[s_idx], teacher[t_idx].detach()
            if s_feat.shape[-2:] != t_feat.shape[-2:]:
                s_feat = F.adaptive_avg_pool2d(s_feat, t_feat.shape[-2:])
            total = total + (attention_map(s_feat, self.p) - attention_map(t_feat, self.p)).pow(2).mean()
        return total


class _LinearBN(nn.Sequential):
    def __init__(self, n_in: int, n_out: int, relu: bool):
        layers = [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out)] + ([nn.ReLU()] if relu else [])
        super().__init__(*layers)


class AttentionFeatureDistillationLoss(nn.Module):
    """Attention-based feature distillation (Ji, Heo & Park, AAAI 2021, "Show, attend and
    distill"): every teacher layer attends over all student layers and is matched to them
    in proportion to the learned attention.

    For teacher layer t and student layer s (global-average-pooled features g):
      query_t = BN(W_t g_t)                        (per teacher layer)
      key_{s,t} = BN(W_b ReLU(BN(W_s g_s)))_t       (bilinear key, one per teacher layer)
      alpha_{t,s} = softmax_s((key_{s,t} . query_t + p_t . p_s) / sqrt(d))   (p: positional)
      loss = sum_t mean_batch sum_s alpha_{t,s} * mean((v_s - v_t)^2),
    with v the L2-normalised spatial attention maps (`attention_map`, p=2), student maps
    pooled to the teacher's size. The module has parameters: optimise them with the student.
    """

    def __init__(self, student_channels: list[int], teacher_channels: list[int], qk_dim: int = 128):
        super().__init__()
        self.qk_dim, self.n_teacher = qk_dim, len(teacher_channels)
        self.query = nn.ModuleList([_LinearBN(c, qk_dim, relu=False) for c in teacher_channels])
        self.key = nn.ModuleList([_LinearBN(c, qk_dim, relu=True) for c in student_channels])
        self.bilinear = _LinearBN(qk_dim, qk_dim * len(teacher_channels), relu=False)
        self.pos_teacher = nn.Parameter(torch.empty(len(teacher_channels), qk_dim))
        self.pos_student = nn.Parameter(torch.empty(len(student_channels), qk_dim))
        nn.init.xavier_normal_(self.pos_teacher)
        nn.init.xavier_normal_(self.pos_student)

    def attention(self, student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
        """(N, T, S) attention of each teacher layer over the student layers."""
        n = student[0].shape[0]
        query = torch.stack([q(f.mean((2, 3))) for q, f in zip(self.query, teacher)], dim=1)  # N,T,d
        key = torch.stack([k(f.mean((2, 3))) for k, f in zip(self.key, student)], dim=1)  # N,S,d
        key = self.bilinear(key.flatten(0, 1)).view(n, len(student), self.n_teacher, self.qk_dim)  # N,S,T,d
        logits = torch.einsum("nstd,ntd->nts", key, query) + self.pos_teacher @ self.pos_student.t()
        return F.softmax(logits / math.sqrt(self.qk_dim), dim=2)

    def forward(self, student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
        teacher = [t.detach() for t in teacher]
        alpha = self.attention(student, teacher)
        size = teacher[0].shape[-2:]
        v_s = torch.stack([attention_map(f if f.shape[-2:] == size else F.adaptive_avg_pool2d(f, size))
                           for f in student], dim=1)  # N,S,HW
        total = student[0].new_zeros(())
        for t_idx, t_feat in enumerate(teacher):
            v_t = attention_map(t_feat)  # N,HW
            dist = (v_s - v_t[:, None]).pow(2).mean(2)  # N,S
            total = total + (alpha[:, t_idx] * dist).sum(1).mean()
        return total


# ------------------------------------------------------------------ factory
@dataclass
class LossTerm:
    """One weighted term of the generator's loss; logged as `l_<name>`."""
    name: str
    weight: float
    module: nn.Module
    origin: str  # where the config set it, for error messages


def build_loss(spec: dict, origin: str = "train.losses") -> LossTerm:
    """`{type: NAME, loss_weight: W, name: LOG_NAME?, **kwargs}` -> LossTerm (kwargs go to the
    loss's constructor). ValueError names the problem."""
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in LOSS_REGISTRY:
        raise ValueError(f"{origin}: loss type {kind!r}: choose one of {', '.join(sorted(LOSS_REGISTRY))}")
    weight = float(spec.pop("loss_weight", 1.0))
    name = str(spec.pop("name", kind))
    try:
        module = LOSS_REGISTRY[kind](**spec)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{origin}: {err}") from None
    return LossTerm(name, weight, module, origin)


# The seed's one-key-per-term configs (`train.pixel_opt`, ...) read as entries of `train.losses`:
# key -> (loss type or None for the key's own `type`, log name, phases, kept at weight 0, defaults).
LEGACY_KEYS = {
    "pixel_opt": (None, "pix", ("pre", "full"), True, {}),
    "perceptual_opt": ("FrequencyStructureLoss", "percep", ("full",), True, {}),
    "tv_opt": ("TVLoss", "tv", ("full",), True, {"loss_weight": 0.0}),
    "texture_opt": ("LocalSpectrumLoss", "texture", ("full",), False, {"loss_weight": 0.0}),
    "lowpass_opt": ("LowPassL1Loss", "lowpass", ("full",), False, {"loss_weight": 0.0, "factor": "scale"}),
    "pattern_opt": ("FixedPatternLoss", "pattern", ("full",), False, {"loss_weight": 0.0, "period": "scale"}),
}
ALWAYS_IN_FULL = ("perceptual_opt", "tv_opt")  # the GAN phase always had these two
# YAML reads 1e-3 as a string: the legacy keys' numbers are cast as the seed's trainer did
LEGACY_CASTS = {"loss_weight": float, "fft_weight": float, "gradient_weight": float, "eps": float,
                "window": int, "factor": int, "period": int}
RESERVED_TERMS = ("distill", "gan", "total", "d")  # the trainer's own log names (l_distill, ...)


def build_losses(train_opt: dict, phase: str, scale: int) -> list[LossTerm]:
    """The generator's loss terms: `train.losses` (a list of build_loss specs) plus the legacy
    `*_opt` keys of LEGACY_KEYS, one table instead of one branch per key."""
    terms = [build_loss(spec, f"train.losses[{i}]") for i, spec in enumerate(train_opt.get("losses") or [])]
    for key, (kind, name, phases, keep_zero, defaults) in LEGACY_KEYS.items():
        opt = train_opt.get(key)
        if phase not in phases or (opt is None and not (phase == "full" and key in ALWAYS_IN_FULL)):
            continue
        if opt is not None and not isinstance(opt, dict):
            raise ValueError(f"train.{key}: expected a mapping such as {{loss_weight: 1.0}}, got {opt!r}")
        spec = {k: (scale if v == "scale" else v) for k, v in defaults.items()}
        spec.update({k: LEGACY_CASTS.get(k, lambda v: v)(v) for k, v in (opt or {}).items()})
        spec["type"] = spec.get("type", "L1Loss") if kind is None else kind
        spec["name"] = name
        if not keep_zero and not float(spec.get("loss_weight", 1.0)):
            build_loss(spec, f"train.{key}")  # a bad setting fails even at weight 0
            continue
        terms.append(build_loss(spec, f"train.{key}"))
    names = [t.name for t in terms]
    for t in terms:
        if names.count(t.name) > 1 or t.name in RESERVED_TERMS:
            raise ValueError(f"{t.origin}: loss name '{t.name}' is {'reserved' if t.name in RESERVED_TERMS else 'used twice'}"
                             f"; give each entry its own `name:`")
    return terms
