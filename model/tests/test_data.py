# SPDX-License-Identifier: MPL-2.0
"""Data stage: MATLAB imresize against hand-computed weights, split, licences, pairs, pack,
dataset augmentation, compression degradations, errors."""
import hashlib
import json
import shutil

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from lightsr import data, degradations
from tiny_data import tiny_root  # noqa: F401  (fixture)


# ------------------------------------------------------------------ MATLAB bicubic
def test_cubic_kernel_matches_keys_a_minus_half():
    x = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, -0.5])
    expected = torch.tensor([1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0, 0.5625])
    assert torch.allclose(degradations.cubic(x).float(), expected)


def test_imresize_halves_an_impulse_with_antialiased_weights():
    # scale 1/2: kernel 0.5 * cubic(d / 2) at distances 0.5, 1.5, 2.5, 3.5 from the output centre
    signal = torch.zeros(1, 16)
    signal[0, 7] = 1.0  # 1-based pixel 8
    out = degradations.imresize(signal, 0.5)[0]
    expected = torch.tensor([0, 0, -0.03515625, 0.43359375, 0.11328125, -0.01171875, 0, 0], dtype=torch.float64)
    assert out.shape == (8,)
    assert torch.allclose(out, expected, atol=1e-12)


def test_imresize_doubles_an_impulse_with_cubic_weights():
    signal = torch.zeros(1, 6)
    signal[0, 2] = 1.0  # 1-based pixel 3
    out = degradations.imresize(signal, 2.0)[0]
    expected = torch.tensor([0, -0.0234375, -0.0703125, 0.2265625, 0.8671875, 0.8671875, 0.2265625, -0.0703125,
                             -0.0234375, 0, 0, 0], dtype=torch.float64)
    assert torch.allclose(out, expected, atol=1e-12)


def test_imresize_keeps_constants_and_linear_ramps_and_matlab_sizes():
    flat = torch.full((3, 9, 13), 77.0)
    out = degradations.imresize(flat, 0.25)
    assert out.shape == (3, 3, 4)  # MATLAB: ceil(9/4), ceil(13/4)
    assert torch.allclose(out, torch.full_like(out, 77.0))
    ramp = torch.arange(1, 65, dtype=torch.float64)[None].repeat(4, 1)  # value = 1-based column
    down = degradations.imresize(ramp, 0.25)[0]
    centres = 4 * torch.arange(1, 17, dtype=torch.float64) - 1.5  # mean of the 4 covered columns
    assert torch.allclose(down[3:-3], centres[3:-3], atol=1e-9)  # interior: exact linear reproduction
    assert not torch.allclose(down[:1], centres[:1])  # border: symmetric padding bends it


def test_downscale_u8_rejects_sizes_not_multiple_of_scale():
    with pytest.raises(data.DataError, match="mod-crop"):
        degradations.downscale_u8(np.zeros((10, 9, 3), np.uint8), 2)


# ------------------------------------------------------------------ split + licences
def test_split_is_deterministic_and_close_to_the_requested_fraction():
    ids = [f"img-{i}" for i in range(2000)]
    splits = [data.split_of(i, 10.0) for i in ids]
    assert splits == [data.split_of(i, 10.0) for i in ids]
    assert 0.08 < splits.count("val") / len(ids) < 0.12
    first = int.from_bytes(hashlib.sha256(b"img-0").digest()[:8], "big") / 2 ** 64 * 100
    assert splits[0] == ("val" if first < 10 else "train")


DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: 2014 Somebody
License: GPL-2+

Files: 16.04/sunset_by_Someone.jpg
Copyright: Someone, 2018
License: CC-BY-4.0

