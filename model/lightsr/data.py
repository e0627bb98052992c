# SPDX-License-Identifier: MPL-2.0
"""Training data: real photographs fetched by package name, LR/HR pairs, patches, loaders.

Stages (`lightsr data STAGE`, `all` runs the first three in order):

* ``fetch``: copy the photographs bundled in the installed scikit-image package and those
  shipped by Debian wallpaper packages (``apt-get download`` + ``dpkg-deb -x``) into
  ``ROOT/hr/<id>.png``; write ``ROOT/manifest.json`` with provenance (package, version,
  path inside the package, sha256 of the original file) and licence per image, and a
  deterministic hash-based train / val split.
* ``pairs``: ``ROOT/lr_x{s}/<id>.png`` by MATLAB-style antialiased bicubic downscaling of the
  HR image cropped to a multiple of ``s``; optional degraded variants
  (``--degrade jpeg:Q`` -> ``lr_x{s}_jpeg{Q}``, ``--degrade h264:QP`` -> ``lr_x{s}_h264qp{QP}``
  through GStreamer's x264enc / avdec_h264).
* ``pack``: training patches (HR + aligned LR crops of every scale) and centre crops of the
  validation images in one compressed ``.npz`` below a size budget, so a training run can be
  carried to a machine without internet.
* ``clips``: compressed training / validation clips (``lightsr.clips``: camera motion over a
  photograph, blur / noise / resize, a real codec pass through PyAV) cached in
  ``ROOT/clips_x{s}/{train,val}``; not part of ``all``.

The degradations themselves live in ``lightsr.degradations``.
`PairedImageDataset` yields ``{'lq', 'gt'}`` float tensors in 0..255 (the generator's input
range) with random aligned crops, flips and 90-degree rotations; `build_dataloader` keeps
the CPU cores busy with worker processes.
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lightsr.degradations import DataError, degrade, downscale_u8, jpeg_degrade, mod_crop, parse_degradation

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "data"
DEFAULT_PACKAGES = ("mate-backgrounds", "lomiri-wallpapers-16.04", "plasma-workspace-wallpapers")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

# scikit-image's bundled colour photographs, with the licence stated in each loader's
# docstring (skimage.data.<name>.__doc__, also rendered in the skimage.data API docs).
SKIMAGE_PHOTOS = {
    "astronaut": ("astronaut.png", "public domain (NASA, no known copyright restrictions)"),
    "chelsea": ("chelsea.png", "CC0-1.0 (photographer Stefan van der Walt)"),
    "coffee": ("coffee.png", "CC0-1.0 (photographer Rachel Michetti)"),
    "hubble_deep_field": ("hubble_deep_field.jpg", "public domain (NASA)"),
    "immunohistochemistry": ("ihc.png", "no known copyright restrictions"),
    "motorcycle_left": ("motorcycle_left.png", "Middlebury 2014 stereo benchmark, no licence stated in scikit-image"),
    "retina": ("retina.jpg", "CC0-1.0 (Mikael Haggstrom, Wikimedia Commons)"),
    "rocket": ("rocket.jpg", "public domain (SpaceX)"),
}
SKIMAGE_DEFAULT = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "retina", "rocket")

# Wallpaper packages also ship rendered artwork; photographs are what the element restores,
# so by default only these paths are taken (`--all-images` takes everything).
PHOTO_GLOBS = {
    "mate-backgrounds": ("usr/share/backgrounds/mate/nature/*",),
    "lomiri-wallpapers-16.04": ("usr/share/backgrounds/*",),
    "plasma-workspace-wallpapers": tuple(
        f"usr/share/wallpapers/{name}/*" for name in (
            "Autumn", "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
            "FallenLeaf", "Grey", "Kite", "OneStandsOut", "Path", "summer_1am")),
}


def lr_dir_name(scale: int, degradation: str | None = None) -> str:
    if not degradation:
        return f"lr_x{scale}"
    kind, value = parse_degradation(degradation)
    return f"lr_x{scale}_jpeg{value}" if kind == "jpeg" else f"lr_x{scale}_h264qp{value}"


# --------------------------------------------------------------------------------------
# Fetching: scikit-image and Debian packages
# --------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def split_of(image_id: str, val_percent: float) -> str:
    """Deterministic split: the first 8 bytes of sha256(id) as a fraction of 2**64."""
    fraction = int.from_bytes(hashlib.sha256(image_id.encode()).digest()[:8], "big") / 2 ** 64
    return "val" if fraction * 100 < val_percent else "train"


def save_hr(src: Path, dst: Path, max_side: int) -> tuple[int, int, bool]:
    """Convert to RGB PNG; originals over `max_side` are shrunk (PIL bicubic, antialiased)."""
    with Image.open(src) as im:
        im = im.convert("RGB")
        shrunk = max(im.size) > max_side
        if shrunk:
            factor = max_side / max(im.size)
            im = im.resize((round(im.width * factor), round(im.height * factor)), Image.Resampling.BICUBIC)
        dst.parent.mkdir(parents=True, exist_ok=True)
        im.save(dst, optimize=False, compress_level=1)
        return im.width, im.height, shrunk


def fetch_skimage(root: Path, names: tuple[str, ...], max_side: int) -> list[dict]:
    import skimage
    data_dir = Path(skimage.__file__).parent / "data"
    entries = []
    for name in names:
        if name not in SKIMAGE_PHOTOS:
            raise DataError(f"unknown scikit-image photo '{name}': choose from {sorted(SKIMAGE_PHOTOS)}")
        filename, licence = SKIMAGE_PHOTOS[name]
        src = data_dir / filename
        if not src.exists():
            raise DataError(f"{src} missing: reinstall scikit-image (pip install --force-reinstall scikit-image)")
        image_id = f"skimage-{name}"
        w, h, shrunk = save_hr(src, root / "hr" / f"{image_id}.png", max_side)
        doc = (getattr(__import__("skimage.data", fromlist=[name]), name).__doc__ or "").strip()
        entries.append({
            "id": image_id, "file": f"hr/{image_id}.png", "width": w, "height": h, "shrunk_from_original": shrunk,
            "source": {"kind": "pypi", "package": "scikit-image", "version": skimage.__version__,
                       "path": f"skimage/data/{filename}", "sha256": sha256_file(src)},
            "licence": licence, "licence_evidence": f"skimage.data.{name} docstring: {doc[:600]}",
        })
    return entries


def apt_download(package: str, dest: Path) -> Path:
    """`apt-get download PKG` into `dest`; returns the .deb path (reused when already there)."""
    dest.mkdir(parents=True, exist_ok=True)
    existing = sorted(dest.glob(f"{package}_*.deb"))
    if existing:
        return existing[-1]
    if shutil.which("apt-get") is None:
        raise DataError("apt-get not found: wallpaper packages need a Debian/Ubuntu system (or pass --packages '')")
    run = subprocess.run(["apt-get", "download", package], cwd=dest, capture_output=True, text=True, timeout=900)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if run.returncode != 0 or not debs:
        raise DataError(f"apt-get download {package} failed: {run.stderr.strip()[-400:]} "
                        f"(run `apt-get update` first, or check the package name)")
    return debs[-1]


def deb_version(deb: Path) -> str:
    out = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def parse_dep5(text: str) -> list[tuple[list[str], str, str]]:
    """(file globs, licence short name, copyright) per `Files:` stanza of a DEP-5 copyright file."""
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        fields, key = {}, None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        if "files" in fields:
            globs = fields["files"].split()
            licence = fields.get("license", "").split("\n")[0].strip()
            stanzas.append((globs, licence, fields.get("copyright", "")))
    return stanzas


def licence_for(path_in_pkg: str, stanzas: list[tuple[list[str], str, str]]) -> tuple[str, str]:
    """Last matching stanza wins (DEP-5 rule); paths are matched with and without `usr/share/...`."""
    best = ("see copyright file", "")
    for globs, licence, holder in stanzas:
        for glob in globs:
            # source-tree paths (16.04/x.jpg) differ from installed ones (usr/share/backgrounds/x.jpg)
            same_file = not any(c in glob for c in "*?[") and Path(glob).name == Path(path_in_pkg).name
            if fnmatch.fnmatch(path_in_pkg, glob) or fnmatch.fnmatch(path_in_pkg, f"*/{glob}") or same_file:
                best = (licence or best[0], holder)
    return best


def wallpaper_files(tree: Path, package: str, all_images: bool) -> list[Path]:
    """Largest regular file per wallpaper (plasma ships many sizes; mate some _WxH copies)."""
    candidates = [p for p in tree.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not p.is_symlink() and p.stat().st_size > 0 and "screenshot" not in p.name]
    if not all_images:
        globs = PHOTO_GLOBS.get(package, ("*",))
        candidates = [p for p in candidates
                      if any(fnmatch.fnmatch(str(p.relative_to(tree)), g + "*") for g in globs)]
    best: dict[str, Path] = {}
    for path in candidates:
        rel = path.relative_to(tree)
        key = (str(rel.parent.parent) if "contents" in rel.parts else
               re.sub(r"_\d+x\d+$", "", str(rel.with_suffix(""))))
        if key not in best or path.stat().st_size > best[key].stat().st_size:
            best[key] = path
    return sorted(best.values())


def image_id_for(package: str, rel: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9]+", "-", rel.replace("usr/share/", "")).strip("-")
    return f"{package}-{stem}"[:120]


def fetch_debian(root: Path, package: str, max_side: int, all_images: bool) -> list[dict]:
    deb = apt_download(package, root / "cache" / "debs")
    version = deb_version(deb)
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
        copyright_path = tree / "usr/share/doc" / package / "copyright"
        copyright_text = copyright_path.read_text(errors="replace") if copyright_path.exists() else ""
        keep = root / "licences" / f"{package}.copyright"
        keep.parent.mkdir(parents=True, exist_ok=True)
        keep.write_text(copyright_text)
        stanzas = parse_dep5(copyright_text)
        entries = []
        for path in wallpaper_files(tree, package, all_images):
            rel = str(path.relative_to(tree))
            image_id = image_id_for(package, rel)
            w, h, shrunk = save_hr(path, root / "hr" / f"{image_id}.png", max_side)
            licence, holder = licence_for(rel, stanzas)
            entries.append({
                "id": image_id, "file": f"hr/{image_id}.png", "width": w, "height": h,
                "shrunk_from_original": shrunk,
                "source": {"kind": "debian", "package": package, "version": version, "path": "/" + rel,
                           "deb": deb.name, "sha256": sha256_file(path)},
                "licence": licence, "copyright": holder,
                "licence_evidence": f"licences/{package}.copyright (from /usr/share/doc/{package}/copyright)",
            })
    if not entries:
        raise DataError(f"package {package}: no images found (try --all-images)")
    return entries


def fetch(root: Path, packages: tuple[str, ...], skimage_names: tuple[str, ...], val_percent: float,
          max_side: int, all_images: bool) -> dict:
    entries = fetch_skimage(root, skimage_names, max_side) if skimage_names else []
    for package in packages:
        print(f"data: {package}: downloading + extracting", flush=True)
        entries += fetch_debian(root, package, max_side, all_images)
    for entry in entries:
        entry["split"] = split_of(entry["id"], val_percent)
    if entries and not any(e["split"] == "val" for e in entries):
        # tiny sources: keep at least one validation image, chosen by the same hash order
        first = min(entries, key=lambda e: hashlib.sha256(e["id"].encode()).hexdigest())
        first["split"] = "val"
    manifest = {"version": 1, "val_percent": val_percent, "max_side": max_side,
                "split_rule": "val if sha256(id)[:8 bytes] / 2**64 * 100 < val_percent",
                "images": entries}
    write_json_atomic(root / "manifest.json", manifest)
    n_val = sum(e["split"] == "val" for e in entries)
    print(f"data: {len(entries)} images ({len(entries) - n_val} train, {n_val} val) -> {root / 'manifest.json'}")
    return manifest


def write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def load_manifest(root: Path) -> dict:
    path = Path(root) / "manifest.json"
    if not path.exists():
        raise DataError(f"{path} not found: run `lightsr data fetch --root {root}` first")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------------------
# LR/HR pairs
# --------------------------------------------------------------------------------------
def read_rgb(path: Path) -> np.ndarray:
    if not Path(path).exists():
        raise DataError(f"{path} not found: run `lightsr data pairs` (or `lightsr data all`) first")
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def make_pairs(root: Path, scales: tuple[int, ...], degradations: tuple[str, ...] = ()) -> int:
    manifest = load_manifest(root)
    made = 0
    for entry in manifest["images"]:
        hr = read_rgb(root / entry["file"])
        for scale in scales:
            lr_path = root / lr_dir_name(scale) / f"{entry['id']}.png"
            if not lr_path.exists():
                lr_path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(downscale_u8(mod_crop(hr, scale), scale)).save(lr_path)
                made += 1
            for spec in degradations:
                out = root / lr_dir_name(scale, spec) / f"{entry['id']}.png"
                if not out.exists():
                    out.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(degrade(read_rgb(lr_path), spec)).save(out)
                    made += 1
    print(f"data: {made} LR images written for scales {list(scales)} {list(degradations)}")
    return made


def load_split(root: Path, split: str, scale: int, degradation: str | None = None
               ) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """(HR mod-cropped, LR, ids) of one split, as uint8 HWC arrays."""
    manifest = load_manifest(root)
    hrs, lrs, ids = [], [], []
    for entry in manifest["images"]:
        if entry["split"] != split:
            continue
        hrs.append(mod_crop(read_rgb(root / entry["file"]), scale))
        lrs.append(read_rgb(root / lr_dir_name(scale, degradation) / f"{entry['id']}.png"))
        ids.append(entry["id"])
    if not hrs:
        raise DataError(f"no '{split}' images in {root}/manifest.json: fetch more sources or raise --val-percent")
    return hrs, lrs, ids


# --------------------------------------------------------------------------------------
# Packed patches (carry-able training set)
# --------------------------------------------------------------------------------------
def centre_crop(hr: np.ndarray, lr: np.ndarray, scale: int, hr_size: int) -> tuple[np.ndarray, np.ndarray]:
    lr_size = hr_size // scale
    lh, lw = min(lr.shape[0], lr_size), min(lr.shape[1], lr_size)
    top, left = (lr.shape[0] - lh) // 2, (lr.shape[1] - lw) // 2
    return (hr[top * scale:(top + lh) * scale, left * scale:(left + lw) * scale],
            lr[top:top + lh, left:left + lw])


def pack_patches(root: Path, out: Path, scales: tuple[int, ...], patch: int, max_mb: float,
                 val_crop: int = 384, seed: int = 0, degradations: tuple[str, ...] = ()) -> dict:
    """Write `out` (.npz): hr (N,P,P,3) u8, lr_x{s} (N,P/s,P/s,3) u8 per scale (and degraded
    variants), plus val_hr_x{s}_{i} / val_lr_x{s}_{i} centre crops and the manifest JSON.

    Patches are crops of the full-image HR / LR pairs at LR-aligned positions, so they are
    exactly what the folder dataset would cut; they are spread over the training images in
    proportion to their area. N is as large as the compressed file allows under `max_mb`
    (first guess from the raw size and a typical 1.7x deflate ratio, then corrected).
    """
    lcm = math.lcm(*scales)
    if patch % lcm:
        raise DataError(f"--patch {patch} must be a multiple of every scale ({list(scales)}); try {patch - patch % lcm}")
    manifest = load_manifest(root)
    variants = [(s, d) for s in scales for d in (None, *degradations)]
    val_arrays = validation_crops(root, scales, val_crop)
    val_bytes = sum(a.nbytes for a in val_arrays.values())
    per_patch = patch * patch * 3 + sum((patch // s) ** 2 * 3 for s, _ in variants)
    count = int((max_mb * 1e6 * 1.7 - val_bytes) // per_patch)
    if count < 1:
        raise DataError(f"--max-mb {max_mb} leaves no room for patches of {patch}px: raise it or lower --val-crop")
    train = [e for e in manifest["images"] if e["split"] == "train"]
    hr_full = [read_rgb(root / e["file"]) for e in train]
    lr_full = {v: [read_rgb(root / lr_dir_name(*v) / f"{e['id']}.png") for e in train] for v in variants}
    for _ in range(4):
        arrays, owners = sample_patches(hr_full, lr_full, patch, lcm, count, seed)
        info = {"patch": patch, "scales": list(scales), "degradations": list(degradations), "count": count,
                "seed": seed, "val_crop": val_crop,
                "patches_per_image": {train[i]["id"]: int((owners == i).sum()) for i in range(len(train))},
                "manifest": manifest}
        arrays.update(val_arrays)
        arrays["info_json"] = np.frombuffer(json.dumps(info).encode(), dtype=np.uint8)
        size_mb = write_npz_atomic(out, arrays)
        if size_mb <= max_mb:
            break
        count = int(count * max_mb / size_mb * 0.97)
    else:
        raise DataError(f"could not fit the pack under {max_mb} MB: raise --max-mb or lower --patch")
    print(f"data: packed {count} patches of {patch}px (+{len(val_arrays) // 2} val crops) -> {out} ({size_mb:.1f} MB)")
    return info


def validation_crops(root: Path, scales: tuple[int, ...], val_crop: int) -> dict[str, np.ndarray]:
    arrays = {}
    for scale in scales:
        hrs, lrs, _ = load_split(root, "val", scale)
        for i, (hr, lr) in enumerate(zip(hrs, lrs)):
            arrays[f"val_hr_x{scale}_{i}"], arrays[f"val_lr_x{scale}_{i}"] = centre_crop(hr, lr, scale, val_crop)
    return arrays


def sample_patches(hr_full, lr_full, patch: int, align: int, count: int, seed: int):
    """`count` HR patches (positions multiple of `align`) and the matching LR crops."""
    areas = np.array([h.shape[0] * h.shape[1] for h in hr_full], dtype=np.float64)
    rng = np.random.default_rng(seed)
    owners = rng.choice(len(hr_full), size=count, p=areas / areas.sum())
    hr_out = np.empty((count, patch, patch, 3), np.uint8)
    lr_out = {v: np.empty((count, patch // v[0], patch // v[0], 3), np.uint8) for v in lr_full}
    for n, owner in enumerate(owners):
        hr = hr_full[owner]
        top = rng.integers(0, (hr.shape[0] - patch) // align + 1) * align
        left = rng.integers(0, (hr.shape[1] - patch) // align + 1) * align
        hr_out[n] = hr[top:top + patch, left:left + patch]
        for (s, d), out_arr in lr_out.items():
            out_arr[n] = lr_full[(s, d)][owner][top // s:(top + patch) // s, left // s:(left + patch) // s]
    arrays = {"hr": hr_out, **{lr_dir_name(s, d): a for (s, d), a in lr_out.items()}}
    return arrays, owners


def write_npz_atomic(out: Path, arrays: dict) -> float:
    """Compressed .npz written next to `out` then renamed; returns its size in MB."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, out)
    return out.stat().st_size / 1e6


