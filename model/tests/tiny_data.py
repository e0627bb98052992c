# SPDX-License-Identifier: MPL-2.0
"""Shared helpers of the data / training tests: a tiny data folder built from scikit-image's
bundled photographs (no network), and tiny configs."""
import copy
from pathlib import Path

import pytest
import torch

from lightsr import data

torch.set_num_threads(1)  # 2 shared cores: OpenMP spinning makes tiny nets 20x slower

TINY_NET = {"type": "F2SRGANGenerator", "scale": 2, "num_blocks": 2, "fourier": True, "width": 16,
            "upsampler": "published"}


def build_tiny_root(root: Path) -> Path:
    data.fetch(root, packages=(), skimage_names=("coffee", "chelsea", "rocket"), val_percent=10.0,
               max_side=2040, all_images=False)
    data.make_pairs(root, scales=(2, 4))
    data.pack_patches(root, root / "patches.npz", scales=(2, 4), patch=48, max_mb=1.0, val_crop=64)
    return root


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return build_tiny_root(tmp_path_factory.mktemp("tinydata"))


def tiny_opt(root: Path, name: str = "tiny", phase: str = "pre", iters: int = 4, **train) -> dict:
    opt = {
        "name": name, "phase": phase, "scale": 2, "manual_seed": 0,
        "network_g": copy.deepcopy(TINY_NET),
        "datasets": {
            "train": {"pack": str(root / "patches.npz"), "gt_size": 16, "batch_size_per_gpu": 4,
                      "num_worker_per_gpu": 0},
            "val": {"pack": str(root / "patches.npz"), "crop": 32},
        },
        "train": {"total_iter": iters, "ema_decay": 0.9, "optim_g": {"type": "AdamW", "lr": 2e-3},
                  "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0}, **train},
        "val": {"val_freq": iters},
        "logger": {"print_freq": 1, "save_checkpoint_freq": iters},
    }
    return opt
