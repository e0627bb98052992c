# SPDX-License-Identifier: MPL-2.0
"""`lightsr quantize`: quantization-aware fine-tuning, then the fp16 / fp32-FFT deployment form.

QAT: every trainable Conv2d is wrapped in `FakeQuantConv2d`: int8 symmetric per-output-channel
weights and uint8 affine per-tensor activations (min/max tracked by an EMA observer), both with
straight-through gradients (torch's `fake_quantize_*` ops). The network is fine-tuned so it
learns to live with the rounding. The Fourier units are left alone: their complex 1x1 conv runs
on spectra whose DC term is the sum of all pixels, far outside any 8- or 16-bit range.

Deployment (what the bundle ships): fake-quant removed, the quantized weights folded into plain
convs; on CUDA the element casts the module to fp16 (convolutions fp16) while each Fourier unit
computes in fp32 (see archs/fourier_arch.py): an fp16 FFT overflows on real frames (a 1080x1080
frame of 0.5 has a DC term of 583,200 > 65,504, the fp16 maximum).

    lightsr quantize --checkpoint runs/pruned.pth --finetune-steps 2000 --out runs/qat.pth
"""
import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch

from torch import Tensor, nn

from lightsr.train import load_config
from lightsr.prune import generator_from, read_checkpoint
from lightsr.export import arch_name
from lightsr.recovery import finetune_to_reference, finetune_with_config, random_lr_batch, training_images

FP16_MAX = float(torch.finfo(torch.float16).max)


class FakeQuantConv2d(nn.Module):
    """A Conv2d seeing int8 per-channel weights and uint8 per-tensor activations (simulated).

    Args:
        conv: the float convolution to wrap (kept, so the module can be unwrapped).
        momentum: EMA momentum of the activation min / max observer.
    """

    def __init__(self, conv: nn.Conv2d, momentum: float = 0.01):
        super().__init__()
        self.conv = conv
        self.momentum = momentum
        self.register_buffer("act_min", torch.zeros(()))
        self.register_buffer("act_max", torch.zeros(()))
        self.register_buffer("observed", torch.zeros((), dtype=torch.bool))

    def _observe(self, x: Tensor) -> None:
        lo, hi = x.detach().min().float(), x.detach().max().float()
        if bool(self.observed):
            self.act_min.lerp_(lo, self.momentum)
            self.act_max.lerp_(hi, self.momentum)
        else:
            self.act_min.copy_(lo)
            self.act_max.copy_(hi)
            self.observed.fill_(True)

    def quantized_input(self, x: Tensor) -> Tensor:
        lo = torch.clamp(self.act_min, max=0.0)  # zero must be exactly representable
        hi = torch.clamp(self.act_max, min=0.0)
        scale = float(torch.clamp((hi - lo) / 255.0, min=1e-8))
        zero_point = int(torch.clamp(torch.round(-lo / scale), 0, 255))
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255)

    def quantized_weight(self) -> Tensor:
        w = self.conv.weight
        scale = (w.detach().abs().amax(dim=(1, 2, 3)) / 127.0).clamp(min=1e-8).float()
        zero = torch.zeros(w.size(0), dtype=torch.int32, device=w.device)
        return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -127, 127)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self._observe(x)
        if bool(self.observed):
            x = self.quantized_input(x)
        return self.conv._conv_forward(x, self.quantized_weight(), self.conv.bias)


def _replace_children(net: nn.Module, fn) -> int:
    """Replace every child for which `fn(child)` returns a module; return how many."""
    count = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            new = fn(child)
            if new is not None:
                setattr(parent, name, new)
                count += 1
    return count


def insert_fake_quant(net: nn.Module) -> int:
    """Wrap every trainable Conv2d in a FakeQuantConv2d (frozen mean shifts stay float)."""
    def wrap(m):
        if isinstance(m, nn.Conv2d) and m.weight.requires_grad:
            return FakeQuantConv2d(m)
        return None
    return _replace_children(net, wrap)


def remove_fake_quant(net: nn.Module) -> int:
    """Fold each FakeQuantConv2d's quantized weights into its plain conv and unwrap it."""
    def unwrap(m):
        if isinstance(m, FakeQuantConv2d):
            with torch.no_grad():
                m.conv.weight.copy_(m.quantized_weight())
            return m.conv
        return None
    return _replace_children(net, unwrap)


def deployment_form(qat_net: nn.Module, dtype: torch.dtype = torch.float16) -> nn.Module:
    """A copy without fake-quant, cast to `dtype`: convolutions in `dtype`, Fourier units fp32."""
    net = copy.deepcopy(qat_net).eval()
    remove_fake_quant(net)
    return net.to(dtype)


