# SPDX-License-Identifier: MPL-2.0
"""`lightsr export`: build a variant ladder and write it as a lightsrscale bundle.

Usage:
    lightsr export --out BUNDLE [--config ladder.yml] [--checkpoint CKPT ...] [--scales 4 2]
    lightsr export --out model/bundles/default --bicubic-only --scales 4 2

Each ladder lists its variants heaviest first and always ends with `bicubic`. Every learned
variant is wrapped in the uint8 NHWC deploy wrapper (`lightsr.deploy.U8Deploy`), scripted,
checked against eager at 37x53 and 64x80 (one odd size), timed on CPU at 320x180, and the
bundle is validated (`lightsr.bundle`) before the command returns.

Checkpoint format (what `lightsr train`, `distill`, `prune` and `quantize` save):
    {'params': state_dict, 'params_ema': state_dict (optional, preferred when present),
     'opt': network options dict, e.g. {'type': 'F2SRGANGenerator', 'scale': 4,
            'num_blocks': 8, 'fourier': False, 'width': 64, 'upsampler': 'published'},
     'name': 'student' (optional variant name), 'description': '...' (optional)}
The network options are stored inside every checkpoint so that export can rebuild the
architecture with `lightsr.archs.build_network(opt)`. Pruned models change shapes, so they
are saved as Torch-Pruning's state (`lightsr.prune.pruned_state`: `tp.state_dict` kept to
tensors and plain values), rebuilt on `build_network(opt)` by `tp.load_state_dict`:
    {'pruned': {'full_state_dict': ..., 'attributions': ...}, 'opt': {... 'scale': S},
     'name': ..., 'description': ...}
Older files and `lightsr quantize`'s output hold the whole module under 'module' instead
(eval mode, float NCHW 0..255 in/out), read with full unpickling (trusted files only).
A ladder YAML lists the checkpoints per scale:
    name: default
    description: ...
    ladders:
      4: [{checkpoint: runs/f2srgan_x4/best.pth, name: f2srgan},
          {checkpoint: runs/student_x4/best.pth, name: student}]
"""
import argparse
import ctypes
import functools
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pickle
import re

import torch
import yaml
from torch import nn

from lightsr.archs import build_network
from lightsr.archs.fourier_arch import FourierUnit
from lightsr.bundle import (OBJECTIVES, BundleError, Variant, load_manifest, manifest_dict, validate_bundle,
                            write_manifest)
from lightsr.complexity import count_macs, count_params
from lightsr.deploy import (BicubicUpscale, PhaseDeploy, U8Deploy, bicubic_variant, gpu_phase_deploy, pad_channels,
                            phase_deploy_from_state, supports_phases)
from lightsr.train import load_config

CHECK_SIZES = ((37, 53), (64, 80))
TIMING_SIZE = (180, 320)
BICUBIC_DESCRIPTION = ("torch bicubic interpolation (align_corners=False) as a fixed 5x5 convolution "
                       "per output phase, within a grey level of F.interpolate; no weights: not a trained "
                       "model. On the CPU the element runs GStreamer's own cubic scaler instead")


@dataclass
class ExportedVariant:
    variant: Variant
    module: torch.jit.ScriptModule
    cuda_module: torch.jit.ScriptModule | None = None  # the manifest's `cuda_file`


def max_abs_diff_u8(a: torch.Tensor, b: torch.Tensor) -> int:
    return int((a.int() - b.int()).abs().max())


def check_scripted(scripted, eager: nn.Module, scale: int, tol: int = 1) -> int:
    """Compare scripted and eager u8 outputs at CHECK_SIZES; return the worst difference.

    A tolerance of 1 grey level allows round() to fall on the other side of .5 when the
    scripted graph fuses or reorders float operations."""
    worst = 0
    gen = torch.Generator().manual_seed(0)
    for h, w in CHECK_SIZES:
        x = torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8, generator=gen)
        with torch.no_grad():
            want, got = eager(x), scripted(x)
        if got.shape != (1, h * scale, w * scale, 3) or got.dtype != torch.uint8:
            raise RuntimeError(f"scripted variant returned {got.dtype} {tuple(got.shape)} for "
                               f"a {h}x{w} frame, expected uint8 (1, {h * scale}, {w * scale}, 3)")
        worst = max(worst, max_abs_diff_u8(want, got))
    if worst > tol:
        raise RuntimeError(f"scripted variant differs from eager by {worst} grey levels "
                           f"(tolerance {tol}) at sizes {CHECK_SIZES}")
    return worst


