// SPDX-License-Identifier: MPL-2.0
//! Deadline scheduling of `lightsrscale` through the element. The decisions themselves (start
//! on the lightest rung, fall back at a miss, climb back, drop what nothing makes, bounds,
//! QoS, warm-ups, lifetime counters) are asserted exactly, with an injected clock and injected
//! costs, by the tests of `lightsrscale::scheduler`. Here: what needs the element but no
//! clock (bounds refused at start naming the ladder, the LATENCY query and message), the
//! rescue of a live frame that stalls (the `paced-rescue` fixture: its timing is only wide
//! margins, a stall of 32x the frame duration and a rung that fits with 6x to spare), and one
//! wall-clock run end to end, `#[ignore]`d (`cargo test --release -- --ignored` on a quiet
//! machine).
//!
//! The wall-clock test uses the `paced` fixture ladder (tests/fixtures/make_fixtures.py):
//! three x2 nearest upscalers, `slow` / `medium` / `fast`, that do 256 / 16 / 0 units of work
//! per frame (plus the copies), times a load factor read from the top-left pixel
//! (1 + red / 16) and one unit per 64x36 pixels. It derives its frame budget from the costs
//! measured at start on this machine, asserts on what the element tells
//! (`lightsrscale-variant` and QoS messages, the `stats` property, frames in and out, each
//! output checked pixel for pixel), and drives the element frame by frame through gst_check's
//! Harness with its test clock set to each frame's running time.

mod common;

use std::{
    sync::{Mutex, MutexGuard, OnceLock},
    time::{Duration, Instant},
};

use common::*;
use gst::prelude::*;

const RUNGS: [&str; 3] = ["slow", "medium", "fast"];
const SMALL: (u32, u32) = (64, 36);
/// Red value of the top-left pixel that makes every paced rung do 16x its work.
const LOAD_16: u8 = 15 * 16;
/// What a stream may take to climb back (frames); the climb itself needs about 2 s of
/// stream time (the policy's sustain period) plus probes.
const CLIMB_LIMIT: usize = 3000;
/// The policy's headroom factor for climbing.
const HEADROOM: f64 = 1.25;

/// One test at a time: they time work on shared cores.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn setup() {
    init();
    // One libtorch thread: a frame's cost then depends less on what else runs on the cores.
    tch::set_num_threads(1);
}

/// Caps with the frame rate whose frame duration is `period` (microsecond resolution).
fn caps(size: (u32, u32), period: Duration) -> gst::Caps {
    let micros = period.as_micros().clamp(1, i32::MAX as u128) as i32;
    gst_video::VideoCapsBuilder::new()
        .format(gst_video::VideoFormat::Rgb)
        .width(size.0 as i32)
        .height(size.1 as i32)
        .framerate(gst::Fraction::new(1_000_000, micros))
        .build()
}

/// Tight RGB bytes of a frame: a gradient whose top-left red value sets the paced load.
fn frame_bytes(size: (u32, u32), load: u8) -> Vec<u8> {
    let (w, h) = (size.0 as usize, size.1 as usize);
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            rgb.extend_from_slice(&[(x * 3 % 200) as u8, (y * 5 % 250) as u8, 90]);
        }
    }
    rgb[0] = load;
    rgb
}

/// Nearest x2 of tight RGB bytes.
fn nearest_x2(rgb: &[u8], size: (u32, u32)) -> Vec<u8> {
    let (w, h) = (size.0 as usize, size.1 as usize);
    let mut out = Vec::with_capacity(rgb.len() * 4);
    for y in 0..2 * h {
        for x in 0..2 * w {
            let i = ((y / 2) * w + x / 2) * 3;
            out.extend_from_slice(&rgb[i..i + 3]);
        }
    }
    out
}

#[derive(Debug, Clone)]
struct Switch {
    from: String,
    to: String,
    reason: String,
    /// Index of the frame whose decision it was.
    frame: usize,
}

