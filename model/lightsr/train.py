# SPDX-License-Identifier: MPL-2.0
"""`lightsr train CONFIG.yml`: generator training, BasicSR style.

Phases (config key `phase`):
  pre   pixel loss only (L1 / Charbonnier), as the published `pre` phase;
  full  GAN: pixel + perceptual substitute (FrequencyStructureLoss, see losses.py) +
        relativistic adversarial + total variation, with the critic of `network_d`
        (SwiftSRGAN by default, UNetDiscriminatorSN in the shipped configs); optional
        phase-free texture term (`texture_opt`), low-pass fidelity (`lowpass_opt`) and a
        penalty on fixed grids (`pattern_opt`).
A teacher (see `run_training`) adds a feature distillation loss (`train.distill_opt`).
`path.pretrain_network_g` loads weights of the same shape; `path.deepen_from_g` instead warm-starts
a deeper generator (the F2SRGAN teacher) from a trained shallower one (`deepen_from`).

Every run writes into `--out` (default runs/<name>/): config.yml, log.jsonl (one JSON
object per log / validation event), checkpoints/latest.pth (+ step_XXXXXXX.pth, best.pth),
all written atomically. A checkpoint is
  {'params', 'params_ema', 'opt' (network_g), 'step', 'optimizer_g', 'scheduler_g',
   'net_d', 'optimizer_d', 'scheduler_d', 'distiller', 'rng', 'config', 'best_psnr_y'}
(+ 'pruned': a generator handed in by a caller, pruned, as Torch-Pruning's state on 'opt'; or
'module': the whole generator where it cannot be rebuilt so, e.g. fake-quantised);
checkpoints/net_g_latest.pth holds only the generator part (params, params_ema, opt, step,
scale, phase, config): small enough to carry between machines, enough for later stages.
`--resume` continues from checkpoints/latest.pth exactly: weights, EMA, optimisers,
schedulers, RNG and the position in the data order (augmentation is keyed by sample).

Multi-process: `torchrun --nproc_per_node=N -m lightsr.cli train CONFIG` (gloo on CPU,
nccl on CUDA); the batch size in the config is per process.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import yaml
from tqdm import tqdm

from lightsr import losses
from lightsr.data import DataError, build_dataloader, build_dataset, resolve_path
from lightsr.degradations import imresize

REPO_ROOT = Path(__file__).resolve().parents[2]


class ConfigError(ValueError):
    """A configuration problem; the message names the key and the fix."""


# ------------------------------------------------------------------ config
def merge_config(base: dict, over: dict) -> dict:
    """`over` on top of `base`, mappings merged key by key (lists and scalars replaced);
    a key set to null in `over` is removed."""
    out = dict(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path, _seen: tuple = ()) -> dict:
    """A YAML config; `_base_: OTHER.yml` (relative to this file) inherits OTHER's keys, which
    this file overrides key by key (BasicSR / mmcv style), so a sibling is a few lines."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config {path} not found (see model/configs/ for examples)")
    if path.resolve() in _seen:
        raise ConfigError(f"config {path}: `_base_` cycle ({' -> '.join(str(p) for p in _seen)})")
    own = yaml.safe_load(path.read_text())
    if not isinstance(own, dict):
        raise ConfigError(f"config {path}: expected a YAML mapping")
    base = own.pop("_base_", None)
    opt = own
    if base is not None and not isinstance(base, str):
        raise ConfigError(f"config {path}: `_base_` must be one file name, got {base!r}")
    if base:
        inherited = load_config(path.parent / base, (*_seen, path.resolve()))
        inherited.pop("name")  # a run is named by its own file, never by its base
        opt = merge_config(inherited, own)
    opt.setdefault("name", path.stem)
    return opt


def require(opt: dict, dotted: str):
    node = opt
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            raise ConfigError(f"config is missing `{dotted}`")
        node = node[key]
    return node


