# SPDX-License-Identifier: MPL-2.0
"""`lightsr distill CONFIG.yml`: F2SRGAN teacher -> Light student (Vu et al. 2023).

The teacher is one of the project's own checkpoints (`teacher.checkpoint`, trained by
`lightsr train`); it is frozen. The student (`network_g`, e.g. 8 residual blocks without
Fourier blocks) trains with the pixel loss plus a feature distillation loss between the
residual-block features of both (`forward_features`):
  train.distill_opt.type = at   attention transfer (Zagoruyko & Komodakis 2017)
                         = afd  attention-based feature distillation (Ji et al. 2021)
Everything else (EMA, checkpoints, --resume, validation, torchrun) is `lightsr train`'s.
"""
from __future__ import annotations

import sys

import torch
import torch.distributed as dist
import torch.nn as nn

from lightsr.data import DataError, resolve_path
from lightsr.train import (ConfigError, apply_overrides, build_parser, load_config, load_generator_weights,
                           require, run_training)


def load_teacher(opt: dict) -> nn.Module:
    """The frozen teacher named by `opt['teacher']` ({checkpoint, param_key, network_g?})."""
    from lightsr.archs import build_network
    teacher_opt = require(opt, "teacher")
    path = resolve_path(require(opt, "teacher.checkpoint"))
    if not path.exists():
        raise ConfigError(f"teacher checkpoint {path} not found: train the F2SRGAN teacher first (lightsr train)")
    probe = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(probe, dict) and "model" in probe and "params" not in probe:
        raise ConfigError(f"teacher {path} looks like a published checkpoint ({{'model', ...}}): the project "
                          f"distils only from its own F2SRGAN, trained with `lightsr train`")
    weights, net_opt = load_generator_weights(path, teacher_opt.get("param_key", "params_ema"))
    if isinstance(weights, nn.Module):
        teacher = weights
    else:
        net_opt = teacher_opt.get("network_g") or net_opt
        if not net_opt:
            raise ConfigError(f"teacher {path} has no 'opt' entry: give `teacher.network_g` in the config")
        teacher = build_network(net_opt)
        teacher.load_state_dict(weights)
    if getattr(teacher, "scale", require(opt, "scale")) != int(require(opt, "scale")):
        raise ConfigError(f"teacher scale x{teacher.scale} differs from the student's x{opt['scale']}")
    return teacher.eval()


def run_distillation(opt: dict, teacher: nn.Module | None = None, **kwargs) -> nn.Module:
    """Distil `teacher` (default: loaded from `opt['teacher']`) into the student of `opt`;
    returns the EMA student. Keyword arguments go to `run_training` (out_dir, device, resume)."""
    if not (opt.get("train") or {}).get("distill_opt"):
        raise ConfigError("`train.distill_opt` is missing: {type: at | afd, loss_weight: ...}")
    return run_training(opt, teacher=teacher if teacher is not None else load_teacher(opt), **kwargs)


def main(argv: list[str]) -> int:
    parser = build_parser("lightsr distill", __doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=("at", "afd"), help="override train.distill_opt.type")
    parser.add_argument("--teacher", help="override teacher.checkpoint")
    args = parser.parse_args(argv)
    try:
        opt = apply_overrides(load_config(args.config), args)
        if args.method:
            opt.setdefault("train", {}).setdefault("distill_opt", {})["type"] = args.method
        if args.teacher:
            opt.setdefault("teacher", {})["checkpoint"] = args.teacher
        run_distillation(opt, out_dir=args.out, device=args.device, resume=args.resume,
                         max_minutes=args.max_minutes)
    except (ConfigError, DataError, FloatingPointError) as err:
        print(f"lightsr distill: {err}", file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0
