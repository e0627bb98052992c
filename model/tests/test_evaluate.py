# SPDX-License-Identifier: MPL-2.0
"""Metrics against references (hand-computed, scikit-image, BasicSR) and `lightsr eval` end to end."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from skimage.color import rgb2ycbcr
from skimage.metrics import structural_similarity

from lightsr import evaluate, iqa
from lightsr.archs import build_network
from lightsr.bundle import Variant, manifest_dict, write_manifest
from lightsr.degradations import downscale_u8, imresize
from lightsr.deploy import U8Deploy


# NIQE of scikit-image photographs by BasicSR 1.4.2's own code (basicsr/metrics/niqe.py,
# calculate_niqe(img_bgr, crop_border=0, input_order='HWC', convert_to='y'), numpy 2.4,
# scipy 1.17), the implementation that matches MATLAB's niqe to 4 decimals (baboon: 5.7296).
BASICSR_NIQE = {"astronaut": 3.06460685312984, "chelsea": 2.6255364132341055,
                "coffee": 4.115241611108773}


@pytest.fixture(scope="module")
def niqe():
    try:
        return iqa.NiqeModel()
    except (FileNotFoundError, RuntimeError) as e:
        pytest.skip(f"official NIQE parameters unavailable (no ../shared/anchors, no PyPI): {e}")


def test_psnr_y_hand_computed():
    rng = np.random.default_rng(0)
    ref = rng.integers(20, 200, (24, 30, 3)).astype(np.uint8)
    img = ref.astype(np.int32) + 10  # +10 on R, G and B: Y moves by 10 * 219 / 255
    img[:4] = 255  # inside the 4-pixel border: must not count
    dy = 10 * (65.481 + 128.553 + 24.966) / 255
    want = 10 * np.log10(255 ** 2 / dy ** 2)
    assert iqa.psnr_y(img.astype(np.uint8), ref, border=4) == pytest.approx(want, abs=1e-9)
    assert iqa.psnr_y(ref, ref) == float("inf")
    with pytest.raises(ValueError, match="shapes differ"):
        iqa.psnr_y(ref[:-1], ref)


def test_niqe_rejects_images_below_two_blocks(niqe):
    with pytest.raises(ValueError, match="two 96x96 blocks"):
        niqe(data.astronaut()[:100, :150])


def test_ssim_y_matches_scikit_image():
    ref = data.astronaut()[100:164, 200:280]
    noisy = np.clip(ref + np.random.default_rng(1).normal(0, 12, ref.shape), 0, 255).astype(np.uint8)
    y_ref, y_noisy = (rgb2ycbcr(a)[..., 0][4:-4, 4:-4] for a in (ref, noisy))
    want = structural_similarity(y_noisy, y_ref, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=255)
    got = iqa.ssim_y(noisy, ref, border=4)
    assert got == pytest.approx(want, abs=1e-6) and 0.3 < got < 0.99
    assert iqa.ssim_y(ref, ref) == pytest.approx(1.0)


def test_matlab_imresize_agrees_with_the_data_module():
    img = np.random.default_rng(2).random((23, 31, 3)) * 255
    for scale in (0.5, 0.25, 2.0):
        want = imresize(torch.from_numpy(img.transpose(2, 0, 1).copy()), scale).numpy().transpose(1, 2, 0)
        np.testing.assert_allclose(iqa.matlab_imresize(img, scale), want, atol=1e-9)


@pytest.mark.parametrize("name", sorted(BASICSR_NIQE))
def test_niqe_matches_basicsr(niqe, name):
    assert niqe(getattr(data, name)()) == pytest.approx(BASICSR_NIQE[name], abs=1e-3)


def test_niqe_ranks_blur_as_less_natural(niqe):
    img = data.chelsea()
    blurred = iqa.matlab_imresize(iqa.matlab_imresize(img, 0.25), 4.0).clip(0, 255).round()
    assert niqe(blurred) > niqe(img) + 2


def test_brisque_ranks_blur_as_worse():
    score = iqa.brisque_scorer()
    if score is None:
        pytest.skip(iqa.BRISQUE_MISSING)
    img = data.astronaut()
    blurred = iqa.matlab_imresize(iqa.matlab_imresize(img, 0.25), 4.0).clip(0, 255).round().astype(np.uint8)
    assert score(img) < 30 < score(blurred)


def tiny_bundle(path: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_network({"type": "F2SRGANGenerator", "scale": 4, "num_blocks": 1, "fourier": False,
                         "width": 8, "upsampler": "light"}).eval()
    path.mkdir()
    torch.jit.script(U8Deploy(net, 4)).save(str(path / "x4-tiny.pt"))
    v = Variant(name="tiny", file="x4-tiny.pt", kind="learned", arch="f2srgan", params=1,
                extra={"objective": "perceptual"})
    write_manifest(path, manifest_dict("tiny", "test", {4: [v]}))
    return net


def test_eval_command_on_the_bicubic_bundle(tmp_path, niqe):
    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    images = {"a.png": data.astronaut()[:130, :210], "b.png": data.coffee()[100:221, 200:413]}
    for name, img in images.items():
        Image.fromarray(img).save(hr_dir / name)
    tiny_bundle(tmp_path / "tiny")
    from lightsr import export
    assert export.main(["--out", str(tmp_path / "bicubic"), "--bicubic-only", "--scales", "4",
                        "--no-timing"]) == 0
    out = tmp_path / "out"
    rc = evaluate.main(["--bundle", str(tmp_path / "bicubic"), "--hr-dir", str(hr_dir), "--scale", "4",
                        "--out", str(out), "--runs", "1", "--extra", f"other={tmp_path / 'tiny'}"])
    assert rc == 0
    report = json.loads((out / "eval.json").read_text())
    rows = {r["name"]: r for r in report["results"]}
    assert set(rows) == {"bicubic", "other-tiny", "hr (reference)"}
    # bicubic PSNR recomputed here from the data module's LR and torch's bicubic
    psnrs = []
    for name, img in images.items():
        hr = img[: img.shape[0] // 4 * 4, : img.shape[1] // 4 * 4]
        lr = torch.from_numpy(downscale_u8(hr, 4).transpose(2, 0, 1).copy()).float()[None]
        up = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
        sr = up.clamp(0, 255).round().byte()[0].permute(1, 2, 0).numpy()
        psnrs.append(iqa.psnr_y(sr, hr, border=4))
    # the bundle's bicubic is torch's to a grey level at rare pixels (its phase-convolution form)
    assert rows["bicubic"]["psnr_y"] == pytest.approx(np.mean(psnrs), abs=1e-3)
    assert 20 < rows["bicubic"]["psnr_y"] < 40 and 0.5 < rows["bicubic"]["ssim_y"] < 1
    assert rows["bicubic"]["niqe"] > rows["hr (reference)"]["niqe"]  # upscaling blurs
    assert set(rows["bicubic"]["cpu_ms"]) == {"320x180", "640x360"}
    assert rows["other-tiny"]["macs_320x180"] is None  # not in its manifest: reported n/a
    assert rows["other-tiny"]["params"] == 1  # the manifest's figure wins over counting
    table = (out / "eval.md").read_text()
    assert "| bicubic | bicubic |" in table and "| other-tiny | learned, perceptual |" in table
    png = np.asarray(Image.open(out / "crops_x4.png").convert("RGB"))
    assert png.shape[1] == 3 * (120 + 2)  # bicubic | other-tiny | HR, crops of 120 px
    hr_tile = png[14:14 + 120, 2 * 122:2 * 122 + 120]
    assert hr_tile.std() > 10  # a photograph, not a blank tile


def test_eval_rejects_missing_ladder(tmp_path):
    (tmp_path / "hr").mkdir()
    Image.fromarray(data.astronaut()[:64, :64]).save(tmp_path / "hr" / "a.png")
    tiny_bundle(tmp_path / "tiny")
    with pytest.raises(SystemExit, match="no x2 ladder"):
        evaluate.main(["--bundle", str(tmp_path / "tiny"), "--hr-dir", str(tmp_path / "hr"),
                       "--scale", "2", "--out", str(tmp_path / "o"), "--runs", "0"])