def calibrate(net: nn.Module, images, batches: int = 4, seed: int = 0) -> None:
    """Run a few batches in train mode without gradients so every observer has a range."""
    gen = np.random.default_rng(seed)
    net.train()
    with torch.no_grad():
        for _ in range(batches):
            net(random_lr_batch(images, 4, 24, gen))
    net.eval()


# --------------------------------------------------------------------------- fp16 FFT facts
def fp16_dft_dc(x: Tensor, ortho: bool = False) -> Tensor:
    """DC term of the 2-D DFT of each (..., H, W) plane, computed in fp16 arithmetic.

    Stands in for a half-precision FFT where there is none (CPU; CUDA only for powers of 2):
    the DC row of the DFT matrix is all ones, so the DC term is ones(H) @ x @ ones(W) in
    fp16. With `ortho`, the 1/sqrt(H) and 1/sqrt(W) factors are folded into those vectors,
    i.e. applied before summing, the most favourable order for fp16."""
    h, w = x.shape[-2:]
    rows = torch.full((1, h), (1 / h ** 0.5) if ortho else 1.0, dtype=torch.float16, device=x.device)
    cols = torch.full((w, 1), (1 / w ** 0.5) if ortho else 1.0, dtype=torch.float16, device=x.device)
    return (rows @ x.half() @ cols)[..., 0, 0]


# --------------------------------------------------------------------------- command
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightsr quantize", description=__doc__.split("\n\n")[0])
    p.add_argument("config", nargs="?", type=Path, help="YAML with checkpoint / quantize {finetune_steps} / train")
    p.add_argument("--checkpoint", type=Path, help="training checkpoint or saved (pruned) module")
    p.add_argument("--finetune-steps", type=int, help="QAT fine-tuning steps (default 0: calibration only)")
    p.add_argument("--images", type=Path, help="photos for the built-in fine-tuning (default: scikit-image's)")
    p.add_argument("--out", type=Path, help="output file (default: next to the checkpoint, *_qat.pth)")
    p.add_argument("--seed", type=int, default=0)
    return p


def deployment_error(reference: nn.Module, deployed: nn.Module, size=(48, 40)) -> float:
    """Max |fp32 reference - deployed| (0..255 scale) on a photo crop, deployed run in its dtype
    on CUDA when available (fp16 conv on CPU is slow or missing in some builds), else on CPU."""
    from skimage import data  # noqa: PLC0415

    x = torch.from_numpy(data.astronaut()[: size[0], : size[1]].transpose(2, 0, 1).copy()).float()[None]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = next(deployed.parameters()).dtype
    with torch.no_grad():
        want = reference.float().eval()(x)
        got = deployed.to(device)(x.to(device, dtype)).float().cpu()
    return float((want - got).abs().max())


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config(args.config) if args.config else {}
    ckpt = args.checkpoint or cfg.get("checkpoint")
    if not ckpt:
        raise SystemExit("lightsr quantize: give --checkpoint or a config with `checkpoint:`")
    ckpt = Path(ckpt)
    steps = args.finetune_steps if args.finetune_steps is not None else cfg.get("quantize", {}).get("finetune_steps", 0)
    out = args.out or Path(cfg.get("out", ckpt.with_name(ckpt.stem + "_qat.pth")))
    source = read_checkpoint(ckpt)
    net, opt = generator_from(source, cfg.get("network_g"))
    reference = copy.deepcopy(net).eval()
    n = insert_fake_quant(net)
    images = training_images(args.images)
    calibrate(net, images, seed=args.seed)
    print(f"fake-quant on {n} convolutions (int8 per-channel weights, uint8 per-tensor activations)")
    if steps > 0:
        if "train" in cfg:
            run_dir = out.with_name(out.stem + "_finetune")
            net = finetune_with_config(net, cfg, steps, run_dir)
            print(f"QAT {steps} steps with lightsr.train (run in {run_dir})")
        else:
            losses = finetune_to_reference(net, reference, steps, images, seed=args.seed)
            print(f"QAT {len(losses)} steps (L1 to the float net): loss {losses[0]:.3f} -> {np.mean(losses[-10:]):.3f}")
    deployed = deployment_form(net, torch.float32)  # the bundle stores fp32; CUDA casts to fp16
    torch.jit.script(deployed)
    err16 = deployment_error(reference, deployment_form(net, torch.float16))
    print(f"deployment form (fp16 convs, fp32 Fourier units) vs float: max |diff| {err16:.3f} (0..255)")
    out.parent.mkdir(parents=True, exist_ok=True)
    arch = arch_name(reference, "prune" in source) + "-qat"
    torch.save({"module": deployed, "opt": opt, "arch": arch,
                "description": f"quantization-aware fine-tuned ({steps} steps, int8 per-channel weight "
                               "grid); CUDA: fp16 convolutions, Fourier units fp32",
                "quantize": {"convs": n, "finetune_steps": steps, "max_abs_diff_fp16": err16,
                             "source": str(ckpt)}}, out)
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
