# SPDX-License-Identifier: MPL-2.0
"""Architectures: shapes (odd sizes too), parameter counts, TorchScript, features, dtypes."""
import pytest
import torch

from lightsr.archs import build_network
from lightsr.archs.f2srgan_arch import F2SRGANGenerator
from lightsr.archs.fourier_arch import FourierUnit, SpectralTransform
from lightsr.complexity import count_params


def generator(**opt):
    torch.manual_seed(0)
    return build_network({"type": "F2SRGANGenerator", **opt}).eval()


def frame(h, w, n=1, seed=1):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 255


@pytest.mark.parametrize("scale, trainable", [(4, 202_209), (2, 184_865)])
def test_published_parameter_counts(scale, trainable):
    g = generator(scale=scale)
    assert count_params(g) == trainable
    assert count_params(g, trainable_only=False) - trainable == 24  # frozen mean shifts


def test_student_is_eight_plain_blocks():
    s = generator(scale=4, num_blocks=8, fourier=False)
    assert len(s.residual) == 8
    assert not any(isinstance(m, FourierUnit) for m in s.modules())
    assert count_params(s) == 113_121  # = F2SRGAN_4x_student.pt


@pytest.mark.parametrize("opt", [
    dict(scale=4), dict(scale=2), dict(scale=4, num_blocks=8, fourier=False),
    dict(scale=4, num_blocks=2, upsampler="light"), dict(scale=3, num_blocks=2, upsampler="light"),
])
@pytest.mark.parametrize("h, w", [(37, 53), (1, 1), (2, 3), (16, 16)])
def test_output_shape_any_size(opt, h, w):
    g = generator(**opt)
    with torch.no_grad():
        out = g(frame(h, w, n=2))
    s = opt["scale"]
    assert out.shape == (2, 3, h * s, w * s)
    assert torch.isfinite(out).all()


def test_published_upsampler_rejects_scale_3():
    with pytest.raises(ValueError, match="light"):
        generator(scale=3)


def test_unknown_network_type_is_named():
    with pytest.raises(ValueError, match="registered"):
        build_network({"type": "NoSuchNet"})


def test_generator_produces_an_image_not_a_constant():
    # with the mean shifts, an untrained net must still carry the input's structure through
    g = generator(scale=2, num_blocks=2)
    x = frame(24, 24)
    with torch.no_grad():
        out = g(x)
    assert out.std() > 1.0


@pytest.mark.parametrize("opt", [dict(scale=4, num_blocks=4), dict(scale=2, num_blocks=4, fourier=False)])
def test_scripted_generator_matches_eager(opt):
    g = generator(**opt)
    sg = torch.jit.script(g)
    x = frame(37, 53)
    with torch.no_grad():
        assert torch.allclose(sg(x), g(x), atol=1e-3)
        out, feats = sg.forward_features(x)
    assert len(feats) == 4


def test_forward_features_returns_every_residual_block():
    g = generator(scale=2, num_blocks=6, width=32)
    x = frame(11, 13, n=2)
    with torch.no_grad():
        out, feats = g.forward_features(x)
        plain = g(x)
    assert torch.allclose(out, plain)
    assert [tuple(f.shape) for f in feats] == [(2, 32, 11, 13)] * 6
    assert not torch.allclose(feats[0], feats[-1])


def published_fourier_unit(fu: FourierUnit, x: torch.Tensor) -> torch.Tensor:
    """The published formula, literally: fftshift / ifftshift over ALL dims."""
    h, w = x.shape[-2:]
    y = torch.fft.fftshift(torch.fft.rfftn(x, dim=(-2, -1), norm="ortho"))
    wc = torch.complex(fu.complex_weight[..., 0], fu.complex_weight[..., 1])
    conv = torch.nn.functional.conv2d
    re = conv(y.real, wc.real) - conv(y.imag, wc.imag)
    im = conv(y.real, wc.imag) + conv(y.imag, wc.real)
    y = torch.fft.ifftshift(torch.complex(re, im))
    return torch.fft.irfftn(y, s=(h, w), dim=(-2, -1), norm="ortho")


