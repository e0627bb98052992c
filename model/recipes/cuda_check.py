# SPDX-License-Identifier: MPL-2.0
"""CUDA check of the deployment form: fp16 convolutions with the Fourier unit in fp32.

Prints, per architecture (random weights, seeded: the numerics of the form, not of training):
the fp16-vs-fp32 difference of the uint8 output, per-frame GPU time (CUDA events, median)
of the TorchScript u8 module at 320x180 and 480x270 -> x4 (1080p out), and whether a pure
fp16 FFT of a 1024x1024 frame of 0.5 overflows on this GPU (cuFFT half needs powers of 2).
Usage: PYTHONPATH=model python model/recipes/cuda_check.py
"""
import copy
import statistics

import torch

from lightsr.archs import build_network
from lightsr.deploy import U8Deploy

ARCHS = {
    "f2srgan": dict(num_blocks=16, fourier=True, width=64, upsampler="published"),
    "light": dict(num_blocks=8, fourier=False, width=64, upsampler="published"),
    "fast": dict(num_blocks=4, fourier=False, width=32, upsampler="light"),
}


def gpu_ms(fn, x, reps=20):
    for _ in range(5):
        fn(x)
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(x); b.record(); torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def main():
    dev = torch.device("cuda")
    print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
    x = torch.full((1, 1, 1024, 1024), 0.5, dtype=torch.half, device=dev)
    y = torch.fft.rfftn(x, dim=[-2, -1], norm="ortho")
    print(f"pure fp16 rfftn of 1024x1024 x 0.5: DC = {y[0,0,0,0].real.item()} (fp32 gives "
          f"{torch.fft.rfftn(x.float(), dim=[-2,-1], norm='ortho')[0,0,0,0].real.item():.1f})")
    g = torch.Generator().manual_seed(0)
    for name, cfg in ARCHS.items():
        torch.manual_seed(0)
        net = build_network({"type": "F2SRGANGenerator", "scale": 4, **cfg})
        m32 = torch.jit.script(U8Deploy(net, 4).eval()).to(dev)
        m16 = torch.jit.script(copy.deepcopy(U8Deploy(net, 4)).half().eval()).to(dev)
        frame = torch.randint(0, 256, (1, 180, 320, 3), generator=g, dtype=torch.uint8).to(dev)
        with torch.no_grad():
            o32, o16 = m32(frame).int(), m16(frame).int()
            diff = (o32 - o16).abs()
            row = [f"{name:8s} fp16-vs-fp32 u8 max {diff.max().item():3d} mean {diff.float().mean().item():.3f}"]
            for h, w in ((180, 320), (270, 480)):
                f = torch.randint(0, 256, (1, h, w, 3), generator=g, dtype=torch.uint8).to(dev)
                t32, t16 = gpu_ms(m32, f), gpu_ms(m16, f)
                row.append(f"{w}x{h}->x4 fp32 {t32:7.2f} ms fp16 {t16:7.2f} ms ({1000/t16:6.1f} fps)")
        print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