def cpu_ms_per_frame(module, repeats: int = 5) -> float:
    """Median CPU milliseconds for one 320x180 frame (after two warm-up calls), with the
    element's allocator thresholds."""
    raise_malloc_thresholds()
    h, w = TIMING_SIZE
    x = torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8)
    times = []
    with torch.no_grad():
        for i in range(repeats + 2):
            t0 = time.perf_counter()
            module(x)
            if i >= 2:
                times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


@functools.cache
def raise_malloc_thresholds(mib: int = 256) -> bool:
    """glibc's mmap threshold raised as the element raises it (gst-plugin `engine::allocator`):
    activations of a few MB then come from the heap instead of freshly zero-filled mappings, and a
    rung's time no longer depends on which rungs ran before it in the process. Process-wide, once
    (cached), before any timing: the choice of a rung's deploy form as well as its final time."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    bytes_ = mib << 20
    return libc.mallopt(m_mmap_threshold, bytes_) == 1 and libc.mallopt(m_trim_threshold, 2 * bytes_) == 1


def interleaved_ms(modules: list, rounds: int) -> list[float]:
    """Median CPU milliseconds for one 320x180 frame of each module, side by side: two warm-up
    calls each, then `rounds` rounds that run every module once. One-off timings swing by 25-40%
    with the machine's load; interleaved, a load hits all modules alike and their ratios hold."""
    raise_malloc_thresholds()
    h, w = TIMING_SIZE
    x = torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8)
    times: list[list[float]] = [[] for _ in modules]
    with torch.no_grad():
        for module in modules:
            for _ in range(2):
                module(x)
        for _ in range(rounds):
            for module, spent in zip(modules, times):
                t0 = time.perf_counter()
                module(x)
                spent.append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(spent) for spent in times]


def retime_ladders(ladders: dict[int, list["ExportedVariant"]], rounds: int = 7) -> None:
    """Every rung's `cpu_ms_320x180` measured again, side by side (`interleaved_ms`): the ratios
    between rungs are what the element's warm-up uses to estimate a rung it does not run."""
    evs = [ev for variants in ladders.values() for ev in variants]
    for ev, ms in zip(evs, interleaved_ms([ev.module for ev in evs], rounds)):
        ev.variant.extra["cpu_ms_320x180"] = round(ms, 2)


def export_bicubic(scale: int, timing: bool = True) -> ExportedVariant:
    eager = bicubic_variant(scale)
    scripted = torch.jit.script(eager)
    check_scripted(scripted, eager, scale, tol=0)
    check_scripted(scripted, U8Deploy(BicubicUpscale(scale), scale).eval(), scale, tol=1)
    extra = {"macs_320x180": 0}
    if timing:
        extra["cpu_ms_320x180"] = round(cpu_ms_per_frame(scripted), 2)
    variant = Variant(name="bicubic", file=f"x{scale}-bicubic.pt", kind="bicubic",
                      arch="bicubic", params=0, fourier=False, half=False,
                      description=BICUBIC_DESCRIPTION, extra=extra)
    return ExportedVariant(variant, scripted)


CPU_PAD = 8  # oneDNN's AVX2 kernels work in blocks of 8 channels


def phase_widths(deploy: nn.Module) -> list[int]:
    """Output widths of a phase-form rung's feature convolutions: not the tail's phases, nor the
    depthwise conv of a SepConv head, which keeps the input's 3 channels."""
    return [m.out_channels for name, m in deploy.named_modules()
            if isinstance(m, nn.Conv2d)
            and not name.startswith(("tail", "sub_mean", "attentions", "initial.0.0"))]


def padded_cpu_form(deploy: nn.Module) -> nn.Module | None:
    """`deploy` with every feature width rounded up to a multiple of `CPU_PAD` by zero channels (the
    same function: `pad_channels`), or None where the widths already are. Pruning leaves widths
    such as 6 and 7, which oneDNN runs 12-19% slower alone than the same rung padded to 8 (x4
    `dense-pruned`); padding to 16 costs what the unpruned rung costs. In the element's live stream
    the padded rung showed no gain (model/REPORT.md notes item 19), so it is applied only on request
    (`pad_cpu_forms`, `lightsr export --pad-cpu-forms`)."""
    if all(w % CPU_PAD == 0 for w in phase_widths(deploy)):
        return None
    return pad_channels(deploy, CPU_PAD).eval().to(memory_format=torch.channels_last)