/// A `lightsrscale model=paced scale=2 deadline-margin=0 max-lateness=0` in a harness, fed
/// frame by frame.
struct Stream {
    h: gst_check::Harness,
    element: gst::Element,
    bus: gst::Bus,
    live: bool,
    size: (u32, u32),
    period: Duration,
    pts: gst::ClockTime,
    frames_in: usize,
    frames_out: usize,
    switches: Vec<Switch>,
    /// (processed, dropped) of each QoS message.
    qos: Vec<(u64, u64)>,
}

impl Stream {
    fn new(properties: &[(&str, &str)], period: Duration, live: bool) -> Stream {
        Self::with_model("paced", properties, period, live)
    }

    fn with_model(
        bundle: &str,
        properties: &[(&str, &str)],
        period: Duration,
        live: bool,
    ) -> Stream {
        let model = fixture(bundle);
        let mut builder = gst::ElementFactory::make("lightsrscale")
            .property_from_str("model", model.to_str().unwrap())
            .property("scale", 2u32)
            .property("deadline-margin", 0u64)
            // The paced rungs are calibrated CPU work, and the rescue is the CPU's (a GPU
            // machine runs these tests too: tests/gpu/run.sh).
            .property("device", "cpu")
            // The harness stands in for a sink that shows no late frame.
            .property("max-lateness", 0u64);
        for (name, value) in properties {
            builder = builder.property_from_str(name, value);
        }
        let element = builder.build().unwrap();
        let bus = gst::Bus::new();
        element.set_bus(Some(&bus));
        let mut h = gst_check::Harness::with_element(&element, Some("sink"), Some("src"));
        if live {
            h.use_testclock();
            h.set_upstream_latency(gst::ClockTime::ZERO);
        }
        h.play();
        h.set_src_caps(caps(SMALL, period));
        if live {
            // The harness answers upstream latency queries as a live source.
            assert!(h.query_latency().is_some());
        }
        Stream {
            h,
            element,
            bus,
            live,
            size: SMALL,
            period,
            pts: gst::ClockTime::ZERO,
            frames_in: 0,
            frames_out: 0,
            switches: Vec::new(),
            qos: Vec::new(),
        }
    }

    /// Pushes one frame at `load` (0: x1, LOAD_16: x16); returns whether it came out, checked
    /// to be the exact nearest x2 of the input.
    fn push(&mut self, load: u8) -> bool {
        let Some((input, output)) = self.push_frame(load) else {
            return false;
        };
        assert!(
            output == nearest_x2(&input, self.size),
            "frame {}: output is not the nearest x2 of its input",
            self.frames_in - 1
        );
        true
    }

    /// Pushes one frame at `load`; its input and output RGB bytes, if it came out.
    fn push_frame(&mut self, load: u8) -> Option<(Vec<u8>, Vec<u8>)> {
        let info = gst_video::VideoInfo::from_caps(&caps(self.size, self.period)).unwrap();
        let format = sd_format(
            gstlightsrscale::convert::PixelLayout::Rgb,
            self.size.0 as usize,
            self.size.1 as usize,
        );
        let rgb = frame_bytes(self.size, load);
        let mut buffer = buffer_from_planes(&info, &format, std::slice::from_ref(&rgb));
        let duration = gst::ClockTime::try_from(self.period).unwrap();
        {
            let buffer = buffer.get_mut().unwrap();
            buffer.set_pts(self.pts);
            buffer.set_duration(duration);
        }
        if self.live {
            // "Now" is the frame's running time: it has one frame duration left.
            self.h.set_time(self.pts).unwrap();
        }
        self.pts += duration;
        self.frames_in += 1;
        self.h.push(buffer).expect("push");
        let out = self.h.try_pull();
        self.drain();
        let out = out?;
        self.frames_out += 1;
        let out_size = (2 * self.size.0, 2 * self.size.1);
        let out_info =
            gst_video::VideoInfo::from_caps(&self.h.sinkpad().unwrap().current_caps().unwrap())
                .unwrap();
        assert_eq!((out_info.width(), out_info.height()), out_size);
        let out_format = sd_format(
            gstlightsrscale::convert::PixelLayout::Rgb,
            out_size.0 as usize,
            out_size.1 as usize,
        );
        let mut planes = planes_from_buffer(&out_info, &out_format, &out);
        Some((rgb, planes.swap_remove(0)))
    }

