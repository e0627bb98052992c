# SPDX-License-Identifier: MPL-2.0
"""Pruning round trip on tiny generators: Torch-Pruning groups, protection, save / reload."""
import warnings

import pytest
import torch
import yaml
from tiny_data import tiny_opt, tiny_root  # noqa: F401  (fixture)
from torch import nn

from lightsr import prune
from lightsr.archs import build_network
from lightsr.complexity import count_params

TINY = {"type": "F2SRGANGenerator", "scale": 4, "num_blocks": 2, "fourier": False, "width": 16}


def tiny(**over):
    torch.manual_seed(0)
    return build_network({**TINY, **over}).eval()


def conv_widths(net):
    return {n: (m.in_channels, m.out_channels) for n, m in net.named_modules() if isinstance(m, nn.Conv2d)}


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("importance", prune.IMPORTANCES)
def test_prune_round_trip(importance, tmp_path):
    net = tiny()
    before = conv_widths(net)
    report = prune.prune_generator(net, importance, 0.5)
    after = conv_widths(net)
    # trunk and block channels halved (LAMP: globally, so in total) ...
    pruned = [n for n in after if after[n][1] < before[n][1]]
    assert len(pruned) >= 6
    trunk = after["initial.0.1"][1]
    if importance != "lamp":
        assert trunk == 8
    # ... while the conv before PixelShuffle (4 x width) and every RGB-producing conv keep theirs
    for name in ("upsampler.0.1", "upsampler.3.1"):
        assert after[name][1] == before[name][1] == 64
    assert all(after[n][1] == 3 for n in before if before[n][1] == 3)
    p0, p1 = report["before"]["params"], report["after"]["params"]
    assert p1 < 0.75 * p0 and p1 > 0.2 * p0
    assert report["after"]["macs_320x180"] < report["before"]["macs_320x180"]
    x = torch.rand(1, 3, 11, 7) * 255
    with torch.no_grad():
        y = net(x)
    assert y.shape == (1, 3, 44, 28) and torch.isfinite(y).all()
    scripted = torch.jit.script(net)
    torch.testing.assert_close(scripted(x), y, rtol=1e-4, atol=1e-3)
    path = tmp_path / "pruned.pth"
    prune.save_pruned(path, net, TINY, {"importance": importance, **report})
    # Torch-Pruning's state, not a pickled module: the file loads without unpickling classes,
    # and the generator is rebuilt from its options with the pruned shapes and weights
    saved = torch.load(path, weights_only=True)
    assert "module" not in saved and set(saved["pruned"]) == {"full_state_dict", "attributions"}
    reloaded, opt = prune.load_generator(path)
    assert opt == TINY and count_params(reloaded) == p1
    assert conv_widths(reloaded) == conv_widths(net)
    with pytest.raises(ValueError, match="does not fit the network options"):
        prune.rebuild_pruned({**TINY, "num_blocks": TINY["num_blocks"] + 1}, saved["pruned"])
    torch.testing.assert_close(reloaded(x), y, rtol=0, atol=0)


def test_prune_fourier_generator_keeps_fft_blocks():
    net = tiny(fourier=True)
    ffc_before = {n: p.shape for n, p in net.named_parameters() if "block1.0." in n and n.startswith("residual.0")}
    report = prune.prune_generator(net, "l1", 0.5)
    ffc_after = {n: p.shape for n, p in net.named_parameters() if "block1.0." in n and n.startswith("residual.0")}
    assert ffc_after == ffc_before  # the FFC (even block) and the trunk are untouched
    assert conv_widths(net)["residual.1.block1.0.1"] == (16, 8)  # the SepConv block is pruned
    assert report["after"]["params"] < report["before"]["params"]
    y = net(torch.rand(1, 3, 9, 13) * 255)
    assert y.shape == (1, 3, 36, 52) and torch.isfinite(y).all()
    torch.jit.script(net)


