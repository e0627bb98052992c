# SPDX-License-Identifier: MPL-2.0
"""Keep the EMA weights of runs/<glob>/checkpoints/latest.pth (no optimizer / critic state) with
each run's config and log: packed into one tar (what a GPU machine hands back after training), or
written to DIR/<run>/ (what `model/checkpoints/` keeps for a shipped rung).
Usage: python model/recipes/slim_checkpoints.py OUT.tar [GLOB]          (default glob: gpu_*)
       python model/recipes/slim_checkpoints.py --into DIR GLOB [--checkpoint step_0001000.pth]"""
import argparse
import glob
import json
import os
import shutil
import tarfile
import tempfile

import torch


def slim(path: str) -> tuple[dict, int]:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    keep = ("params_ema", "module", "opt", "step", "phase", "scale")  # phase: export's default objective
    return {k: ck[k] for k in keep if k in ck}, int(ck.get("step", 0))


def runs(pattern: str, checkpoint: str) -> list[tuple[str, str]]:
    found = [(p.split("/")[1], p) for p in sorted(glob.glob(f"runs/{pattern}/checkpoints/{checkpoint}"))]
    if not found:
        raise SystemExit(f"no runs/{pattern}/checkpoints/{checkpoint}")
    return found


def log_until(run: str, step: int) -> str:
    """The run's log.jsonl up to `step` (a shipped step checkpoint's log ends where it does)."""
    keep = [line for line in open(f"runs/{run}/log.jsonl") if json.loads(line).get("step", 0) <= step]
    return "".join(keep)


def to_tar(out: str, pattern: str, checkpoint: str) -> None:
    tmp = tempfile.mkdtemp()
    with tarfile.open(out, "w") as tar:
        for run, path in runs(pattern, checkpoint):
            weights, step = slim(path)
            torch.save(weights, f"{tmp}/{run}.pth")
            tar.add(f"{tmp}/{run}.pth", arcname=f"{run}/latest_ema.pth")
            for extra in ("config.yml", "log.jsonl"):
                if os.path.exists(f"runs/{run}/{extra}"):
                    tar.add(f"runs/{run}/{extra}", arcname=f"{run}/{extra}")
            if os.path.exists(f"runs/{run}.log"):
                tar.add(f"runs/{run}.log", arcname=f"{run}/console.log")
            print(f"{run}: step {step}")
    print(f"{out}: {os.path.getsize(out) / 1e6:.1f} MB")


def to_dir(dest: str, pattern: str, checkpoint: str) -> None:
    for run, path in runs(pattern, checkpoint):
        weights, step = slim(path)
        out = os.path.join(dest, run)
        os.makedirs(out, exist_ok=True)
        torch.save(weights, f"{out}/latest_ema.pth")
        shutil.copy(f"runs/{run}/config.yml", f"{out}/config.yml")
        with open(f"{out}/log.jsonl", "w") as fh:
            fh.write(log_until(run, step))
        print(f"{out}: step {step}, {os.path.getsize(f'{out}/latest_ema.pth') / 1e3:.0f} kB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", help="OUT.tar (without --into)")
    ap.add_argument("glob", nargs="?", default="gpu_*")
    ap.add_argument("--into", help="write DIR/<run>/{latest_ema.pth,config.yml,log.jsonl} instead of a tar")
    ap.add_argument("--checkpoint", default="latest.pth", help="which file of runs/<run>/checkpoints/")
    args = ap.parse_args()
    if args.into:
        to_dir(args.into, args.out or args.glob, args.checkpoint)  # with --into the one positional is the glob
    elif args.out:
        to_tar(args.out, args.glob, args.checkpoint)
    else:
        ap.error("give OUT.tar, or --into DIR")


if __name__ == "__main__":
    main()
