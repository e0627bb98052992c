// SPDX-License-Identifier: MPL-2.0
//! Element tests through gst_check::Harness: output sizes and content per format, properties,
//! renegotiation.

mod common;

use common::*;
use gst::prelude::*;
use gstlightsrscale::convert::PixelLayout;
use tch::Tensor;

/// A started harness around a `lightsrscale` built with `properties` first.
fn harness(properties: &[(&str, &str)]) -> gst_check::Harness {
    init();
    let mut builder = gst::ElementFactory::make("lightsrscale");
    for (name, value) in properties {
        builder = builder.property_from_str(name, value);
    }
    let element = builder.build().unwrap();
    let mut h = gst_check::Harness::with_element(&element, Some("sink"), Some("src"));
    h.play();
    h
}

/// Pushes one frame of `rgb` (and `alpha`) in format `name` and returns the output decoded to
/// RGB (+ alpha), with the output VideoInfo.
fn run_frame(
    h: &mut gst_check::Harness,
    name: &str,
    layout: PixelLayout,
    rgb: &Tensor,
    alpha: Option<&Tensor>,
) -> (Tensor, Option<Tensor>, gst_video::VideoInfo) {
    let (height, width) = (rgb.size()[1] as u32, rgb.size()[2] as u32);
    let info = video_info(name, width, height);
    h.set_src_caps(info.to_caps().unwrap());
    let format = sd_format(layout, width as usize, height as usize);
    let buffer = buffer_from_planes(&info, &format, &planes_from_rgb(&format, rgb, alpha));
    let out = h.push_and_pull(buffer).expect("an output frame");
    let caps = h.sinkpad().unwrap().current_caps().unwrap();
    let out_info = gst_video::VideoInfo::from_caps(&caps).unwrap();
    assert_eq!(
        out.size(),
        out_info.size(),
        "buffer size matches the output caps"
    );
    let out_format = sd_format(
        layout,
        out_info.width() as usize,
        out_info.height() as usize,
    );
    let planes = planes_from_buffer(&out_info, &out_format, &out);
    let (rgb_out, alpha_out) = rgb_from_planes(&out_format, &planes);
    (rgb_out, alpha_out, out_info)
}

fn flat(height: i64, width: i64, rgb: [u8; 3]) -> Tensor {
    Tensor::from_slice(&rgb)
        .reshape([1, 1, 1, 3])
        .expand([1, height, width, 3], false)
        .contiguous()
}

fn is_flat(t: &Tensor) -> bool {
    let b = bytes(t);
    b.chunks(3).all(|p| p == &b[..3])
}

#[test]
fn rgb_x4_bicubic_rung_is_bicubic_at_an_odd_size() {
    let mut h = harness(&[("scale", "4"), ("variant", "bicubic")]);
    let input = gradient(181, 321);
    let (out, _, info) = run_frame(&mut h, "RGB", PixelLayout::Rgb, &input, None);
    assert_eq!((info.width(), info.height()), (1284, 724));
    let diff = max_diff(&bytes(&out), &bytes(&bicubic_reference(&input, 4)));
    assert!(diff <= 1, "differs from bicubic by {diff}");
    assert_eq!(
        h.element().unwrap().property::<String>("active-variant"),
        "bicubic"
    );
}

#[test]
fn every_format_keeps_a_flat_colour_flat() {
    for (name, layout) in LAYOUTS {
        let mut h = harness(&[("scale", "2"), ("variant", "bicubic")]);
        // Through YUV the colour is the one 8-bit YUV can hold; compare with that.
        let format = sd_format(layout, 8, 6);
        let (input, _) = rgb_from_planes(
            &format,
            &planes_from_rgb(&format, &flat(6, 8, [200, 90, 30]), None),
        );
        let (out, _, info) = run_frame(&mut h, name, layout, &input, None);
        assert_eq!((info.width(), info.height()), (16, 12), "{name}");
        assert!(is_flat(&out), "{name}: flat input gave uneven output");
        assert!(
            max_diff(&bytes(&out)[..3], &bytes(&input)[..3]) <= 1,
            "{name}: colour changed"
        );
    }
}

/// The element's own conversions around a libtorch rung: torch's bicubic as a learned-kind
/// fixture rung (the weight-free `bicubic` rung runs GStreamer's scaler on the CPU instead).
fn torch_rung(scale: &'static str) -> gst_check::Harness {
    let model = fixture("torch-bicubic");
    harness(&[
        ("model", model.to_str().unwrap()),
        ("scale", scale),
        ("variant", "torch-bicubic"),
    ])
}

