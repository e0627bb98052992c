# SPDX-License-Identifier: MPL-2.0
"""Scores generator checkpoints on the held-out validation crops of the data pack: PSNR-Y and
NIQE (the same code as `lightsr eval`), next to bicubic. For choosing among runs (GAN loss
weights, which step to ship) before `lightsr export`; the report itself is `lightsr eval`'s.

Usage: .venv/bin/python model/recipes/score_checkpoints.py --scale 4 CKPT [CKPT ...]
       (a CKPT is a lightsr checkpoint: latest.pth, net_g_latest.pth, latest_ema.pth, pruned.pth)
"""
import argparse
import sys

import numpy as np
import torch

from lightsr import iqa
from lightsr.archs import build_network
from lightsr.train import load_generator_weights


def load(path: str) -> torch.nn.Module:
    weights, net_opt = load_generator_weights(path, "params_ema")
    if isinstance(weights, torch.nn.Module):
        return weights.float().eval()
    net = build_network(net_opt)
    net.load_state_dict(weights)
    return net.eval()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--pack", default="data/patches_p144.npz")
    ap.add_argument("checkpoints", nargs="+")
    args = ap.parse_args()
    pack = np.load(args.pack)
    s = args.scale
    pairs = [(pack[k], pack[k.replace("hr", "lr")]) for k in sorted(pack.files) if k.startswith(f"val_hr_x{s}_")]
    niqe = iqa.NiqeModel()

    def score(fn) -> tuple[float, float]:
        p, n = [], []
        for hr, lr in pairs:
            sr = fn(lr)
            p.append(iqa.psnr_y(sr, hr, border=s))
            n.append(niqe(sr, border=s))
        return float(np.mean(p)), float(np.mean(n))

    def bicubic(lr):
        x = torch.from_numpy(lr).permute(2, 0, 1)[None].float()
        y = torch.nn.functional.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)
        return y.clamp(0, 255).round().byte()[0].permute(1, 2, 0).numpy()

    print(f"{'variant':60s} {'PSNR-Y':>7s} {'NIQE':>6s}   ({len(pairs)} crops, x{s})")
    print(f"{'bicubic':60s} {score(bicubic)[0]:7.2f} {score(bicubic)[1]:6.2f}")
    for path in args.checkpoints:
        net = load(path)

        def run(lr, net=net):
            with torch.no_grad():
                y = net(torch.from_numpy(lr).permute(2, 0, 1)[None].float())
            return y.clamp(0, 255).round().byte()[0].permute(1, 2, 0).numpy()
        psnr, nq = score(run)
        print(f"{path[-60:]:60s} {psnr:7.2f} {nq:6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