def load_pack(path: Path, split: str, scale: int, degradation: str | None = None
              ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    path = Path(path)
    if not path.exists():
        raise DataError(f"patch pack {path} not found: build it with `lightsr data pack --out {path}`")
    with np.load(path) as pack:
        if split == "train":
            key = lr_dir_name(scale, degradation)
            if key not in pack:
                raise DataError(f"{path} has no '{key}' patches: rebuild it with --scales including {scale}")
            return list(pack["hr"]), list(pack[key])
        n = sum(k.startswith(f"val_hr_x{scale}_") for k in pack.files)
        if n == 0:
            raise DataError(f"{path} has no x{scale} validation crops: rebuild it with --scales including {scale}")
        return [pack[f"val_hr_x{scale}_{i}"] for i in range(n)], [pack[f"val_lr_x{scale}_{i}"] for i in range(n)]


# --------------------------------------------------------------------------------------
# Dataset + loader
# --------------------------------------------------------------------------------------
@dataclass
class Augment:
    gt_size: int = 48
    use_flip: bool = True
    use_rot: bool = True
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (30, 95)


class PairedImageDataset(torch.utils.data.Dataset):
    """Aligned LR/HR pairs held in memory (uint8 HWC).

    Training (`augment` given): random aligned crop of `gt_size` HR pixels, horizontal /
    vertical flips, transposition (with flips: all 8 rotations / reflections), optional
    on-the-fly JPEG of the LR crop. Validation (`augment` None): whole images.
    Items are {'lq': (3,h,w) float 0..255, 'gt': (3,h*s,w*s) float 0..255}.
    """

    def __init__(self, hrs: list[np.ndarray], lrs: list[np.ndarray], scale: int,
                 augment: Augment | None = None, length: int | None = None, seed: int = 0):
        if len(hrs) != len(lrs) or not hrs:
            raise DataError(f"dataset needs as many HR as LR images (got {len(hrs)} / {len(lrs)}), at least one")
        for hr, lr in zip(hrs, lrs):
            if hr.shape[0] != lr.shape[0] * scale or hr.shape[1] != lr.shape[1] * scale:
                raise DataError(f"HR {hr.shape[:2]} is not LR {lr.shape[:2]} x{scale}: rebuild the pairs")
        if augment and min(min(lr.shape[:2]) for lr in lrs) * scale < augment.gt_size:
            raise DataError(f"gt_size {augment.gt_size} exceeds the smallest HR image/patch: lower it")
        if augment and augment.gt_size % scale:
            raise DataError(f"gt_size {augment.gt_size} must be a multiple of scale {scale}")
        self.hrs, self.lrs, self.scale, self.augment = hrs, lrs, scale, augment
        self.length = length or len(hrs)
        self.seed = seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: int) -> dict:
        """`key` may exceed len(self): a sampler passes epoch * len + index, and the
        augmentation is drawn from an RNG seeded by (seed, key), so it is reproducible
        whatever the worker count and across resumed runs."""
        i = key % self.length % len(self.hrs)
        hr, lr = self.hrs[i], self.lrs[i]
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, key])
            hr, lr = self.random_crop(hr, lr, rng)
            hr, lr = self.flip_rotate(hr, lr, rng)
            if self.augment.jpeg_prob > 0 and rng.random() < self.augment.jpeg_prob:
                lr = jpeg_degrade(np.ascontiguousarray(lr), int(rng.integers(*self.augment.jpeg_quality)))
        return {"lq": to_tensor(lr), "gt": to_tensor(hr)}

    def random_crop(self, hr, lr, rng: np.random.Generator):
        lq_size = self.augment.gt_size // self.scale
        top = int(rng.integers(0, lr.shape[0] - lq_size + 1))
        left = int(rng.integers(0, lr.shape[1] - lq_size + 1))
        s = self.scale
        return (hr[top * s:(top + lq_size) * s, left * s:(left + lq_size) * s],
                lr[top:top + lq_size, left:left + lq_size])

    def flip_rotate(self, hr, lr, rng: np.random.Generator):
        if self.augment.use_flip and rng.random() < 0.5:
            hr, lr = hr[:, ::-1], lr[:, ::-1]
        if self.augment.use_rot and rng.random() < 0.5:
            hr, lr = hr[::-1], lr[::-1]
        if self.augment.use_rot and rng.random() < 0.5:
            hr, lr = hr.transpose(1, 0, 2), lr.transpose(1, 0, 2)
        return hr, lr


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()