# ------------------------------------------------------------------ distributed
def init_distributed(device: str) -> tuple[int, int, torch.device]:
    """(rank, world_size, device); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but CUDA is not available: use --device cpu")
    if device == "cuda":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
        if device == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    return rank, world, dev


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


# ------------------------------------------------------------------ data order
class ResumableSampler(torch.utils.data.Sampler):
    """Shuffled per epoch (seed + epoch), split across ranks, able to start mid-epoch.

    Yields keys `epoch * len(dataset) + index`: the dataset keys its augmentation by them,
    so a resumed run sees exactly the crops an uninterrupted one would have seen.
    """

    def __init__(self, length: int, rank: int, world: int, seed: int, batch_size: int):
        self.length, self.rank, self.world, self.seed, self.batch = length, rank, world, seed, batch_size
        self.per_rank = length // world
        self.epoch, self.start = 0, 0

    def batches_per_epoch(self) -> int:
        return self.per_rank // self.batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start = epoch, start_batch * self.batch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.length, generator=g)[self.rank::self.world][:self.per_rank]
        base = self.epoch * self.length
        return iter((base + order[self.start:]).tolist())

    def __len__(self) -> int:
        return self.per_rank - self.start


# ------------------------------------------------------------------ metrics
def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """BT.601 luma (16..235) of an RGB 0..255 NCHW tensor, as MATLAB rgb2ycbcr / BasicSR."""
    r, g, b = img[:, 0], img[:, 1], img[:, 2]
    return 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def psnr_y(sr: torch.Tensor, hr: torch.Tensor, border: int) -> float:
    """PSNR on Y of images quantised to 8 bits, `border` pixels cropped on each side."""
    sr_y = rgb_to_y(sr.clamp(0, 255).round().double())
    hr_y = rgb_to_y(hr.double())
    if border:
        sr_y, hr_y = sr_y[..., border:-border, border:-border], hr_y[..., border:-border, border:-border]
    mse = (sr_y - hr_y).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


@torch.no_grad()
def validate(net: nn.Module, dataset, scale: int, device: torch.device) -> dict:
    """Mean PSNR-Y of `net` and of MATLAB bicubic upscaling over the validation images."""
    net.eval()
    sr_scores, bic_scores = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        lq, gt = item["lq"][None].to(device), item["gt"][None]
        sr = net(lq).float().cpu()
        sr_scores.append(psnr_y(sr, gt, scale))
        bic_scores.append(psnr_y(imresize(item["lq"], scale)[None].float(), gt, scale))
    return {"val_psnr_y": float(np.mean(sr_scores)), "bicubic_psnr_y": float(np.mean(bic_scores)),
            "val_images": len(sr_scores)}


# ------------------------------------------------------------------ modules
class GeneratorStep(nn.Module):
    """The generator (+ the distillation loss, whose parameters train with it) as one module,
    so DistributedDataParallel averages every trainable gradient in one place."""

    def __init__(self, net_g: nn.Module, distiller: nn.Module | None):
        super().__init__()
        self.net_g, self.distiller = net_g, distiller

    def forward(self, lq: torch.Tensor, teacher_feats: list[torch.Tensor] | None = None):
        if self.distiller is None or teacher_feats is None:
            return self.net_g(lq), None
        out, feats = self.net_g.forward_features(lq)
        return out, self.distiller(feats, teacher_feats)


class Critic(nn.Module):
    """Discriminator logits (relativistic losses want values before the sigmoid)."""

    def __init__(self, net_d: nn.Module):
        super().__init__()
        self.net_d = net_d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self.net_d, "logits"):
            return self.net_d.logits(x)
        return losses.probabilities_to_logits(self.net_d(x))


def build_distiller(opt: dict | None, net_g: nn.Module, teacher: nn.Module | None, scale: int) -> nn.Module | None:
    if teacher is None:
        return None
    if not opt:
        raise ConfigError("a teacher was given but `train.distill_opt` is missing (type: at | afd)")
    kind = str(opt.get("type", "at")).lower()
    if kind == "at":
        return losses.AttentionTransferLoss(p=int(opt.get("p", 2)))
    if kind == "afd":
        probe = torch.zeros(2, 3, 8, 8)
        with torch.no_grad():
            s_feats = net_g.forward_features(probe)[1]
            t_feats = teacher.forward_features(probe.to(next(teacher.parameters()).device))[1]
        return losses.AttentionFeatureDistillationLoss([f.shape[1] for f in s_feats], [f.shape[1] for f in t_feats],
                                                       qk_dim=int(opt.get("qk_dim", 128)))
    raise ConfigError(f"train.distill_opt.type '{kind}': choose 'at' or 'afd'")


def build_optimizer(params, opt: dict) -> torch.optim.Optimizer:
    kind = opt.get("type", "AdamW")
    kwargs = {k: v for k, v in opt.items() if k != "type"}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    if kind not in ("AdamW", "Adam"):
        raise ConfigError(f"optimizer type '{kind}': AdamW or Adam")
    return getattr(torch.optim, kind)(params, **{k: float(v) if k in ("lr", "weight_decay", "eps") else v
                                                  for k, v in kwargs.items()})


def build_scheduler(optimizer, opt: dict):
    kind = opt.get("type", "StepLR")
    if kind == "StepLR":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=int(opt["step_size"]), gamma=float(opt["gamma"]))
    if kind == "MultiStepLR":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[int(m) for m in opt["milestones"]],
                                                    gamma=float(opt["gamma"]))
    raise ConfigError(f"scheduler type '{kind}': StepLR or MultiStepLR (stepped per iteration)")


@torch.no_grad()
def update_ema(ema: nn.Module, net: nn.Module, decay: float) -> None:
    for p_ema, p in zip(ema.parameters(), net.parameters()):
        p_ema.lerp_(p.detach(), 1 - decay)
    for b_ema, b in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b)


# ------------------------------------------------------------------ checkpoints
def load_generator_weights(path: str | Path, key: str = "params_ema") -> tuple[dict | nn.Module, dict | None]:
    """(state dict or whole module, network options) from a project checkpoint."""
    path = resolve_path(path)
    if not path.exists():
        raise ConfigError(f"checkpoint {path} not found (train the previous phase first)")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict):
        raise ConfigError(f"{path}: not a lightsr checkpoint (expected a dict with 'params')")
    if "pruned" in ckpt and ckpt.get("opt"):
        from lightsr.prune import rebuild_pruned  # noqa: PLC0415

        return rebuild_pruned(ckpt["opt"], ckpt["pruned"]), ckpt["opt"]
    if "module" in ckpt and isinstance(ckpt["module"], nn.Module):
        return ckpt["module"], ckpt.get("opt")
    for k in (key, "params", "params_ema"):
        if k in ckpt and ckpt[k] is not None:
            return ckpt[k], ckpt.get("opt")
    raise ConfigError(f"{path}: no '{key}' / 'params' entry; keys are {sorted(ckpt)}")


GENERATOR_KEYS = ("params", "params_ema", "opt", "step", "scale", "phase", "config", "best_psnr_y", "pruned",
                  "module")


def rebuilds_from(net: nn.Module, network_opt: dict | None) -> bool:
    """Whether a generator handed in whole (`run_training(net_g=...)`) is a pruned one of
    `network_opt`: `build_network(network_opt)` with its Torch-Pruning state gives back its very
    parameters and buffers. Then checkpoints hold that state (`{'pruned'}`, no pickled module);
    else (no `network_g`, another structure, a fake-quantised module) the module itself. Its
    structure does not change while it trains: asked once per run."""
    if not network_opt:
        return False
    from lightsr.prune import pruned_state, rebuild_pruned  # noqa: PLC0415

    try:
        rebuilt = rebuild_pruned(network_opt, pruned_state(net))
    except Exception:  # noqa: BLE001  (any mismatch: kept whole)
        return False
    return same_tensors(rebuilt, net)


def same_tensors(a: nn.Module, b: nn.Module) -> bool:
    """Whether two modules have the same parameter and buffer names, shapes and values."""
    def tensors(m: nn.Module) -> list:
        return [*m.named_parameters(), *m.named_buffers()]
    ta, tb = tensors(a), tensors(b)
    return [n for n, _ in ta] == [n for n, _ in tb] and all(
        x.shape == y.shape and torch.equal(x.detach().cpu(), y.detach().cpu()) for (_, x), (_, y) in zip(ta, tb))


def generator_only(ckpt: dict) -> dict:
    """The part of a checkpoint later stages need (a few MB; the GAN discriminator and the
    optimiser states are ~100x larger): what `net_g_latest.pth` holds."""
    return {k: ckpt[k] for k in GENERATOR_KEYS if k in ckpt}


def make_trainable(net: nn.Module) -> nn.Module:
    """A generator saved from an EMA copy has requires_grad off: turn it on again, except for
    the frozen mean shifts."""
    from lightsr.archs.arch_util import MeanShift
    frozen = {id(p) for m in net.modules() if isinstance(m, MeanShift) for p in m.parameters()}
    for p in net.parameters():
        p.requires_grad_(id(p) not in frozen)
    return net.train()


def save_atomic(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


# ------------------------------------------------------------------ the trainer
class Trainer:
    """One training run (see `run_training`)."""

    def __init__(self, opt: dict, out_dir: Path, device: str, net_g: nn.Module | None,
                 teacher: nn.Module | None, resume: bool):
        self.opt, self.out = opt, out_dir
        self.rank, self.world, self.device = init_distributed(device)
        self.train_opt = require(opt, "train")
        self.scale = int(opt.get("scale") or require(opt, "network_g.scale"))
        self.phase = opt.get("phase", "pre")
        if self.phase not in ("pre", "full"):
            raise ConfigError(f"phase '{self.phase}': 'pre' (pixel loss) or 'full' (GAN)")
        self.seed = int(opt.get("manual_seed", 0))
        torch.manual_seed(self.seed)
        np.random.seed(self.seed)
        random.seed(self.seed)
        self.handed_in = net_g is not None
        self.rebuildable: bool | None = None  # a handed-in generator's checkpoint form (`rebuilds_from`)
        self.net_g = (net_g if net_g is not None else self.build_generator(load_pretrained=not resume)).to(self.device)
        self.teacher = teacher.to(self.device).eval() if teacher is not None else None
        if self.teacher is not None:
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        distiller = build_distiller(self.train_opt.get("distill_opt"), self.net_g.cpu(), teacher, self.scale)
        self.net_g.to(self.device)
        self.step_module = GeneratorStep(self.net_g, distiller).to(self.device)
        self.net_g_ema = copy.deepcopy(self.net_g).eval()
        for p in self.net_g_ema.parameters():
            p.requires_grad_(False)
        self.build_losses()
        self.build_optimizers()
        self.start_step, self.best_psnr = 0, -math.inf
        if resume:
            self.load_resume_state()
        self.wrap_ddp()
        self.build_data()

    # -- construction
    def build_generator(self, load_pretrained: bool) -> nn.Module:
        from lightsr.archs import build_network
        net = build_network(require(self.opt, "network_g"))
        pretrain = self.opt.get("path", {}).get("pretrain_network_g")
        if pretrain:
            weights, _ = load_generator_weights(pretrain, self.opt["path"].get("param_key_g", "params_ema"))
            if isinstance(weights, nn.Module):
                # a pruned generator: its structure is not in network_g, so checkpoints keep it whole
                # (its Torch-Pruning state where it rebuilds from network_g: `rebuilds_from`)
                # (also on --resume, whose weights then replace these)
                self.handed_in = True
                return make_trainable(weights)
            if not load_pretrained:
                return net
            weights = self.excluded(weights)
            strict = bool(self.opt["path"].get("strict_load_g", True))
            if strict and self.opt["path"].get("exclude_g"):
                # strict but for the excluded keys: anything else missing or unexpected is an error
                own = net.state_dict()
                missing = [k for k in own if k not in weights and not self.is_excluded(k)]
                unexpected = [k for k in weights if k not in own]
                if missing or unexpected:
                    raise ConfigError(f"path.pretrain_network_g {pretrain} does not fit network_g: missing "
                                      f"{missing[:5]}, unexpected {unexpected[:5]} (strict_load_g: false to allow)")
                strict = False
            elif not strict:
                # BasicSR's rule: with strict_load_g false, entries whose shape differs (another
                # scale's tail, say) are left at their initialisation, and said so
                own = net.state_dict()
                skipped = [k for k, v in weights.items() if k in own and own[k].shape != v.shape]
                weights = {k: v for k, v in weights.items() if k not in skipped}
                missing = [k for k in own if k not in weights]
                if missing:
                    self.log_rank0(f"not loaded (shape or name differs, kept at initialisation): {', '.join(missing)}")
            net.load_state_dict(weights, strict=strict)
            self.log_rank0(f"loaded generator weights from {pretrain}")
        shallow = self.opt.get("path", {}).get("deepen_from_g") if load_pretrained and not pretrain else None
        if shallow:
            from lightsr.archs.f2srgan_arch import deepen_from
            weights, _ = load_generator_weights(shallow, self.opt["path"].get("param_key_g", "params_ema"))
            if isinstance(weights, nn.Module):
                raise ConfigError(f"path.deepen_from_g: {shallow} is a whole (pruned) module; give a trained "
                                  f"unpruned generator of the same width")
            try:
                blocks = deepen_from(net, self.excluded(weights))
            except ValueError as err:
                raise ConfigError(str(err)) from None
            self.log_rank0(f"warm start from {shallow}: its blocks went to {blocks}, the others start as identity")
        return net

    def exclude_prefixes(self) -> tuple[str, ...]:
        value = self.opt.get("path", {}).get("exclude_g") or ()
        return (value,) if isinstance(value, str) else tuple(str(v) for v in value)

    def is_excluded(self, key: str) -> bool:
        return any(key == p or key.startswith(p + ".") for p in self.exclude_prefixes())

    def excluded(self, weights: dict) -> dict:
        """`path.exclude_g`: module names (or keys) left at the network's own initialisation (e.g.
        the last conv of an image_skip generator, which starts at zero so the network starts as
        bicubic). A name that matches no key is a ConfigError."""
        prefixes = self.exclude_prefixes()
        if not prefixes:
            return weights
        for p in prefixes:
            if not any(k == p or k.startswith(p + ".") for k in weights):
                raise ConfigError(f"path.exclude_g: '{p}' matches no weight of the checkpoint")
        kept = {k: v for k, v in weights.items() if not self.is_excluded(k)}
        self.log_rank0(f"not loaded (path.exclude_g): {', '.join(k for k in weights if k not in kept)}")
        return kept

    def build_losses(self) -> None:
        t = self.train_opt
        try:
            self.loss_terms = losses.build_losses(t, self.phase, self.scale)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        for term in self.loss_terms:
            term.module.to(self.device)
        if self.phase == "full":
            self.gan_weight = float(require(self.opt, "train.gan_opt.loss_weight"))
            augment = t["gan_opt"].get("augment") or ()
            augment = augment.split(",") if isinstance(augment, str) else augment  # "translation,cutout" too
            self.critic_augment = tuple(str(a).strip() for a in augment)
            unknown = [a for a in self.critic_augment if a not in losses.DIFF_AUGMENT_POLICIES]
            if unknown:
                raise ConfigError(f"train.gan_opt.augment: unknown policy '{unknown[0]}' "
                                  f"({', '.join(losses.DIFF_AUGMENT_POLICIES)})")
        elif not self.loss_terms and self.teacher is None:
            raise ConfigError("phase 'pre' needs `train.pixel_opt` (e.g. {type: L1Loss, loss_weight: 1.0}) "
                              "or a `train.losses` list")
        self.distill_weight = float((t.get("distill_opt") or {}).get("loss_weight", 1.0))

    def build_optimizers(self) -> None:
        t = self.train_opt
        params = [p for p in self.step_module.parameters() if p.requires_grad]
        self.optim_g = build_optimizer(params, t.get("optim_g", {"type": "AdamW", "lr": 1e-4}))
        self.sched_g = build_scheduler(self.optim_g, t.get("scheduler", {"type": "StepLR", "step_size": 10 ** 9,
                                                                         "gamma": 1.0}))
        self.critic = None
        if self.phase == "full":
            from lightsr.archs import build_network
            self.critic = Critic(build_network(self.opt.get("network_d", {"type": "SwiftSRGANDiscriminator"})))
            self.critic.to(self.device)
            self.optim_d = build_optimizer(self.critic.parameters(), t.get("optim_d", t.get("optim_g", {})))
            self.sched_d = build_scheduler(self.optim_d, t.get("scheduler", {"type": "StepLR",
                                                                             "step_size": 10 ** 9, "gamma": 1.0}))

    def wrap_ddp(self) -> None:
        self.step_ddp, self.critic_ddp = self.step_module, self.critic
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_ddp = nn.parallel.DistributedDataParallel(self.step_module, device_ids=ids)
            if self.critic is not None:
                self.critic_ddp = nn.parallel.DistributedDataParallel(self.critic, device_ids=ids)

    def build_data(self) -> None:
        datasets = require(self.opt, "datasets")
        train_opt = require(self.opt, "datasets.train")
        self.train_set = build_dataset(train_opt, self.scale, train=True)
        self.train_set.seed = self.seed
        batch = int(train_opt.get("batch_size_per_gpu", 16))
        self.sampler = ResumableSampler(len(self.train_set), self.rank, self.world, self.seed, batch)
        if self.sampler.batches_per_epoch() < 1:
            raise ConfigError(f"datasets.train: {len(self.train_set)} samples cannot fill one batch of {batch} per "
                              f"process: raise dataset_enlarge_ratio or lower batch_size_per_gpu")
        self.loader = build_dataloader(self.train_set, train_opt, self.sampler, self.device.type, self.seed)
        self.val_set = build_dataset(datasets["val"], self.scale, train=False) if datasets.get("val") else None

    # -- one iteration
    def forward_teacher(self, lq: torch.Tensor):
        if self.teacher is None:
            return None
        with torch.no_grad():
            return self.teacher.forward_features(lq)[1]

    def generator_losses(self, lq, gt) -> tuple[torch.Tensor, dict, torch.Tensor]:
        sr, distill = self.step_ddp(lq, self.forward_teacher(lq))
        sr01, gt01 = sr / 255.0, gt / 255.0
        terms = {f"l_{term.name}": term.weight * term.module(sr01, gt01) for term in self.loss_terms}
        if distill is not None:
            terms["l_distill"] = self.distill_weight * distill
        if self.phase == "full":
            critic = unwrap(self.critic_ddp)
            for p in critic.parameters():
                p.requires_grad_(False)
            real_logits, fake_logits = critic(self.for_critic(gt01, sr01)).chunk(2)
            terms["l_gan"] = self.gan_weight * losses.relativistic_generator_loss(real_logits.detach(), fake_logits)
            for p in critic.parameters():
                p.requires_grad_(True)
        total = sum(terms.values())
        return total, terms, sr01.detach()

    def for_critic(self, gt01: torch.Tensor, sr01: torch.Tensor) -> torch.Tensor:
        """Real and fake in one batch, both through the same random augmentation (gan_opt.augment)."""
        both = torch.cat([gt01, sr01])
        return losses.diff_augment(both, self.critic_augment) if self.critic_augment else both

    def discriminator_step(self, gt01: torch.Tensor, sr01: torch.Tensor) -> dict:
        real_logits, fake_logits = self.critic_ddp(self.for_critic(gt01, sr01)).chunk(2)
        loss_d = losses.relativistic_discriminator_loss(real_logits, fake_logits)
        self.optim_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.optim_d.step()
        self.sched_d.step()
        return {"l_d": loss_d.detach(), "d_real": real_logits.detach().mean(), "d_fake": fake_logits.detach().mean()}

    def train_step(self, batch: dict) -> dict:
        lq = batch["lq"].to(self.device, non_blocking=True)
        gt = batch["gt"].to(self.device, non_blocking=True)
        self.step_module.train()
        total, terms, sr01 = self.generator_losses(lq, gt)
        self.optim_g.zero_grad(set_to_none=True)
        total.backward()
        self.optim_g.step()
        self.sched_g.step()
        update_ema(self.net_g_ema, self.net_g, float(self.train_opt.get("ema_decay", 0.999)))
        if self.phase == "full":
            terms.update(self.discriminator_step(gt / 255.0, sr01))
        terms["l_total"] = total.detach()
        return {k: v.detach() for k, v in terms.items()}  # tensors: no device sync per step

    # -- bookkeeping
    def log_rank0(self, msg: str) -> None:
        if self.rank == 0:
            tqdm.write(f"[{self.opt['name']}] {msg}", file=sys.stderr)

    def log_event(self, record: dict) -> None:
        if self.rank != 0:
            return
        record = {"time": round(time.time(), 3), **record}
        with open(self.out / "log.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def checkpoint(self, step: int) -> dict:
        ckpt = {
            "params": self.net_g.state_dict(), "params_ema": self.net_g_ema.state_dict(),
            "opt": self.opt.get("network_g"), "step": step, "scale": self.scale, "phase": self.phase,
            "optimizer_g": self.optim_g.state_dict(), "scheduler_g": self.sched_g.state_dict(),
            "distiller": self.step_module.distiller.state_dict() if self.step_module.distiller else None,
            "rng": rng_state(), "config": self.opt, "best_psnr_y": self.best_psnr,
        }
        if self.critic is not None:
            ckpt.update(net_d=self.critic.net_d.state_dict(), optimizer_d=self.optim_d.state_dict(),
                        scheduler_d=self.sched_d.state_dict())
        if self.handed_in:
            if self.rebuildable is None:
                self.rebuildable = rebuilds_from(self.net_g_ema, self.opt.get("network_g"))
            if self.rebuildable:
                from lightsr.prune import pruned_state  # noqa: PLC0415

                ckpt["pruned"] = pruned_state(self.net_g_ema)
            else:
                ckpt["module"] = self.net_g_ema
        return ckpt

    def save(self, step: int, best: bool = False) -> None:
        if self.rank != 0:
            return
        ckpt = self.checkpoint(step)
        ckpt_dir = self.out / "checkpoints"
        save_atomic(ckpt, ckpt_dir / "latest.pth")
        save_atomic(generator_only(ckpt), ckpt_dir / "net_g_latest.pth")
        save_atomic(ckpt, ckpt_dir / f"step_{step:07d}.pth")
        if best:
            save_atomic(ckpt, ckpt_dir / "best.pth")
        keep = int(self.opt.get("logger", {}).get("keep_checkpoints", 3))
        for old in sorted(ckpt_dir.glob("step_*.pth"))[:-keep]:
            old.unlink()

    def load_resume_state(self) -> None:
        path = self.out / "checkpoints" / "latest.pth"
        if not path.exists():
            raise ConfigError(f"--resume: {path} does not exist (start without --resume, or point --out at the run)")
        # CPU first: RNG states must stay CPU tensors; load_state_dict copies weights to the device
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        self.net_g.load_state_dict(ckpt["params"])
        self.net_g_ema.load_state_dict(ckpt["params_ema"])
        self.optim_g.load_state_dict(ckpt["optimizer_g"])
        self.sched_g.load_state_dict(ckpt["scheduler_g"])
        if self.step_module.distiller is not None and ckpt.get("distiller"):
            self.step_module.distiller.load_state_dict(ckpt["distiller"])
        if self.critic is not None:
            self.critic.net_d.load_state_dict(ckpt["net_d"])
            self.optim_d.load_state_dict(ckpt["optimizer_d"])
            self.sched_d.load_state_dict(ckpt["scheduler_d"])
        set_rng_state(ckpt["rng"])
        self.start_step, self.best_psnr = int(ckpt["step"]), float(ckpt.get("best_psnr_y", -math.inf))
        self.log_rank0(f"resumed from {path} at step {self.start_step}")

    def maybe_validate(self, step: int) -> None:
        if self.val_set is None:
            return
        if self.rank == 0:
            metrics = validate(self.net_g_ema, self.val_set, self.scale, self.device)
            best = metrics["val_psnr_y"] > self.best_psnr
            self.best_psnr = max(self.best_psnr, metrics["val_psnr_y"])
            self.log_event({"step": step, "event": "val", **metrics})
            self.log_rank0(f"step {step}: val PSNR-Y {metrics['val_psnr_y']:.3f} dB "
                           f"(bicubic {metrics['bicubic_psnr_y']:.3f} dB)")
            self.last_val_best = best
        barrier(self.world)

    # -- the loop
    def fit(self, max_minutes: float | None = None) -> nn.Module:
        total = int(require(self.opt, "train.total_iter"))
        per_epoch = self.sampler.batches_per_epoch()
        step = self.start_step
        epoch, skip = divmod(step, per_epoch)
        self.window: dict[str, list[torch.Tensor]] = {}
        self.bar = tqdm(total=total, initial=step, disable=self.rank != 0, dynamic_ncols=True, desc=self.opt["name"])
        self.start_time = time.time()
        while step < total:
            self.sampler.set_epoch(epoch, skip)
            for batch in self.loader:
                terms = self.train_step(batch)
                step += 1
                out_of_time = self.out_of_time(max_minutes)
                self.after_step(step, epoch, total, terms, force_save=out_of_time)
                if step >= total or out_of_time:
                    break
            if out_of_time:
                self.log_rank0(f"time budget of {max_minutes} min spent: stopped at step {step}/{total}, "
                               f"checkpoint saved; continue with --resume")
                self.log_event({"step": step, "event": "stopped", "reason": "max_minutes"})
                break
            epoch, skip = epoch + 1, 0
        self.bar.close()
        barrier(self.world)
        return self.net_g_ema

    def out_of_time(self, max_minutes: float | None) -> bool:
        """Whether the wall-time budget is spent (rank 0 decides for every rank)."""
        if not max_minutes:
            return False
        flag = torch.tensor([float(time.time() - self.start_time > 60 * max_minutes)])
        if self.world > 1:
            flag = flag.to(self.device)
            dist.broadcast(flag, 0)
        return bool(flag.item())

    def after_step(self, step: int, epoch: int, total: int, terms: dict, force_save: bool) -> None:
        """Progress bar, logs, validation and checkpoints after one iteration."""
        logger = self.opt.get("logger", {})
        print_freq, save_freq = int(logger.get("print_freq", 100)), int(logger.get("save_checkpoint_freq", 1000))
        val_freq = int(self.opt.get("val", {}).get("val_freq", save_freq))
        for k, v in terms.items():
            self.window.setdefault(k, []).append(v)
        self.bar.update(1)
        if step % print_freq == 0 or step == total or force_save:
            means = {k: float(torch.stack(v).float().mean()) for k, v in self.window.items()}
            if not math.isfinite(means["l_total"]):
                raise FloatingPointError(f"non-finite losses {means} near step {step}: lower the learning rate "
                                         f"or check the data (resume from the last good checkpoint)")
            self.bar.set_postfix(loss=f"{means['l_total']:.4f}", lr=f"{self.optim_g.param_groups[0]['lr']:.1e}")
            self.log_event({"step": step, "event": "train", "epoch": epoch, "lr": self.optim_g.param_groups[0]["lr"],
                            "it_per_s": round((step - self.start_step) / (time.time() - self.start_time), 3),
                            **means})
            self.window = {}
        self.last_val_best = False
        if step % val_freq == 0 or step == total or force_save:
            self.maybe_validate(step)
        if step % save_freq == 0 or step == total or force_save:
            self.save(step, best=self.last_val_best)


def prepare_out_dir(opt: dict, out: str | Path | None, rank: int) -> Path:
    # default: <repo>/runs/<name>, where the configs' `runs/...` paths point wherever the command runs
    out_dir = resolve_out(out or opt.get("path", {}).get("experiments_root") or REPO_ROOT / "runs" / opt["name"])
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yml").write_text(yaml.safe_dump(opt, sort_keys=False))
    return out_dir


def resolve_out(path: str | Path) -> Path:
    path = Path(os.path.expanduser(str(path)))
    return path if path.is_absolute() else Path.cwd() / path


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def run_training(opt: dict, net_g: nn.Module | None = None, teacher: nn.Module | None = None, *,
                 out_dir: str | Path | None = None, device: str | None = None, resume: bool = False,
                 max_minutes: float | None = None) -> nn.Module:
    """Train a generator as the config `opt` says; return the trained (EMA) generator.

    The reusable entry point of every stage that trains:
      * `net_g=None`: the generator is built from `opt['network_g']` (and
        `opt['path']['pretrain_network_g']` loaded into it, e.g. `full` after `pre`);
      * `net_g=module`: train that module as is (e.g. a pruned or fake-quantised generator
        whose shapes no longer match any config); its checkpoints then also hold the whole
        module under 'module'. On `resume`, pass the same module again;
      * `teacher=module`: adds `train.distill_opt` (AT or AFD) between the teacher's and the
        student's `forward_features` lists; the teacher is frozen.
    `opt` needs `train.total_iter`, `datasets.train` (+ optional `datasets.val`), `train.*_opt`
    per phase; see model/configs/*.yml. Output in `out_dir` (default runs/<name>).
    `max_minutes`: stop cleanly after that much wall time (checkpoint saved; `resume=True`
    continues), for machines lent by the slot.
    The returned module is the EMA generator on the training device, in eval mode.
    """
    opt = copy.deepcopy(opt)
    device = device or default_device()
    out = prepare_out_dir(opt, out_dir, int(os.environ.get("RANK", "0")))
    trainer = Trainer(opt, out, device, net_g, teacher, resume)
    return trainer.fit(max_minutes)


def build_parser(prog: str = "lightsr train", description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description or __doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="YAML experiment config (model/configs/*.yml)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/latest.pth")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    parser.add_argument("--out", type=Path, help="run folder (default runs/<name>)")
    parser.add_argument("--iters", type=int, help="override train.total_iter")
    parser.add_argument("--workers", type=int, help="override datasets.train.num_worker_per_gpu")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config entry, e.g. --set datasets.train.batch_size_per_gpu=32 (repeatable)")
    parser.add_argument("--max-minutes", type=float, help="stop cleanly (checkpoint saved) after this much wall "
                        "time; continue with --resume")
    parser.add_argument("--threads", type=int, help="torch CPU threads per process (1 avoids OpenMP spinning "
                        "on a busy shared CPU)")
    return parser


def set_dotted(opt: dict, assignment: str) -> None:
    """`a.b.c=VALUE` (VALUE parsed as YAML) into the nested config."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment}: expected KEY=VALUE, e.g. train.total_iter=1000")
    dotted, raw = assignment.split("=", 1)
    *parents, leaf = dotted.strip().split(".")
    node = opt
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {assignment}: `{key}` is not a mapping in the config")
    node[leaf] = yaml.safe_load(raw)


def apply_overrides(opt: dict, args) -> dict:
    for assignment in args.set:
        set_dotted(opt, assignment)
    if args.iters is not None:
        opt.setdefault("train", {})["total_iter"] = args.iters
    if args.workers is not None:
        opt.setdefault("datasets", {}).setdefault("train", {})["num_worker_per_gpu"] = args.workers
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return opt


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        opt = apply_overrides(load_config(args.config), args)
        run_training(opt, out_dir=args.out, device=args.device, resume=args.resume, max_minutes=args.max_minutes)
    except (ConfigError, DataError, FloatingPointError) as err:
        print(f"lightsr train: {err}", file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0