/// Worst and mean absolute difference of two byte images.
fn errors(a: &Tensor, b: &Tensor) -> (u8, f64) {
    let errors: Vec<u8> = bytes(a)
        .iter()
        .zip(bytes(b))
        .map(|(x, y)| x.abs_diff(y))
        .collect();
    let mean = errors.iter().map(|&e| f64::from(e)).sum::<f64>() / errors.len() as f64;
    (*errors.iter().max().unwrap(), mean)
}

/// Every format through a harness from `make`, against torch's bicubic x2 of what the element
/// receives (decoded), held to `bounds(layout)` = (worst, mean) difference.
fn every_format_against_bicubic(
    make: impl Fn() -> gst_check::Harness,
    bounds: impl Fn(PixelLayout) -> (u8, f64),
) {
    let input = gradient(23, 37);
    for (name, layout) in LAYOUTS {
        let mut h = make();
        let format = sd_format(layout, 37, 23);
        // What the element actually receives, decoded: the reference starts from that.
        let (seen, _) = rgb_from_planes(&format, &planes_from_rgb(&format, &input, None));
        let (out, _, _) = run_frame(&mut h, name, layout, &input, None);
        let (worst, mean) = errors(&out, &bicubic_reference(&seen, 2));
        let (max_worst, max_mean) = bounds(layout);
        eprintln!("{name}: worst {worst}, mean {mean:.3}");
        assert!(
            worst <= max_worst && mean <= max_mean,
            "{name}: worst {worst}, mean {mean:.2}"
        );
    }
}

#[test]
fn every_format_is_bicubic_within_its_quantisation() {
    // Packed RGB is exact; YUV adds one 4:2:0 encode of a smooth image (a few codes).
    every_format_against_bicubic(
        || torch_rung("2"),
        |layout| match layout {
            PixelLayout::I420 | PixelLayout::Nv12 => (6, 1.5),
            _ => (1, 0.1),
        },
    );
}

#[test]
fn the_weight_free_rung_on_the_cpu_is_gstreamer_s_cubic_scaler() {
    // Packed RGB: GStreamer's fixed-point taps of the same cubic (B = 0, C = 0.75), within a
    // code or two of torch's. YUV: it scales each plane (chroma at its own resolution and
    // siting) where the reference scales RGB and encodes 4:2:0 once more.
    every_format_against_bicubic(
        || harness(&[("scale", "2"), ("variant", "bicubic")]),
        |layout| match layout {
            PixelLayout::I420 | PixelLayout::Nv12 => (12, 2.0),
            _ => (2, 0.3),
        },
    );
    // Alpha is scaled with the colour.
    let mut h = harness(&[("scale", "4"), ("variant", "bicubic")]);
    let alpha = gradient(9, 11).select(3, 1);
    let (_, out_alpha, _) = run_frame(
        &mut h,
        "RGBA",
        PixelLayout::Rgba,
        &gradient(9, 11),
        Some(&alpha),
    );
    let want = bicubic_reference(&alpha.unsqueeze(3).expand([1, 9, 11, 3], false), 4).select(3, 0);
    let (worst, mean) = errors(&out_alpha.unwrap(), &want);
    assert!(
        worst <= 2 && mean <= 0.7,
        "alpha: worst {worst}, mean {mean:.2}"
    );
}

#[test]
fn alpha_is_upscaled_bicubic_with_the_colour() {
    for (name, layout) in [("RGBA", PixelLayout::Rgba), ("BGRA", PixelLayout::Bgra)] {
        let mut h = torch_rung("4");
        let alpha = gradient(9, 11).select(3, 1);
        let (_, out_alpha, _) = run_frame(&mut h, name, layout, &gradient(9, 11), Some(&alpha));
        let want =
            bicubic_reference(&alpha.unsqueeze(3).expand([1, 9, 11, 3], false), 4).select(3, 0);
        assert!(
            max_diff(&bytes(&out_alpha.unwrap()), &bytes(&want)) <= 1,
            "{name}"
        );
    }
}