@pytest.mark.parametrize("cin, cout, n, h, w", [(16, 16, 3, 9, 7), (5, 6, 1, 8, 10), (4, 4, 2, 1, 1)])
def test_fourier_unit_equals_published_shifted_formula(cin, cout, n, h, w):
    torch.manual_seed(0)
    fu = FourierUnit(cin, cout)
    x = torch.randn(n, cin, h, w)
    with torch.no_grad():
        assert torch.allclose(fu(x), published_fourier_unit(fu, x), atol=1e-5)


def test_fourier_unit_computes_fp32_inside_a_half_module():
    fu = FourierUnit(16, 16).half()
    # all-0.5 frame: the DC bin of the 1080x1080 spectrum is 0.5 * 1080 = 540 with 'ortho'
    # norm and 583,200 without; fp16 tops out at 65,504, so only an fp32 FFT stays finite
    x = torch.full((1, 16, 1080, 1080), 0.5, dtype=torch.half)
    with torch.no_grad():
        out = fu(x)
    assert out.dtype == torch.half
    assert torch.isfinite(out).all()
    ref = FourierUnit(16, 16)
    ref.load_state_dict({k: v.float() for k, v in fu.state_dict().items()})
    with torch.no_grad():
        want = ref(x[:, :, :64, :64].float())
    assert torch.allclose(fu(x[:, :, :64, :64]).float(), want, atol=2e-2)


def test_half_generator_runs_and_tracks_fp32():
    g = generator(scale=2, num_blocks=2)
    x = frame(12, 14)
    with torch.no_grad():
        want = g(x)
        got = g.half()(x.half())
    assert got.dtype == torch.half
    assert torch.isfinite(got).all()
    assert (got.float() - want).abs().max() < 2.0  # grey levels on a 0..255 scale


def test_spectral_transform_odd_sizes_pad_local_fourier():
    st = SpectralTransform(32, 32).eval()
    x = torch.randn(1, 32, 9, 7)
    with torch.no_grad():
        assert st(x).shape == (1, 32, 9, 7)


def test_discriminator_probability_per_image():
    torch.manual_seed(0)
    d = build_network({"type": "SwiftSRGANDiscriminator"}).eval()
    x = torch.rand(3, 3, 48, 48)
    with torch.no_grad():
        p, logit = d(x), d.logits(x)
    assert p.shape == (3, 1)
    assert ((p > 0) & (p < 1)).all()
    assert torch.allclose(p, torch.sigmoid(logit))
    assert count_params(d) == sum(m.numel() for m in d.parameters())
    assert d.classifier[2].in_features == 512 * 6 * 6


def test_unet_discriminator_gives_a_logit_per_pixel_and_is_spectrally_bounded():
    torch.manual_seed(0)
    d = build_network({"type": "UNetDiscriminatorSN", "width": 8}).train()
    x = torch.rand(2, 3, 32, 40)
    for _ in range(30):  # power iterations converge to the largest singular value
        d.logits(x)
    d.eval()
    with torch.no_grad():
        p, logit = d(x), d.logits(x)
    assert logit.shape == (2, 1, 32, 40)
    assert torch.allclose(p, torch.sigmoid(logit))
    # spectral normalisation: every normalised conv's weight matrix has spectral norm ~1
    w = d.conv2.weight.detach().flatten(1)
    assert abs(torch.linalg.matrix_norm(w, ord=2).item() - 1.0) < 0.05
    # locality: changing one corner changes the logits near it, not those far away
    y = x.clone()
    y[:, :, :4, :4] = 1 - y[:, :, :4, :4]
    with torch.no_grad():
        delta = (d.logits(y) - logit).abs()
    assert delta[..., :8, :8].max() > 10 * delta[..., 24:, 32:].max()
    with pytest.raises(ValueError, match="divisible by 8"):
        d.logits(torch.rand(1, 3, 30, 40))