def deploy_forms(net: nn.Module, scale: int) -> list[tuple[str, nn.Module]]:
    """The deploy wrappers to try for one network: `PhaseDeploy` where it applies (everything
    at input resolution, see lightsr.deploy), and `U8Deploy` with channels-last and contiguous
    inputs. (The padded CPU form is not among them: faster alone, it did not make the element's
    live stream better; `pad_cpu_forms` applies it on request.)"""
    forms = []
    if supports_phases(net):
        forms.append(("phases", PhaseDeploy(net).eval().to(memory_format=torch.channels_last)))
    for channels_last in (True, False):
        forms.append(("channels_last" if channels_last else "contiguous",
                      U8Deploy(net, scale, channels_last=channels_last).eval()))
    return forms


def script_fastest(net: nn.Module, scale: int, timing: bool):
    """Script each deploy form of `net` (`deploy_forms`), check it against the eager `U8Deploy`
    (within 1 grey level), keep the fastest; without timing, the first (phases where it applies).
    (torch.jit.freeze / optimize_for_inference are not used: a frozen module's weights become
    constants that no longer follow `.to(device, Half)`, which the element relies on for CUDA /
    fp16.)"""
    reference = U8Deploy(net, scale).eval()
    results = []
    for form, module in deploy_forms(net, scale):
        scripted = torch.jit.script(module)
        worst = check_scripted(scripted, reference, scale)
        ms = cpu_ms_per_frame(scripted, repeats=3) if timing else None
        results.append((ms if ms is not None else 0.0, form, worst, ms, scripted))
        if not timing:
            break
    _, form, worst, ms, scripted = min(results, key=lambda r: r[0])
    return scripted, form, worst, ms


PAD_MIN_GAIN = 0.05  # what the padded CPU form must gain to replace the plain phase form


def pad_cpu_forms(bundle_dir: Path, rounds: int = 31, min_gain: float = PAD_MIN_GAIN) -> list[str]:
    """Re-forms, from the bundle's own TorchScript (no training checkpoint needed), every phase-form
    rung whose widths `padded_cpu_form` would pad: both forms are timed side by side at 320x180
    (interleaved, `rounds` medians), and the padded one replaces the rung's file where it is at
    least `min_gain` faster (checked within a grey level of the original). The rung's recorded
    `cpu_ms_320x180` is scaled by the measured ratio, so that it stays on the scale of the other
    rungs' figures (timed together at export, perhaps on another machine: the element reads their
    ratios). Each file is replaced by a rename. Returns the lines that say what was measured and
    done."""
    validate_bundle(bundle_dir)
    bundle_dir, manifest = load_manifest(bundle_dir)
    report = []
    for ladder in manifest["ladders"]:
        scale = ladder["scale"]
        for v in ladder["variants"]:
            if v.get("deploy_form") != "phases" or v.get("cpu_widths_padded_to"):
                continue
            original = torch.jit.load(str(bundle_dir / v["file"]), map_location="cpu").eval()
            twin = phase_deploy_from_state({k: t.float() for k, t in original.state_dict().items()}, scale)
            padded = padded_cpu_form(twin)
            if padded is None:
                continue
            padded = torch.jit.script(padded)
            check_scripted(padded, original, scale)
            before, after = interleaved_ms([original, padded], rounds)
            line = (f"x{scale} {v['name']}: widths {phase_widths(twin)} -> padded to {CPU_PAD}: "
                    f"{before:.1f} -> {after:.1f} ms a 320x180 frame")
            if after <= before * (1 - min_gain):
                target = bundle_dir / v["file"]
                partial = target.with_name(target.name + ".partial")
                torch.jit.save(padded, str(partial))
                partial.replace(target)
                v["cpu_widths_padded_to"] = CPU_PAD
                if v.get("cpu_ms_320x180"):
                    v["cpu_ms_320x180"] = round(v["cpu_ms_320x180"] * after / before, 2)
                line += ": replaced"
            else:
                line += f": kept (not {min_gain:.0%} faster)"
            report.append(line)
    write_manifest(bundle_dir, manifest)
    validate_bundle(bundle_dir, check_modules=True)
    return report


def has_fourier(net: nn.Module) -> bool:
    return any(isinstance(m, FourierUnit) for m in net.modules())


