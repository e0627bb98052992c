# SPDX-License-Identifier: MPL-2.0
"""Recovery fine-tuning after compression (pruning, quantization-aware training).

Two ways, as the command's config says:
- with a `train:` section: the project's trainer (`lightsr.train.run_training`) on the
  config's data, handed the compressed module as is;
- without: distillation from the uncompressed network (L1 between outputs) on random crops
  of photographs, which needs no HR/LR pairs: any photo is a valid input.
"""
import copy
import importlib
from pathlib import Path

import numpy as np
import torch
from torch import nn


def training_images(folder: Path | None) -> list[np.ndarray]:
    """HR photographs for fine-tuning: a folder's images, else scikit-image's bundled photos."""
    from PIL import Image  # noqa: PLC0415

    if folder is not None:
        paths = sorted(p for p in Path(folder).iterdir()
                       if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".webp"})
        if not paths:
            raise SystemExit(f"lightsr: no images in --images {folder}")
        return [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    from skimage import data  # noqa: PLC0415

    return [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]


def random_lr_batch(images, batch: int, size: int, gen: np.random.Generator) -> torch.Tensor:
    crops = []
    for _ in range(batch):
        img = images[gen.integers(len(images))]
        top = gen.integers(img.shape[0] - size + 1)
        left = gen.integers(img.shape[1] - size + 1)
        crops.append(img[top:top + size, left:left + size].transpose(2, 0, 1))
    return torch.from_numpy(np.stack(crops).astype(np.float32))


def finetune_to_reference(net: nn.Module, reference: nn.Module, steps: int, images=None,
                          lr: float = 1e-4, batch: int = 8, patch: int = 24, seed: int = 0) -> list[float]:
    """Recover the pruned net by distilling the unpruned one: L1 between outputs on photo crops.

    Used when no training config is given; the teacher needs no HR data, so any photo works
    as input. Returns the loss per step.
    """
    images = images if images is not None else training_images(None)
    gen = np.random.default_rng(seed)
    reference = reference.eval()
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=lr)
    net.train()
    losses = []
    for _ in range(steps):
        x = random_lr_batch(images, batch, patch, gen)
        with torch.no_grad():
            target = reference(x)
        loss = nn.functional.l1_loss(net(x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    net.eval()
    return losses


def finetune_with_config(net: nn.Module, opt: dict, steps: int, out_dir: Path,
                         teacher: nn.Module | None = None) -> nn.Module:
    """Fine-tune through the project's trainer (`lightsr.train.run_training`) on the config's
    data; its checkpoints and log go to `out_dir`; with a `teacher`, `train.distill_opt` adds
    its distillation term. Returns the EMA generator on the CPU."""
    try:
        train = importlib.import_module("lightsr.train")
        run_training = train.run_training
    except (ImportError, AttributeError) as e:
        raise SystemExit(f"lightsr: fine-tuning from a config needs lightsr.train.run_training ({e})") from e
    opt = copy.deepcopy(opt)
    if steps:
        opt.setdefault("train", {})["total_iter"] = steps
    return run_training(opt, net_g=net, teacher=teacher, out_dir=out_dir).cpu().eval()
