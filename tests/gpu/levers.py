# SPDX-License-Identifier: MPL-2.0
"""GPU levers for the bundle's rungs at the sizes users run (960x540 -> x4, 1920x1080 -> x2).

Loads each TorchScript rung as the element does (fp16 weights where the manifest says `half`,
uint8 NHWC frames in and out) and times, side by side in one process, with CUDA events:

* `element`   : what the element does today (cuDNN heuristics, the module as exported);
* `benchmark` : with `torch.backends.cudnn.benchmark` (cuDNN times its algorithms once per shape);
* `frozen`    : `torch.jit.freeze` + `torch.jit.optimize_for_inference` on top of `benchmark`;
* `graph`     : the `benchmark` module captured once as a CUDA graph and replayed;
* `nchw`      : `benchmark` with the frame handed over as a permuted view of NCHW memory, so the
  network runs in NCHW instead of the export's channels-last;
* `fp32`      : `benchmark` with fp32 weights (learned rungs, which the element runs in fp16);
* `padded`    : learned rungs re-formed with every width rounded up to a multiple of 8 by zero
  channels (`lightsr.deploy.pad_channels`: the same function), channels-last and NCHW;
* `cuda_file` : the manifest's CUDA form (`lightsr.deploy.GpuPhaseDeploy`), which the element loads
  on CUDA; `element` is the CPU form (`file`) run on CUDA, as before CUDA forms existed;
* `inductor`  : learned rungs through `torch.compile` (Triton kernels, fused elementwise work): what
  fusion would give, which TorchScript in libtorch does not have (`--no-inductor` skips it);
* `upload` / `download`: host <-> device copies of one input / output frame (pageable and
  pinned), the cost the system-memory path adds per frame.

Every variant's output is compared with `element`'s (max |difference| in grey levels). The
memory floor counts the bytes a frame must move with no fusion at all: each convolution reads
its input activation and writes its output (fp16), plus the uint8 frame in and out; at the
device's copy bandwidth (measured here with a device-to-device copy) that is a lower bound of
the per-frame time for a network run layer by layer.

    python3 tests/gpu/levers.py model/bundles/default [--frames 100] [--out DIR]
Prints a table; writes levers.json to --out. Needs CUDA; exits 0 with a message without it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "model"))
from lightsr.deploy import pad_channels, phase_deploy_from_state  # noqa: E402

SIZES = {4: (960, 540), 2: (1920, 1080)}


def timed(fn, frames: int) -> float:
    """Median milliseconds per call of fn over `frames` calls, after 5 warm-up calls."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(frames):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in bytes per second (bytes read + written)."""
    a = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    ms = timed(lambda: b.copy_(a), 20)
    return 2 * a.numel() / (ms / 1000)


