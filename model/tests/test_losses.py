# SPDX-License-Identifier: MPL-2.0
"""Losses on inputs whose values are worked out by hand in the comments."""
import math

import pytest
import torch
import torch.nn.functional as F

from lightsr import losses


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_l1_and_charbonnier():
    pred, target = torch.tensor([[3.0, -1.0]]), torch.zeros(1, 2)
    assert losses.L1Loss()(pred, target).item() == pytest.approx(2.0)
    # sqrt(3^2 + 4^2) = 5 and sqrt(1 + 16) = sqrt(17)
    assert losses.CharbonnierLoss(eps=4.0)(pred, target).item() == pytest.approx((5 + math.sqrt(17)) / 2)


def test_relativistic_losses_on_known_logits():
    real, fake = torch.tensor([3.0, 1.0]), torch.tensor([0.0, 0.0])
    # real - mean(fake) = [3, 1]; fake - mean(real) = [-2, -2]; BCE(x, 0) = softplus(x), BCE(x, 1) = softplus(-x)
    g = 0.5 * ((softplus(3) + softplus(1)) / 2 + softplus(2))
    d = 0.5 * ((softplus(-3) + softplus(-1)) / 2 + softplus(-2))
    assert losses.relativistic_generator_loss(real, fake).item() == pytest.approx(g, rel=1e-6)
    assert losses.relativistic_discriminator_loss(real, fake).item() == pytest.approx(d, rel=1e-6)
    assert g == pytest.approx(2.1539263, abs=1e-6) and d == pytest.approx(0.1539263, abs=1e-6)


def test_probabilities_to_logits_inverts_the_sigmoid():
    logits = torch.tensor([-3.0, 0.0, 2.5])
    assert torch.allclose(losses.probabilities_to_logits(torch.sigmoid(logits)), logits, atol=1e-5)


def test_total_variation_srgan_normalisation():
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    # dy^2 sum = 4 + 4 = 8 over C*(H-1)*W = 2 -> 4; dx^2 sum = 1 + 1 = 2 over C*H*(W-1) = 2 -> 1; 2 * (4 + 1) / N=1
    assert losses.TVLoss()(x).item() == pytest.approx(10.0)


def test_fft_loss_dc_term_and_phase_sensitivity():
    zeros, ones = torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)
    # ortho rfft2 of ones(4,4): DC = 16 / sqrt(16) = 4, zero elsewhere; 4 x 3 bins -> mean 4 / 12
    assert losses.FFTLoss()(ones, zeros).item() == pytest.approx(1 / 3)
    img = torch.zeros(1, 1, 4, 4)
    img[..., 0, 0] = 1.0
    shifted = torch.roll(img, 1, dims=-1)  # same amplitude spectrum, different phase
    assert losses.FFTLoss()(img, shifted).item() > 0.1
    assert losses.FFTLoss()(img, img).item() == 0.0


def test_gradient_loss_on_a_ramp():
    ramp = torch.arange(4.0).repeat(4, 1)[None, None]  # d/dx = 1 everywhere, d/dy = 0
    assert losses.GradientLoss(scales=(1,))(ramp, torch.zeros_like(ramp)).item() == pytest.approx(0.5)
    # 2x average pooling of the ramp: columns 0.5, 2.5 -> d/dx = 2; scales (1, 2): (1 + 0 + 2 + 0) / 4
    assert losses.GradientLoss(scales=(1, 2))(ramp, torch.zeros_like(ramp)).item() == pytest.approx(0.75)


def test_frequency_structure_loss_is_the_weighted_sum():
    a, b = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    loss = losses.FrequencyStructureLoss(fft_weight=2.0, gradient_weight=3.0)(a, b)
    expected = 2.0 * losses.FFTLoss()(a, b) + 3.0 * losses.GradientLoss()(a, b)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_local_spectrum_loss_by_hand():
    # one 2x2 tile; [[1, 0], [0, 0]] minus its mean 0.25 -> [[.75, -.25], [-.25, -.25]];
    # ortho DFT: DC 0, the three other bins (1/2) * (.75 + .25 +- ...) = 0.5 each; zeros -> 0
    pred = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert losses.LocalSpectrumLoss(2)(pred, torch.zeros_like(pred)).item() == pytest.approx(0.375, abs=1e-5)
    assert losses.LocalSpectrumLoss(2)(pred + 5.0, pred).item() == pytest.approx(0.0, abs=1e-5)  # DC is ignored


