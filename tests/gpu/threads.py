# SPDX-License-Identifier: MPL-2.0
"""What a rung's first frame costs on a thread other than the one that warmed it up, on CUDA.

The element measures its rungs on a warm-up thread of its own while a live stream runs the
lightest rung; the stream's frames then run on GStreamer's streaming thread. On an H200 the
first fourier frame on the streaming thread took about 230 ms after a warm-up on another thread
had run it 7 times at 7 ms. Each case below runs in a fresh process (cold CUDA context) at
320x180 -> x4 and prints milliseconds per call:

* `same`     : warm-up (7 runs) on thread A, then 3 runs on thread A;
* `other`    : warm-up on thread A, then 3 runs on thread B (what the element does today);
* `touched`  : as `other`, but thread B first runs the rung once on a 16x16 frame;
* `ops`      : as `other`, but thread B first runs one tiny fp16 convolution, an FFT and a
  matrix product (per-thread cuDNN / cuBLAS / cuFFT state) and nothing of the rung.

    python3 tests/gpu/threads.py model/bundles/default [fourier deep ...]
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch


def load(bundle: Path, name: str, scale: int = 4):
    manifest = json.loads((bundle / "manifest.json").read_text())
    ladder = next(ld for ld in manifest["ladders"] if ld["scale"] == scale)
    spec = next(v for v in ladder["variants"] if v["name"] == name)
    module = torch.jit.load(str(bundle / spec.get("cuda_file", spec["file"])), map_location="cuda")
    module = module.eval()
    return module.half() if spec.get("half") else module


def run_ms(module, frame) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        out = module(frame)
    out.sum().item()
    return (time.perf_counter() - start) * 1e3


def case(bundle: Path, name: str, how: str) -> None:
    module = load(bundle, name)
    frame = torch.zeros(1, 180, 320, 3, dtype=torch.uint8, device="cuda")
    result: dict[str, object] = {}

    def warm():
        result["warm"] = [round(run_ms(module, frame), 2) for _ in range(7)]

    def stream():
        if how == "touched":
            tiny = torch.zeros(1, 16, 16, 3, dtype=torch.uint8, device="cuda")
            result["touch"] = round(run_ms(module, tiny), 2)
        elif how == "ops":
            start = time.perf_counter()
            with torch.no_grad():
                x = torch.zeros(1, 8, 16, 16, device="cuda", dtype=torch.half)
                w = torch.zeros(8, 8, 3, 3, device="cuda", dtype=torch.half)
                torch.nn.functional.conv2d(x, w, padding=1).sum().item()
                torch.fft.rfft2(torch.zeros(1, 8, 16, 16, device="cuda")).abs().sum().item()
                (torch.zeros(16, 16, device="cuda", dtype=torch.half) @ torch.zeros(
                    16, 16, device="cuda", dtype=torch.half)).sum().item()
            result["touch"] = round((time.perf_counter() - start) * 1e3, 2)
        result["after"] = [round(run_ms(module, frame), 2) for _ in range(3)]

    def same():
        warm()
        result["after"] = [round(run_ms(module, frame), 2) for _ in range(3)]

    if how == "same":
        threads = [threading.Thread(target=same)]
    else:
        threads = [threading.Thread(target=warm), threading.Thread(target=stream)]
    for t in threads:  # one after the other, as the element's warm-up and streaming threads
        t.start()
        t.join()
    print(f"threads: {name:8s} {how:8s} {json.dumps(result)}", flush=True)


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[2] == "--case":
        case(Path(sys.argv[1]), sys.argv[3], sys.argv[4])
        return 0
    if not torch.cuda.is_available():
        print("threads: no CUDA device; nothing measured")
        return 0
    bundle = Path(sys.argv[1])
    for name in sys.argv[2:] or ["fourier", "deep"]:
        for how in ("same", "other", "touched", "ops"):
            subprocess.run([sys.executable, __file__, str(bundle), "--case", name, how],
                           check=False, timeout=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
