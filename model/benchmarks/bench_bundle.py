# SPDX-License-Identifier: MPL-2.0
"""Latency and precision of every variant of a bundle, as the element would run them.

    python model/benchmarks/bench_bundle.py BUNDLE [--sizes 180x320 360x640] [--repeats 10]

For each variant: CPU fp32 ms per frame; on CUDA (when present) fp32 ms, and for variants
with "half": true the fp16 form (`module.to(cuda, half)`: fp16 convolutions, fp32 Fourier
units) with its largest difference in grey levels from CPU fp32 on a photo-like frame and on
a flat 1080x1080 frame (the case where a pure-fp16 FFT overflows). Prints a table.
"""
import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch


def smooth_frame(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A photo-like uint8 NHWC frame: smooth colour fields plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, max(2, h // 16), max(2, w // 16), generator=g) * 255
    img = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    img = img + torch.randn(img.shape, generator=g) * 4
    return img.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def ms_per_frame(module, x, repeats: int) -> float:
    cuda = x.is_cuda
    times = []
    with torch.no_grad():
        for i in range(repeats + 2):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            module(x)
            if cuda:
                torch.cuda.synchronize()
            if i >= 2:
                times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> int:
    return int((a.cpu().int() - b.cpu().int()).abs().max())


def bench_variant(path: Path, half: bool, sizes, repeats: int) -> dict:
    cpu = torch.jit.load(str(path), map_location="cpu").eval()
    row = {}
    for h, w in sizes:
        x = smooth_frame(h, w)
        row[f"cpu_ms_{h}x{w}"] = round(ms_per_frame(cpu, x, max(2, repeats // 3)), 2)
        if not torch.cuda.is_available():
            continue
        ref = cpu(x)
        gpu = copy.deepcopy(cpu).to("cuda")
        row[f"cuda_fp32_ms_{h}x{w}"] = round(ms_per_frame(gpu, x.cuda(), repeats), 3)
        row[f"cuda_fp32_maxdiff_{h}x{w}"] = max_diff(gpu(x.cuda()), ref)
        if half:
            gpu_half = copy.deepcopy(cpu).to("cuda", torch.half)
            row[f"cuda_fp16_ms_{h}x{w}"] = round(ms_per_frame(gpu_half, x.cuda(), repeats), 3)
            row[f"cuda_fp16_maxdiff_{h}x{w}"] = max_diff(gpu_half(x.cuda()), ref)
    if half and torch.cuda.is_available():
        flat = torch.full((1, 1080, 1080, 3), 128, dtype=torch.uint8)
        gpu_half = copy.deepcopy(cpu).to("cuda", torch.half)
        with torch.no_grad():
            out = gpu_half(flat.cuda())
            ref = copy.deepcopy(cpu).to("cuda")(flat.cuda())
        row["cuda_fp16_flat1080_maxdiff"] = max_diff(out, ref)
        row["cuda_fp16_flat1080_mean"] = round(out.float().mean().item(), 2)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--sizes", nargs="+", default=["180x320"])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA"
    print(f"bundle {args.bundle} | torch {torch.__version__} | {torch.get_num_threads()} CPU "
          f"threads | {device}")
    results = {}
    with torch.no_grad():
        for ladder in manifest["ladders"]:
            for v in ladder["variants"]:
                row = bench_variant(args.bundle / v["file"], v.get("half", False), sizes,
                                    args.repeats)
                results[f"x{ladder['scale']}/{v['name']}"] = row
                print(f"x{ladder['scale']} {v['name']:<20} " +
                      " ".join(f"{k}={val}" for k, val in row.items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