def test_local_spectrum_loss_ignores_where_texture_lies_but_not_blur():
    torch.manual_seed(0)
    texture = torch.rand(1, 3, 8, 8).repeat(1, 1, 4, 4)  # period 8, tiles of 16 at stride 8
    moved = torch.roll(texture, shifts=(3, 5), dims=(-2, -1))  # same texture, other phase
    blurred = F.avg_pool2d(texture, 3, stride=1, padding=1, count_include_pad=False)
    tex = losses.LocalSpectrumLoss(16)
    assert tex(moved, texture).item() < 1e-4
    assert losses.FFTLoss()(moved, texture).item() > 0.05  # the fidelity terms punish the shift
    assert tex(blurred, texture).item() > 0.02  # missing detail still costs
    with pytest.raises(ValueError, match="smaller than one 16x16 tile"):
        tex(texture[..., :8, :], texture[..., :8, :])
    with pytest.raises(ValueError, match="at least 2"):
        losses.LocalSpectrumLoss(1)


def test_low_pass_l1_sees_only_what_the_box_average_keeps():
    checker = (torch.arange(4.0)[:, None] + torch.arange(4.0)[None]).remainder(2)[None, None] * 2 - 1  # +-1
    zeros = torch.zeros_like(checker)
    assert losses.LowPassL1Loss(2)(checker, zeros).item() == 0.0  # every 2x2 box averages to 0
    assert losses.LowPassL1Loss(1)(checker, zeros).item() == pytest.approx(1.0)
    assert losses.LowPassL1Loss(2)(checker + 0.5, zeros).item() == pytest.approx(0.5)


def test_fixed_pattern_loss_sees_a_repeated_tile_not_content():
    torch.manual_seed(0)
    flat = torch.full((2, 3, 64, 64), 0.5)
    assert losses.FixedPatternLoss(4)(flat).item() == pytest.approx(0.0, abs=1e-12)
    grid = torch.zeros(1, 1, 4, 4)
    grid[..., 0, 0] = 0.04  # one bright pixel in every 4x4 tile
    gridded = (flat + grid.repeat(2, 3, 16, 16)).requires_grad_(True)
    texture = flat + 0.04 * torch.randn(2, 3, 64, 64)  # stronger, but not tied to the tile
    with_grid, with_texture = losses.FixedPatternLoss(4)(gridded), losses.FixedPatternLoss(4)(texture)
    assert with_grid.item() > 20 * with_texture.item()
    with_grid.backward()
    assert gridded.grad.abs().sum() > 0
    assert losses.FixedPatternLoss(3)(flat + grid.repeat(2, 3, 16, 16)).item() < with_grid.item() / 5  # other period


def test_attention_map_by_hand():
    f = torch.tensor([[[[1.0, 0.0]], [[1.0, 2.0]]]])  # (1, 2 ch, 1, 2)
    # mean over channels of f^2 = [1, 2]; L2-normalised = [1, 2] / sqrt(5)
    assert torch.allclose(losses.attention_map(f), torch.tensor([[1.0, 2.0]]) / math.sqrt(5))


def test_attention_transfer_by_hand_and_pairing():
    student = [torch.tensor([[[[1.0, 0.0]]]])]  # map [1, 0]
    teacher = [torch.tensor([[[[1.0, 1.0]]]])]  # map [1, 1] / sqrt(2)
    # ((1 - 1/sqrt2)^2 + (1/sqrt2)^2) / 2 = 1 - 1/sqrt(2)
    loss = losses.AttentionTransferLoss()(student, teacher)
    assert loss.item() == pytest.approx(1 - 1 / math.sqrt(2), rel=1e-6)
    assert losses.pair_layers(8, 16) == [1, 3, 5, 7, 9, 11, 13, 15]
    assert losses.pair_layers(3, 3) == [0, 1, 2]