def test_deepen_from_preserves_the_student_function_and_then_trains():
    from lightsr.archs.f2srgan_arch import deepen_from
    student = generator(scale=2, num_blocks=4, fourier=False, width=16)
    with torch.no_grad():  # a 'trained' student: non-zero everywhere
        for p in student.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    teacher = generator(scale=2, num_blocks=8, fourier=True, width=16)
    x = frame(19, 23)
    with torch.no_grad():
        before = teacher(x)
    targets = deepen_from(teacher, student.state_dict())
    assert targets == [1, 3, 5, 7]
    with torch.no_grad():
        s_out, s_feats = student.forward_features(x)
        t_out, t_feats = teacher.forward_features(x)
    assert (before - s_out).abs().max() > 1.0  # the fresh teacher computed something else
    assert (t_out - s_out).abs().max() < 1e-3
    for i, j in enumerate(targets):
        assert torch.allclose(t_feats[j], s_feats[i], atol=1e-4)
    # the identity blocks are trainable: one step moves the Fourier blocks' zeroed convs
    teacher.train()
    loss = (teacher(x) - x.repeat_interleave(2, 2).repeat_interleave(2, 3)).abs().mean()
    loss.backward()
    assert teacher.residual[0].block2[0][1].weight.grad.abs().sum() > 0


def test_deepen_from_a_dense_rung_into_a_dense_fourier_one():
    """Dense-conv rungs deepen too: the new blocks' last convs are the dense convs themselves."""
    from lightsr.archs.f2srgan_arch import deepen_from
    common = dict(scale=4, width=16, upsampler="light", image_skip=True, conv="dense", res_scale=1.0)
    student = generator(num_blocks=2, fourier=False, **common)
    with torch.no_grad():
        for p in student.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    teacher = generator(num_blocks=4, fourier=True, **common)
    assert deepen_from(teacher, student.state_dict()) == [1, 3]
    x = frame(11, 14)
    with torch.no_grad():
        assert (teacher(x) - student(x)).abs().max() < 1e-3


def test_deepen_from_names_the_mismatch():
    from lightsr.archs.f2srgan_arch import deepen_from
    student = generator(scale=2, num_blocks=4, fourier=False, width=32)
    teacher = generator(scale=2, num_blocks=8, fourier=True, width=16)
    with pytest.raises(ValueError, match="same width"):
        deepen_from(teacher, student.state_dict())


@pytest.mark.parametrize("upsampler", ["light", "published"])
def test_image_skip_generator_starts_as_bicubic_and_learns_a_correction(upsampler):
    import torch.nn.functional as F
    net = F2SRGANGenerator(scale=4, num_blocks=2, fourier=True, width=16, upsampler=upsampler, image_skip=True).eval()
    x = torch.rand(1, 3, 13, 18) * 255
    bicubic = F.interpolate(x, scale_factor=4.0, mode="bicubic", align_corners=False)
    assert torch.equal(net(x), bicubic)
    assert torch.equal(torch.jit.script(net)(x), bicubic)
    last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-2]
    with torch.no_grad():
        last.bias.fill_(1.0)
    out, feats = net.forward_features(x)
    assert torch.allclose(out, bicubic + 1.0, atol=1e-4) and len(feats) == 2
    # no new parameters: the published checkpoints' state dicts still match the plain generator
    plain = F2SRGANGenerator(scale=4, num_blocks=2, fourier=True, width=16, upsampler=upsampler)
    assert net.state_dict().keys() == plain.state_dict().keys()