def conv_floor_bytes(module: torch.jit.ScriptModule, h: int, w: int, half: bool) -> int:
    """Bytes moved by running every convolution separately at input resolution: its input and
    output activations (fp16 or fp32), plus the uint8 frame in and out."""
    elem = 2 if half else 4
    total = 0
    for _, p in module.named_parameters():
        if p.dim() == 4:
            cout, cin_per_group = p.shape[0], p.shape[1]
            total += h * w * (cin_per_group + cout) * elem
    return total


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--no-inductor", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("levers: no CUDA device; nothing measured")
        return 0
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    bandwidth = copy_bandwidth()
    print(f"levers: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
          f"device copy {bandwidth / 1e12:.2f} TB/s (read + write)")
    results = []
    for ladder in manifest["ladders"]:
        scale = ladder["scale"]
        w, h = SIZES.get(scale, (960, 540))
        for spec in ladder["variants"]:
            half = bool(spec.get("half"))
            torch.backends.cudnn.benchmark = False
            module = torch.jit.load(str(args.bundle / spec["file"]), map_location="cuda").eval()
            if half:
                module = module.half()
            gen = torch.Generator().manual_seed(0)
            host = torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8, generator=gen)
            frame = host.cuda()
            row = {"scale": scale, "variant": spec["name"], "input": f"{w}x{h}", "half": half}
            with torch.inference_mode():
                reference = module(frame)
                row["element_ms"] = timed(lambda: module(frame), args.frames)
                torch.backends.cudnn.benchmark = True
                row["benchmark_ms"] = timed(lambda: module(frame), args.frames)
                row["benchmark_diff"] = int((module(frame).int() - reference.int()).abs().max())
                try:
                    frozen = torch.jit.optimize_for_inference(torch.jit.freeze(module))
                    row["frozen_ms"] = timed(lambda: frozen(frame), args.frames)
                    row["frozen_diff"] = int((frozen(frame).int() - reference.int()).abs().max())
                except Exception as e:  # report, go on
                    row["frozen_error"] = str(e).splitlines()[0]
                try:
                    static = frame.clone()
                    stream = torch.cuda.Stream()
                    stream.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(stream):
                        for _ in range(3):
                            module(static)
                    torch.cuda.current_stream().wait_stream(stream)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph):
                        static_out = module(static)
                    row["graph_ms"] = timed(graph.replay, args.frames)
                    graph.replay()
                    row["graph_diff"] = int((static_out.int() - reference.int()).abs().max())
                except Exception as e:
                    row["graph_error"] = str(e).splitlines()[0]
                nchw = host.permute(0, 3, 1, 2).contiguous().cuda().permute(0, 2, 3, 1)

                def lever(key, fn):
                    try:
                        row[key + "_ms"] = timed(fn, args.frames)
                        row[key + "_diff"] = int((fn().int() - reference.int()).abs().max())
                    except Exception as e:  # report, go on
                        row[key + "_error"] = str(e).splitlines()[0][:200]

                lever("nchw", lambda: module(nchw))
                if spec.get("kind") == "learned":
                    full = torch.jit.load(str(args.bundle / spec["file"]), map_location="cuda").eval()
                    lever("fp32", lambda: full(frame))
                if spec.get("kind") == "learned" and spec.get("deploy_form") == "phases":
                    # re-formed from the rung's own weights (the u8-wrapper rungs, Fourier ones, have none)
                    twin = phase_deploy_from_state(
                        {k: v.float().cpu() for k, v in full.state_dict().items()}, scale)
                    padded = torch.jit.script(pad_channels(twin)).cuda().eval()
                    if half:
                        padded = padded.half()
                    lever("padded", lambda: padded(frame))
                    lever("padded_nchw", lambda: padded(nchw))
                    if spec.get("cuda_file"):  # what the element loads on CUDA
                        form = torch.jit.load(str(args.bundle / spec["cuda_file"]),
                                              map_location="cuda").eval()
                        form = form.half() if half else form
                        lever("cuda_file", lambda: form(frame))
                    if not args.no_inductor:
                        eager = (twin.half() if half else twin).cuda().eval()
                        compiled = torch.compile(eager)
                        lever("inductor", lambda: compiled(frame))
                        lever("inductor_nchw", lambda: compiled(nchw))
            out_host = torch.empty(tuple(reference.shape), dtype=torch.uint8)
            pinned_in, pinned_out = host.pin_memory(), out_host.pin_memory()
            row["upload_ms"] = timed(lambda: frame.copy_(host), args.frames)
            row["upload_pinned_ms"] = timed(lambda: frame.copy_(pinned_in, non_blocking=True),
                                            args.frames)
            row["download_ms"] = timed(lambda: out_host.copy_(reference), args.frames)
            row["download_pinned_ms"] = timed(
                lambda: pinned_out.copy_(reference, non_blocking=True), args.frames)
            floor = conv_floor_bytes(module, h, w, half) + host.numel() + reference.numel()
            row["floor_bytes"] = floor
            row["floor_ms"] = floor / bandwidth * 1000
            best = min(v for k, v in row.items() if k.endswith("_ms") and not k.startswith(
                ("upload", "download", "floor", "inductor")))
            row["best_ms"] = best
            row["best_fps"] = 1000 / best
            results.append(row)
            levers = []
            for key in ("element", "benchmark", "frozen", "graph", "nchw", "fp32", "padded",
                        "padded_nchw", "cuda_file", "inductor", "inductor_nchw"):
                if key + "_ms" in row:
                    diff = row.get(key + "_diff")
                    levers.append(f"{key} {row[key + '_ms']:.3f}"
                                  + (f" (diff {diff})" if diff is not None else ""))
                elif key + "_error" in row:
                    levers.append(f"{key} failed: {row[key + '_error']}")
            print(f"levers: x{scale} {spec['name']:<13} {w}x{h}: " + ", ".join(levers)
                  + f"; best {best:.3f} ms = {1000 / best:.0f} fps; floor {floor / 1e6:.1f} MB "
                  f"= {row['floor_ms']:.3f} ms ({best / row['floor_ms']:.1f}x); upload "
                  f"{row['upload_ms']:.3f} / pinned {row['upload_pinned_ms']:.3f} ms, download "
                  f"{row['download_ms']:.3f} / pinned {row['download_pinned_ms']:.3f} ms",
                  flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "levers.json").write_text(json.dumps(
            {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
             "copy_bandwidth_bytes_per_s": bandwidth, "rungs": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