#[test]
fn tiny_odd_and_very_wide_frames() {
    for (name, layout, w, h_) in [
        ("RGB", PixelLayout::Rgb, 1, 1),
        ("I420", PixelLayout::I420, 1, 1),
        ("NV12", PixelLayout::Nv12, 321, 181),
        ("I420", PixelLayout::I420, 4096, 64),
        ("BGRx", PixelLayout::Bgrx, 4096, 64),
    ] {
        let mut h = harness(&[("scale", "4"), ("variant", "bicubic")]);
        let (out, _, info) = run_frame(&mut h, name, layout, &flat(h_, w, [40, 160, 220]), None);
        assert_eq!(
            (info.width(), info.height()),
            (4 * w as u32, 4 * h_ as u32),
            "{name} {w}x{h_}"
        );
        assert!(is_flat(&out), "{name} {w}x{h_}: not flat");
    }
}

#[test]
fn variant_property_picks_the_rung_and_active_variant_reports_it() {
    let model = fixture("ladder");
    let mut h = harness(&[
        ("model", model.to_str().unwrap()),
        ("scale", "2"),
        ("variant", "nearest"),
    ]);
    let input = gradient(10, 14);
    let (out, _, _) = run_frame(&mut h, "RGB", PixelLayout::Rgb, &input, None);
    assert_eq!(
        bytes(&out),
        bytes(&nearest_reference(&input, 2)),
        "variant=nearest must run the nearest rung"
    );
    let element = h.element().unwrap();
    assert_eq!(element.property::<String>("active-variant"), "nearest");
    element.set_property("variant", "auto");
    // The harness answers LATENCY as a live source does: the rungs are measured on a thread of
    // their own while the stream runs the lightest; then, without a frame rate, the best rung.
    let mut smooth = run_frame(&mut h, "RGB", PixelLayout::Rgb, &input, None).0;
    for _ in 0..500 {
        if element.property::<String>("active-variant") == "tinyconv" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        smooth = run_frame(&mut h, "RGB", PixelLayout::Rgb, &input, None).0;
    }
    assert_eq!(
        element.property::<String>("active-variant"),
        "tinyconv",
        "auto runs the heaviest rung once measured"
    );
    assert_ne!(bytes(&smooth), bytes(&out));
}

#[test]
fn cpu_rungs_run_on_the_threads_asked_for_and_stats_report_them() {
    let model = fixture("ladder");
    let mut pictures = Vec::new();
    for (threads, adapt) in [("1", "false"), ("1", "true")] {
        let mut h = harness(&[
            ("model", model.to_str().unwrap()),
            ("device", "cpu"),
            ("scale", "2"),
            ("variant", "tinyconv"),
            ("threads", threads),
            ("adapt-threads", adapt),
        ]);
        let element = h.element().unwrap();
        assert_eq!(element.property::<bool>("adapt-threads"), adapt == "true");
        let input = gradient(10, 14);
        for _ in 0..3 {
            pictures.push(bytes(
                &run_frame(&mut h, "RGB", PixelLayout::Rgb, &input, None).0,
            ));
        }
        let stats = element.property::<gst::Structure>("stats");
        // one thread asked for: no load can take it lower, none may add one
        assert_eq!(stats.get::<u32>("threads").unwrap(), 1, "{stats}");
    }
    assert!(
        pictures.iter().all(|p| *p == pictures[0]),
        "the same picture every time"
    );
    assert_ne!(pictures[0], bytes(&nearest_reference(&gradient(10, 14), 2)));
}

#[test]
fn scale_change_while_playing_renegotiates_the_output() {
    let mut h = harness(&[("scale", "4"), ("variant", "bicubic")]);
    let input = gradient(12, 20);
    let (_, _, info) = run_frame(&mut h, "RGB", PixelLayout::Rgb, &input, None);
    assert_eq!(info.width(), 80);
    h.element().unwrap().set_property("scale", 2u32);
    let (out, _, info) = run_frame(&mut h, "RGB", PixelLayout::Rgb, &input, None);
    assert_eq!((info.width(), info.height()), (40, 24));
    assert!(max_diff(&bytes(&out), &bytes(&bicubic_reference(&input, 2))) <= 2);
}

