// SPDX-License-Identifier: MPL-2.0
//! Shared by the integration tests: fixture bundles and reference images.
#![allow(dead_code)]

use std::path::PathBuf;

use tch::{Device, Kind, Tensor};

/// A bundle written by tests/fixtures/make_fixtures.py (run by tests/run-all.sh), found in
/// $LIGHTSRSCALE_FIXTURES or target/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    let root = std::env::var_os("LIGHTSRSCALE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures"));
    let path = root.join(name);
    assert!(
        path.exists(),
        "fixture bundle {} is missing: run `.venv/bin/python tests/fixtures/make_fixtures.py` \
         (tests/run-all.sh does) or set LIGHTSRSCALE_FIXTURES",
        path.display()
    );
    path
}

/// uint8 (1, H, W, 3): a smooth diagonal RGB gradient.
pub fn gradient(height: i64, width: i64) -> Tensor {
    let y = Tensor::arange(height, (Kind::Float, Device::Cpu)).unsqueeze(1)
        / (height.max(2) - 1) as f64;
    let x =
        Tensor::arange(width, (Kind::Float, Device::Cpu)).unsqueeze(0) / (width.max(2) - 1) as f64;
    let r = (&x * 200.0 + 20.0).expand([height, width], false);
    let g = (&y * 180.0 + 40.0).expand([height, width], false);
    let b = ((&x + &y) * 100.0 + 30.0).expand([height, width], false);
    Tensor::stack(&[r, g, b], 2)
        .round()
        .to_kind(Kind::Uint8)
        .unsqueeze(0)
}

/// What torch's bicubic (align_corners=False) makes of uint8 (1, H, W, 3).
pub fn bicubic_reference(rgb: &Tensor, scale: i64) -> Tensor {
    let (h, w) = (rgb.size()[1], rgb.size()[2]);
    let x = rgb.permute([0, 3, 1, 2]).to_kind(Kind::Float);
    let y = x.upsample_bicubic2d([h * scale, w * scale], false, None, None);
    y.clamp(0.0, 255.0)
        .round()
        .to_kind(Kind::Uint8)
        .permute([0, 2, 3, 1])
        .contiguous()
}

/// Nearest-neighbour upscaling of uint8 (1, H, W, 3).
pub fn nearest_reference(rgb: &Tensor, scale: i64) -> Tensor {
    rgb.repeat_interleave_self_int(scale, 1, None)
        .repeat_interleave_self_int(scale, 2, None)
}

pub fn bytes(t: &Tensor) -> Vec<u8> {
    Vec::<u8>::try_from(&t.contiguous().flatten(0, -1)).expect("uint8 tensor")
}

/// Largest absolute difference between two byte images.
pub fn max_diff(a: &[u8], b: &[u8]) -> u8 {
    assert_eq!(a.len(), b.len(), "images differ in size");
    a.iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}
