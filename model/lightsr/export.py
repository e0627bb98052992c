# SPDX-License-Identifier: MPL-2.0
"""`lightsr export`: build a variant ladder and write it as a lightsrscale bundle.

Usage:
    lightsr export --out BUNDLE [--config ladder.yml] [--checkpoint CKPT ...] [--scales 4 2]
    lightsr export --out model/bundles/default --bicubic-only --scales 4 2

Each ladder lists its variants heaviest first and always ends with `bicubic`. Every learned
variant is wrapped in the uint8 NHWC deploy wrapper (`lightsr.deploy.U8Deploy`), scripted,
checked against eager at 37x53 and 64x80 (one odd size), timed on CPU at 320x180, and the
bundle is validated (`lightsr.bundle`) before the command returns.

Checkpoint format (what `lightsr train`, `distill`, `prune` and `quantize` save):
    {'params': state_dict, 'params_ema': state_dict (optional, preferred when present),
     'opt': network options dict, e.g. {'type': 'F2SRGANGenerator', 'scale': 4,
            'num_blocks': 8, 'fourier': False, 'width': 64, 'upsampler': 'published'},
     'name': 'student' (optional variant name), 'description': '...' (optional)}
The network options are stored inside every checkpoint so that export can rebuild the
architecture with `lightsr.archs.build_network(opt)`. Pruned models change shapes, so they
are saved as whole modules instead:
    {'module': nn.Module (eval mode, float NCHW 0..255 in/out), 'opt': {... 'scale': S},
     'name': ..., 'description': ...}
A ladder YAML lists the checkpoints per scale:
    name: default
    description: ...
    ladders:
      4: [{checkpoint: runs/f2srgan_x4/best.pth, name: f2srgan},
          {checkpoint: runs/student_x4/best.pth, name: student}]
"""
import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lightsr.bundle import Variant, manifest_dict, validate_bundle, write_manifest
from lightsr.deploy import U8Deploy, bicubic_variant

CHECK_SIZES = ((37, 53), (64, 80))
TIMING_SIZE = (180, 320)
BICUBIC_DESCRIPTION = ("exact torch bicubic interpolation (align_corners=False), no weights: "
                       "not a trained model")


@dataclass
class ExportedVariant:
    variant: Variant
    module: torch.jit.ScriptModule


def max_abs_diff_u8(a: torch.Tensor, b: torch.Tensor) -> int:
    return int((a.int() - b.int()).abs().max())


def check_scripted(scripted, eager: nn.Module, scale: int, tol: int = 1) -> int:
    """Compare scripted and eager u8 outputs at CHECK_SIZES; return the worst difference.

    A tolerance of 1 grey level allows round() to fall on the other side of .5 when the
    scripted graph fuses or reorders float operations."""
    worst = 0
    gen = torch.Generator().manual_seed(0)
    for h, w in CHECK_SIZES:
        x = torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8, generator=gen)
        with torch.no_grad():
            want, got = eager(x), scripted(x)
        if got.shape != (1, h * scale, w * scale, 3) or got.dtype != torch.uint8:
            raise RuntimeError(f"scripted variant returned {got.dtype} {tuple(got.shape)} for "
                               f"a {h}x{w} frame, expected uint8 (1, {h * scale}, {w * scale}, 3)")
        worst = max(worst, max_abs_diff_u8(want, got))
    if worst > tol:
        raise RuntimeError(f"scripted variant differs from eager by {worst} grey levels "
                           f"(tolerance {tol}) at sizes {CHECK_SIZES}")
    return worst


def cpu_ms_per_frame(module, repeats: int = 5) -> float:
    """Median CPU milliseconds for one 320x180 frame (after two warm-up calls)."""
    h, w = TIMING_SIZE
    x = torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8)
    times = []
    with torch.no_grad():
        for i in range(repeats + 2):
            t0 = time.perf_counter()
            module(x)
            if i >= 2:
                times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def export_bicubic(scale: int) -> ExportedVariant:
    eager = bicubic_variant(scale)
    scripted = torch.jit.script(eager)
    check_scripted(scripted, eager, scale, tol=0)
    variant = Variant(name="bicubic", file=f"x{scale}-bicubic.pt", kind="bicubic",
                      arch="bicubic", params=0, fourier=False, half=False,
                      description=BICUBIC_DESCRIPTION,
                      extra={"macs_320x180": 0,
                             "cpu_ms_320x180": round(cpu_ms_per_frame(scripted), 2)})
    return ExportedVariant(variant, scripted)


def write_bundle(out: Path, name: str, description: str,
                 ladders: dict[int, list[ExportedVariant]]) -> dict:
    """Save every variant's TorchScript file and the manifest, then validate the bundle."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for variants in ladders.values():
        for ev in variants:
            torch.jit.save(ev.module, str(out / ev.variant.file))
    manifest = manifest_dict(name, description,
                             {s: [ev.variant for ev in vs] for s, vs in ladders.items()})
    write_manifest(out, manifest)
    return validate_bundle(out, check_modules=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lightsr export", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    p.add_argument("--scales", type=int, nargs="+", default=[4, 2],
                   help="ladders to write (default: 4 2)")
    p.add_argument("--bicubic-only", action="store_true",
                   help="write ladders holding only the weight-free bicubic variant")
    p.add_argument("--name", default="default", help="bundle name in the manifest")
    p.add_argument("--description", default=None, help="bundle description in the manifest")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if any(s < 2 for s in args.scales):
        print("lightsr export: --scales must be integers >= 2", file=sys.stderr)
        return 2
    if not args.bicubic_only:
        print("lightsr export: give --bicubic-only (checkpoint ladders: see --help)",
              file=sys.stderr)
        return 2
    ladders = {s: [export_bicubic(s)] for s in sorted(set(args.scales), reverse=True)}
    description = args.description or (
        "interim default: exact bicubic interpolation only, NOT a trained model; "
        "replace with a bundle written by `lightsr export` from trained checkpoints")
    manifest = write_bundle(args.out, args.name, description, ladders)
    for ladder in manifest["ladders"]:
        for v in ladder["variants"]:
            print(f"x{ladder['scale']} {v['name']:<12} {v['file']:<20} "
                  f"params={v['params']} cpu_ms_320x180={v.get('cpu_ms_320x180')}")
    print(f"wrote {args.out / 'manifest.json'} (validated)")
    return 0