def export_learned(net: nn.Module, scale: int, name: str, description: str, arch: str,
                   timing: bool = True, half: bool = True, objective: str = "fidelity") -> ExportedVariant:
    """Deploy-wrap, script, check and measure one learned generator (float 0..255 NCHW)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective '{objective}': choose one of {', '.join(OBJECTIVES)}")
    net = net.eval().float()
    scripted, form, worst, ms = script_fastest(net, scale, timing)
    extra = {"objective": objective, "macs_320x180": count_macs(net, TIMING_SIZE[0], TIMING_SIZE[1]),
             "memory_format": "channels_last" if form != "contiguous" else "contiguous",
             "deploy_form": form,
             "scripted_vs_eager_max_diff": worst}
    if ms is not None:
        extra["cpu_ms_320x180"] = round(ms, 2)
    file = f"x{scale}-{name}.pt"
    cuda_module = None
    if form == "phases":
        cuda_module = gpu_form(scripted, scale)
        extra["cuda_file"] = cuda_file_for(file)
    variant = Variant(name=name, file=file, kind="learned", arch=arch,
                      params=count_params(net), fourier=has_fourier(net), half=half,
                      description=description, extra=extra)
    return ExportedVariant(variant, scripted, cuda_module)


def cuda_file_for(file: str) -> str:
    """The manifest's `cuda_file` of a rung whose `file` this is: x4-light.pt -> x4-light.cuda.pt."""
    return str(PurePosixPath(file).with_suffix(".cuda.pt"))


def gpu_form(scripted: torch.jit.ScriptModule, scale: int) -> torch.jit.ScriptModule:
    """The CUDA form (`deploy.gpu_phase_deploy`) of a scripted `PhaseDeploy` rung, re-formed from its
    own weights and checked against it on the CPU (within 1 grey level)."""
    twin = phase_deploy_from_state({k: v.float() for k, v in scripted.state_dict().items()}, scale)
    cuda_module = torch.jit.script(gpu_phase_deploy(twin).eval())
    check_scripted(cuda_module, scripted, scale)
    return cuda_module


def add_gpu_forms(bundle_dir: Path) -> list[str]:
    """Writes the CUDA form of every phase-form learned rung of an existing bundle that lacks one
    (`cuda_file`), from the bundle's own TorchScript (no training checkpoint needed); returns
    the files written."""
    bundle_dir, manifest = load_manifest(bundle_dir)
    written = []
    for ladder in manifest["ladders"]:
        for v in ladder["variants"]:
            if v.get("deploy_form") != "phases" or "cuda_file" in v:
                continue
            scripted = torch.jit.load(str(bundle_dir / v["file"]), map_location="cpu").eval()
            cuda_file = cuda_file_for(v["file"])
            torch.jit.save(gpu_form(scripted, ladder["scale"]), str(bundle_dir / cuda_file))
            v["cuda_file"] = cuda_file
            written.append(cuda_file)
    write_manifest(bundle_dir, manifest)
    validate_bundle(bundle_dir, check_modules=True)
    return written


def read_training_checkpoint(path: Path) -> dict:
    """Load a checkpoint in the format of this module's docstring."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # whole pickled modules (older pruned files, quantized ones) need full unpickling:
        # trusted files only
        ck = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ck, dict) or not ("module" in ck or "opt" in ck):
        raise ValueError(f"checkpoint {path}: expected {{'params', 'opt'}} or {{'pruned', 'opt'}} "
                         "(see `lightsr export --help`); for a published F2SRGAN file use "
                         "`lightsr import-official`")
    return ck


def network_from_checkpoint(ck: dict, path: Path) -> tuple[nn.Module, dict]:
    opt = dict(ck.get("opt") or {})
    if "pruned" in ck:
        from lightsr.prune import rebuild_pruned  # noqa: PLC0415

        net = rebuild_pruned(opt, ck["pruned"])
    elif "module" in ck:
        net = ck["module"]
        if not isinstance(net, nn.Module):
            raise ValueError(f"checkpoint {path}: 'module' is not an nn.Module")
    else:
        net = build_network(opt)
        state = ck.get("params_ema") or ck.get("params")
        if state is None:
            raise ValueError(f"checkpoint {path}: neither 'params_ema' nor 'params' present")
        net.load_state_dict(state, strict=True)
    scale = opt.get("scale", getattr(net, "scale", None))
    if not isinstance(scale, int) or scale < 2:
        raise ValueError(f"checkpoint {path}: its 'opt' must give the integer 'scale' (>= 2)")
    opt["scale"] = scale
    return net.eval(), opt


def deploy_checkpoint(path: str | Path) -> U8Deploy:
    """A training checkpoint as the fp32 uint8-in / uint8-out module a bundle would hold (eager,
    not scripted): what recipes score before choosing what to export."""
    path = Path(path)
    net, opt = network_from_checkpoint(read_training_checkpoint(path), path)
    return U8Deploy(net.float(), opt["scale"]).eval()


def default_objective(ck: dict) -> str:
    """'perceptual' for a checkpoint of the GAN phase (`phase: full`), else 'fidelity'."""
    return "perceptual" if ck.get("phase") == "full" else "fidelity"


def arch_name(net: nn.Module, pruned: bool) -> str:
    """The manifest's `arch` of a generator (`lightsr quantize` appends `-qat`)."""
    if getattr(net, "conv", "sep") == "dense":
        base = "f2srgan-dense"  # plain 3x3 convs (the manifest's `fourier` says whether FFCs too)
    else:
        base = "f2srgan" if has_fourier(net) else "light-f2srgan"
    return base + "-pruned" if pruned else base