    /// Pushes `count` frames; returns how many came out.
    fn run(&mut self, count: usize, load: u8) -> usize {
        (0..count).filter(|_| self.push(load)).count()
    }

    /// Runs unloaded frames until `rung` is the active variant; returns how many it took.
    fn climb_to(&mut self, rung: &str) -> usize {
        for frames in 0..CLIMB_LIMIT {
            if self.active() == rung {
                return frames;
            }
            self.push(0);
        }
        panic!(
            "no climb back to {rung} in {CLIMB_LIMIT} frames: {:?}, {}",
            self.switches,
            self.stats()
        );
    }

    fn drain(&mut self) {
        while let Some(message) = self.bus.pop() {
            match message.view() {
                gst::MessageView::Element(e) => {
                    let s = e.structure().unwrap();
                    if s.name() == "lightsrscale-variant" {
                        self.switches.push(Switch {
                            from: s.get("from").unwrap(),
                            to: s.get("to").unwrap(),
                            reason: s.get("reason").unwrap(),
                            frame: self.frames_in - 1,
                        });
                    }
                }
                gst::MessageView::Qos(q) => {
                    let (processed, dropped) = q.stats();
                    let count = |v: gst::GenericFormattedValue| match v {
                        gst::GenericFormattedValue::Buffers(b) => b.map_or(0, |b| *b),
                        other => panic!("QoS stats in {other:?}, expected buffers"),
                    };
                    self.qos.push((count(processed), count(dropped)));
                }
                gst::MessageView::Error(e) => panic!("error: {} {:?}", e.error(), e.debug()),
                _ => (),
            }
        }
    }

    fn stats(&self) -> gst::Structure {
        self.element.property::<gst::Structure>("stats")
    }

    fn active(&self) -> String {
        self.element.property::<String>("active-variant")
    }

    fn counter(&self, field: &str) -> u64 {
        self.stats().get::<u64>(field).unwrap()
    }

    /// What the element predicts a frame of `rung` costs now.
    fn predicted(&self, rung: &str) -> Duration {
        let stats = self.stats();
        let variants = stats.get::<gst::Array>("variants").unwrap();
        let ns = variants
            .iter()
            .map(|v| v.get::<gst::Structure>().unwrap())
            .find(|v| v.get::<String>("name").unwrap() == rung)
            .map(|v| v.get::<u64>("predicted-cost").unwrap())
            .unwrap();
        Duration::from_nanos(ns)
    }

    /// Frames processed on `rung` so far.
    fn frames_on(&self, rung: &str) -> u64 {
        let stats = self.stats();
        let variants = stats.get::<gst::Array>("variants").unwrap();
        variants
            .iter()
            .map(|v| v.get::<gst::Structure>().unwrap())
            .find(|v| v.get::<String>("name").unwrap() == rung)
            .map(|v| v.get::<u64>("frames").unwrap())
            .unwrap()
    }

    fn switches_since(&self, frame: usize) -> Vec<Switch> {
        let after = |s: &&Switch| s.frame >= frame;
        self.switches.iter().filter(after).cloned().collect()
    }
}

/// Fastest cost of each rung at 64x36 on this machine, ns, unloaded and loaded x16, and the
/// slow rung's median unloaded.
///
/// What must not fit is set below a minimum: noise from other processes only ever makes a
/// frame slower, so that never fits. What must fit is set with a wide factor over the median
/// (so a machine busy during calibration widens it), and waited for in frames.
#[derive(Debug)]
struct Costs {
    min: [[f64; 2]; 3],
    slow_median: f64,
}

impl Costs {
    fn min(&self, rung: &str, load: u8) -> f64 {
        let r = RUNGS.iter().position(|n| *n == rung).unwrap();
        self.min[r][usize::from(load != 0)]
    }

