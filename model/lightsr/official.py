# SPDX-License-Identifier: MPL-2.0
"""`lightsr import-official`: turn a published F2SRGAN checkpoint into a lightsrscale bundle.

Usage:
    lightsr import-official F2SRGAN_4x.pt --scale 4 --out out/official-x4

Understood checkpoints (the files the F2SRGAN / Light F2SRGAN authors published):
- `F2SRGAN_4x.pt`, `F2SRGAN_2x.pt`: `{'model': state_dict, 'opti': ...}`, 16 blocks with FFC;
- `F2SRGAN_4x_student.pt`: the 8-block student, blocks named `residual1..4.{0,1}`;
- `F2SRGAN_4x_QAT.pth.tar`: quantization-aware weights; the quantizer buffers (x_min, x_max,
  beta, beta_t) are dropped and the latent fp32 weights kept (the deployment runs fp16/fp32);
- `LightF2SRGAN_x4.pt`: the pruned student; its `'model'` state dict is read (the `'deploy'`
  module was pickled from a notebook's `__main__`, so those classes are replaced by inert
  stubs while unpickling) and the pruned layer shapes are rebuilt from the tensor shapes.
The architecture (blocks, FFC, width, upsampler stages) is inferred from the keys; the
bundle holds one ladder: the imported model, then bicubic.

The student's global skip is assumed to be the teacher's (`residual(initial) + initial`):
no reference vectors exist for the student files, only for F2SRGAN x2 / x4.
"""
import argparse
import pickle
import re
import sys
import types
from pathlib import Path

import torch
from torch import nn

from lightsr.archs import build_network

QUANT_BUFFERS = ("x_min", "x_max", "beta", "beta_t")
SAFE_MODULE_PREFIXES = ("torch", "collections", "builtins", "__builtin__", "numpy", "_codecs")


class _NotebookObject:
    """Inert stand-in for a class pickled from a notebook's `__main__`."""

    apply = None

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {"_state": state})


class _StubUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "__main__":
            return type(name, (_NotebookObject,), {})
        if not module.startswith(SAFE_MODULE_PREFIXES):
            raise pickle.UnpicklingError(f"refusing to import {module}.{name} from a checkpoint")
        return super().find_class(module, name)


def _stub_pickle_module() -> types.ModuleType:
    mod = types.ModuleType("lightsr_stub_pickle")
    mod.Unpickler = _StubUnpickler
    mod.load = pickle.load
    return mod


def read_checkpoint(path: Path) -> dict:
    """The raw object of a checkpoint, tolerating notebook classes pickled from __main__."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return torch.load(path, map_location="cpu", weights_only=False,
                          pickle_module=_stub_pickle_module())


def official_state_dict(ckpt) -> dict:
    """Pick the generator's state dict, drop quantizer buffers, number blocks 0..N-1."""
    if isinstance(ckpt, dict):
        for key in ("model", "params_ema", "params", "state_dict"):
            if isinstance(ckpt.get(key), dict):
                ckpt = ckpt[key]
                break
    if not isinstance(ckpt, dict) or not any(k.startswith("initial.") for k in ckpt):
        raise ValueError("not an F2SRGAN generator checkpoint: expected a state dict with "
                         "'initial.*' keys under 'model' (see `lightsr import-official --help`)")
    sd = {k: v for k, v in ckpt.items()
          if torch.is_tensor(v) and k.rsplit(".", 1)[-1] not in QUANT_BUFFERS}
    return _renumber_student_blocks(sd)


def _renumber_student_blocks(sd: dict) -> dict:
    """`residual{g}.{j}.*` (the student's four groups) -> `residual.{n}.*` in group order."""
    groups = sorted({(int(m.group(1)), int(m.group(2))) for k in sd
                     if (m := re.match(r"residual(\d+)\.(\d+)\.", k))})
    if not groups:
        return sd
    index = {gj: n for n, gj in enumerate(groups)}
    out = {}
    for k, v in sd.items():
        m = re.match(r"residual(\d+)\.(\d+)\.(.*)", k)
        out[f"residual.{index[(int(m.group(1)), int(m.group(2)))]}.{m.group(3)}" if m else k] = v
    return out


