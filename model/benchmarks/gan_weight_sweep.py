# SPDX-License-Identifier: MPL-2.0
"""Adversarial-weight sweep for the `full` phase (the numbers quoted in
model/configs/f2srgan_x*_full.yml): a 4-block F2SRGAN x4 is trained 600 `pre` steps, then
200 `full` steps per adversarial weight; prints the validation PSNR-Y of each.

    .venv/bin/python model/benchmarks/gan_weight_sweep.py [--pack data/patches_p144.npz]

Needs the packed patches of `lightsr data`. About 10 minutes on 2 CPU cores.
"""
import argparse
import json
import tempfile
from pathlib import Path

import torch

from lightsr.train import run_training

NET = {"type": "F2SRGANGenerator", "scale": 4, "num_blocks": 4, "fourier": True, "width": 32}


def options(pack: str, name: str, phase: str, iters: int, **train) -> dict:
    return {"name": name, "phase": phase, "scale": 4, "network_g": NET,
            "datasets": {"train": {"pack": pack, "gt_size": 48, "batch_size_per_gpu": 16, "num_worker_per_gpu": 0},
                         "val": {"pack": pack, "crop": 192}},
            "train": {"total_iter": iters, "ema_decay": 0.99, "optim_g": {"type": "AdamW", "lr": 5e-4},
                      "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0}, **train},
            "val": {"val_freq": iters}, "logger": {"print_freq": 50, "save_checkpoint_freq": iters}}


def last_val(run: Path) -> dict:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if '"val"' in x][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", default="data/patches_p144.npz")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.6, 0.05, 0.005])
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="gan_sweep_"))
    run_training(options(args.pack, "sweep_pre", "pre", 600), out_dir=root / "pre", device="cpu")
    print(f"pre, 600 steps: val PSNR-Y {last_val(root / 'pre')['val_psnr_y']:.2f} dB "
          f"(bicubic {last_val(root / 'pre')['bicubic_psnr_y']:.2f} dB)")
    for weight in args.weights:
        opt = options(args.pack, f"sweep_gan{weight}", "full", 200, perceptual_opt={"loss_weight": 1.0},
                      gan_opt={"loss_weight": weight}, tv_opt={"loss_weight": 2e-8},
                      optim_d={"type": "AdamW", "lr": 1e-4})
        opt["train"]["optim_g"]["lr"] = 1e-4
        opt["path"] = {"pretrain_network_g": str(root / "pre/checkpoints/net_g_latest.pth")}
        run_training(opt, out_dir=root / f"gan{weight}", device="cpu")
        print(f"full, gan weight {weight}, 200 steps: val PSNR-Y {last_val(root / f'gan{weight}')['val_psnr_y']:.2f} dB")


if __name__ == "__main__":
    main()