    /// The geometric mean of `fits` and `misses`, ns.
    fn between(fits: f64, misses: f64) -> Duration {
        Duration::from_nanos((fits * misses).sqrt() as u64)
    }

    /// Where the slow rung fits with headroom unloaded and never fits loaded x16 (a factor
    /// of 3.6 either side on a quiet machine).
    fn slow_budget(&self) -> Duration {
        Self::between(HEADROOM * self.slow_median, self.min("slow", LOAD_16))
    }
}

fn costs() -> &'static Costs {
    static COSTS: OnceLock<Costs> = OnceLock::new();
    COSTS.get_or_init(|| {
        let mut stream = Stream::new(&[("variant", "slow")], Duration::from_secs(1), false);
        let mut costs = Costs {
            min: [[0.0; 2]; 3],
            slow_median: 0.0,
        };
        for (r, rung) in RUNGS.iter().enumerate() {
            stream.element.set_property("variant", *rung);
            for (l, load) in [0, LOAD_16].into_iter().enumerate() {
                stream.run(1, load);
                let count = if (r, l) == (0, 1) { 4 } else { 10 };
                let mut samples: Vec<f64> = (0..count)
                    .map(|_| {
                        let started = Instant::now();
                        assert!(stream.push(load));
                        started.elapsed().as_nanos() as f64
                    })
                    .collect();
                samples.sort_by(f64::total_cmp);
                costs.min[r][l] = samples[0];
                if (r, l) == (0, 0) {
                    costs.slow_median = samples[count / 2];
                }
            }
        }
        eprintln!(
            "calibration (ns): {costs:?}, slow budget {:?}",
            costs.slow_budget()
        );
        costs
    })
}

/// The switches to a better rung.
fn climbs(switches: &[Switch]) -> Vec<&Switch> {
    let rank = |name: &str| RUNGS.iter().position(|n| *n == name);
    let up = |s: &&Switch| !s.from.is_empty() && rank(&s.to) < rank(&s.from);
    switches.iter().filter(up).collect()
}

#[test]
#[ignore = "wall clock: the decisions are tested exactly in lightsrscale::scheduler's tests; run with --ignored on a quiet machine"]
fn falls_back_at_a_deadline_miss_and_climbs_back_when_the_load_is_gone() {
    let _serial = serial();
    setup();
    let budget = costs().slow_budget();
    let mut s = Stream::new(&[], budget, false);
    assert_eq!(s.switches.len(), 0);
    s.push(0);
    assert_eq!(s.switches[0].reason, "initial");
    s.climb_to("slow");

    // Load x16: the slow rung misses (by a factor of 3.6 at least), then a lighter rung runs.
    let loaded_from = s.frames_in;
    assert_eq!(s.run(30, LOAD_16), 30, "not live: every frame is processed");
    let down = &s.switches_since(loaded_from)[0];
    assert_eq!(
        (down.from.as_str(), down.reason.as_str()),
        ("slow", "deadline-missed"),
        "{:?}",
        s.switches
    );
    assert!(
        down.frame <= loaded_from + 1,
        "steps down right after the miss"
    );
    assert!(!s.qos.is_empty(), "a QoS message on the quality change");
    assert_ne!(s.active(), "slow");

    // Load gone: back up, one rung at a time, each after a sustained period with headroom.
    let recovered_from = s.frames_in;
    let frames = s.climb_to("slow");
    let since = s.switches_since(recovered_from);
    let ups = climbs(&since);
    assert!(!ups.is_empty());
    assert!(ups.iter().all(|u| u.reason == "headroom"), "{since:?}");
    let sustain_frames = (2.0 / budget.as_secs_f64()) as usize;
    assert!(frames >= sustain_frames, "climbed after {frames} frames");
    assert!(s.counter("probes") >= 1);
    assert_eq!(s.frames_out, s.frames_in);
    assert_eq!(s.counter("dropped"), 0);
    assert_eq!(s.counter("processed"), s.frames_in as u64);
    assert_eq!(
        RUNGS.iter().map(|r| s.frames_on(r)).sum::<u64>(),
        s.frames_in as u64
    );
}

