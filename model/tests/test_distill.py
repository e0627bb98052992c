# SPDX-License-Identifier: MPL-2.0
"""`lightsr distill`: teacher loading rules, AT and AFD distillation runs."""
import json

import pytest
import torch
import yaml

from lightsr import distill
from lightsr.archs import build_network
from lightsr.train import ConfigError
from tiny_data import TINY_NET, tiny_opt, tiny_root  # noqa: F401  (fixture)

STUDENT = {**TINY_NET, "num_blocks": 1, "fourier": False, "width": 8, "upsampler": "light"}


@pytest.fixture()
def teacher_ckpt(tmp_path):
    torch.manual_seed(1)
    net = build_network(TINY_NET)
    path = tmp_path / "teacher.pth"
    torch.save({"params": net.state_dict(), "params_ema": net.state_dict(), "opt": TINY_NET, "step": 0}, path)
    return path


def distill_opt(root, teacher, kind: str, iters: int, **train) -> dict:
    opt = tiny_opt(root, name=f"d_{kind}", iters=iters, **train)
    opt["network_g"] = dict(STUDENT)
    opt["teacher"] = {"checkpoint": str(teacher)}
    opt["train"].setdefault("distill_opt", {"type": kind, "loss_weight": 1000.0 if kind == "at" else 100.0,
                                            "qk_dim": 8})
    return opt


def train_logs(run):
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if '"train"' in x]


def test_attention_transfer_alone_pulls_student_attention_to_the_teacher(tiny_root, teacher_ckpt, tmp_path):
    opt = distill_opt(tiny_root, teacher_ckpt, "at", iters=120, pixel_opt={"type": "L1Loss", "loss_weight": 0.0},
                      optim_g={"type": "AdamW", "lr": 1e-2})
    opt["logger"]["print_freq"] = 20
    distill.run_distillation(opt, out_dir=tmp_path / "at", device="cpu")
    curve = [r["l_distill"] for r in train_logs(tmp_path / "at")]
    print("AT loss per 20 steps:", curve)
    assert curve[0] > 0
    assert curve[-1] < 0.5 * curve[0]


def test_afd_trains_student_and_its_attention(tiny_root, teacher_ckpt, tmp_path):
    opt = distill_opt(tiny_root, teacher_ckpt, "afd", iters=4)
    opt["logger"].update(save_checkpoint_freq=2, keep_checkpoints=5)
    student = distill.run_distillation(opt, out_dir=tmp_path / "afd", device="cpu")
    assert student(torch.rand(1, 3, 6, 9) * 255).shape == (1, 3, 12, 18)
    first = torch.load(tmp_path / "afd/checkpoints/step_0000002.pth", weights_only=False)
    last = torch.load(tmp_path / "afd/checkpoints/step_0000004.pth", weights_only=False)
    assert set(last["distiller"]) >= {"pos_teacher", "pos_student"}
    assert not torch.equal(first["distiller"]["pos_student"], last["distiller"]["pos_student"])
    assert last["opt"] == STUDENT and "l_distill" in train_logs(tmp_path / "afd")[0]


def test_teacher_must_be_a_project_checkpoint(tmp_path, tiny_root):
    published = tmp_path / "F2SRGAN_2x.pt"
    torch.save({"model": build_network(TINY_NET).state_dict(), "opti": {}}, published)
    opt = distill_opt(tiny_root, published, "at", iters=1)
    with pytest.raises(ConfigError, match="published checkpoint"):
        distill.load_teacher(opt)


def test_teacher_scale_must_match(tmp_path, tiny_root):
    x4 = {**TINY_NET, "scale": 4}
    path = tmp_path / "t4.pth"
    torch.save({"params": build_network(x4).state_dict(), "params_ema": None, "opt": x4, "step": 0}, path)
    with pytest.raises(ConfigError, match="scale x4 differs"):
        distill.load_teacher(distill_opt(tiny_root, path, "at", iters=1))


def test_cli_method_override_and_errors(tiny_root, teacher_ckpt, tmp_path, capsys):
    opt = distill_opt(tiny_root, teacher_ckpt, "at", iters=2)
    config = tmp_path / "d.yml"
    config.write_text(yaml.safe_dump(opt))
    assert distill.main([str(config), "--method", "afd", "--out", str(tmp_path / "run"), "--device", "cpu"]) == 0
    ckpt = torch.load(tmp_path / "run/checkpoints/latest.pth", weights_only=False)
    assert ckpt["config"]["train"]["distill_opt"]["type"] == "afd" and ckpt["distiller"]
    assert distill.main([str(config), "--teacher", str(tmp_path / "nope.pth"), "--device", "cpu"]) == 1
    assert "not found" in capsys.readouterr().err
