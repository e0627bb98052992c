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

use gst_video::prelude::*;
use gstlightsrscale::convert::{self, FrameFormat, PixelLayout, Plane, YuvMatrix, YuvRange};

pub const LAYOUTS: [(&str, PixelLayout); 7] = [
    ("RGB", PixelLayout::Rgb),
    ("RGBA", PixelLayout::Rgba),
    ("RGBx", PixelLayout::Rgbx),
    ("BGRx", PixelLayout::Bgrx),
    ("BGRA", PixelLayout::Bgra),
    ("I420", PixelLayout::I420),
    ("NV12", PixelLayout::Nv12),
];

/// Colorimetry GStreamer assumes for SD video without a colorimetry field.
pub fn sd_format(layout: PixelLayout, width: usize, height: usize) -> FrameFormat {
    FrameFormat {
        layout,
        width,
        height,
        matrix: YuvMatrix::Bt601,
        range: YuvRange::Limited,
    }
}

/// Tight planes (no padding) of a frame holding uint8 (1, H, W, 3) `rgb` and, for layouts
/// with alpha, `alpha` (1, H, W).
pub fn planes_from_rgb(format: &FrameFormat, rgb: &Tensor, alpha: Option<&Tensor>) -> Vec<Vec<u8>> {
    let (h, w) = (format.height as i64, format.width as i64);
    let alpha = alpha
        .map(Tensor::shallow_clone)
        .unwrap_or_else(|| Tensor::full([1, h, w], 255, (Kind::Uint8, Device::Cpu)));
    let rgb = rgb.select(0, 0);
    let a = alpha.select(0, 0).unsqueeze(2);
    let packed = |channels: Vec<Tensor>| vec![bytes(&Tensor::cat(&channels, 2))];
    let c = |i: i64| rgb.narrow(2, i, 1);
    match format.layout {
        PixelLayout::Rgb => vec![bytes(&rgb)],
        PixelLayout::Rgba | PixelLayout::Rgbx => packed(vec![c(0), c(1), c(2), a]),
        PixelLayout::Bgra | PixelLayout::Bgrx => packed(vec![c(2), c(1), c(0), a]),
        PixelLayout::I420 | PixelLayout::Nv12 => {
            let (luma, chroma) = convert::rgb_to_yuv(&rgb, format.matrix, format.range).unwrap();
            if format.layout == PixelLayout::Nv12 {
                vec![bytes(&luma), bytes(&chroma)]
            } else {
                vec![
                    bytes(&luma),
                    bytes(&chroma.select(2, 0)),
                    bytes(&chroma.select(2, 1)),
                ]
            }
        }
    }
}

/// Bytes per row of each plane of a tight frame.
pub fn row_bytes(format: &FrameFormat) -> Vec<usize> {
    let (w, cw) = (format.width, format.width.div_ceil(2));
    match format.layout {
        PixelLayout::Rgb => vec![3 * w],
        PixelLayout::I420 => vec![w, cw, cw],
        PixelLayout::Nv12 => vec![w, 2 * cw],
        _ => vec![4 * w],
    }
}

/// Decodes tight planes back to uint8 (1, H, W, 3) RGB and the alpha plane if any.
pub fn rgb_from_planes(format: &FrameFormat, planes: &[Vec<u8>]) -> (Tensor, Option<Tensor>) {
    let views: Vec<Plane> = planes
        .iter()
        .zip(row_bytes(format))
        .map(|(d, s)| Plane { data: d, stride: s })
        .collect();
    let frame = convert::to_rgb(format, &views, Device::Cpu).unwrap();
    (frame.rgb.copy(), frame.alpha.map(|a| a.copy()))
}

/// Copies tight planes into a GStreamer buffer laid out as `info` says (strides, offsets).
pub fn buffer_from_planes(
    info: &gst_video::VideoInfo,
    format: &FrameFormat,
    planes: &[Vec<u8>],
) -> gst::Buffer {
    let buffer = gst::Buffer::with_size(info.size()).unwrap();
    let mut frame = gst_video::VideoFrame::from_buffer_writable(buffer, info).unwrap();
    for (i, (tight, row)) in planes.iter().zip(row_bytes(format)).enumerate() {
        let stride = frame.plane_stride()[i] as usize;
        let data = frame.plane_data_mut(i as u32).unwrap();
        for (dst, src) in data.chunks_mut(stride).zip(tight.chunks(row)) {
            dst[..row].copy_from_slice(src);
        }
    }
    frame.into_buffer()
}

/// Tight planes of a GStreamer buffer laid out as `info` says.
pub fn planes_from_buffer(
    info: &gst_video::VideoInfo,
    format: &FrameFormat,
    buffer: &gst::Buffer,
) -> Vec<Vec<u8>> {
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), info).unwrap();
    let heights = |i: usize| {
        if i == 0 {
            format.height
        } else {
            format.height.div_ceil(2)
        }
    };
    row_bytes(format)
        .into_iter()
        .enumerate()
        .map(|(i, row)| {
            let stride = frame.plane_stride()[i] as usize;
            let data = frame.plane_data(i as u32).unwrap();
            let rows = if matches!(format.layout, PixelLayout::I420 | PixelLayout::Nv12) {
                heights(i)
            } else {
                format.height
            };
            (0..rows)
                .flat_map(|r| data[r * stride..r * stride + row].to_vec())
                .collect()
        })
        .collect()
}

pub fn video_info(format_name: &str, width: u32, height: u32) -> gst_video::VideoInfo {
    let format = gst_video::VideoFormat::from_string(format_name);
    gst_video::VideoInfo::builder(format, width, height)
        .fps(gst::Fraction::new(25, 1))
        .build()
        .unwrap()
}

pub fn init() {
    use std::sync::Once;
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstlightsrscale::plugin_register_static().expect("register the lightsrscale plugin");
    });
}

/// The element's log lines at `level` and above while `f` runs. GStreamer's own output and the
/// category's threshold are restored after, also when `f` panics.
pub fn element_log_of(level: gst::DebugLevel, f: impl FnOnce()) -> Vec<String> {
    struct Capture(Option<gst::log::DebugLogFunction>);
    impl Drop for Capture {
        fn drop(&mut self) {
            if let Some(id) = self.0.take() {
                gst::log::remove_log_function(id);
            }
            // GStreamer's default output, as before the capture
            gst::log::add_log_function(gst::log::log_default);
            if let Some(category) = gst::DebugCategory::get("lightsrscale") {
                category.reset_threshold();
            }
        }
    }
    init();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    gst::log::remove_default_log_function();
    gst::log::set_active(true);
    gst::log::set_threshold_for_name("lightsrscale", level);
    let capture = Capture(Some(gst::log::add_log_function(
        move |category, _level, _file, _function, _line, _object, message| {
            if category.name() == "lightsrscale"
                && let Some(text) = message.get()
            {
                sink.lock().unwrap().push(text.to_string());
            }
        },
    )));
    f();
    drop(capture);
    lines.lock().unwrap().clone()
}