def build_dataset(opt: dict, scale: int, train: bool) -> PairedImageDataset:
    """Dataset from a config's `datasets.train` / `datasets.val` entry.

    Keys: `clips` (a `lightsr data clips` folder, e.g. data/clips_x4: decoded compressed frames and
    their HR frames, split/ below it; `clips_per_image` keeps the clips of index below N of each
    photograph, `limit_clips` the first N clips), `pack` (path of a
    `lightsr data pack` file) or `root` (a `lightsr data` folder);
    `degradation` (e.g. 'jpeg:40', a pre-built LR variant); train: `gt_size`, `use_flip`,
    `use_rot`, `jpeg_prob`, `jpeg_quality`, `dataset_enlarge_ratio`; val: `crop` (HR centre
    crop size, keeps validation quick on CPU).
    """
    split = "train" if train else "val"
    degradation = opt.get("degradation")
    if opt.get("clips"):
        from lightsr.clips import load_clip_frames  # noqa: PLC0415
        hrs, lrs, _ = load_clip_frames(resolve_path(opt["clips"]) / split, opt.get("limit_clips"),
                                       opt.get("clips_per_image"))
    elif opt.get("pack"):
        hrs, lrs = load_pack(resolve_path(opt["pack"]), split, scale, degradation)
    elif opt.get("root"):
        hrs, lrs, _ = load_split(resolve_path(opt["root"]), split, scale, degradation)
    else:
        raise DataError(f"datasets.{split}: give `clips: CLIP_DIR`, `pack: FILE.npz` or `root: DATA_DIR`")
    if not train:
        if opt.get("crop"):
            pairs = [centre_crop(h, l, scale, int(opt["crop"])) for h, l in zip(hrs, lrs)]
            hrs, lrs = [p[0] for p in pairs], [p[1] for p in pairs]
        return PairedImageDataset(hrs, lrs, scale)
    augment = Augment(gt_size=int(opt.get("gt_size", 48)), use_flip=bool(opt.get("use_flip", True)),
                      use_rot=bool(opt.get("use_rot", True)), jpeg_prob=float(opt.get("jpeg_prob", 0.0)),
                      jpeg_quality=tuple(opt.get("jpeg_quality", (30, 95))))
    length = len(hrs) * int(opt.get("dataset_enlarge_ratio", 1))
    return PairedImageDataset(hrs, lrs, scale, augment, length)


