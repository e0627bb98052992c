# SPDX-License-Identifier: MPL-2.0
"""Where a learned rung's GPU time goes: the CUDA kernels of one frame at the sizes users run
(960x540 -> x4, 1920x1080 -> x2), as shipped and with widths padded to a multiple of 8, with
cuDNN on and off (off: PyTorch's own depthwise kernels). Prints the top kernels per case.

    python3 tests/gpu/kernels.py model/bundles/default
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "model"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from levers import SIZES, timed  # noqa: E402
from lightsr.deploy import pad_channels, phase_deploy_from_state  # noqa: E402


def main() -> int:
    bundle = Path(sys.argv[1])
    if not torch.cuda.is_available():
        print("profile: no CUDA device; nothing measured")
        return 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    for ladder in manifest["ladders"]:
        scale = ladder["scale"]
        w, h = SIZES[scale]
        spec = next(v for v in ladder["variants"] if v.get("kind") == "learned")
        shipped = torch.jit.load(str(bundle / spec["file"]), map_location="cuda").eval()
        twin = phase_deploy_from_state({k: v.cpu() for k, v in shipped.state_dict().items()}, scale)
        padded = torch.jit.script(pad_channels(twin)).cuda().eval().half()
        shipped = shipped.half()
        frame = torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8, device="cuda")
        nchw = frame.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
        with torch.inference_mode():
            reference = shipped(frame)
            for cudnn in (True, False):
                torch.backends.cudnn.enabled = cudnn
                for label, module, x in (("shipped", shipped, frame), ("padded", padded, frame),
                                         ("shipped-nchw", shipped, nchw),
                                         ("padded-nchw", padded, nchw)):
                    ms = timed(lambda: module(x), 30)
                    diff = int((module(x).int() - reference.int()).abs().max())
                    print(f"profile: x{scale} {w}x{h} {label:<13} cudnn={cudnn!s:<5} {ms:7.3f} ms "
                          f"(diff {diff})", flush=True)
                    if label in ("shipped", "padded") and cudnn or label == "shipped" and not cudnn:
                        with profile(activities=[ProfilerActivity.CUDA]) as prof:
                            for _ in range(5):
                                module(x)
                            torch.cuda.synchronize()
                        events = sorted(prof.key_averages(), key=lambda e: -e.device_time_total)
                        for e in events[:8]:
                            print(f"    {e.device_time_total / 5 / 1000:7.3f} ms/frame "
                                  f"{e.count // 5:4d}x  {e.key[:110]}")
        torch.backends.cudnn.enabled = True
    return 0


if __name__ == "__main__":
    sys.exit(main())