def test_dense_fourier_generator_keeps_published_ffcs_between_plain_convs():
    """`conv: dense` with Fourier blocks (the ladders' top rungs): every even block starts with the
    published FFC (SepConvs and Fourier units inside), every other 3x3 conv is a plain conv; the FFTs
    stay fp32 in a half module, and the image skip still starts the network as bicubic."""
    import torch.nn.functional as F
    from lightsr.archs.arch_util import SepConv
    from lightsr.archs.fourier_arch import FFC
    net = generator(scale=4, num_blocks=4, fourier=True, width=16, upsampler="light", image_skip=True,
                    conv="dense", res_scale=1.0)
    firsts = [type(b.block1[0]) for b in net.residual]
    assert firsts == [FFC, torch.nn.Conv2d, FFC, torch.nn.Conv2d]
    assert all(type(b.block2[0]) is torch.nn.Conv2d for b in net.residual)
    assert not any(isinstance(m, SepConv) for m in (net.initial[0], net.upsampler[0]))
    x = frame(13, 18)
    bicubic = F.interpolate(x, scale_factor=4.0, mode="bicubic", align_corners=False)
    assert torch.equal(net(x), bicubic)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
        want = net(x)
        got = torch.jit.script(net).half()(x.half()).float()
    assert (want - bicubic).abs().max() > 1, "the correction is not trivial"
    assert (got - want).abs().max() < 2.0  # fp16 convs around fp32 FFTs
    assert torch.isfinite(got).all()
    with pytest.raises(ValueError, match="upsampler='light'"):
        generator(scale=4, num_blocks=2, fourier=True, width=16, conv="dense")


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("h, w", [(16, 24), (17, 23), (1, 1), (5, 2)])
def test_unshuffled_generator_starts_as_bicubic_at_any_size(scale, h, w):
    """`unshuffle: 2` (head and body at half resolution): any frame size, odd ones padded and cropped
    back, starting as exactly bicubic like every image-skip generator, and then computing a
    correction that depends on the content."""
    import torch.nn.functional as F
    net = F2SRGANGenerator(scale=scale, num_blocks=2, fourier=False, width=16, upsampler="light",
                           image_skip=True, conv="dense", res_scale=1.0, unshuffle=2).eval()
    assert net.initial[0].in_channels == 12 and net.upsampler[1].upscale_factor == 2 * scale
    x = torch.rand(2, 3, h, w) * 255
    padded = F.pad(x, [0, w % 2, 0, h % 2], mode="replicate")
    bicubic = F.interpolate(padded, scale_factor=float(scale), mode="bicubic", align_corners=False)
    bicubic = bicubic[:, :, : h * scale, : w * scale]
    with torch.no_grad():
        assert torch.equal(net(x), bicubic)
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
        out = net(x)
        assert out.shape == (2, 3, h * scale, w * scale)
        assert (out - bicubic).abs().max() > 1
        assert torch.allclose(torch.jit.script(net)(x), out, atol=1e-3)


def test_unshuffle_is_refused_where_it_has_no_meaning():
    base = dict(scale=4, num_blocks=2, fourier=False, width=16, upsampler="light", image_skip=True, conv="dense")
    for bad in (dict(unshuffle=3), dict(unshuffle=2, image_skip=False), dict(unshuffle=2, conv="sep"),
                dict(unshuffle=2, fourier=True)):
        with pytest.raises(ValueError, match="unshuffle"):
            F2SRGANGenerator(**{**base, **bad})


def test_channel_attention_gives_a_local_network_the_whole_frame():
    """With `attention`, an output pixel depends on input pixels far outside the convolutions'
    reach (the frame's mean feeds every block's gains); without it, it does not. The published
    state-dict keys stay as they are when attention is off."""
    torch.manual_seed(3)
    opt = dict(scale=2, num_blocks=2, fourier=False, width=16, upsampler="light", image_skip=True,
               conv="dense", res_scale=1.0)
    for attention, reaches in ((0, False), (4, True)):
        net = F2SRGANGenerator(**opt, attention=attention).eval()
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
            x = torch.rand(1, 3, 48, 48) * 255
            far = x.clone()
            far[:, :, 40:, 40:] = 0.0  # 30+ pixels from the corner the test reads
            changed = (net(x)[:, :, :8, :8] - net(far)[:, :, :8, :8]).abs().max().item()
        assert (changed > 1e-3) == reaches, (attention, changed)
    with pytest.raises(ValueError, match="attention"):
        F2SRGANGenerator(**{**opt, "conv": "sep"}, attention=4)
    assert "residual.0.attention.fc1.weight" in F2SRGANGenerator(**opt, attention=4).state_dict()
    assert not any("attention" in k for k in F2SRGANGenerator(**opt).state_dict())
