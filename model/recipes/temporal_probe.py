# SPDX-License-Identifier: MPL-2.0
"""Probe: does the previous decoded LR frame help x4 super-resolution of compressed video?

A small residual network (conv 3x3 -> 32, 6 residual blocks, conv 3x3 -> 48, PixelShuffle(4),
added to bicubic upsampling of the current frame; the last conv is zero-initialised so every model
starts exactly at bicubic) is trained with identical settings and seeds on

* A: the current LR frame (3 channels),
* B: concat(current, previous) (6 channels), no explicit motion compensation,
* C: concat(current, previous - current) (6 channels),

and scored by PSNR-Y (BT.601, 4-pixel border cropped, 8-bit output) on held-out photographs,
overall and per codec bucket, against bicubic in the same buckets.

Data come from the project's own clip pipeline (`lightsr.degradations`, as `lightsr.clips`): per
clip, `sample_clip_params(rng, 0.2)`, 5-15 HR frames of 256x256 along a random camera path
(`motion_clip`, textured start), `degrade_clip` at x4 (real codec pass with PyAV); 3 random frames
t >= 1 of each clip are kept as (lr[t-1], lr[t], hr[t]). 16 clips per train photograph, 8 per val
photograph; photographs with a side under 256 + 2 * 64 are skipped. Seeds derive from
(tag, image id, clip index), so the sets are the same on every machine.

Usage (from the repository root; each step one process on one thread):
    .venv/bin/python model/recipes/temporal_probe.py build            # train.npz, val.npz
    .venv/bin/python model/recipes/temporal_probe.py train --model A  # A and B may run in parallel
    .venv/bin/python model/recipes/temporal_probe.py train --model B
    .venv/bin/python model/recipes/temporal_probe.py report           # tables from the eval JSONs
Outputs go to runs/temporal_probe/ (--out): {train,val}.npz, {A,B,C}_s{seed}/eval_{step}.json
(per-sample PSNR-Y), ckpt_{step}.pt, and report.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

LR, SCALE = 64, 4
HR = LR * SCALE
MARGIN = 64
BUCKETS = ("all", "clean", "crf<28", "crf28-36", "crf>=36", "mpeg2/4")


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------
def _seed(*parts) -> list[int]:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]


def _worker_init() -> None:
    import cv2  # noqa: PLC0415
    import torch  # noqa: PLC0415
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _photo_samples(job: tuple) -> dict:
    """Worker: every clip of one photograph -> its (prev LR, cur LR, HR) samples."""
    path, image_id, clips, keep, tag = job
    from PIL import Image  # noqa: PLC0415

    from lightsr.degradations import DataError, degrade_clip, motion_clip, sample_clip_params  # noqa: PLC0415
    photo = np.asarray(Image.open(path).convert("RGB"))
    out = {k: [] for k in ("prev", "cur", "hr", "codec", "quality", "clip", "t")}
    for k in range(clips):
        rng = np.random.default_rng(_seed(tag, image_id, k))
        params = sample_clip_params(rng, 0.2)
        frames = int(rng.integers(5, 16))
        try:
            hr = motion_clip(photo, (HR, HR), frames, rng, textured=True)
        except DataError:
            hr = motion_clip(photo, (HR, HR), frames, rng, max_speed=0.5, textured=True)
        lr = degrade_clip(hr, SCALE, params, rng)
        for t in np.sort(rng.choice(np.arange(1, frames), size=min(keep, frames - 1), replace=False)):
            out["prev"].append(lr[t - 1])
            out["cur"].append(lr[t])
            out["hr"].append(hr[t])
            out["codec"].append(params.codec)
            out["quality"].append(params.quality)
            out["clip"].append(f"{image_id}-{k:02d}")
            out["t"].append(int(t))
    return out


def build(args) -> None:
    """runs/temporal_probe/{train,val}.npz from data/manifest.json."""
    manifest = json.loads((args.data / "manifest.json").read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    for split, clips in (("train", args.train_clips), ("val", args.val_clips)):
        dst = args.out / f"{split}.npz"
        if dst.exists() and not args.force:
            print(f"{dst} exists (--force rebuilds)", flush=True)
            continue
        entries = [e for e in manifest["images"]
                   if e["split"] == split and min(e["width"], e["height"]) >= HR + 2 * MARGIN]
        jobs = [(args.data / e["file"], e["id"], clips, args.keep, args.tag) for e in entries]
        start = time.time()
        with multiprocessing.get_context("spawn").Pool(args.workers, initializer=_worker_init) as pool:
            parts = pool.map(_photo_samples, jobs, chunksize=1)
        merged = {k: sum((p[k] for p in parts), []) for k in parts[0]}
        np.savez(dst, prev=np.stack(merged["prev"]), cur=np.stack(merged["cur"]), hr=np.stack(merged["hr"]),
                 codec=np.array(merged["codec"]), quality=np.array(merged["quality"], np.float32),
                 clip=np.array(merged["clip"]), t=np.array(merged["t"]))
        codecs = {c: merged["codec"].count(c) for c in sorted(set(merged["codec"]))}
        print(f"{split}: {len(entries)} photographs, {len(merged['cur'])} samples {codecs} "
              f"in {time.time() - start:.0f}s -> {dst}", flush=True)


def bucket_of(codec: str, quality: float) -> str:
    if codec == "none":
        return "clean"
    if codec in ("mpeg2video", "mpeg4"):
        return "mpeg2/4"
    return "crf<28" if quality < 28 else "crf28-36" if quality < 36 else "crf>=36"


def load_split(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------
def make_model(kind: str, width: int = 32, blocks: int = 6):
    import torch  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.PReLU(width),
                                      nn.Conv2d(width, width, 3, padding=1))

        def forward(self, x):
            return x + self.body(x)

    class ProbeSR(nn.Module):
        """Bicubic(current) + PixelShuffle(conv(blocks(conv(inputs)))); `kind` picks the inputs."""

        def __init__(self):
            super().__init__()
            # body and tail first: their initial weights are then the same for A, B and C
            self.blocks = nn.Sequential(*[Block() for _ in range(blocks)])
            self.tail = nn.Conv2d(width, 3 * SCALE * SCALE, 3, padding=1)
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)
            self.head = nn.Conv2d(3 if kind == "A" else 6, width, 3, padding=1)
            self.shuffle = nn.PixelShuffle(SCALE)

        def forward(self, cur, prev):
            if kind == "A":
                x = cur
            elif kind == "B":
                x = torch.cat([cur, prev], 1)
            else:
                x = torch.cat([cur, prev - cur], 1)
            up = F.interpolate(cur, scale_factor=SCALE, mode="bicubic", align_corners=False)
            return up + self.shuffle(self.tail(self.blocks(self.head(x))))

    return ProbeSR()


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------
def y_channel(rgb):
    """BT.601 luma (16..235) of RGB in [0, 1], channels first."""
    return 16.0 + (65.481 * rgb[:, 0] + 128.553 * rgb[:, 1] + 24.966 * rgb[:, 2])


def psnr_y(sr, hr, border: int = 4):
    """Per-sample PSNR-Y of 8-bit-rounded SR against HR, both (N, 3, H, W) in [0, 1]."""
    import torch  # noqa: PLC0415
    sr = torch.round(sr.clamp(0, 1) * 255) / 255
    diff = (y_channel(sr) - y_channel(hr))[:, border:-border, border:-border]
    mse = diff.pow(2).mean((1, 2))
    return 10 * torch.log10(255.0 ** 2 / mse.clamp_min(1e-10))


def to_tensor(u8):
    import torch  # noqa: PLC0415
    return torch.from_numpy(np.ascontiguousarray(u8)).permute(0, 3, 1, 2).float() / 255.0


def evaluate(model, val: dict, prev_key: str = "prev", batch: int = 24) -> list[float]:
    """Per-sample PSNR-Y on whole val frames; `model=None` scores bicubic."""
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415
    scores = []
    with torch.no_grad():
        for i in range(0, len(val["cur"]), batch):
            cur, prev, hr = (to_tensor(val[k][i:i + batch]) for k in ("cur", prev_key, "hr"))
            if model is None:
                sr = F.interpolate(cur, scale_factor=SCALE, mode="bicubic", align_corners=False)
            else:
                sr = model(cur, prev)
            scores += psnr_y(sr, hr).tolist()
    return scores


def by_bucket(scores, val: dict) -> dict:
    buckets = [bucket_of(str(c), float(q)) for c, q in zip(val["codec"], val["quality"])]
    out = {"all": float(np.mean(scores))}
    for b in BUCKETS[1:]:
        sel = [s for s, bb in zip(scores, buckets) if bb == b]
        out[b] = float(np.mean(sel)) if sel else float("nan")
    out["n"] = {b: buckets.count(b) for b in BUCKETS[1:]}
    return out


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------
def batch_of(train: dict, rng: np.random.Generator, size: int, patch: int):
    """Same random crop and flip / rotation for prev, cur and the matching HR crop."""
    idx = rng.integers(0, len(train["cur"]), size)
    prevs, curs, hrs = [], [], []
    for i in idx:
        y, x = rng.integers(0, LR - patch + 1, 2)
        p = train["prev"][i, y:y + patch, x:x + patch]
        c = train["cur"][i, y:y + patch, x:x + patch]
        h = train["hr"][i, y * SCALE:(y + patch) * SCALE, x * SCALE:(x + patch) * SCALE]
        rot, flip = int(rng.integers(4)), bool(rng.integers(2))
        ims = [np.rot90(a, rot) for a in (p, c, h)]
        if flip:
            ims = [a[:, ::-1] for a in ims]
        prevs.append(ims[0])
        curs.append(ims[1])
        hrs.append(ims[2])
    return to_tensor(np.stack(curs)), to_tensor(np.stack(prevs)), to_tensor(np.stack(hrs))


def train(args) -> None:
    import torch  # noqa: PLC0415
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    run = args.out / f"{args.model}_s{args.seed}"
    run.mkdir(parents=True, exist_ok=True)
    tr, val = load_split(args.out / "train.npz"), load_split(args.out / "val.npz")
    model = make_model(args.model)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps, eta_min=args.lr_min)
    print(f"model {args.model}: {params} parameters, {len(tr['cur'])} train / {len(val['cur'])} val samples",
          flush=True)
    start, running = time.time(), []
    for step in range(1, args.steps + 1):
        cur, prev, hr = batch_of(tr, rng, args.batch, args.patch)
        sr = model(cur, prev)
        loss = torch.log10((sr - hr).pow(2).mean((1, 2, 3)) + 1e-10).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running.append(-10 * loss.item())
        if step % args.log_every == 0:
            print(f"step {step}: train PSNR-RGB {np.mean(running):.3f} dB, lr {sched.get_last_lr()[0]:.2e}, "
                  f"{time.time() - start:.0f}s", flush=True)
            running = []
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            res = {"step": step, "wall_s": time.time() - start, **by_bucket(scores := evaluate(model, val), val)}
            res["scores"] = scores
            if args.model != "A":  # does B / C use the previous frame? score it with prev := cur
                res["prev_is_cur"] = by_bucket(evaluate(model, val, prev_key="cur"), val)["all"]
            model.train()
            (run / f"eval_{step}.json").write_text(json.dumps(res))
            torch.save(model.state_dict(), run / f"ckpt_{step}.pt")
            extra = f", prev:=cur {res['prev_is_cur']:.3f}" if "prev_is_cur" in res else ""
            print(f"eval {step}: " + ", ".join(f"{b} {res[b]:.3f}" for b in BUCKETS) + extra, flush=True)
    print(f"done in {time.time() - start:.0f}s", flush=True)


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------
def report(args) -> None:
    import torch  # noqa: PLC0415
    torch.set_num_threads(1)
    val = load_split(args.out / "val.npz")
    bic_scores = evaluate(None, val)
    bic = by_bucket(bic_scores, val)
    n = bic["n"]
    lines = ["| model | step | " + " | ".join(f"{b} (n={n.get(b, len(bic_scores))})" for b in BUCKETS)
             + " | prev:=cur |", "|" + "---|" * (len(BUCKETS) + 3)]
    lines.append("| bicubic | - | " + " | ".join(f"{bic[b]:.3f}" for b in BUCKETS) + " | |")
    results = {}
    for run in sorted(p for p in args.out.iterdir() if p.is_dir() and any(p.glob("eval_*.json"))):
        for ev in sorted(run.glob("eval_*.json"), key=lambda p: int(p.stem.split("_")[1])):
            res = json.loads(ev.read_text())
            results[(run.name, res["step"])] = res
            pc = f"{res['prev_is_cur']:.3f}" if "prev_is_cur" in res else ""
            lines.append(f"| {run.name} | {res['step']} | " + " | ".join(f"{res[b]:.3f}" for b in BUCKETS)
                         + f" | {pc} |")
    lines += ["", "Gain over A of the same seed and step (dB; mean per-sample difference, paired "
              "95% interval of the overall mean):", "",
              "| run | step | " + " | ".join(BUCKETS) + " | 95% CI (all) |", "|" + "---|" * (len(BUCKETS) + 3)]
    for (name, step), res in sorted(results.items()):
        kind, seed = name.split("_", 1)
        ref = results.get((f"A_{seed}", step))
        if kind == "A" or ref is None:
            continue
        d = np.array(res["scores"]) - np.array(ref["scores"])
        ci = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
        lines.append(f"| {name} - A_{seed} | {step} | " + " | ".join(f"{res[b] - ref[b]:+.3f}" for b in BUCKETS)
                     + f" | +-{ci:.3f} |")
    text = "\n".join(lines)
    (args.out / "report.md").write_text(text + "\n")
    print(text)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/temporal_probe"))
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build train.npz and val.npz")
    b.add_argument("--data", type=Path, default=Path("data"))
    b.add_argument("--train-clips", type=int, default=16, help="clips per train photograph")
    b.add_argument("--val-clips", type=int, default=8, help="clips per val photograph")
    b.add_argument("--keep", type=int, default=3, help="frames t >= 1 kept per clip")
    b.add_argument("--workers", type=int, default=2)
    b.add_argument("--tag", default="temporal_probe", help="seed tag")
    b.add_argument("--force", action="store_true")
    t = sub.add_parser("train", help="train one model, evaluating every --eval-every steps")
    t.add_argument("--model", choices=("A", "B", "C"), required=True,
                   help="A: current frame; B: current + previous; C: current + (previous - current)")
    t.add_argument("--steps", type=int, default=4000)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--patch", type=int, default=32, help="LR crop side")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--lr-min", type=float, default=1e-5)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--log-every", type=int, default=200)
    t.add_argument("--eval-every", type=int, default=1000)
    sub.add_parser("report", help="tables of every run under --out (report.md)")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    {"build": build, "train": train, "report": report}[args.cmd](args)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
