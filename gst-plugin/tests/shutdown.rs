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
/// after a clean run (once in 30 runs of the element tests; without the fix this test's own
/// process crashed so at every run, 5 of 5). Stopping joins it.
#[test]
fn stopping_a_live_stream_ends_its_warm_up() {
    init();
    let element = gst::ElementFactory::make("lightsrscale")
        .property("scale", 4u32)
        .build()
        .unwrap();
    let mut h = gst_check::Harness::with_element(&element, Some("sink"), Some("src"));
    h.play();
    // The harness answers LATENCY as a live source does: the embedded ladder's learned rungs are
    // measured on a thread of their own. Without a frame rate no rung is too slow to measure, so
    // at 320x180 that takes seconds on any CPU (`fourier` alone, 7 runs of 0.1-0.4 s).
    let (width, height) = (320, 180);
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, width, height)
        .fps(gst::Fraction::new(0, 1))
        .build()
        .unwrap();
    h.set_src_caps(info.to_caps().unwrap());
    let format = sd_format(PixelLayout::Rgb, width as usize, height as usize);
    let input = gradient(height.into(), width.into());
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
    element.set_state(gst::State::Null).unwrap();
    // The warm-up thread has been joined; the OpenMP workers it started leave as it ends, within
    // milliseconds (a warm-up left running would go on for seconds).
    let stopped = Instant::now();
    while warm_up_threads() > 0 && stopped.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(warm_up_threads(), 0, "the warm-up ended with the stream");
    drop(h);
    assert_eq!(warm_up_threads(), 0);
}
