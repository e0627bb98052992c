# SPDX-License-Identifier: MPL-2.0
"""Quantization-aware fine-tuning and the fp16-conv / fp32-FFT deployment form."""
import pytest
import torch
from torch import nn

from lightsr import quantize
from lightsr.archs import build_network
from lightsr.archs.fourier_arch import FourierUnit
from lightsr.recovery import training_images

TINY = {"type": "F2SRGANGenerator", "scale": 2, "num_blocks": 2, "fourier": True, "width": 16}


def tiny():
    torch.manual_seed(0)
    return build_network(TINY).eval()


def test_fp16_fft_of_a_1080p_frame_of_half_overflows():
    frame = torch.full((1080, 1080), 0.5)
    dc = torch.fft.rfftn(frame.double(), norm="backward")[0, 0].real.item()
    assert dc == pytest.approx(0.5 * 1080 * 1080) and dc > quantize.FP16_MAX
    try:  # a real half FFT where the build has one (CPU has none; CUDA only for powers of 2)
        native = torch.fft.rfftn(frame.half())[0, 0].real.item()
    except RuntimeError:
        native = None
    if native is not None:
        assert native == float("inf")
    assert torch.isinf(quantize.fp16_dft_dc(frame))
    assert quantize.fp16_dft_dc(frame[:64, :64]).item() == 0.5 * 64 * 64  # exact where it fits
    # 'ortho' scales by 1/1080 and a 0..1 frame then fits (DC 540) ...
    assert quantize.fp16_dft_dc(frame, ortho=True).item() == pytest.approx(540, rel=1e-2)
    # ... but the network works on 0..255 values: the same frame there overflows even with ortho.
    assert torch.isinf(quantize.fp16_dft_dc(frame * 255, ortho=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: native fp16 cuFFT not testable")
def test_native_cuda_fp16_fft_overflows():
    frame = torch.full((1024, 1024), 0.5, device="cuda", dtype=torch.half)
    assert torch.isinf(torch.fft.rfftn(frame)[0, 0].real).item()
    assert torch.isfinite(torch.fft.rfftn(frame.float())[0, 0].real).item()


def test_deployed_form_is_finite_on_a_1080p_frame_of_half():
    qat = tiny()
    quantize.insert_fake_quant(qat)
    quantize.calibrate(qat, training_images(None), batches=2)
    float_form = quantize.deployment_form(qat, torch.float32)
    half_form = quantize.deployment_form(qat, torch.float16)
    assert all(m.weight.dtype == torch.float16 for m in half_form.modules() if isinstance(m, nn.Conv2d))
    spectra_in = []
    for m in half_form.modules():
        if isinstance(m, FourierUnit):
            m.register_forward_pre_hook(lambda mod, inp: spectra_in.append(inp[0][0].float().cpu()))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    frame = torch.full((1, 3, 1080, 1080), 127.5)  # 0.5 in the network's 0..255 scale
    with torch.no_grad():
        want = float_form(frame)
        got = half_form.to(device)(frame.to(device, torch.float16)).float().cpu()
    assert got.shape == (1, 3, 2160, 2160)
    assert torch.isfinite(got).all()
    assert (got - want).abs().max().item() < 2.0  # fp16 rounding only, on a 0..255 scale
    # the Fourier units of this very frame get inputs whose fp16 spectrum would overflow
    assert spectra_in and any(torch.isinf(quantize.fp16_dft_dc(s)).any() for s in spectra_in)


def test_fake_quant_training_and_folding():
    net = tiny()
    trainable = sum(isinstance(m, nn.Conv2d) and m.weight.requires_grad for m in net.modules())
    assert quantize.insert_fake_quant(net) == trainable
    net.train()
    x = torch.rand(2, 3, 12, 12) * 255
    net(x).abs().mean().backward()  # straight-through: gradients reach the float weights
    fq = [m for m in net.modules() if isinstance(m, quantize.FakeQuantConv2d)]
    assert all(m.conv.weight.grad is not None and m.conv.weight.grad.abs().sum() > 0 for m in fq)
    assert all(bool(m.observed) and m.act_max >= m.act_min for m in fq)
    deployed = quantize.deployment_form(net, torch.float32)
    assert not any(isinstance(m, quantize.FakeQuantConv2d) for m in deployed.modules())
    conv = deployed.residual[1].block1[0][1]
    w = conv.weight.detach()
    steps = w / (w.abs().amax(dim=(1, 2, 3), keepdim=True) / 127)
    assert torch.allclose(steps, steps.round(), atol=1e-3)  # weights on the int8 grid
    torch.jit.script(deployed)


def test_quantize_command(tmp_path, capsys):
    net = tiny()
    ckpt = tmp_path / "g.pth"
    torch.save({"params": net.state_dict(), "opt": TINY}, ckpt)
    out = tmp_path / "q.pth"
    assert quantize.main(["--checkpoint", str(ckpt), "--finetune-steps", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "QAT 2 steps" in text and "deployment form" in text
    saved = torch.load(out, weights_only=False)
    assert saved["quantize"]["max_abs_diff_fp16"] < 10
    assert saved["module"](torch.rand(1, 3, 9, 7) * 255).shape == (1, 3, 18, 14)


def test_pruned_then_quantized_module_exports_as_a_variant(tmp_path):
    from lightsr import export, prune  # noqa: PLC0415

    net = tiny()
    prune.prune_generator(net, "l1", 0.5, tail=True)
    pruned = tmp_path / "pruned.pth"
    prune.save_pruned(pruned, net, TINY, {"importance": "l1", "ratio": 0.5, "tail": True})
    qat = tmp_path / "qat.pth"
    assert quantize.main(["--checkpoint", str(pruned), "--out", str(qat)]) == 0
    saved = torch.load(qat, weights_only=False)
    assert saved["arch"] == "f2srgan-pruned-qat"
    scale, exported = export.export_checkpoint({"checkpoint": str(qat), "name": "qat"}, timing=False)
    assert scale == 2 and exported.variant.arch == "f2srgan-pruned-qat" and exported.variant.half
    frame = torch.randint(0, 256, (1, 9, 11, 3), dtype=torch.uint8)
    assert exported.module(frame).shape == (1, 18, 22, 3)