def test_attention_transfer_is_zero_for_scaled_copies_and_gives_student_gradients():
    t = [torch.rand(2, 8, 5, 5) for _ in range(4)]
    s = [(2 * f[:, :4]).requires_grad_() for f in t[1::2]]  # half the channels: maps differ
    loss = losses.AttentionTransferLoss()(s, t)
    loss.backward()
    assert loss.item() > 0 and s[0].grad is not None and s[0].grad.abs().sum() > 0
    same = losses.AttentionTransferLoss()([3 * f for f in t], t)
    assert same.item() == pytest.approx(0.0, abs=1e-12)


def uniform_afd(n_student: int, n_teacher: int, channels: int) -> losses.AttentionFeatureDistillationLoss:
    afd = losses.AttentionFeatureDistillationLoss([channels] * n_student, [channels] * n_teacher, qk_dim=4)
    with torch.no_grad():
        for p in afd.parameters():
            p.zero_()  # zero queries / keys / positions -> logits 0 -> uniform attention
    return afd


def test_afd_uniform_attention_by_hand():
    afd = uniform_afd(2, 1, 1)
    teacher = [torch.tensor([[[[1.0, 0.0]]]]).repeat(2, 1, 1, 1)]  # batch 2 for BatchNorm; map [1, 0]
    s1 = torch.tensor([[[[1.0, 0.0]]]]).repeat(2, 1, 1, 1)  # same map: distance 0
    s2 = torch.tensor([[[[0.0, 1.0]]]]).repeat(2, 1, 1, 1)  # map [0, 1]: mean((-1)^2, 1^2) = 1
    alpha = afd.attention([s1, s2], teacher)
    assert torch.allclose(alpha, torch.full((2, 1, 2), 0.5))
    assert afd([s1, s2], teacher).item() == pytest.approx(0.5)  # 0.5 * 0 + 0.5 * 1


def test_afd_learns_its_attention_and_vanishes_on_identical_features():
    torch.manual_seed(0)
    t = [torch.rand(4, 8, 6, 6) for _ in range(4)]
    afd = losses.AttentionFeatureDistillationLoss([8, 8], [8] * 4, qk_dim=8)
    s = [torch.rand(4, 8, 6, 6, requires_grad=True) for _ in range(2)]
    loss = afd(s, t)
    loss.backward()
    assert loss.item() > 0
    assert afd.pos_student.grad.abs().sum() > 0 and s[0].grad.abs().sum() > 0
    # each teacher layer is compared with every student layer: zero only when all maps agree
    same = losses.AttentionFeatureDistillationLoss([8] * 2, [8] * 4, qk_dim=8)([t[0]] * 2, [2 * t[0]] * 4)
    assert same.item() == pytest.approx(0.0, abs=1e-12)


def test_loss_registry_builds_terms_and_names_bad_ones():
    term = losses.build_loss({"type": "CharbonnierLoss", "eps": 1e-3, "loss_weight": 0.5})
    assert isinstance(term.module, losses.CharbonnierLoss) and term.weight == 0.5 and term.name == "CharbonnierLoss"
    with pytest.raises(ValueError, match="MSELos.*L1Loss"):
        losses.build_loss({"type": "MSELos"})
    with pytest.raises(ValueError, match=r"train.losses\[0\]: .*window 1 must be at least 2"):
        losses.build_losses({"losses": [{"type": "LocalSpectrumLoss", "window": 1}]}, "pre", 4)


def test_legacy_opt_keys_and_the_losses_list_give_the_same_terms():
    legacy = losses.build_losses({"pixel_opt": {"type": "L1Loss", "loss_weight": 1.0},
                                  "texture_opt": {"loss_weight": 4.0, "window": 8},
                                  "pattern_opt": {"loss_weight": 0.0}}, "full", 4)
    # the GAN phase always had the perceptual and TV terms; a zero-weight texture/pattern term is left out
    assert [(t.name, t.weight) for t in legacy] == [("pix", 1.0), ("percep", 1.0), ("tv", 0.0), ("texture", 4.0)]
    assert legacy[3].module.window == 8
    listed = losses.build_losses({"losses": [{"type": "L1Loss", "name": "pix"},
                                             {"type": "FixedPatternLoss", "period": 4, "loss_weight": 2.0}]}, "pre", 4)
    assert [(t.name, t.weight) for t in listed] == [("pix", 1.0), ("FixedPatternLoss", 2.0)]
    assert losses.build_losses({"pixel_opt": {}, "texture_opt": {"loss_weight": 1.0}}, "pre", 4)[0].name == "pix"
    assert len(losses.build_losses({"pixel_opt": {}, "texture_opt": {"loss_weight": 1.0}}, "pre", 4)) == 1
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    for term in legacy + listed:  # every registered loss takes (pred, target)
        assert torch.isfinite(term.module(x, y))