Files: debian/*
Copyright: 2020 Packager
License: Expat
"""


def test_dep5_licence_lookup_by_installed_path():
    stanzas = data.parse_dep5(DEP5)
    assert [s[1] for s in stanzas] == ["GPL-2+", "CC-BY-4.0", "Expat"]
    assert data.licence_for("usr/share/backgrounds/sunset_by_Someone.jpg", stanzas) == ("CC-BY-4.0", "Someone, 2018")
    assert data.licence_for("usr/share/backgrounds/other.jpg", stanzas) == ("GPL-2+", "2014 Somebody")


# ------------------------------------------------------------------ fetch / pairs / pack
def test_fetch_records_provenance_and_copies_pixels(tiny_root):
    manifest = json.loads((tiny_root / "manifest.json").read_text())
    entries = {e["id"]: e for e in manifest["images"]}
    coffee = entries["skimage-coffee"]
    assert coffee["licence"].startswith("CC0") and "Rachel Michetti" in coffee["licence_evidence"]
    assert coffee["source"]["package"] == "scikit-image" and len(coffee["source"]["sha256"]) == 64
    hr = np.asarray(Image.open(tiny_root / coffee["file"]))
    assert np.array_equal(hr, skimage.data.coffee())
    assert {e["split"] for e in entries.values()} == {"train", "val"}


def test_pairs_are_matlab_bicubic_of_the_mod_cropped_hr(tiny_root):
    manifest = json.loads((tiny_root / "manifest.json").read_text())
    entry = manifest["images"][0]
    hr = np.asarray(Image.open(tiny_root / entry["file"]))
    lr = np.asarray(Image.open(tiny_root / "lr_x4" / f"{entry['id']}.png"))
    assert np.array_equal(lr, degradations.downscale_u8(degradations.mod_crop(hr, 4), 4))
    assert lr.shape[0] == hr.shape[0] // 4 and lr.shape[1] == hr.shape[1] // 4


def test_pack_patches_are_aligned_and_within_budget(tiny_root):
    path = tiny_root / "patches.npz"
    assert path.stat().st_size < 1.0e6
    with np.load(path) as pack:
        hr, lr2, lr4 = pack["hr"], pack["lr_x2"], pack["lr_x4"]
        info = json.loads(bytes(pack["info_json"]).decode())
        assert any(k.startswith("val_hr_x4_") for k in pack.files)
    assert hr.shape[1:] == (48, 48, 3) and lr2.shape[1:] == (24, 24, 3) and lr4.shape[1:] == (12, 12, 3)
    assert info["count"] == len(hr) > 10
    for n in range(3):  # LR patch = bicubic of its HR patch away from the patch border
        again = degradations.imresize(torch.from_numpy(hr[n].transpose(2, 0, 1).copy()).double(), 0.5)
        diff = (again.permute(1, 2, 0).numpy() - lr2[n].astype(np.float64))[3:-3, 3:-3]
        assert np.abs(diff).max() <= 1.0


def test_pack_rejects_patch_not_multiple_of_scales(tiny_root, tmp_path):
    with pytest.raises(data.DataError, match="multiple of every scale"):
        data.pack_patches(tiny_root, tmp_path / "x.npz", (2, 4), patch=50, max_mb=1.0)


def test_cli_stage_errors_are_clear(tmp_path, capsys):
    assert data.main(["pairs", "--root", str(tmp_path)]) == 1
    assert "lightsr data fetch" in capsys.readouterr().err


# ------------------------------------------------------------------ dataset
def asymmetric_pair():
    lr = np.zeros((4, 4, 3), np.uint8)
    lr[0, 1] = 255  # no symmetry: every flip / rotation gives a different image
    lr[3, 2] = 128
    return lr.repeat(2, axis=0).repeat(2, axis=1), lr  # HR = LR blown up 2x2 pixel blocks


def test_dataset_augmentation_covers_the_8_dihedral_variants_reproducibly():
    hr, lr = asymmetric_pair()
    ds = data.PairedImageDataset([hr], [lr], 2, data.Augment(gt_size=8), length=1)
    variants = {ds[k]["gt"].numpy().tobytes() for k in range(200)}
    assert len(variants) == 8
    assert torch.equal(ds[17]["gt"], ds[17]["gt"]) and torch.equal(ds[17]["lq"], ds[17]["lq"])
    item = ds[5]
    assert torch.equal(item["gt"][:, ::2, ::2], item["lq"])  # LR follows the same transform


def test_dataset_random_crops_stay_aligned(tiny_root):
    hrs, lrs, _ = data.load_split(tiny_root, "train", 4)
    ds = data.PairedImageDataset(hrs, lrs, 4, data.Augment(gt_size=32), length=50)
    for key in range(5):
        item = ds[key]
        assert item["gt"].shape == (3, 32, 32) and item["lq"].shape == (3, 8, 8)
        down = degradations.imresize(item["gt"].double(), 0.25)
        assert (down - item["lq"].double())[:, 2:-2, 2:-2].abs().max() <= 1.0
    assert not torch.equal(ds[0]["gt"], ds[1]["gt"])


def test_dataset_errors_name_the_fix():
    hr, lr = asymmetric_pair()
    with pytest.raises(data.DataError, match="gt_size 16 exceeds"):
        data.PairedImageDataset([hr], [lr], 2, data.Augment(gt_size=16))
    with pytest.raises(data.DataError, match="pack: FILE.npz"):
        data.build_dataset({}, 2, train=True)


def test_dataloader_batches_with_two_workers(tiny_root):
    ds = data.build_dataset({"pack": str(tiny_root / "patches.npz"), "gt_size": 16}, 2, train=True)
    loader = data.build_dataloader(ds, {"batch_size_per_gpu": 4, "num_worker_per_gpu": 2})
    batch = next(iter(loader))
    assert batch["lq"].shape == (4, 3, 8, 8) and batch["gt"].shape == (4, 3, 16, 16)
    assert batch["gt"].max() > 50  # real image content, not zeros


# ------------------------------------------------------------------ degradations
def test_jpeg_degradation_changes_pixels_moderately():
    img = skimage.data.coffee()[100:163, 200:281]
    out = degradations.jpeg_degrade(img, 20)
    err = np.abs(out.astype(float) - img).mean()
    assert out.shape == img.shape and 0.5 < err < 20


@pytest.mark.skipif(shutil.which("gst-launch-1.0") is None, reason="GStreamer tools not installed")
def test_h264_degradation_round_trips_odd_sizes():
    img = skimage.data.coffee()[100:163, 200:281]  # 63 x 81: odd both ways
    mild, hard = degradations.h264_degrade(img, 20), degradations.h264_degrade(img, 45)
    err_mild = np.abs(mild.astype(float) - img).mean()
    err_hard = np.abs(hard.astype(float) - img).mean()
    assert mild.shape == img.shape and 0.1 < err_mild < err_hard < 40


def test_degradation_spec_is_validated():
    assert degradations.parse_degradation("h264:38") == ("h264", 38)
    with pytest.raises(data.DataError, match="jpeg:QUALITY"):
        degradations.parse_degradation("webp:3")
