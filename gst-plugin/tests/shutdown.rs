// SPDX-License-Identifier: MPL-2.0
//! A live stream's warm-up ends with the element: alone in its own test process, because it
//! counts the process's warm-up threads (the tests of another file would start theirs).

mod common;

use common::*;
use gst::prelude::*;
use gstlightsrscale::convert::PixelLayout;
use std::time::{Duration, Instant};

/// Threads of this process named as the element names its warm-up thread (the kernel keeps
/// the first 15 bytes of a name): the thread and the OpenMP workers it started, which take
/// its name.
fn warm_up_threads() -> usize {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "lightsrscale-wa")
        .count()
}

/// A warm-up left running when the pipeline stops would run libtorch while the process exits:
/// its exit handlers free oneDNN's primitive cache under the running convolution, a SIGSEGV
/// after a clean run (seen once in 30 runs of the element tests). Stopping joins it.
#[test]
fn stopping_a_live_stream_ends_its_warm_up() {
    init();
    let element = gst::ElementFactory::make("lightsrscale")
        .property("scale", 4u32)
        .build()
        .unwrap();
    let mut h = gst_check::Harness::with_element(&element, Some("sink"), Some("src"));
    h.play();
    // The harness answers LATENCY as a live source does: the embedded ladder's learned rungs
    // are measured on a thread of their own, several hundred milliseconds on any CPU.
    let info = video_info("RGB", 160, 96);
    h.set_src_caps(info.to_caps().unwrap());
    let format = sd_format(PixelLayout::Rgb, 160, 96);
    let input = gradient(96, 160);
    let buffer = buffer_from_planes(&info, &format, &planes_from_rgb(&format, &input, None));
    assert!(h.push_and_pull(buffer).is_ok(), "the first frame comes out");
    let asked = Instant::now();
    while warm_up_threads() == 0 && asked.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        warm_up_threads() > 0,
        "a live stream is measured on a thread"
    );
    assert_eq!(element.property::<String>("active-variant"), "bicubic");
    element.set_state(gst::State::Null).unwrap();
    assert_eq!(warm_up_threads(), 0, "the warm-up ended with the stream");
    drop(h);
    assert_eq!(warm_up_threads(), 0);
}
