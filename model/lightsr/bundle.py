# SPDX-License-Identifier: MPL-2.0
"""Read, write and validate lightsrscale bundles (model/BUNDLE.md, format version 1).

A bundle is a directory with `manifest.json` and one TorchScript file per variant. The
validator implements every rule of BUNDLE.md and names the rule that a manifest breaks;
`check_modules=True` additionally loads each variant and runs the module contract on a tiny
odd-sized, non-contiguous frame.
"""
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

FORMAT = "lightsrscale-bundle"
FORMAT_VERSION = 1
IO = {"layout": "NHWC", "dtype": "uint8", "channels": "RGB"}
NAME_RE = re.compile(r"^[a-z0-9-]+$")
RESERVED_NAMES = {"auto"}
NUMERIC_FIELDS = ("params", "macs_320x180", "cpu_ms_320x180", "validation_gain_db")
# What a learned variant was trained for: "fidelity" (pixel losses; it should beat bicubic on
# PSNR) or "perceptual" (a GAN phase; texture, within 2 dB of bicubic's PSNR).
OBJECTIVES = ("fidelity", "perceptual")


class BundleError(ValueError):
    """A bundle that breaks a rule of BUNDLE.md; the message lists every problem."""


@dataclass
class Variant:
    name: str
    file: str
    kind: str
    arch: str
    params: int = 0
    fourier: bool = False
    half: bool = False
    description: str = ""
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        entry = {"name": self.name, "file": self.file, "kind": self.kind, "arch": self.arch,
                 "params": int(self.params), "fourier": bool(self.fourier),
                 "half": bool(self.half), "description": self.description}
        entry.update(self.extra)
        return entry