/// Whether two x2 outputs of `size` (RGB) are equal away from the top-left corner, where the
/// paced load pixel (and a scaler's taps around it) differ.
fn equal_but_the_corner(a: &[u8], b: &[u8], size: (u32, u32)) -> bool {
    let (w, h) = (2 * size.0 as usize, 2 * size.1 as usize);
    (0..h).all(|y| {
        (0..w).all(|x| {
            let i = (y * w + x) * 3;
            (y < 8 && x < 8) || a[i..i + 3] == b[i..i + 3]
        })
    })
}

/// Red value of the top-left pixel that makes the `paced-rescue` rung do 256x its work.
const STALL: u8 = 255;

/// Live, a frame whose rung stalls far past its deadline (the `paced-rescue` rung at 256x its
/// work, in a frame duration of 8x its median cost) is not waited for: GStreamer's scaler, the
/// weight-free rung, makes it, the frame comes out, `stats` counts it as `rescued`, and the
/// stream steps down as at any miss. Timing enters only through two wide margins: the rung fits
/// the budget with its headroom unless the machine slows it over 6x between calibration and
/// warm-up, and the stalled frame takes 32x the budget (noise only makes it slower). The
/// decisions themselves are asserted in `scheduler.rs`.
#[test]
fn a_live_frame_that_stalls_is_made_by_the_scaler_and_the_stream_steps_down() {
    let _serial = serial();
    setup();
    let median = {
        let mut s = Stream::with_model(
            "paced-rescue",
            &[("variant", "slow")],
            Duration::from_secs(1),
            false,
        );
        s.run(2, 0);
        let mut samples: Vec<Duration> = (0..7)
            .map(|_| {
                let started = Instant::now();
                assert!(s.push(0));
                started.elapsed()
            })
            .collect();
        samples.sort();
        samples[3]
    };
    let budget = median * 8;
    eprintln!("paced-rescue `slow`: median {median:?}, frame duration {budget:?}");
    let mut s = Stream::with_model("paced-rescue", &[], budget, true);
    // The stream starts on the weight-free rung (GStreamer's scaler) while the warm-up runs:
    // its output is the reference for frames the scaler makes.
    let (input, reference) = s.push_frame(0).expect("the first frame");
    assert_eq!(s.active(), "bicubic");
    assert!(
        reference != nearest_x2(&input, s.size),
        "the scaler is not nearest"
    );
    // The warm-up measures `slow` on its own thread (7 runs); then the stream climbs to it. On
    // a machine busy enough to make one of its frames late, the policy may leave it for the
    // stalled frame itself, or catch that frame up on the weight-free rung (the scaler's
    // picture, but no rescue): then the stall is tried again, up to five times. The give-up
    // time bounds the climbs.
    let give_up = Instant::now() + Duration::from_secs(30);
    let mut attempts = 0;
    let (stalled_at, before, input, output) = loop {
        while s.active() != "slow" {
            if Instant::now() >= give_up {
                // Other processes took the cores between the calibration and the warm-up, far
                // beyond the margin this test is built on: the element rightly never climbs, and
                // the stall cannot be set up. Only that is skipped, and said so.
                let predicted = s.predicted("slow");
                if predicted > median * 6 {
                    eprintln!(
                        "skipped: the machine slowed `slow` from {median:?} to {predicted:?} \
                         a frame since the calibration; it never climbs: {}",
                        s.stats()
                    );
                    return;
                }
                panic!("no climb to slow: {:?}, {}", s.switches, s.stats());
            }
            s.push_frame(0).expect("every frame comes out");
            std::thread::sleep(Duration::from_millis(5));
        }
        // settled on it: its frames are its own, 5 in a row made by it (a late one may have
        // left it: climb again, or the stalled frame would be a probe from the weight-free
        // rung; right after the climb the scaler makes frames while the inference thread is
        // primed in the background)
        let mut own = 0;
        for _ in 0..200 {
            let (input, output) = s.push_frame(0).expect("a frame on slow");
            own = if output == nearest_x2(&input, s.size) {
                own + 1
            } else {
                0
            };
            if own == 5 || s.active() != "slow" {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if s.active() != "slow" || own < 5 {
            if Instant::now() >= give_up {
                // as above: a machine far busier than the margins (frames rescued in a row)
                let predicted = s.predicted("slow");
                if predicted > median * 6 {
                    eprintln!("skipped: `slow` at {predicted:?} a frame: {}", s.stats());
                    return;
                }
                panic!("`slow` never made 5 frames in a row: {}", s.stats());
            }
            continue;
        }
        let before = s.counter("rescued");
        let stalled_at = s.frames_in;
        let (input, output) = s.push_frame(STALL).expect("the stalled frame comes out");
        let left = s
            .switches_since(stalled_at)
            .iter()
            .any(|d| d.frame == stalled_at);
        let caught_up =
            equal_but_the_corner(&output, &reference, s.size) && s.counter("rescued") == before;
        if !(left || caught_up) {
            break (stalled_at, before, input, output);
        }
        attempts += 1;
        assert!(
            attempts < 5,
            "the stalled frame was never planned on `slow`: {}",
            s.stats()
        );
    };
    assert!(
        output != nearest_x2(&input, s.size),
        "the stalled frame was waited for ({})",
        s.stats()
    );
    assert!(
        equal_but_the_corner(&output, &reference, s.size),
        "the stalled frame is not the scaler's picture"
    );
    assert!(s.counter("rescued") > before);
    // nothing lost: the frames after it come out, made by the scaler while the given-up run
    // goes on, or by the rung the policy chose; the next one steps down for the miss. Its reason
    // is `deadline-missed`, or `nothing-fits` where the miss (tens of times the rung's cost
    // here) also put the weight-free rung's predicted cost over the budget: it runs anyway.
    for _ in 0..5 {
        s.push_frame(0).expect("a frame after the stalled one");
    }
    let down = s.switches_since(stalled_at);
    assert!(
        down.first().is_some_and(|d| d.frame == stalled_at + 1
            && (d.from.as_str(), d.to.as_str()) == ("slow", "bicubic")
            && ["deadline-missed", "nothing-fits"].contains(&d.reason.as_str())),
        "{down:?}"
    );
    assert_eq!(s.frames_out, s.frames_in);
    assert_eq!(s.counter("dropped"), 0);
    assert_eq!(s.counter("processed"), s.frames_in as u64);
}

#[test]
fn bad_bounds_fail_the_state_change_naming_the_ladder() {
    let _serial = serial();
    setup();
    let model = fixture("paced");
    let cases = [
        (
            "min-variant=bogus",
            "min-variant=bogus is not in the x2 ladder of this bundle (it has: slow, medium, fast)",
        ),
        (
            "max-variant=fast min-variant=slow",
            "max-variant=fast is lighter than min-variant=slow",
        ),
    ];
    for (properties, needle) in cases {
        let description = format!(
            "videotestsrc num-buffers=1 ! video/x-raw,format=RGB,width=64,height=36 ! lightsrscale model={} {properties} ! fakesink",
            model.display()
        );
        let pipeline = gst::parse::launch(&description).unwrap();
        let _ = pipeline.set_state(gst::State::Playing);
        let bus = pipeline.bus().unwrap();
        let message = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(60),
                &[gst::MessageType::Error, gst::MessageType::Eos],
            )
            .expect("an error");
        pipeline.set_state(gst::State::Null).unwrap();
        let gst::MessageView::Error(error) = message.view() else {
            panic!("{properties}: ran to EOS, expected an error");
        };
        let text = error.error().to_string();
        assert!(text.contains(needle), "{properties}: {text}");
    }
}

/// Waits (up to a minute) until `pad` has caps: the element has negotiated and warmed up.
fn wait_for_caps(pad: &gst::Pad) {
    let started = Instant::now();
    while pad.current_caps().is_none() {
        assert!(started.elapsed() < Duration::from_secs(60), "no caps");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// (live, min) of a LATENCY query on `pad` (or its peer).
fn latency(pad: &gst::Pad, peer: bool) -> (bool, gst::ClockTime) {
    let mut query = gst::query::Latency::new();
    let answered = if peer {
        pad.peer_query(&mut query)
    } else {
        pad.query(&mut query)
    };
    assert!(answered);
    let (live, min, _) = query.result();
    (live, min)
}

#[test]
fn latency_query_adds_one_frame_and_a_rate_change_posts_a_latency_message() {
    let _serial = serial();
    setup();
    let model = fixture("paced");
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc is-live=true ! capsfilter name=cf caps=video/x-raw,format=RGB,width=64,height=36,framerate=25/1 \
         ! lightsrscale name=sr model={} scale=2 variant=fast ! fakesink sync=true",
        model.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sr = pipeline.by_name("sr").unwrap();
    let (sink, src) = (
        sr.static_pad("sink").unwrap(),
        sr.static_pad("src").unwrap(),
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    wait_for_caps(&src);
    let (upstream_live, upstream) = latency(&sink, true);
    let (live, ours) = latency(&src, false);
    assert!(upstream_live && live);
    assert_eq!(ours - upstream, gst::ClockTime::from_mseconds(40));
    let stats = sr.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("latency").unwrap(), 40_000_000);

    // 25 -> 10 fps: the element's latency grows to 100 ms and it says so.
    let bus = pipeline.bus().unwrap();
    while bus.pop().is_some() {}
    let caps: gst::Caps = "video/x-raw,format=RGB,width=64,height=36,framerate=10/1"
        .parse()
        .unwrap();
    pipeline.by_name("cf").unwrap().set_property("caps", caps);
    let from_sr = bus.iter_timed(gst::ClockTime::from_seconds(60)).find(|m| {
        m.type_() == gst::MessageType::Latency && m.src() == Some(sr.upcast_ref::<gst::Object>())
    });
    assert!(from_sr.is_some(), "no latency message from lightsrscale");
    let (_, upstream) = latency(&sink, true);
    let (_, ours) = latency(&src, false);
    assert_eq!(ours - upstream, gst::ClockTime::from_mseconds(100));
    pipeline.set_state(gst::State::Null).unwrap();
}

/// A live stream starts on GStreamer's scaler while its rungs are measured on a thread of their
/// own; the CPU rungs' frames run on the inference thread, whose first libtorch run at a size
/// costs about a frame more (its OpenMP team, its malloc arena). That first run happens in the
/// background once the warm-up ends, not in the first learned frame's time (where it had cost a
/// dropped frame and a probe taken for a miss).
#[test]
fn a_live_stream_climbs_to_an_inference_thread_primed_in_the_background() {
    let _serial = serial();
    setup();
    let period = Duration::from_millis(200);
    let mut climbed = false;
    let log = element_log_of(gst::DebugLevel::Info, || {
        let mut s = Stream::with_model("paced-rescue", &[], period, true);
        s.push_frame(0).expect("the first frame");
        assert_eq!(s.active(), "bicubic");
        let give_up = Instant::now() + Duration::from_secs(30);
        while s.active() != "slow" && Instant::now() < give_up {
            s.push_frame(0).expect("every frame comes out");
            std::thread::sleep(Duration::from_millis(5));
        }
        climbed = s.active() == "slow";
        for _ in 0..5 {
            s.push_frame(0).expect("a frame after the climb");
        }
        assert_eq!(s.frames_out, s.frames_in);
    });
    let said = |what: &str| log.iter().filter(|l| l.contains(what)).count();
    if !climbed {
        // `slow` costs a fraction of a millisecond a frame here: only a machine busy far beyond
        // that keeps the stream from climbing; that alone is skipped, and said so
        eprintln!("skipped: no climb to `slow` in 30 s; {log:?}");
        return;
    }
    assert_eq!(
        said("priming the inference thread with slow at 64x36 in the background"),
        1,
        "{log:#?}"
    );
    assert_eq!(said("once on the inference thread"), 0, "{log:#?}");
}
