# SPDX-License-Identifier: MPL-2.0
"""`lightsr eval`: quality and cost of every rung of a bundle's ladder, and of bicubic.

For a folder of HR images: LR = MATLAB-style antialiased bicubic downscaling (the data
module's `downscale_u8`, the same as training), then every variant of the bundle's ladder
(plus `--extra name=BUNDLE` comparison bundles, plus bicubic) upscales it through the
deployed uint8 module. Reported per variant: PSNR / SSIM on Y (border = scale), NIQE with
the official parameters, BRISQUE where the `brisque` package is installed, params, MACs at
320x180, median CPU ms per frame at 320x180 and 640x360 with 2 torch threads. Writes
`eval.md` (a REPORT.md-ready table), `eval.json` and `crops_x{scale}.png`.

    lightsr eval --bundle bundles/default --hr-dir data/val/hr --scale 4 --out runs/eval
"""
import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from lightsr import iqa, losses
from lightsr.bundle import BundleError, validate_bundle
from lightsr.data import read_rgb
from lightsr.degradations import downscale_u8, mod_crop

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
LATENCY_SIZES = ((180, 320), (360, 640))  # (H, W) of the LR frame
CROP = 128  # HR pixels per side of each crop in the side-by-side PNG
CROP_ROWS = 3  # images shown in the PNG (only their outputs are kept in memory)


@dataclass
class Rung:
    """One upscaler under evaluation: a TorchScript uint8 NHWC module and its manifest entry."""
    name: str
    kind: str
    module: torch.jit.ScriptModule
    entry: dict = field(default_factory=dict)
    source: str = ""


@dataclass
class RungResult:
    name: str
    kind: str
    source: str
    params: int
    macs_320x180: int | None
    cpu_ms: dict
    psnr_y: float | None
    ssim_y: float | None
    niqe: float | None
    brisque: float | None
    per_image: list