#[test]
fn downstream_caps_choose_among_the_ladder_scales() {
    let mut h = harness(&[]);
    h.set_sink_caps_str("video/x-raw,width=64,height=36");
    let (_, _, info) = run_frame(
        &mut h,
        "NV12",
        PixelLayout::Nv12,
        &flat(18, 32, [9, 9, 9]),
        None,
    );
    assert_eq!(
        (info.width(), info.height()),
        (64, 36),
        "downstream asked for x2"
    );
    let mut h = harness(&[]);
    let (_, _, info) = run_frame(
        &mut h,
        "NV12",
        PixelLayout::Nv12,
        &flat(18, 32, [9, 9, 9]),
        None,
    );
    assert_eq!(
        info.width(),
        128,
        "without a constraint the largest scale wins"
    );
}

#[test]
fn input_size_change_midstream_renegotiates() {
    let mut h = harness(&[("scale", "2"), ("variant", "bicubic")]);
    for (height, width) in [(18, 32), (45, 80), (7, 5)] {
        let (out, _, info) = run_frame(
            &mut h,
            "I420",
            PixelLayout::I420,
            &flat(height, width, [120, 60, 30]),
            None,
        );
        assert_eq!(
            (info.width(), info.height()),
            (2 * width as u32, 2 * height as u32)
        );
        assert!(is_flat(&out));
    }
}

#[test]
fn each_side_is_converted_with_its_own_colorimetry() {
    use gstlightsrscale::convert::{YuvMatrix, YuvRange};
    // Caps without colorimetry: 480x270 means BT.601, 1920x1080 means BT.709 (GStreamer's
    // defaults), so the colour must be re-encoded, not copied: by the element's own
    // conversion around a libtorch rung to a code, by GStreamer's scaler (the weight-free
    // rung on the CPU) within its 8-bit matrix maths.
    for (mut h, tolerance) in [
        (torch_rung("4"), 1),
        (harness(&[("scale", "4"), ("variant", "bicubic")]), 6),
    ] {
        let caps: gst::Caps = "video/x-raw,format=NV12,width=480,height=270,framerate=25/1"
            .parse()
            .unwrap();
        let info = gst_video::VideoInfo::from_caps(&caps).unwrap();
        h.set_src_caps(caps);
        let input = sd_format(PixelLayout::Nv12, 480, 270);
        let colour = flat(270, 480, [200, 60, 40]);
        let out = h
            .push_and_pull(buffer_from_planes(
                &info,
                &input,
                &planes_from_rgb(&input, &colour, None),
            ))
            .unwrap();
        let out_info =
            gst_video::VideoInfo::from_caps(&h.sinkpad().unwrap().current_caps().unwrap()).unwrap();
        assert_eq!(
            out_info.colorimetry().matrix(),
            gst_video::VideoColorMatrix::Bt709
        );
        let hd = |matrix| gstlightsrscale::convert::FrameFormat {
            matrix,
            range: YuvRange::Limited,
            ..sd_format(PixelLayout::Nv12, 1920, 1080)
        };
        let planes = planes_from_buffer(&out_info, &hd(YuvMatrix::Bt709), &out);
        let (as_709, _) = rgb_from_planes(&hd(YuvMatrix::Bt709), &planes);
        let (as_601, _) = rgb_from_planes(&hd(YuvMatrix::Bt601), &planes);
        let (seen, _) = rgb_from_planes(&input, &planes_from_rgb(&input, &colour, None));
        assert!(
            max_diff(&bytes(&as_709)[..3], &bytes(&seen)[..3]) <= tolerance,
            "BT.709 output holds the input colour"
        );
        assert!(
            max_diff(&bytes(&as_601)[..3], &bytes(&seen)[..3]) > 5,
            "output was not re-encoded for BT.709"
        );
    }
}

#[test]
fn active_variant_changes_are_notified() {
    use std::sync::{Arc, Mutex};
    let model = fixture("ladder");
    let mut h = harness(&[
        ("model", model.to_str().unwrap()),
        ("scale", "2"),
        ("variant", "nearest"),
    ]);
    let element = h.element().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    element.connect_notify(Some("active-variant"), move |e, _| {
        log.lock()
            .unwrap()
            .push(e.property::<String>("active-variant"));
    });
    let _ = run_frame(&mut h, "RGB", PixelLayout::Rgb, &gradient(4, 6), None);
    element.set_property("variant", "tinyconv");
    let _ = run_frame(&mut h, "RGB", PixelLayout::Rgb, &gradient(4, 6), None);
    let _ = run_frame(&mut h, "RGB", PixelLayout::Rgb, &gradient(4, 6), None);
    assert_eq!(
        *seen.lock().unwrap(),
        ["tinyconv"],
        "one switch, one notification"
    );
}