def default_arch(net: nn.Module, ck: dict) -> str:
    return str(ck["arch"]) if "arch" in ck else arch_name(net, "pruned" in ck or "module" in ck)


def export_checkpoint(entry: dict, timing: bool) -> tuple[int, ExportedVariant]:
    """One ladder entry `{checkpoint, name?, description?}` -> (scale, exported variant)."""
    path = Path(entry["checkpoint"])
    ck = read_training_checkpoint(path)
    net, opt = network_from_checkpoint(ck, path)
    name = entry.get("name") or ck.get("name") or path.stem
    name = re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-")
    description = entry.get("description") or ck.get("description") or (
        f"trained by the lightsr pipeline, checkpoint {path.name}, options {opt}")
    return opt["scale"], export_learned(net, opt["scale"], name, description,
                                        default_arch(net, ck), timing=timing,
                                        half=bool(entry.get("half", True)),
                                        objective=entry.get("objective") or default_objective(ck))


def build_ladders(entries: list[dict], scales: list[int], timing: bool) -> dict:
    """Learned variants by scale, sorted heaviest (most MACs) first, each ending in bicubic."""
    ladders: dict[int, list[ExportedVariant]] = {s: [] for s in scales}
    for entry in entries:
        scale, ev = export_checkpoint(entry, timing)
        if entry.get("expected_scale", scale) != scale:
            raise ValueError(f"{entry['checkpoint']}: listed under scale "
                             f"{entry['expected_scale']} but the network's scale is {scale}")
        ladders.setdefault(scale, []).append(ev)
    for scale, variants in ladders.items():
        variants.sort(key=lambda ev: -ev.variant.extra["macs_320x180"])
        variants.append(export_bicubic(scale, timing))
    ladders = dict(sorted(ladders.items(), reverse=True))
    if timing:
        retime_ladders(ladders)
    return ladders


COST_RANGE = (2.0, 4.0)  # each heavier learned rung costs this many times the next lighter (MACs)
MIN_GAIN_DB = 0.05  # ... and scores at least this much higher on the validation (eval-video)


def read_scores(paths: list[Path]) -> dict[int, dict[str, float]]:
    """{scale: {rung name: validation score}} from `lightsr eval-video` JSON files, or from a bundle's
    manifest.json (the scores its last export recorded, "validation_gain_db": to re-export one scale's
    ladder without scoring the other again). Later files add to and override earlier ones."""
    scores: dict[int, dict[str, float]] = {}
    for path in paths:
        try:
            doc = json.loads(Path(path).read_text())
            if isinstance(doc, dict) and doc.get("format") == "lightsrscale-bundle":
                for ladder in doc["ladders"]:
                    got = scores.setdefault(int(ladder["scale"]), {})
                    for v in ladder["variants"]:
                        if v["kind"] == "bicubic":
                            got[v["name"]] = 0.0
                        elif "validation_gain_db" in v:
                            got[v["name"]] = float(v["validation_gain_db"])
                continue
            scale, values = int(doc["meta"]["scale"]), doc["validation_score"]
            scores.setdefault(scale, {}).update({k: float(v) for k, v in values.items() if v is not None})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"--scores {path}: not an eval_video.json of `lightsr eval-video` nor a "
                             f"bundle's manifest.json ({e})") from None
    return scores


