# SPDX-License-Identifier: MPL-2.0
"""`lightsr train`: metrics, data order, learning, exact resume, GAN phase, handed-in
modules, 2-process gloo DistributedDataParallel, CLI errors."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lightsr import train
from lightsr.archs import build_network
from tiny_data import TINY_NET, tiny_opt, tiny_root  # noqa: F401  (fixture)


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_rgb_to_y_and_psnr_by_hand():
    white, black = torch.full((1, 3, 1, 1), 255.0), torch.zeros(1, 3, 1, 1)
    assert train.rgb_to_y(white).item() == pytest.approx(235.0, abs=1e-3)
    assert train.rgb_to_y(black).item() == pytest.approx(16.0)
    hr = torch.full((1, 3, 8, 8), 100.0)
    # +10 on R, G and B moves Y by 10 * (65.481 + 128.553 + 24.966) / 255 = 10 * 219 / 255
    expected = 20 * math.log10(255 / (10 * 219 / 255))
    assert train.psnr_y(hr + 10, hr, border=2) == pytest.approx(expected, rel=1e-9)
    assert train.psnr_y(hr + 0.4, hr, border=0) == math.inf  # quantised to 8 bits first


def test_sampler_splits_ranks_and_resumes_mid_epoch():
    ranks = [train.ResumableSampler(10, r, 2, seed=3, batch_size=2) for r in range(2)]
    keys = [list(s) for s in ranks]
    assert sorted(keys[0] + keys[1]) == list(range(10)) and len(keys[0]) == 5
    ranks[0].set_epoch(1, start_batch=1)
    assert list(ranks[0]) == [k + 10 for k in _epoch_keys(1)[0::2][2:5]]


def _epoch_keys(epoch):
    return torch.randperm(10, generator=torch.Generator().manual_seed(3 + epoch)).tolist()


def test_pre_phase_learns(tiny_root, tmp_path):
    opt = tiny_opt(tiny_root, iters=100)
    opt["datasets"]["train"].update(gt_size=32, batch_size_per_gpu=8)
    opt["val"]["val_freq"] = 10
    net = train.run_training(opt, out_dir=tmp_path / "run", device="cpu")
    vals = [r for r in read_log(tmp_path / "run") if r["event"] == "val"]
    assert vals[-1]["step"] == 100 and vals[-1]["val_psnr_y"] > vals[0]["val_psnr_y"] + 5
    assert vals[0]["bicubic_psnr_y"] > 25  # real photograph content
    assert isinstance(net, torch.nn.Module) and not net.training


def test_resume_continues_exactly(tiny_root, tmp_path):
    opt = tiny_opt(tiny_root, iters=6)
    opt["logger"]["save_checkpoint_freq"] = 3
    opt["train"]["scheduler"] = {"type": "StepLR", "step_size": 4, "gamma": 0.5}
    train.run_training(opt, out_dir=tmp_path / "straight", device="cpu")
    opt["train"]["total_iter"] = 3
    train.run_training(opt, out_dir=tmp_path / "split", device="cpu")
    opt["train"]["total_iter"] = 6
    train.run_training(opt, out_dir=tmp_path / "split", device="cpu", resume=True)
    a = torch.load(tmp_path / "straight/checkpoints/latest.pth", weights_only=False)
    b = torch.load(tmp_path / "split/checkpoints/latest.pth", weights_only=False)
    assert a["step"] == b["step"] == 6
    for key in ("params", "params_ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    assert a["scheduler_g"] == b["scheduler_g"]
    assert a["opt"] == TINY_NET
    assert not list((tmp_path / "split/checkpoints").glob("*.tmp"))
    slim = torch.load(tmp_path / "split/checkpoints/net_g_latest.pth", weights_only=False)
    assert set(slim) <= set(train.GENERATOR_KEYS) and "optimizer_g" in b
    assert all(torch.equal(v, b["params_ema"][k]) for k, v in slim["params_ema"].items())


@pytest.mark.parametrize("critic,augment,texture", [
    ({"type": "SwiftSRGANDiscriminator", "features": [8, 8, 16, 16]}, None, False),
    ({"type": "UNetDiscriminatorSN", "width": 8}, ["translation", "cutout"], True)])
def test_full_phase_trains_generator_and_discriminator(tiny_root, tmp_path, critic, augment, texture):
    pre = tiny_opt(tiny_root, iters=2)
    train.run_training(pre, out_dir=tmp_path / "pre", device="cpu")
    extra = {"texture_opt": {"loss_weight": 2.0, "window": 8}, "lowpass_opt": {"loss_weight": 1.0},
             "pattern_opt": {"loss_weight": 100.0}} if texture else {}
    opt = tiny_opt(tiny_root, phase="full", iters=8, perceptual_opt={"loss_weight": 1.0},
                   gan_opt={"loss_weight": 0.6, "augment": augment}, tv_opt={"loss_weight": 2e-8},
                   optim_d={"type": "AdamW", "lr": 1e-3}, **extra)
    opt["network_d"] = critic
    opt["path"] = {"pretrain_network_g": str(tmp_path / "pre/checkpoints/latest.pth")}
    train.run_training(opt, out_dir=tmp_path / "full", device="cpu")
    logs = [r for r in read_log(tmp_path / "full") if r["event"] == "train"]
    assert {"l_pix", "l_percep", "l_gan", "l_tv", "l_d"} <= set(logs[0])
    assert ({"l_texture", "l_lowpass", "l_pattern"} <= set(logs[0])) == texture
    assert all(math.isfinite(r["l_total"]) for r in logs)
    assert logs[-1]["d_real"] > logs[-1]["d_fake"]  # the critic learned to separate HR from SR
    ckpt = torch.load(tmp_path / "full/checkpoints/latest.pth", weights_only=False)
    assert ckpt["phase"] == "full" and "net_d" in ckpt and "optimizer_d" in ckpt
    pre_ckpt = torch.load(tmp_path / "pre/checkpoints/latest.pth", weights_only=False)
    moved = [not torch.equal(ckpt["params"][k], pre_ckpt["params_ema"][k]) for k in ckpt["params"]]
    assert any(moved)  # started from pre's EMA weights, then trained


def test_handed_in_module_is_trained_and_saved_whole(tiny_root, tmp_path):
    net = build_network({**TINY_NET, "num_blocks": 1, "fourier": False, "width": 8})
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = tiny_opt(tiny_root, iters=2)
    opt.pop("network_g")
    out = train.run_training(opt, net_g=net, out_dir=tmp_path / "run", device="cpu")
    ckpt = torch.load(tmp_path / "run/checkpoints/latest.pth", weights_only=False)
    assert isinstance(ckpt["module"], torch.nn.Module) and ckpt["opt"] is None
    assert any(not torch.equal(before[k], net.state_dict()[k]) for k in before)
    module, _ = train.load_generator_weights(tmp_path / "run/checkpoints/latest.pth")
    x = torch.rand(1, 3, 5, 7) * 255
    assert torch.allclose(module(x), out(x))


def test_handed_in_pruned_generator_is_saved_as_torch_pruning_state(tiny_root, tmp_path):
    # `lightsr prune` hands the trainer a pruned generator with the config's network_g: its
    # checkpoints hold Torch-Pruning's state on network_g, not a pickled module
    from lightsr import prune

    opt = tiny_opt(tiny_root, iters=2)
    net = build_network(opt["network_g"]).eval()
    prune.prune_generator(net, "l1", 0.5)
    out = train.run_training(opt, net_g=net, out_dir=tmp_path / "run", device="cpu")
    for name in ("latest.pth", "net_g_latest.pth"):
        ckpt = torch.load(tmp_path / "run/checkpoints" / name, weights_only=False)  # numpy RNG state
        assert "pruned" in ckpt and "module" not in ckpt, sorted(ckpt)
        # the generator's part is tensors and plain values only: it loads without classes
        torch.save(ckpt["pruned"], tmp_path / "state.pth")
        torch.load(tmp_path / "state.pth", weights_only=True)
    module, net_opt = train.load_generator_weights(tmp_path / "run/checkpoints/net_g_latest.pth")
    assert net_opt == opt["network_g"] and train.same_tensors(module, out)
    x = torch.rand(1, 3, 5, 7) * 255
    with torch.no_grad():
        assert torch.equal(module(x), out(x))


def test_pretrained_whole_module_fine_tunes_and_resumes(tiny_root, tmp_path):
    # a pruned generator is saved whole, from an EMA copy (requires_grad off): as
    # pretrain_network_g it must train (mean shifts stay frozen), save whole and resume
    net = build_network({**TINY_NET, "num_blocks": 1, "fourier": False, "width": 8}).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    torch.save({"module": net, "opt": None}, tmp_path / "pruned.pth")
    opt = tiny_opt(tiny_root, iters=2)
    opt["network_g"] = {**TINY_NET, "num_blocks": 3}  # not the module's structure: ignored
    opt["path"] = {"pretrain_network_g": str(tmp_path / "pruned.pth")}
    train.run_training(opt, out_dir=tmp_path / "run", device="cpu")
    ckpt = torch.load(tmp_path / "run/checkpoints/latest.pth", weights_only=False)
    module = ckpt["module"]
    assert len(module.residual) == 1
    assert not torch.equal(module.initial[0][1].weight, net.initial[0][1].weight)
    assert torch.equal(module.sub_mean.bias, net.sub_mean.bias)  # frozen mean shift untouched
    opt["train"]["total_iter"] = 4
    train.run_training(opt, out_dir=tmp_path / "run", device="cpu", resume=True)
    steps = [r["step"] for r in read_log(tmp_path / "run") if r["event"] == "train"]
    assert torch.load(tmp_path / "run/checkpoints/latest.pth", weights_only=False)["step"] == 4, steps


def test_deepen_from_warm_starts_the_teacher(tiny_root, tmp_path):
    student = tiny_opt(tiny_root, iters=2)
    student["network_g"] = {**TINY_NET, "num_blocks": 1, "fourier": False}
    train.run_training(student, out_dir=tmp_path / "student", device="cpu")
    opt = tiny_opt(tiny_root, iters=1)
    opt["network_g"] = {**TINY_NET, "num_blocks": 2, "fourier": True}
    opt["path"] = {"deepen_from_g": str(tmp_path / "student/checkpoints/latest.pth")}
    opt["train"]["optim_g"] = {"type": "AdamW", "lr": 0.0}  # no learning: the warm start alone
    opt["train"]["ema_decay"] = 0.0
    train.run_training(opt, out_dir=tmp_path / "teacher", device="cpu")
    s_w, s_opt = train.load_generator_weights(tmp_path / "student/checkpoints/latest.pth")
    t_w, t_opt = train.load_generator_weights(tmp_path / "teacher/checkpoints/latest.pth")
    s_net, t_net = build_network(s_opt).eval(), build_network(t_opt).eval()
    s_net.load_state_dict(s_w)
    t_net.load_state_dict(t_w)
    x = torch.rand(1, 3, 6, 7) * 255
    with torch.no_grad():
        assert (s_net(x) - t_net(x)).abs().max() < 1e-3
    bad = tiny_opt(tiny_root, iters=1)
    bad["network_g"] = {**TINY_NET, "num_blocks": 2, "fourier": True, "width": 32}
    bad["path"] = {"deepen_from_g": str(tmp_path / "student/checkpoints/latest.pth")}
    with pytest.raises(train.ConfigError, match="same width"):
        train.run_training(bad, out_dir=tmp_path / "bad", device="cpu")


def test_texture_window_below_two_is_a_config_error(tiny_root, tmp_path):
    opt = tiny_opt(tiny_root, phase="full", iters=1, perceptual_opt={"loss_weight": 1.0},
                   gan_opt={"loss_weight": 0.1}, texture_opt={"loss_weight": 1.0, "window": 1})
    with pytest.raises(train.ConfigError, match="texture_opt: .*at least 2"):
        train.run_training(opt, out_dir=tmp_path / "bad", device="cpu")


def test_unknown_critic_augmentation_is_a_config_error(tiny_root, tmp_path):
    opt = tiny_opt(tiny_root, phase="full", iters=1, perceptual_opt={"loss_weight": 1.0},
                   gan_opt={"loss_weight": 0.1, "augment": "translation, mixup"})
    opt["network_d"] = {"type": "UNetDiscriminatorSN", "width": 8}
    with pytest.raises(train.ConfigError, match="gan_opt.augment: .*unknown policy 'mixup'"):
        train.run_training(opt, out_dir=tmp_path / "bad", device="cpu")


def test_ddp_two_gloo_processes_match_one_process_with_twice_the_batch(tiny_root, tmp_path):
    opt = tiny_opt(tiny_root, iters=3)
    opt["train"]["optim_g"] = {"type": "AdamW", "lr": 1e-2, "eps": 1.0, "weight_decay": 0.0}  # ~linear in grad
    opt["datasets"].pop("val")
    opt["datasets"]["train"]["batch_size_per_gpu"] = 8
    train.run_training(opt, out_dir=tmp_path / "single", device="cpu")
    opt["datasets"]["train"]["batch_size_per_gpu"] = 4
    config = tmp_path / "ddp.yml"
    config.write_text(yaml.safe_dump(opt))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "lightsr.cli", "train", str(config), "--device", "cpu", "--out", str(tmp_path / "ddp")]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    single = torch.load(tmp_path / "single/checkpoints/latest.pth", weights_only=False)
    ddp = torch.load(tmp_path / "ddp/checkpoints/latest.pth", weights_only=False)
    assert ddp["step"] == 3
    moved = 0
    for name, tensor in single["params"].items():
        assert torch.allclose(ddp["params"][name], tensor, atol=1e-5), name
        moved += int(not torch.equal(tensor, build_network(TINY_NET).state_dict()[name]))
    assert moved > 0


def test_cli_errors_are_clear(tmp_path, capsys):
    assert train.main([str(tmp_path / "missing.yml")]) == 1
    assert "not found" in capsys.readouterr().err
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({"name": "c", "network_g": TINY_NET, "train": {"total_iter": 1}}))
    assert train.main([str(config), "--out", str(tmp_path / "run0"), "--device", "cpu"]) == 1
    assert "needs `train.pixel_opt`" in capsys.readouterr().err
    config.write_text(yaml.safe_dump({"name": "c", "network_g": TINY_NET, "train": {"total_iter": 1,
                                      "pixel_opt": {"type": "L1Loss"}}}))
    assert train.main([str(config), "--resume", "--out", str(tmp_path / "run"), "--device", "cpu"]) == 1
    assert "latest.pth does not exist" in capsys.readouterr().err
    assert train.main([str(config), "--out", str(tmp_path / "run2"), "--device", "cpu"]) == 1
    assert "missing `datasets`" in capsys.readouterr().err


def test_time_budget_stops_with_a_checkpoint_and_resume_finishes(tiny_root, tmp_path):
    opt = tiny_opt(tiny_root, iters=5)
    train.run_training(opt, out_dir=tmp_path / "run", device="cpu", max_minutes=1e-9)
    log = read_log(tmp_path / "run")
    assert log[-1]["event"] == "stopped" and log[-1]["step"] == 1
    assert torch.load(tmp_path / "run/checkpoints/latest.pth", weights_only=False)["step"] == 1
    train.run_training(opt, out_dir=tmp_path / "run", device="cpu", resume=True)
    assert torch.load(tmp_path / "run/checkpoints/latest.pth", weights_only=False)["step"] == 5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (GPU machines only)")
def test_cuda_full_phase_and_resume(tiny_root, tmp_path):
    opt = tiny_opt(tiny_root, phase="full", iters=4, perceptual_opt={"loss_weight": 1.0},
                   gan_opt={"loss_weight": 0.6}, tv_opt={"loss_weight": 2e-8})
    opt["network_d"] = {"type": "SwiftSRGANDiscriminator", "features": [8, 8, 16, 16]}
    opt["logger"]["save_checkpoint_freq"] = 2
    for key in ("optim_g", "optim_d"):  # eps 1: updates linear in the gradient, so kernel noise stays small
        opt["train"][key] = {"type": "AdamW", "lr": 1e-3, "eps": 1.0}
    train.run_training(opt, out_dir=tmp_path / "a", device="cuda")
    opt["train"]["total_iter"] = 2
    train.run_training(opt, out_dir=tmp_path / "b", device="cuda")
    opt["train"]["total_iter"] = 4
    train.run_training(opt, out_dir=tmp_path / "b", device="cuda", resume=True)
    a = torch.load(tmp_path / "a/checkpoints/latest.pth", weights_only=False)
    b = torch.load(tmp_path / "b/checkpoints/latest.pth", weights_only=False)
    for name, tensor in a["params"].items():  # cuDNN may pick other kernels: close, not bit-equal
        assert torch.allclose(tensor, b["params"][name], atol=1e-4), name


def test_exclude_g_keeps_named_modules_at_their_init_and_refuses_unknown_names(tiny_root, tmp_path):  # noqa: F811
    pre = tiny_opt(tiny_root, name="pre_skip", iters=2)
    pre["network_g"]["image_skip"] = True
    train.run_training(pre, out_dir=tmp_path / "pre", device="cpu")
    weights, _ = train.load_generator_weights(tmp_path / "pre/checkpoints/latest.pth")
    opt = tiny_opt(tiny_root, iters=1)
    opt["network_g"]["image_skip"] = True
    opt["path"] = {"pretrain_network_g": str(tmp_path / "pre/checkpoints/latest.pth"),
                   "exclude_g": "final_conv.1"}  # one name as a string works too
    trainer = train.Trainer(opt, tmp_path / "run", "cpu", None, None, False)
    state = trainer.net_g.state_dict()
    assert not state["final_conv.1.weight"].any() and not state["final_conv.1.bias"].any()
    assert torch.equal(state["final_conv.0.weight"], weights["final_conv.0.weight"])  # not a loose prefix
    assert torch.equal(state["initial.0.0.weight"], weights["initial.0.0.weight"])
    opt["path"]["exclude_g"] = ["final_conv.9"]
    with pytest.raises(train.ConfigError, match="matches no weight"):
        train.Trainer(opt, tmp_path / "run2", "cpu", None, None, False)