def manifest_dict(name: str, description: str, ladders: dict[int, list[Variant]]) -> dict:
    """Build a manifest; `ladders` maps scale -> variants, heaviest first."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "description": description,
        "io": dict(IO),
        "ladders": [{"scale": int(s), "variants": [v.to_json() for v in vs]}
                    for s, vs in sorted(ladders.items(), reverse=True)],
    }


def write_manifest(bundle_dir: Path, manifest: dict) -> Path:
    path = Path(bundle_dir) / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_file(where: str, file, bundle_dir: Path | None) -> list[str]:
    if not isinstance(file, str) or not file:
        return [f"{where}: 'file' must be a non-empty string (a path relative to the bundle)"]
    p = PurePosixPath(file)
    if p.is_absolute() or file.startswith("\\") or re.match(r"^[A-Za-z]:", file):
        return [f"{where}: file '{file}' must be relative to the bundle directory"]
    if ".." in p.parts or "\\" in file:
        return [f"{where}: file '{file}' must not contain '..' (stay inside the bundle)"]
    if bundle_dir is not None and not (Path(bundle_dir) / file).is_file():
        return [f"{where}: file '{file}' does not exist in {bundle_dir}"]
    return []


def _check_order(where: str, variants: list[dict]) -> list[str]:
    """Heaviest first, measured by MACs when every variant states them, else by params
    (params alone can mislead: a pruned net with a heavy tail costs more than a bigger net
    with a light tail)."""
    for key in ("macs_320x180", "params"):
        costs = [v.get(key) for v in variants]
        if not all(_is_number(c) for c in costs):
            continue
        for a, b, va, vb in zip(costs, costs[1:], variants, variants[1:]):
            if b > a:
                return [f"{where}: variants must be ordered heaviest first, but "
                        f"'{vb.get('name')}' ({key}={b}) follows '{va.get('name')}' "
                        f"({key}={a})"]
        return []
    return []


def _check_variant(where: str, v, bundle_dir: Path | None) -> list[str]:
    if not isinstance(v, dict):
        return [f"{where}: each variant must be a JSON object"]
    errs = []
    name = v.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        errs.append(f"{where}: variant name {name!r} must match [a-z0-9-]+")
    elif name in RESERVED_NAMES:
        errs.append(f"{where}: variant name '{name}' is reserved (the element's automatic choice)")
    errs += _check_file(f"{where} variant {name!r}", v.get("file"), bundle_dir)
    if "cuda_file" in v:
        errs += _check_file(f"{where} variant {name!r} (cuda_file)", v["cuda_file"], bundle_dir)
    for key in NUMERIC_FIELDS:
        if key in v and not _is_number(v[key]):
            errs.append(f"{where} variant {name!r}: '{key}' must be a number")
    for key in ("half", "fourier"):
        if key in v and not isinstance(v[key], bool):
            errs.append(f"{where} variant {name!r}: '{key}' must be true or false")
    if "objective" in v and v["objective"] not in OBJECTIVES:
        errs.append(f"{where} variant {name!r}: 'objective' is {v['objective']!r}, expected one of "
                    f"{', '.join(OBJECTIVES)}")
    return errs


def _check_ladder(i: int, ladder, bundle_dir: Path | None, seen: set) -> list[str]:
    if not isinstance(ladder, dict):
        return [f"ladders[{i}]: must be a JSON object"]
    scale = ladder.get("scale")
    if not _is_int(scale) or scale < 2:
        return [f"ladders[{i}]: 'scale' must be an integer >= 2, got {scale!r}"]
    where = f"ladder x{scale}"
    if scale in seen:
        return [f"{where}: more than one ladder for scale {scale} (at most one per scale)"]
    seen.add(scale)
    variants = ladder.get("variants")
    if not isinstance(variants, list) or not variants:
        return [f"{where}: 'variants' must be a non-empty list"]
    errs = []
    for v in variants:
        errs += _check_variant(where, v, bundle_dir)
    names = [v.get("name") for v in variants if isinstance(v, dict)]
    dups = sorted({n for n in names if names.count(n) > 1 and isinstance(n, str)})
    if dups:
        errs.append(f"{where}: variant names must be unique, repeated: {', '.join(dups)}")
    if not errs:
        errs += _check_order(where, variants)
    return errs


def manifest_problems(manifest, bundle_dir: Path | None = None) -> list[str]:
    """Every rule of BUNDLE.md that `manifest` breaks (empty list: valid)."""
    if not isinstance(manifest, dict):
        return ["manifest.json: the top level must be a JSON object"]
    errs = []
    if manifest.get("format") != FORMAT:
        errs.append(f"'format' must be \"{FORMAT}\", got {manifest.get('format')!r}")
    if manifest.get("format_version") != FORMAT_VERSION or isinstance(
            manifest.get("format_version"), bool):
        errs.append(f"'format_version' must be {FORMAT_VERSION}, got "
                    f"{manifest.get('format_version')!r}")
    if "io" in manifest and manifest["io"] != IO:
        errs.append(f"'io' must be {json.dumps(IO)} (the only layout of format 1)")
    ladders = manifest.get("ladders")
    if not isinstance(ladders, list) or not ladders:
        errs.append("'ladders' must be a non-empty list")
        return errs
    seen: set = set()
    for i, ladder in enumerate(ladders):
        errs += _check_ladder(i, ladder, bundle_dir, seen)
    return errs


def load_manifest(path: Path) -> tuple[Path, dict]:
    """Accept a bundle directory or its manifest.json, like the element's `model=`."""
    path = Path(path)
    manifest_path = path / "manifest.json" if path.is_dir() else path
    if not manifest_path.is_file():
        raise BundleError(f"{path}: no manifest.json (a bundle is a directory with "
                          "manifest.json and its TorchScript files; see model/BUNDLE.md)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{manifest_path}: not valid JSON ({e})") from e
    return manifest_path.parent, manifest


def check_module_contract(module_path: Path, scale: int) -> None:
    """Run a variant on an odd-sized, non-contiguous uint8 NHWC frame; raise on any breach."""
    import torch

    module = torch.jit.load(str(module_path), map_location="cpu")
    frame = torch.randint(0, 256, (2, 7, 5 * 2, 3), dtype=torch.uint8)[:, :, ::2, :]
    with torch.no_grad():
        out = module(frame)
    want = (2, 7 * scale, 5 * scale, 3)
    if not isinstance(out, torch.Tensor) or out.dtype != torch.uint8 or tuple(out.shape) != want:
        got = (out.dtype, tuple(out.shape)) if isinstance(out, torch.Tensor) else type(out)
        raise BundleError(f"{module_path}: breaks the module contract: expected uint8 "
                          f"{want}, got {got}")
    if not out.is_contiguous():
        raise BundleError(f"{module_path}: breaks the module contract: output not contiguous")


def validate_bundle(path: Path, check_modules: bool = False) -> dict:
    """Validate a bundle directory (or manifest path); return the manifest or raise."""
    bundle_dir, manifest = load_manifest(path)
    errs = manifest_problems(manifest, bundle_dir)
    if errs:
        raise BundleError(f"{bundle_dir / 'manifest.json'}: invalid bundle:\n  - "
                          + "\n  - ".join(errs))
    if check_modules:
        for ladder in manifest["ladders"]:
            for v in ladder["variants"]:
                for key in ("file", "cuda_file"):
                    if key in v:
                        check_module_contract(bundle_dir / v[key], ladder["scale"])
    return manifest
