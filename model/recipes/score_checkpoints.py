# SPDX-License-Identifier: MPL-2.0
"""Scores generator checkpoints on the held-out validation crops of the data pack: PSNR-Y and
NIQE (the same code as `lightsr eval`) and the fixed-pattern grid on a smooth field
(`evaluate.fixed_pattern_rms`), next to bicubic. For choosing among runs (GAN loss
weights, which step to ship) before `lightsr export`; the report itself is `lightsr eval`'s.

Usage: .venv/bin/python model/recipes/score_checkpoints.py --scale 4 [--full] CKPT [CKPT ...]
       (a CKPT is a lightsr checkpoint: latest.pth, net_g_latest.pth, latest_ema.pth, pruned.pth)
--full scores the 9 whole held-out photographs of data/ (up to 2040 px) instead of their 384 px
centre crops: NIQE averages many more patches there, so it moves far less with small changes.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

from lightsr import iqa
from lightsr.data import load_split
from lightsr.deploy import bicubic_variant
from lightsr.evaluate import fixed_pattern_rms, score_image, upscale
from lightsr.export import deploy_checkpoint


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--pack", default="data/patches_p144.npz")
    ap.add_argument("--full", action="store_true", help="whole held-out photographs of data/ (lightsr data)")
    ap.add_argument("--data", default="data", help="with --full: the `lightsr data` folder")
    ap.add_argument("checkpoints", nargs="+")
    args = ap.parse_args()
    s = args.scale
    if args.full:
        hrs, lrs, _ = load_split(Path(args.data), "val", s)
        pairs = list(zip(hrs, lrs))
    else:
        pack = np.load(args.pack)
        pairs = [(pack[k], pack[k.replace("hr", "lr")]) for k in sorted(pack.files) if k.startswith(f"val_hr_x{s}_")]
    niqe = iqa.NiqeModel()

    def report(name: str, module) -> None:
        rows = [score_image(upscale(module, lr), hr, s, niqe, None) for hr, lr in pairs]
        psnr = np.mean([r["psnr_y"] for r in rows])
        nq = np.mean([r["niqe"] for r in rows if r["niqe"] is not None])
        grid = fixed_pattern_rms(module, s)
        print(f"{name[-60:]:60s} {psnr:7.2f} {nq:6.2f} {grid:6.2f}", flush=True)

    what = "whole photographs" if args.full else "crops"
    print(f"{'variant':60s} {'PSNR-Y':>7s} {'NIQE':>6s} {'grid':>6s}   ({len(pairs)} {what}, x{s};"
          " grid: fixed-pattern RMS in grey levels on a smooth field, shipped rungs < 0.75)")
    report("bicubic", bicubic_variant(s))
    for path in args.checkpoints:
        report(path, deploy_checkpoint(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