def test_prune_command_with_finetuning(tmp_path, capsys):
    net = tiny()
    ckpt = tmp_path / "net_g.pth"
    torch.save({"params": net.state_dict(), "params_ema": net.state_dict(), "opt": TINY}, ckpt)
    out = tmp_path / "pruned.pth"
    rc = prune.main(["--checkpoint", str(ckpt), "--importance", "l1", "--ratio", "0.5",
                     "--finetune-steps", "3", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "before" in text and "after" in text and "fine-tuned 3 steps" in text
    saved = torch.load(out, weights_only=True)  # tensors and plain values: no pickled module
    assert saved["prune"]["after"]["params"] < saved["prune"]["before"]["params"]
    pruned, _ = prune.generator_from(saved)
    assert pruned(torch.rand(1, 3, 8, 8) * 255).shape == (1, 3, 32, 32)


def test_prune_rejects_bad_ratio():
    with pytest.raises(ValueError, match="ratio"):
        prune.prune_generator(tiny(), "l1", 1.0)


def test_prune_config_finetunes_with_the_trainer(tiny_root, tmp_path, capsys):
    opt = tiny_opt(tiny_root, name="prune_ft", iters=2)
    net = build_network(opt["network_g"])
    ckpt = tmp_path / "g.pth"
    torch.save({"params": net.state_dict(), "opt": opt["network_g"]}, ckpt)
    cfg = {**opt, "checkpoint": str(ckpt), "out": str(tmp_path / "p.pth"),
           "prune": {"importance": "lamp", "ratio": 0.25, "finetune_steps": 2}}
    (tmp_path / "prune.yml").write_text(yaml.safe_dump(cfg))
    assert prune.main([str(tmp_path / "prune.yml")]) == 0
    assert "with lightsr.train" in capsys.readouterr().out
    saved = torch.load(tmp_path / "p.pth", weights_only=True)
    assert saved["prune"]["after"]["params"] < saved["prune"]["before"]["params"]
    pruned, _ = prune.generator_from(saved)
    assert pruned(torch.rand(1, 3, 7, 9) * 255).shape == (1, 3, 14, 18)


def test_tail_pruning_follows_the_pixelshuffle_layout():
    """Make channels 1, 5, ... of the first shuffle's output dead (small weights in the conv
    before it, zero columns in the pointwise after it): removing exactly them through the
    c*r^2 + k layout must leave the output unchanged, any other mapping would not."""
    net = tiny()
    pre, post_pw = net.upsampler[0][1], net.upsampler[3][1]
    dead = [1, 5, 6, 9, 12, 14, 3, 0]
    with torch.no_grad():
        for c in dead:
            pre.weight[c * 4:(c + 1) * 4] *= 1e-3
            post_pw.weight[:, c] = 0
        second_pre, final_pw = net.upsampler[3][1], net.final_conv[1]
        for c in range(16):  # keep the second shuffle's ranking away from its dead-free channels
            second_pre.weight[c * 4:(c + 1) * 4] *= 1.0 + c
        for c in range(8):
            second_pre.weight[c * 4:(c + 1) * 4] *= 1e-3
            final_pw.weight[:, c] = 0
    x = torch.rand(1, 3, 10, 7) * 255
    with torch.no_grad():
        want = net(x)
    assert prune.prune_upsampling_tail(net, "l1", 0.5) == 16
    assert (pre.out_channels, net.upsampler[2].num_parameters, net.upsampler[3][0].groups) == (32, 8, 8)
    assert final_pw.in_channels == 8
    with torch.no_grad():
        got = net(x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-3)
    torch.jit.script(net)


def test_prune_with_tail_cuts_most_macs():
    plain, tailed = tiny(), tiny()
    r_plain = prune.prune_generator(plain, "l1", 0.5)
    r_tail = prune.prune_generator(tailed, "l1", 0.5, tail=True)
    assert r_tail["after"]["macs_320x180"] < 0.6 * r_plain["after"]["macs_320x180"]
    assert tailed(torch.rand(1, 3, 5, 6) * 255).shape == (1, 3, 20, 24)