#[test]
fn tile_size_runs_learned_rungs_in_tiles_without_changing_the_picture() {
    let input = gradient(45, 70);
    let mut whole = harness(&[("scale", "2"), ("variant", "deep")]);
    let mut tiled = harness(&[("scale", "2"), ("variant", "deep"), ("tile-size", "16")]);
    assert_eq!(tiled.element().unwrap().property::<u32>("tile-size"), 16);
    let (a, _, _) = run_frame(&mut whole, "RGB", PixelLayout::Rgb, &input, None);
    let (b, _, info) = run_frame(&mut tiled, "RGB", PixelLayout::Rgb, &input, None);
    assert_eq!((info.width(), info.height()), (140, 90));
    let diff = max_diff(&bytes(&a), &bytes(&b));
    assert!(diff <= 1, "tiled output differs by {diff}");
}

#[test]
fn on_cuda_output_frames_are_pinned_reused_and_the_cpu_s_picture() {
    if !tch::Cuda::is_available() {
        eprintln!("skipped: CUDA is not available in this process (pinned buffers are CUDA only)");
        return;
    }
    let input = gradient(45, 80);
    let (cpu, _, _) = run_frame(
        &mut harness(&[("scale", "2"), ("variant", "bicubic"), ("device", "cpu")]),
        "RGBA",
        PixelLayout::Rgba,
        &input,
        None,
    );
    let mut h = harness(&[("scale", "2"), ("variant", "bicubic"), ("device", "cuda")]);
    let mut addresses = Vec::new();
    for _ in 0..3 {
        let (rgb, _, _) = run_frame(&mut h, "RGBA", PixelLayout::Rgba, &input, None);
        let diff = max_diff(&bytes(&rgb), &bytes(&cpu));
        assert!(diff <= 1, "CUDA output differs from the CPU's by {diff}");
        // run_frame dropped its output buffer: the next one reuses the same memory
        let info = video_info("RGBA", 80, 45);
        h.set_src_caps(info.to_caps().unwrap());
        let format = sd_format(PixelLayout::Rgba, 80, 45);
        let buffer = buffer_from_planes(&info, &format, &planes_from_rgb(&format, &input, None));
        let out = h.push_and_pull(buffer).unwrap();
        let map = out.map_readable().unwrap();
        // SAFETY: the view lives within this iteration, while `map` keeps the memory alive
        let view = unsafe {
            Tensor::from_blob(
                map.as_ptr(),
                &[map.len() as i64],
                &[1],
                tch::Kind::Uint8,
                tch::Device::Cpu,
            )
        };
        assert!(
            view.is_pinned(tch::Device::Cuda(0)),
            "output buffer memory is pinned"
        );
        addresses.push(map.as_ptr() as usize);
    }
    addresses.sort_unstable();
    addresses.dedup();
    assert!(
        addresses.len() <= 2,
        "6 frames released one by one use at most 2 allocations: {addresses:x?}"
    );
}

#[test]
fn without_cuda_frames_in_cuda_memory_are_neither_offered_nor_accepted() {
    if tch::Cuda::is_available() {
        eprintln!("skipped: CUDA is available (the CUDA memory tests run instead)");
        return;
    }
    let h = harness(&[]);
    let sink = h.element().unwrap().static_pad("sink").unwrap();
    let cuda = "memory:CUDAMemory";
    let template = sink.pad_template_caps();
    assert!(
        template.iter_with_features().any(|(_, f)| f.contains(cuda)),
        "the template lists CUDA memory for machines that have it: {template}"
    );
    let offered = sink.query_caps(None);
    assert!(!offered.is_empty());
    assert!(
        !offered.iter_with_features().any(|(_, f)| f.contains(cuda)),
        "no CUDA memory without CUDA: {offered}"
    );
    let system: gst::Caps = "video/x-raw,format=RGBA,width=16,height=16,framerate=25/1"
        .parse()
        .unwrap();
    let mut on_device = system.copy();
    on_device
        .make_mut()
        .set_features(0, Some(gst::CapsFeatures::new([cuda])));
    assert!(sink.query_accept_caps(&system));
    assert!(!sink.query_accept_caps(&on_device), "{on_device} accepted");
}