def ladder_rule_problems(ladders: dict[int, list["ExportedVariant"]], scores: dict[int, dict[str, float]],
                         cost_range: tuple[float, float] = COST_RANGE, min_gain: float = MIN_GAIN_DB) -> list[str]:
    """Issue 12's rule, per scale: every heavier learned rung scores at least `min_gain` dB more
    than the next lighter rung (the lightest learned rung than bicubic) on the validation, and
    costs `cost_range` times its MACs. Scores are attached to the variants ("validation_gain_db")."""
    problems = []
    for scale, variants in ladders.items():
        got = scores.get(scale)
        if all(ev.variant.kind == "bicubic" for ev in variants):
            continue  # nothing learned to check
        if got is None:
            problems.append(f"x{scale}: no validation scores (--scores with an eval_video.json of scale {scale})")
            continue
        for ev in variants:
            if ev.variant.kind != "bicubic":
                if ev.variant.name not in got:
                    problems.append(f"x{scale} {ev.variant.name}: no score in the eval-video results "
                                    f"(score the checkpoint as --checkpoint {ev.variant.name}=PATH)")
                    continue
                ev.variant.extra["validation_gain_db"] = round(got[ev.variant.name], 4)
        for heavy, light in zip(variants, variants[1:]):
            h, lt = heavy.variant, light.variant
            if "validation_gain_db" not in h.extra:
                continue
            light_score = 0.0 if lt.kind == "bicubic" else lt.extra.get("validation_gain_db")
            if light_score is not None and h.extra["validation_gain_db"] < light_score + min_gain:
                problems.append(f"x{scale} {h.name}: validation gain {h.extra['validation_gain_db']:+.3f} dB is not "
                                f"{min_gain} dB above {lt.name} ({light_score:+.3f} dB): a heavier rung that is not "
                                f"better is not shipped; drop it or train it further")
            if lt.kind != "bicubic":
                ratio = h.extra["macs_320x180"] / max(1, lt.extra["macs_320x180"])
                if not cost_range[0] <= ratio <= cost_range[1]:
                    problems.append(f"x{scale} {h.name}: costs {ratio:.2f}x the MACs of {lt.name}, outside "
                                    f"{cost_range[0]:g}-{cost_range[1]:g}x: the fallback step would be too "
                                    f"{'small to matter' if ratio < cost_range[0] else 'large'}")
    return problems