def test_diff_augment_translates_cuts_out_and_passes_gradients():
    torch.manual_seed(0)
    x = torch.arange(4 * 3 * 16 * 16, dtype=torch.float).view(4, 3, 16, 16) + 1
    moved = losses.diff_augment(x, ("translation",))
    for i in range(4):  # each sample is its input shifted by at most 2 pixels, zero-filled
        shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                  if torch.equal(F.pad(x[i], (2, 2, 2, 2))[:, 2 + dy:18 + dy, 2 + dx:18 + dx], moved[i])]
        assert len(shifts) == 1
    holes = losses.diff_augment(x, ("cutout",)) == 0
    assert torch.equal(holes.float().mean(dim=(1, 2, 3)), torch.full((4,), 0.25))
    assert torch.equal(holes[:, 0], holes[:, 2])  # one hole through all channels
    x.requires_grad_(True)
    losses.diff_augment(x, ("translation", "cutout", "color")).square().sum().backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown policy 'flip'"):
        losses.diff_augment(x, ("flip",))


def test_loss_names_are_unique_and_legacy_numbers_are_cast():
    with pytest.raises(ValueError, match="used twice"):
        losses.build_losses({"losses": [{"type": "L1Loss"}, {"type": "L1Loss"}]}, "pre", 4)
    with pytest.raises(ValueError, match="reserved"):
        losses.build_losses({"losses": [{"type": "L1Loss", "name": "gan"}]}, "pre", 4)
    with pytest.raises(ValueError, match="used twice"):
        losses.build_losses({"pixel_opt": {}, "losses": [{"type": "L1Loss", "name": "pix"}]}, "pre", 4)
    terms = losses.build_losses({"perceptual_opt": {"fft_weight": "1e-3", "loss_weight": "2e-1"}}, "full", 4)
    assert terms[0].module.fft_weight == pytest.approx(1e-3) and terms[0].weight == pytest.approx(0.2)
    with pytest.raises(ValueError, match="train.tv_opt: expected a mapping"):
        losses.build_losses({"tv_opt": 0.5}, "full", 4)


def test_psnr_loss_in_ycbcr_weighs_chroma_as_asked():
    from lightsr.train import rgb_to_y
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 8, 8, generator=g) * 255
    pred = target + torch.randn(2, 3, 8, 8, generator=g) * 5
    # chroma weight 0: the PSNR loss of the luma alone, as the ladder is judged (offsets cancel)
    y_mse = (rgb_to_y(pred) - rgb_to_y(target)).square().flatten(1).mean(1)
    expected = (10 * torch.log10(y_mse + 1e-8)).mean().item()
    assert losses.PSNRLoss(chroma_weight=0.0)(pred, target).item() == pytest.approx(expected, abs=1e-4)
    # unset: RGB, as before
    rgb_mse = (pred - target).square().flatten(1).mean(1)
    assert losses.PSNRLoss()(pred, target).item() == pytest.approx((10 * torch.log10(rgb_mse)).mean().item(), abs=1e-4)
    # an error of chroma only (Y unchanged: +1 Cb step of BT.601 in RGB): invisible at weight 0,
    # counted at weight 0.25 as a quarter of each chroma plane's error over 1.5
    from lightsr.degradations import RGB_TO_YCBCR
    cb = torch.linalg.inv(torch.from_numpy(RGB_TO_YCBCR).float())[:, 1].view(1, 3, 1, 1)
    shifted = target + 4.0 * cb
    assert losses.PSNRLoss(chroma_weight=0.0)(shifted, target).item() < -70  # log10(eps) territory
    assert losses.PSNRLoss(chroma_weight=0.25)(shifted, target).item() == pytest.approx(
        10 * math.log10(0.25 * 16 / 1.5), abs=1e-3)
    with pytest.raises(ValueError, match="chroma_weight"):
        losses.PSNRLoss(chroma_weight=2.0)