# --------------------------------------------------------------------------- inputs
def list_images(hr_dir: Path) -> list[Path]:
    if not hr_dir.is_dir():
        raise SystemExit(f"lightsr eval: --hr-dir {hr_dir} is not a directory of HR images")
    images = sorted(p for p in hr_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise SystemExit(f"lightsr eval: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {hr_dir}")
    return images


def load_pairs(paths: list[Path], scale: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, HR mod-cropped to the scale, LR) per image; LR as the data module makes it."""
    pairs = []
    for p in paths:
        hr = mod_crop(read_rgb(p), scale)
        if min(hr.shape[:2]) < 11 + 2 * scale:
            raise SystemExit(f"lightsr eval: {p} is too small ({hr.shape[1]}x{hr.shape[0]}) "
                             "for SSIM after cropping the border; use larger HR images")
        pairs.append((p.name, hr, downscale_u8(hr, scale)))
    return pairs


def ladder_rungs(bundle: Path, scale: int, prefix: str = "") -> list[Rung]:
    """The variants of `bundle`'s ladder for `scale`, heaviest first, loaded for CPU."""
    try:
        manifest = validate_bundle(bundle)
    except BundleError as e:
        raise SystemExit(f"lightsr eval: {e}") from e
    bundle_dir = bundle if bundle.is_dir() else bundle.parent
    ladders = {lad["scale"]: lad for lad in manifest["ladders"]}
    if scale not in ladders:
        raise SystemExit(f"lightsr eval: bundle {bundle} has no x{scale} ladder "
                         f"(it has {sorted(ladders)}); pass --scale with one of those")
    rungs = []
    for v in ladders[scale]["variants"]:
        module = torch.jit.load(str(bundle_dir / v["file"]), map_location="cpu").eval()
        name = f"{prefix}{v['name']}" if prefix else v["name"]
        rungs.append(Rung(name, v.get("kind", "learned"), module, v, str(bundle_dir)))
    return rungs


def parse_extra(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise SystemExit(f"lightsr eval: --extra expects NAME=BUNDLE, got '{spec}'")
    return name, Path(path)


def collect_rungs(bundle: Path, scale: int, extras: list[str]) -> list[Rung]:
    """Bundle ladder, comparison bundles' learned variants, and exactly one bicubic rung."""
    rungs = ladder_rungs(bundle, scale)
    for spec in extras:
        name, path = parse_extra(spec)
        rungs += [r for r in ladder_rungs(path, scale, prefix=f"{name}-") if r.kind != "bicubic"]
    if not any(r.kind == "bicubic" for r in rungs):
        from lightsr.deploy import bicubic_variant  # noqa: PLC0415
        rungs.append(Rung("bicubic", "bicubic", torch.jit.script(bicubic_variant(scale)),
                          {"params": 0}, "lightsr.deploy.bicubic_variant"))
    return rungs


# --------------------------------------------------------------------------- cost
def upscale(module, lr: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = module(torch.from_numpy(np.ascontiguousarray(lr))[None])
    return out[0].numpy()


def count_params(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def cpu_latency_ms(module, h: int, w: int, runs: int) -> float:
    """Median wall-clock ms of `runs` calls on a random uint8 (1, h, w, 3) frame, after a warm-up."""
    x = torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    times = []
    with torch.no_grad():
        module(x)
        for _ in range(runs):
            t0 = time.perf_counter()
            module(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


# --------------------------------------------------------------------------- quality
def smooth_field(h: int, w: int) -> torch.Tensor:
    """A smooth colour field (no detail at all) as uint8 (1, h, w, 3): what a sky, a wall or
    skin looks like to an upscaler, and where a fixed pattern would show."""
    yy, xx = torch.meshgrid(torch.arange(h) / h, torch.arange(w) / w, indexing="ij")
    rgb = torch.stack([200 + 40 * torch.sin(2 * torch.pi * (xx + 0.5 * yy)),
                       90 + 50 * torch.cos(2 * torch.pi * yy), 40 + 20 * xx], -1)
    return rgb.clamp(0, 255).round().to(torch.uint8)[None]


def fixed_pattern_rms(module, scale: int) -> float:
    """Grey levels RMS of the scale x scale tile that repeats in the high-pass output of a
    uint8 -> uint8 module on `smooth_field(64, 64)` (losses.FixedPatternLoss): the grid a
    PixelShuffle tail paints over smooth areas when pushed for texture. Shipped rungs stay
    under 0.75 (test_export)."""
    with torch.no_grad():
        out = module(smooth_field(64, 64))
    return float(losses.FixedPatternLoss(scale)(out.permute(0, 3, 1, 2).double())) ** 0.5


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _niqe_or_none(niqe, img: np.ndarray, border: int) -> float | None:
    try:
        return niqe(img, border=border)
    except ValueError as e:  # image smaller than two NIQE blocks
        print(f"lightsr eval: NIQE skipped: {e}", file=sys.stderr)
        return None


def score_image(sr: np.ndarray, hr: np.ndarray | None, scale: int, niqe, brisque) -> dict:
    row = {"niqe": _niqe_or_none(niqe, sr, scale), "brisque": brisque(sr) if brisque else None}
    if hr is not None:
        row["psnr_y"] = iqa.psnr_y(sr, hr, border=scale)
        row["ssim_y"] = iqa.ssim_y(sr, hr, border=scale)
    return row


def evaluate_rung(rung: Rung, pairs, scale: int, niqe, brisque, runs: int,
                  sizes=LATENCY_SIZES) -> tuple[RungResult, list[np.ndarray]]:
    outputs, per_image = [], []
    for name, hr, lr in pairs:
        sr = upscale(rung.module, lr)
        if sr.shape != hr.shape:
            raise SystemExit(f"lightsr eval: variant {rung.name} returned {sr.shape} for {name}, "
                             f"expected {hr.shape}: its scale does not match --scale {scale}")
        if len(outputs) < CROP_ROWS:
            outputs.append(sr)
        per_image.append({"image": name, **score_image(sr, hr, scale, niqe, brisque)})
    macs = rung.entry.get("macs_320x180")  # written by `lightsr export` from the eager net
    result = RungResult(
        name=rung.name, source=rung.source,
        kind=f"{rung.kind}, {rung.entry['objective']}" if rung.entry.get("objective") else rung.kind,
        params=int(rung.entry.get("params") or count_params(rung.module)),
        macs_320x180=None if macs is None else int(macs),
        cpu_ms={f"{w}x{h}": round(cpu_latency_ms(rung.module, h, w, runs), 2) for h, w in sizes} if runs else {},
        psnr_y=_mean([r["psnr_y"] for r in per_image]), ssim_y=_mean([r["ssim_y"] for r in per_image]),
        niqe=_mean([r["niqe"] for r in per_image]), brisque=_mean([r["brisque"] for r in per_image]),
        per_image=per_image)
    return result, outputs


def hr_reference(pairs, scale: int, niqe, brisque) -> RungResult:
    """No-reference scores of the HR images themselves: the floor the variants aim at."""
    per_image = [{"image": n, **score_image(hr, None, scale, niqe, brisque)} for n, hr, _ in pairs]
    return RungResult("hr (reference)", "reference", "", 0, None, {}, None, None,
                      _mean([r["niqe"] for r in per_image]), _mean([r["brisque"] for r in per_image]),
                      per_image)


# --------------------------------------------------------------------------- report
def _fmt(v, digits: int) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def markdown_table(results: list[RungResult], scale: int, meta: dict) -> str:
    sizes = [f"{w}x{h}" for h, w in LATENCY_SIZES]
    head = ["variant", "kind", "params", "GMACs 320x180"] + [f"CPU ms {s}" for s in sizes] + \
           ["PSNR-Y (dB)", "SSIM-Y", "NIQE", "BRISQUE"]
    lines = [f"### x{scale}: {meta['images']} images from `{meta['hr_dir']}`", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        ref = r.kind == "reference"
        cells = [r.name, r.kind, "" if ref else f"{r.params:,}",
                 "" if ref else _fmt(None if r.macs_320x180 is None else r.macs_320x180 / 1e9, 2)]
        cells += ["" if ref else _fmt(r.cpu_ms.get(s), 1) for s in sizes]
        cells += [_fmt(r.psnr_y, 2) if not ref else "", _fmt(r.ssim_y, 4) if not ref else "",
                  _fmt(r.niqe, 3), _fmt(r.brisque, 2)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"PSNR / SSIM on Y (BT.601), {scale} border pixels cropped; NIQE with the official "
              f"MATLAB parameters ({meta['niqe_params']}), lower is better; LR by MATLAB-style "
              f"bicubic downscaling. " + (f"CPU: median of {meta['runs']} runs, {meta['threads']} torch "
                                          f"threads, {meta['cpu']}, torch {meta['torch']}." if meta["runs"]
                                          else f"Not timed (--runs 0); torch {meta['torch']}."),
              "" if meta["brisque"] else f"{iqa.BRISQUE_MISSING}."]
    return "\n".join(lines).rstrip() + "\n"


def best_crop_origin(hr: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left of the most textured size x size window on a coarse grid (most telling crop)."""
    y = iqa.rgb_to_y(hr)
    energy = np.abs(np.diff(y, axis=0))[:, :-1] + np.abs(np.diff(y, axis=1))[:-1, :]
    best, origin = -1.0, (0, 0)
    step = max(size // 2, 1)
    for top in range(0, max(energy.shape[0] - size, 0) + 1, step):
        for left in range(0, max(energy.shape[1] - size, 0) + 1, step):
            e = float(energy[top:top + size, left:left + size].mean())
            if e > best:
                best, origin = e, (top, left)
    return origin


def crops_png(path: Path, names: list[str], outputs: list[list[np.ndarray]], pairs,
              rows: int = CROP_ROWS) -> None:
    """Side by side: one column per upscaler (bicubic first) then HR, one row per image."""
    label_h, pad = 14, 2
    size = min(CROP, *(min(hr.shape[:2]) for _, hr, _ in pairs[:rows]))
    cols = len(names) + 1
    canvas = Image.new("RGB", (cols * (size + pad), label_h + min(rows, len(pairs)) * (size + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, label in enumerate(names + ["HR"]):
        draw.text((c * (size + pad) + 2, 1), label[:size // 6], fill="black")
    for r, (_, hr, _) in enumerate(pairs[:rows]):
        top, left = best_crop_origin(hr, size)
        tiles = [o[r] for o in outputs] + [hr]
        for c, img in enumerate(tiles):
            tile = Image.fromarray(np.ascontiguousarray(img[top:top + size, left:left + size]))
            canvas.paste(tile, (c * (size + pad), label_h + r * (size + pad)))
    canvas.save(path)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --------------------------------------------------------------------------- command
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightsr eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, required=True, help="bundle directory or manifest.json")
    p.add_argument("--hr-dir", type=Path, required=True, help="folder of HR images (png/jpg/...)")
    p.add_argument("--scale", type=int, default=4, help="which ladder of the bundle (default 4)")
    p.add_argument("--out", type=Path, required=True, help="output folder for eval.md/json/png")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=BUNDLE",
                   help="comparison bundle (e.g. published=bundles/official); repeatable")
    p.add_argument("--runs", type=int, default=5, help="timed runs per size (median); 0 skips timing")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads for timing (default 2)")
    p.add_argument("--max-images", type=int, default=0, help="use only the first N images (0: all)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = list_images(args.hr_dir)
    paths = paths[: args.max_images] if args.max_images > 0 else paths
    pairs = load_pairs(paths, args.scale)
    rungs = collect_rungs(args.bundle, args.scale, args.extra)
    niqe_path = iqa.niqe_params_path()
    niqe, brisque = iqa.NiqeModel(niqe_path), iqa.brisque_scorer()
    if brisque is None:
        print(f"lightsr eval: {iqa.BRISQUE_MISSING}", file=sys.stderr)
    results, outputs = [], {}
    for rung in rungs:
        print(f"lightsr eval: x{args.scale} {rung.name} on {len(pairs)} images", file=sys.stderr)
        result, outputs[rung.name] = evaluate_rung(rung, pairs, args.scale, niqe, brisque, args.runs)
        results.append(result)
    results.append(hr_reference(pairs, args.scale, niqe, brisque))
    meta = {"bundle": str(args.bundle), "extras": args.extra, "hr_dir": str(args.hr_dir),
            "images": len(pairs), "scale": args.scale, "border": args.scale,
            "niqe_params": niqe_path.name, "brisque": brisque is not None, "runs": args.runs,
            "threads": args.threads, "cpu": cpu_name(), "torch": torch.__version__}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eval.json").write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]},
                                                   indent=2, default=_json_safe))
    table = markdown_table(results, args.scale, meta)
    (args.out / "eval.md").write_text(table)
    order = sorted(outputs, key=lambda n: n != "bicubic")  # bicubic | variants...
    crops_png(args.out / f"crops_x{args.scale}.png", order, [outputs[n] for n in order], pairs)
    print(table)
    return 0


def _json_safe(v):
    return str(v)