def write_bundle(out: Path, name: str, description: str,
                 ladders: dict[int, list[ExportedVariant]]) -> dict:
    """Save every variant's TorchScript file and the manifest, then validate the bundle."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for variants in ladders.values():
        for ev in variants:
            torch.jit.save(ev.module, str(out / ev.variant.file))
            if ev.cuda_module is not None:
                torch.jit.save(ev.cuda_module, str(out / ev.variant.extra["cuda_file"]))
    manifest = manifest_dict(name, description,
                             {s: [ev.variant for ev in vs] for s, vs in ladders.items()})
    write_manifest(out, manifest)
    return validate_bundle(out, check_modules=True)


def print_manifest(manifest: dict) -> None:
    print(f"{'scale':<6}{'variant':<22}{'params':>9}{'GMACs@320x180':>15}{'cpu ms':>9}")
    for ladder in manifest["ladders"]:
        for v in ladder["variants"]:
            ms = v.get("cpu_ms_320x180")
            print(f"x{ladder['scale']:<5}{v['name']:<22}{v['params']:>9}"
                  f"{v.get('macs_320x180', 0) / 1e9:>15.2f}"
                  f"{(f'{ms:.1f}' if ms is not None else '-'):>9}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lightsr export", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    p.add_argument("--config", type=Path, help="ladder YAML (name, description, ladders)")
    p.add_argument("--checkpoint", type=Path, action="append", default=[],
                   help="a training checkpoint (repeatable); its 'opt' gives the scale")
    p.add_argument("--scales", type=int, nargs="+", default=None,
                   help="also write (bicubic-only if nothing else) ladders for these scales")
    p.add_argument("--bicubic-only", action="store_true",
                   help="write ladders holding only the weight-free bicubic variant")
    p.add_argument("--name", default=None, help="bundle name in the manifest")
    p.add_argument("--description", default=None, help="bundle description in the manifest")
    p.add_argument("--no-timing", action="store_true", help="skip CPU timing at 320x180")
    p.add_argument("--pad-cpu-forms", action="store_true",
                   help="re-form the phase-form rungs of the existing bundle --out with widths padded to "
                        f"multiples of {CPU_PAD} where that is measured faster on this CPU (no checkpoints needed)")
    p.add_argument("--add-gpu-forms", action="store_true",
                   help="only add the CUDA form (cuda_file) of each phase-form learned rung to the "
                        "existing bundle --out, from its own TorchScript")
    p.add_argument("--scores", type=Path, action="append", default=[],
                   help="eval_video.json of `lightsr eval-video` (one per scale), or a bundle's manifest.json "
                        "(the scores of its last export; later files override): the ladder must then "
                        f"improve by >= {MIN_GAIN_DB} dB per heavier rung at {COST_RANGE[0]:g}-{COST_RANGE[1]:g}x "
                        "its cost, or nothing is written")
    return p.parse_args(argv)


def ladder_entries(args) -> tuple[list[dict], dict]:
    """Checkpoint entries and bundle metadata from --config and --checkpoint."""
    entries, meta = [], {}
    if args.config:
        cfg = load_config(args.config)
        raw = yaml.safe_load(args.config.read_text()) or {}  # a name given, not the file stem load_config adds
        meta = {k: cfg[k] for k in ("name", "description") if k in cfg and (k != "name" or "name" in raw)}
        if not isinstance(cfg.get("ladders"), dict):
            raise ValueError(f"{args.config}: 'ladders' must map a scale to a list of "
                             "checkpoints, e.g. `ladders: {4: [{checkpoint: a.pth}]}`")
        for scale, items in cfg["ladders"].items():
            for item in items:
                item = {"checkpoint": item} if isinstance(item, str) else dict(item)
                if "checkpoint" not in item:
                    raise ValueError(f"{args.config}: ladder entry {item} has no 'checkpoint'")
                item["checkpoint"] = (args.config.parent / item["checkpoint"]
                                      if not Path(item["checkpoint"]).is_absolute()
                                      else Path(item["checkpoint"]))
                item["expected_scale"] = int(scale)
                entries.append(item)
    entries += [{"checkpoint": c} for c in args.checkpoint]
    return entries, meta


def rework_bundle(args: argparse.Namespace) -> int | None:
    """`--pad-cpu-forms` / `--add-gpu-forms`: rework the existing bundle `--out` in place from its
    own TorchScript; None when neither was asked for."""
    if args.pad_cpu_forms:
        job, said = pad_cpu_forms, lambda lines: "\n".join(lines) or f"nothing to pad in {args.out}"
    elif args.add_gpu_forms:
        job = add_gpu_forms
        said = lambda written: (  # noqa: E731
            f"wrote {', '.join(written) or 'nothing (every rung has its CUDA form)'} in {args.out}")
    else:
        return None
    try:
        print(said(job(args.out)))
    except (OSError, ValueError, RuntimeError, KeyError, BundleError) as e:
        print(f"lightsr export: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    reworked = rework_bundle(args)
    if reworked is not None:
        return reworked
    scales = sorted(set(args.scales or ([4, 2] if args.bicubic_only else [])), reverse=True)
    if any(s < 2 for s in scales):
        print("lightsr export: --scales must be integers >= 2", file=sys.stderr)
        return 2
    try:
        entries, meta = ([], {}) if args.bicubic_only else ladder_entries(args)
        if not entries and not scales:
            raise ValueError("nothing to export: give --config, --checkpoint or "
                             "--bicubic-only (see --help)")
        ladders = build_ladders(entries, scales, timing=not args.no_timing)
        if args.scores:
            problems = ladder_rule_problems(ladders, read_scores(args.scores))
            if problems:
                raise ValueError("the ladder breaks the rule (nothing written):\n  " + "\n  ".join(problems))
    except (OSError, ValueError, RuntimeError, yaml.YAMLError) as e:
        print(f"lightsr export: {e}", file=sys.stderr)
        return 2
    description = args.description or meta.get("description") or (
        "interim default: exact bicubic interpolation only, NOT a trained model; replace with "
        "a bundle written by `lightsr export` from trained checkpoints" if not entries else
        "ladder exported by `lightsr export`")
    manifest = write_bundle(args.out, args.name or meta.get("name", "default"), description,
                            ladders)
    print_manifest(manifest)
    print(f"wrote {args.out / 'manifest.json'} (validated)")
    return 0
