// SPDX-License-Identifier: MPL-2.0
//! Deadline benchmark (issues 5, 13): a live 25 fps 320x180 NV12 source upscaled x4 by
//! `lightsrscale` at its defaults (embedded ladder, no property but `scale`, no environment
//! variable) into a `sync=true` sink; halfway through, a second process starts loading one
//! core. For `adaptive=true` and for each fixed variant it prints the share of frames the sink
//! rendered on time, the share of frames a learned rung made, drops, switches and the time per
//! variant, before and after the load starts.
//!
//! ```text
//! cargo bench --bench deadline                        # 500 frames (20 s) per configuration
//! FRAMES=250 CONFIGS=adaptive,bicubic SCALE=2 FORMAT=RGB cargo bench --bench deadline
//! FRAMES=250 CONFIGS=adaptive,adaptive+fixed-threads cargo bench --bench deadline
//! SIZE=960x540 CONFIGS=adaptive cargo bench --bench deadline   # (with CUDA, the element runs there)
//! ```
//! A configuration ending in `+fixed-threads` runs with `adapt-threads=false`.
//! Prints figures only; nothing is asserted. The pipeline goes straight to PLAYING, as
//! `gst-launch-1.0` does: the element starts on its lightest rung and measures the others on
//! a thread of its own meanwhile.
//! On time: rendered by `fakesink sync=true qos=true max-lateness=20000000` (a frame later
//! than 20 ms is dropped there); the element's own drops count as not on time.

use std::{
    collections::BTreeMap,
    process::{Child, Command},
    time::{Duration, Instant},
};

use gst::prelude::*;

const FPS: u64 = 25;
const FRAME: Duration = Duration::from_millis(1000 / FPS);

/// Figures of one half of a run.
#[derive(Debug, Default, Clone)]
struct Half {
    /// Frames whose fate (rendered or dropped) was known in this half.
    due: u64,
    rendered: u64,
    sink_dropped: u64,
    element_dropped: u64,
    switches: u64,
}

struct Run {
    config: String,
    frames: u64,
    halves: [Half; 2],
    /// Frames made by learned (not weight-free) rungs, and by any rung, per half (the element's
    /// counts: the sink's lag a frame behind them).
    learned: [(u64, u64); 2],
    /// Seconds of running time per active variant, per half.
    time_on: [BTreeMap<String, f64>; 2],
    stats: gst::Structure,
}

fn sink_counts(sink: &gst::Element) -> (u64, u64) {
    let stats = sink.property::<gst::Structure>("stats");
    let get = |f: &str| stats.get::<u64>(f).unwrap_or(0);
    (get("rendered"), get("dropped"))
}

/// Frames the element made so far with learned rungs (every rung but `bicubic`), and with any.
fn learned_frames(sr: &gst::Element) -> (u64, u64) {
    let stats = sr.property::<gst::Structure>("stats");
    let Ok(variants) = stats.get::<gst::Array>("variants") else {
        return (0, 0);
    };
    let counts: Vec<(bool, u64)> = variants
        .iter()
        .filter_map(|v| v.get::<gst::Structure>().ok())
        .map(|v| {
            let learned = v.get::<String>("name").is_ok_and(|n| n != "bicubic");
            (learned, v.get::<u64>("frames").unwrap_or(0))
        })
        .collect();
    let learned = counts.iter().filter(|(l, _)| *l).map(|(_, f)| f).sum();
    (learned, counts.iter().map(|(_, f)| f).sum())
}

fn element_counts(sr: &gst::Element) -> (u64, u64) {
    let stats = sr.property::<gst::Structure>("stats");
    let get = |f: &str| stats.get::<u64>(f).unwrap_or(0);
    (get("dropped"), get("switches"))
}

/// A busy loop in a second process: loads one core until killed.
fn load_one_core() -> Child {
    Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .expect("spawn the load process")
}

