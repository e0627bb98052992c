# SPDX-License-Identifier: MPL-2.0
"""Pack the EMA weights of runs/<glob>/checkpoints/latest.pth (no optimizer / critic state) with
each run's config and log into one tar: what a GPU machine hands back after training.
Usage: python model/recipes/slim_checkpoints.py OUT.tar [GLOB]   (default glob: gpu_*)"""
import glob
import os
import sys
import tarfile
import tempfile

import torch


def main(out: str, pattern: str = "gpu_*") -> None:
    tmp = tempfile.mkdtemp()
    with tarfile.open(out, "w") as tar:
        for path in sorted(glob.glob(f"runs/{pattern}/checkpoints/latest.pth")):
            run = path.split("/")[1]
            ck = torch.load(path, map_location="cpu", weights_only=False)
            slim = {k: ck[k] for k in ("params_ema", "module", "opt", "step") if k in ck}
            torch.save(slim, f"{tmp}/{run}.pth")
            tar.add(f"{tmp}/{run}.pth", arcname=f"{run}/latest_ema.pth")
            for extra in ("config.yml", "log.jsonl"):
                if os.path.exists(f"runs/{run}/{extra}"):
                    tar.add(f"runs/{run}/{extra}", arcname=f"{run}/{extra}")
            if os.path.exists(f"runs/{run}.log"):
                tar.add(f"runs/{run}.log", arcname=f"{run}/console.log")
            print(f"{run}: step {ck.get('step')}")
    print(f"{out}: {os.path.getsize(out) / 1e6:.1f} MB")


if __name__ == "__main__":
    main(*sys.argv[1:])