def resolve_path(path: str | Path) -> Path:
    """Config paths are relative to the repository root (where data/ and runs/ live)."""
    path = Path(os.path.expanduser(str(path)))
    return path if path.is_absolute() or path.exists() else DEFAULT_ROOT.parent / path


def seed_worker(worker_id: int) -> None:
    np.random.seed(torch.initial_seed() % 2 ** 32)
    torch.set_num_threads(1)


def build_dataloader(dataset, opt: dict, sampler=None, device: str = "cpu", seed: int = 0):
    """Loader for training: `num_worker_per_gpu` workers (default 2: keeps two cores decoding
    and cropping while the main process trains), persistent, prefetching 4 batches each."""
    workers = int(opt.get("num_worker_per_gpu", 2))
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=int(opt.get("batch_size_per_gpu", 16)), shuffle=sampler is None, sampler=sampler,
        num_workers=workers, persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
        pin_memory=device.startswith("cuda"), drop_last=True, worker_init_fn=seed_worker, generator=generator)


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lightsr data", description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("fetch", "pairs", "pack", "clips", "all"), nargs="?", default="all")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="data folder (default: repo data/)")
    parser.add_argument("--packages", default=",".join(DEFAULT_PACKAGES),
                        help="comma-separated Debian wallpaper packages ('' for none)")
    parser.add_argument("--skimage", default=",".join(SKIMAGE_DEFAULT),
                        help=f"comma-separated scikit-image photos ('' for none) from {sorted(SKIMAGE_PHOTOS)}")
    parser.add_argument("--all-images", action="store_true", help="also take rendered artwork from the packages")
    parser.add_argument("--val-percent", type=float, default=20.0, help="share of images held out (hash of the id)")
    parser.add_argument("--max-side", type=int, default=2040, help="shrink originals larger than this (DIV2K size)")
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--degrade", action="append", default=[], help="jpeg:Q or h264:QP (repeatable)")
    parser.add_argument("--out", type=Path, help="pack file (default ROOT/patches_p{patch}.npz)")
    parser.add_argument("--patch", type=int, default=144, help="HR patch size in the pack")
    parser.add_argument("--max-mb", type=float, default=58.0, help="pack size budget (uncompressed arrays)")
    parser.add_argument("--val-crop", type=int, default=384, help="HR centre crop of validation images in the pack")
    parser.add_argument("--seed", type=int, default=0)
    clips = parser.add_argument_group("clips (compressed training clips, `lightsr.clips`)")
    clips.add_argument("--split", choices=("train", "val"), action="append",
                       help="photographs to cut clips from (repeatable; default both)")
    clips.add_argument("--clips-per-image", type=int, default=12, help="clips per training photograph")
    clips.add_argument("--val-clips-per-image", type=int, default=3, help="clips per validation photograph")
    clips.add_argument("--lr-size", type=int, default=64, help="LR frame side (HR = side x scale)")
    clips.add_argument("--keep", type=int, default=3, help="decoded frames kept per clip")
    clips.add_argument("--clean-prob", type=float, default=0.2, help="share of clips without codec")
    clips.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    names = lambda s: tuple(x for x in s.split(",") if x)  # noqa: E731
    for spec in args.degrade:
        parse_degradation(spec)
    try:
        if args.stage in ("fetch", "all"):
            fetch(args.root, names(args.packages), names(args.skimage), args.val_percent, args.max_side,
                  args.all_images)
        if args.stage in ("pairs", "all"):
            make_pairs(args.root, tuple(args.scales), tuple(args.degrade))
        if args.stage in ("pack", "all"):
            out = args.out or args.root / f"patches_p{args.patch}.npz"
            pack_patches(args.root, out, tuple(args.scales), args.patch, args.max_mb, args.val_crop, args.seed,
                         tuple(args.degrade))
        if args.stage == "clips":
            from lightsr.clips import build_clip_cache  # noqa: PLC0415
            for scale in args.scales:
                for split in args.split or ("train", "val"):
                    count = args.clips_per_image if split == "train" else args.val_clips_per_image
                    build_clip_cache(args.root, scale, split, count, args.lr_size, keep=args.keep,
                                     clean_prob=args.clean_prob, seed=args.seed, workers=args.workers)
    except DataError as err:
        print(f"lightsr data: {err}", file=sys.stderr)
        return 1
    return 0