def infer_options(sd: dict, scale: int) -> dict:
    """Network options of `lightsr.archs.F2SRGANGenerator` that fit the state dict."""
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"residual\.(\d+)\.", k))}
    stages = {int(m.group(1)) for k in sd if (m := re.match(r"upsampler\.(\d+)\.0\.weight", k))}
    fourier = any(".convg2g." in k for k in sd)
    if 2 ** len(stages) != scale:
        raise ValueError(f"the checkpoint has {len(stages)} x2 upsampling stage(s), i.e. scale "
                         f"{2 ** len(stages)}, but --scale {scale} was given")
    return {"type": "F2SRGANGenerator", "scale": scale, "num_blocks": len(blocks),
            "fourier": fourier, "width": int(sd["initial.0.1.weight"].shape[0]),
            "upsampler": "published"}


def _resized_conv(conv: nn.Conv2d, weight: torch.Tensor) -> nn.Conv2d:
    depthwise = conv.groups == conv.in_channels and conv.groups > 1
    out_ch = weight.shape[0]
    in_ch = out_ch if depthwise else weight.shape[1]
    return nn.Conv2d(in_ch, out_ch, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                     groups=out_ch if depthwise else 1, bias=conv.bias is not None,
                     padding_mode=conv.padding_mode)


def adapt_pruned_shapes(net: nn.Module, sd: dict) -> int:
    """Replace every conv / PReLU whose shape differs from the state dict (structured pruning
    shrinks channels, the graph stays the same); return how many layers were replaced."""
    replaced = 0
    for name, module in list(net.named_modules()):
        key = f"{name}.weight"
        if key not in sd or tuple(module.weight.shape) == tuple(sd[key].shape):
            continue
        if isinstance(module, nn.Conv2d):
            new = _resized_conv(module, sd[key])
        elif isinstance(module, nn.PReLU):
            new = nn.PReLU(sd[key].numel())
        else:
            raise ValueError(f"cannot adapt {name} ({type(module).__name__}) to shape "
                             f"{tuple(sd[key].shape)}")
        parent, _, child = name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, child, new)
        replaced += 1
    return replaced


def load_official(path: Path, scale: int) -> tuple[nn.Module, dict]:
    """The published generator as an eval-mode `F2SRGANGenerator` and its options."""
    sd = official_state_dict(read_checkpoint(path))
    opt = infer_options(sd, scale)
    net = build_network(opt)
    pruned = adapt_pruned_shapes(net, sd)
    net.load_state_dict(sd, strict=True)
    for p in (net.sub_mean.weight, net.sub_mean.bias, net.add_mean.weight, net.add_mean.bias):
        p.requires_grad = False
    opt["pruned_layers"] = pruned
    return net.eval(), opt


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lightsr import-official",
                                description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("checkpoint", type=Path, help="published checkpoint (.pt / .pth.tar)")
    p.add_argument("--scale", type=int, required=True, help="the checkpoint's scale (2 or 4)")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    p.add_argument("--name", default=None, help="variant name (default: from the file name)")
    p.add_argument("--no-timing", action="store_true", help="skip the CPU timing at 320x180")
    return p.parse_args(argv)


def variant_name(path: Path) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", path.name.split(".")[0].lower()).strip("-")
    return name or "official"


def main(argv: list[str]) -> int:
    from lightsr.export import export_bicubic, export_learned, print_manifest, write_bundle

    args = parse_args(argv)
    try:
        net, opt = load_official(args.checkpoint, args.scale)
    except (FileNotFoundError, ValueError, RuntimeError, pickle.UnpicklingError) as e:
        print(f"lightsr import-official: {args.checkpoint}: {e}", file=sys.stderr)
        return 2
    name = args.name or variant_name(args.checkpoint)
    description = (f"published checkpoint {args.checkpoint.name} imported by lightsr "
                   f"import-official ({opt['num_blocks']} blocks, fourier={opt['fourier']}, "
                   f"pruned layers={opt['pruned_layers']}); third-party weights, no licence")
    learned = export_learned(net, args.scale, name, description, arch="f2srgan",
                             timing=not args.no_timing)
    ladders = {args.scale: [learned, export_bicubic(args.scale, timing=not args.no_timing)]}
    manifest = write_bundle(args.out, name, f"imported from {args.checkpoint.name}", ladders)
    print_manifest(manifest)
    print(f"wrote {args.out / 'manifest.json'} (validated)")
    return 0