/// `FORMAT` (default NV12), `SCALE` (default 4) and `SIZE` (the input, default 320x180).
fn stream() -> (String, u32, (u32, u32)) {
    let format = std::env::var("FORMAT").unwrap_or_else(|_| "NV12".into());
    let scale = std::env::var("SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let size = std::env::var("SIZE")
        .ok()
        .and_then(|s| {
            let (w, h) = s.split_once('x')?;
            Some((w.parse().ok()?, h.parse().ok()?))
        })
        .unwrap_or((320, 180));
    (format, scale, size)
}

fn pipeline(config: &str, frames: u64) -> gst::Pipeline {
    let (format, scale, (width, height)) = stream();
    // `<config>+fixed-threads`: the same without the thread governor (`adapt-threads=false`),
    // for a side-by-side comparison
    let (config, threads) = match config.strip_suffix("+fixed-threads") {
        Some(base) => (base, "adapt-threads=false"),
        None => (config, ""),
    };
    let rung = match config {
        "adaptive" => String::new(),
        rung => format!("variant={rung}"),
    };
    let choice = format!("{rung} {threads}");
    let description = format!(
        "videotestsrc is-live=true num-buffers={frames} pattern=ball \
         ! video/x-raw,format={format},width={width},height={height},framerate={FPS}/1 \
         ! lightsrscale name=sr scale={scale} {choice} \
         ! fakesink name=sink sync=true qos=true max-lateness=20000000"
    );
    gst::parse::launch(&description)
        .expect("pipeline")
        .downcast()
        .expect("a pipeline")
}

/// Splits the running time between the variants active in it, per half.
fn time_on(switches: &[(u64, String)], half: u64, end: u64) -> [BTreeMap<String, f64>; 2] {
    let mut out = [BTreeMap::new(), BTreeMap::new()];
    for (i, (start, name)) in switches.iter().enumerate() {
        let stop = switches.get(i + 1).map_or(end, |s| s.0).min(end);
        for (h, (lo, hi)) in [(0, half), (half, end)].into_iter().enumerate() {
            let span = stop.min(hi).saturating_sub((*start).max(lo));
            *out[h].entry(name.clone()).or_insert(0.0) += span as f64 / 1e9;
        }
    }
    out
}

fn run(config: &str, frames: u64) -> Run {
    let p = pipeline(config, frames);
    let sr = p.by_name("sr").expect("sr");
    let sink = p.by_name("sink").expect("sink");
    p.set_state(gst::State::Playing).expect("PLAYING");
    let bus = p.bus().expect("bus");
    let started = Instant::now();
    let half_time = FRAME * (frames / 2) as u32;
    let mut load: Option<Child> = None;
    let mut at_half = (Half::default(), 0u64, (0u64, 0u64));
    let mut switches: Vec<(u64, String)> = Vec::new();
    let deadline = FRAME * frames as u32 + Duration::from_secs(120);
    while started.elapsed() < deadline {
        if load.is_none() && started.elapsed() >= half_time {
            let (rendered, sink_dropped) = sink_counts(&sink);
            let (element_dropped, switched) = element_counts(&sr);
            let rt = sr.current_running_time().map_or(0, |t| t.nseconds());
            at_half = (
                Half {
                    due: rendered + sink_dropped + element_dropped,
                    rendered,
                    sink_dropped,
                    element_dropped,
                    switches: switched,
                },
                rt,
                learned_frames(&sr),
            );
            load = Some(load_one_core());
        }
        let Some(message) = bus.timed_pop(gst::ClockTime::from_mseconds(50)) else {
            continue;
        };
        match message.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{config}: {} {:?}", e.error(), e.debug()),
            gst::MessageView::Element(e) => {
                let s = e.structure().expect("structure");
                if s.name() == "lightsrscale-variant" {
                    let rt = s.get::<u64>("running-time").unwrap_or(0);
                    switches.push((rt, s.get::<String>("to").unwrap_or_default()));
                }
            }
            _ => (),
        }
    }
    if let Some(mut child) = load {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (rendered, sink_dropped) = sink_counts(&sink);
    let (element_dropped, switched) = element_counts(&sr);
    let stats = sr.property::<gst::Structure>("stats");
    let learned = learned_frames(&sr);
    p.set_state(gst::State::Null).expect("NULL");
    let (first, half_rt, learned_first) = at_half;
    let second = Half {
        due: frames - first.due,
        rendered: rendered - first.rendered,
        sink_dropped: sink_dropped - first.sink_dropped,
        element_dropped: element_dropped - first.element_dropped,
        switches: switched - first.switches,
    };
    let end = frames * FRAME.as_nanos() as u64;
    Run {
        config: config.to_string(),
        frames,
        halves: [first, second],
        learned: [
            learned_first,
            (learned.0 - learned_first.0, learned.1 - learned_first.1),
        ],
        time_on: time_on(&switches, half_rt, end),
        stats,
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

fn print(run: &Run) {
    let total: u64 = run.halves.iter().map(|h| h.rendered).sum();
    let [first, second] = &run.halves;
    println!(
        "{:<22} on time {:6.2}% ({} / {}) | unloaded {:6.2}% ({} / {}) | loaded {:6.2}% ({} / {})",
        run.config,
        percent(total, run.frames),
        total,
        run.frames,
        percent(first.rendered, first.due),
        first.rendered,
        first.due,
        percent(second.rendered, second.due),
        second.rendered,
        second.due,
    );
    for (h, name) in ["unloaded", "loaded"].iter().enumerate() {
        let half = &run.halves[h];
        println!(
            "  {name:<9} learned rung on {:6.2}% of the frames it made ({} / {})",
            percent(run.learned[h].0, run.learned[h].1),
            run.learned[h].0,
            run.learned[h].1
        );
        let time: Vec<String> = run.time_on[h]
            .iter()
            .filter(|(_, s)| **s > 0.0)
            .map(|(v, s)| format!("{v} {s:.1} s"))
            .collect();
        println!(
            "  {name:<9} element drops {:3}, sink late drops {:3}, switches {:2}, time on: {}",
            half.element_dropped,
            half.sink_dropped,
            half.switches,
            time.join(", ")
        );
    }
    let variants = run.stats.get::<gst::Array>("variants").expect("variants");
    let per: Vec<String> = variants
        .iter()
        .filter_map(|v| v.get::<gst::Structure>().ok())
        .filter(|v| v.get::<u64>("frames").unwrap_or(0) > 0)
        .map(|v| {
            let ms = |f: &str| v.get::<u64>(f).unwrap_or(0) as f64 / 1e6;
            format!(
                "{} {} frames, mean {:.1} ms, p95 {:.1} ms",
                v.get::<String>("name").unwrap_or_default(),
                v.get::<u64>("frames").unwrap_or(0),
                ms("mean-cost"),
                ms("p95-cost")
            )
        })
        .collect();
    println!("  per variant: {}", per.join("; "));
}

/// The embedded default's rungs at `SCALE`, best first.
fn ladder() -> Vec<String> {
    let bundle = gstlightsrscale::engine::Bundle::load(
        &gstlightsrscale::engine::BundleSource::Embedded,
        tch::Device::Cpu,
    )
    .expect("the embedded default bundle");
    let ladder = bundle.ladder(stream().1).expect("a ladder at SCALE");
    ladder
        .variants
        .iter()
        .map(|v| v.name().to_string())
        .collect()
}

fn main() {
    gst::init().expect("gst init");
    gstlightsrscale::plugin_register_static().expect("register lightsrscale");
    let frames: u64 = std::env::var("FRAMES")
        .ok()
        .and_then(|f| f.parse().ok())
        .unwrap_or(500);
    let rungs = ladder();
    let configs: Vec<String> = match std::env::var("CONFIGS") {
        Ok(list) => list.split(',').map(str::to_string).collect(),
        Err(_) => std::iter::once("adaptive".to_string())
            .chain(rungs.iter().cloned())
            .collect(),
    };
    let (format, scale, (width, height)) = stream();
    println!(
        "deadline: live {FPS} fps {width}x{height} {format} -> x{scale} (embedded ladder: {}), fakesink \
         sync=true, {frames} frames per configuration, one core loaded by a second process from \
         frame {}, {} libtorch threads",
        rungs.join(" > "),
        frames / 2,
        tch::get_num_threads()
    );
    for config in &configs {
        print(&run(config, frames));
    }
}
