// SPDX-License-Identifier: MPL-2.0
//! Whole pipelines: videotestsrc -> lightsrscale -> appsink (with a mid-stream resolution
//! change), and every bad input the element must refuse with a clear message.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use gst::glib::translate::from_glib_none;
use gst::prelude::*;
use gstlightsrscale::convert::PixelLayout;

const TIMEOUT: gst::ClockTime = gst::ClockTime::from_seconds(60);

fn pipeline(description: &str) -> gst::Pipeline {
    init();
    gst::parse::launch(description).unwrap().downcast().unwrap()
}

/// Text of an error or warning message: message, debug and source, for assertions.
fn describe(message: &gst::MessageRef) -> String {
    match message.view() {
        gst::MessageView::Error(e) => format!(
            "{} | {:?} | {:?}",
            e.error(),
            e.debug(),
            message.src().map(|s| s.path_string())
        ),
        gst::MessageView::Warning(w) => format!("{} | {:?}", w.error(), w.debug()),
        _ => String::new(),
    }
}

/// Plays `description` and returns the first error on the bus, or None after EOS.
fn first_error(description: &str) -> Option<String> {
    let pipeline = pipeline(description);
    let started = pipeline.set_state(gst::State::Playing);
    let bus = pipeline.bus().unwrap();
    let message =
        bus.timed_pop_filtered(TIMEOUT, &[gst::MessageType::Error, gst::MessageType::Eos]);
    pipeline.set_state(gst::State::Null).unwrap();
    let message = message.expect("an error or EOS within the timeout");
    match message.view() {
        gst::MessageView::Eos(_) => {
            assert!(started.is_ok());
            None
        }
        _ => Some(describe(&message)),
    }
}

fn expect_error(description: &str, needles: &[&str]) -> String {
    let error = first_error(description)
        .unwrap_or_else(|| panic!("{description}: ran to EOS, expected an error"));
    for needle in needles {
        assert!(
            error.contains(needle),
            "{description}:\n  error {error:?}\n  lacks {needle:?}"
        );
    }
    error
}

fn warnings_until_eos(description: &str) -> Vec<String> {
    let pipeline = pipeline(description);
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let mut warnings = Vec::new();
    for message in bus.iter_timed(TIMEOUT) {
        match message.view() {
            gst::MessageView::Warning(_) => warnings.push(describe(&message)),
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(_) => panic!("{description}: {}", describe(&message)),
            _ => (),
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    warnings
}

fn sink(pipeline: &gst::Pipeline, name: &str) -> gst_app::AppSink {
    pipeline.by_name(name).unwrap().downcast().unwrap()
}

/// Decoded RGB of an RGB sample.
fn sample_rgb(sample: &gst::Sample) -> (u32, u32, tch::Tensor) {
    let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
    let format = sd_format(
        PixelLayout::Rgb,
        info.width() as usize,
        info.height() as usize,
    );
    let planes = planes_from_buffer(&info, &format, &sample.buffer_owned().unwrap());
    (
        info.width(),
        info.height(),
        rgb_from_planes(&format, &planes).0,
    )
}

#[test]
fn videotestsrc_to_appsink_follows_a_resolution_change_midway() {
    // Live, so that frames are paced and the caps change lands mid-stream. max-lateness 1 s, so
    // that a frame late on a loaded machine still runs; should the deadline policy drop one all
    // the same, it must be counted in the element's stats, and every frame that comes out must
    // be the bicubic x2 of the input with its timestamp (smpte has a snow patch, so a frame
    // paired with its neighbour would differ).
    let p = pipeline(
        "videotestsrc is-live=true num-buffers=16 pattern=smpte ! capsfilter name=cf caps=video/x-raw,format=RGB,width=66,height=38 \
         ! tee name=t t. ! queue ! appsink name=input sync=false \
         t. ! queue ! lightsrscale name=sr scale=2 variant=bicubic max-lateness=1000000000 ! appsink name=output sync=false",
    );
    p.set_state(gst::State::Playing).unwrap();
    let (input, output) = (sink(&p, "input"), sink(&p, "output"));
    let pts = |s: &gst::Sample| s.buffer().and_then(|b| b.pts());
    let (mut sizes, mut missing) = (Vec::new(), 0u64);
    for frame in 0.. {
        if frame == 4 {
            let caps: gst::Caps = "video/x-raw,format=RGB,width=81,height=45".parse().unwrap();
            p.by_name("cf").unwrap().set_property("caps", caps);
        }
        let Ok(made) = output.pull_sample() else {
            break;
        };
        let seen = loop {
            let seen = input.pull_sample().expect("an input for every output");
            if pts(&seen) == pts(&made) {
                break seen;
            }
            missing += 1;
        };
        let ((w, h, rgb), (ow, oh, upscaled)) = (sample_rgb(&seen), sample_rgb(&made));
        assert_eq!((ow, oh), (2 * w, 2 * h), "frame {frame}");
        // The bicubic rung on the CPU is GStreamer's scaler: its fixed-point cubic is within a
        // couple of codes of torch's on edges and further on smpte's pixel noise, but a frame
        // paired with its neighbour differs on average by far more than a code.
        let (got, want) = (bytes(&upscaled), bytes(&bicubic_reference(&rgb, 2)));
        let mean = got
            .iter()
            .zip(&want)
            .map(|(a, b)| f64::from(a.abs_diff(*b)))
            .sum::<f64>()
            / got.len() as f64;
        assert!(
            mean <= 1.0,
            "frame {frame}: output is not the bicubic x2 of its input (mean error {mean:.2})"
        );
        sizes.push((w, h));
    }
    while input.pull_sample().is_ok() {
        missing += 1;
    }
    let errors = p.bus().unwrap().pop_filtered(&[gst::MessageType::Error]);
    assert!(errors.is_none(), "{:?}", errors.map(|m| describe(&m)));
    let stats = p.by_name("sr").unwrap().property::<gst::Structure>("stats");
    let dropped = stats.get::<u64>("dropped").unwrap();
    p.set_state(gst::State::Null).unwrap();
    assert_eq!(sizes.len() as u64 + missing, 16, "{sizes:?}");
    assert_eq!(
        missing, dropped,
        "every frame that did not come out is counted as dropped"
    );
    assert!(sizes.len() >= 12, "most frames come out: {sizes:?}");
    assert_eq!(sizes.first(), Some(&(66, 38)));
    assert_eq!(
        sizes.last(),
        Some(&(81, 45)),
        "the new size must reach the element: {sizes:?}"
    );
}

#[test]
fn nv12_pipeline_at_the_documented_sizes() {
    let p = pipeline(
        "videotestsrc num-buffers=2 ! video/x-raw,format=NV12,width=480,height=270 ! lightsrscale scale=4 \
         ! video/x-raw,width=1920,height=1080 ! appsink name=output sync=false",
    );
    p.set_state(gst::State::Playing).unwrap();
    let sample = sink(&p, "output").pull_sample().expect("a 1080p frame");
    let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
    assert_eq!(
        (info.format(), info.width(), info.height()),
        (gst_video::VideoFormat::Nv12, 1920, 1080)
    );
    let buffer = sample.buffer().unwrap().map_readable().unwrap();
    // videotestsrc's default pattern has bars: the luma must not be flat.
    let luma = &buffer[..1920];
    assert!(luma.iter().max().unwrap() - luma.iter().min().unwrap() > 100);
    p.set_state(gst::State::Null).unwrap();
}

#[test]
fn missing_model_path_fails_the_state_change_naming_it() {
    expect_error(
        "videotestsrc num-buffers=1 ! lightsrscale model=/nonexistent/bundle ! fakesink",
        &[
            "model path /nonexistent/bundle: does not exist",
            "leave it empty for the embedded default",
        ],
    );
}

#[test]
fn broken_bundles_fail_the_state_change_naming_file_and_problem() {
    let cases = [
        ("no-manifest", "no-manifest/manifest.json", "cannot be read"),
        ("bad-json", "bad-json/manifest.json", "not a valid manifest"),
        (
            "inconsistent",
            "inconsistent/manifest.json",
            "appears twice",
        ),
        (
            "missing-file",
            "missing-file/x4-bicubic.pt",
            "does not exist",
        ),
        (
            "not-torchscript",
            "not-torchscript/x4-bicubic.pt",
            "not a loadable TorchScript archive",
        ),
    ];
    for (bundle, file, problem) in cases {
        let model = fixture(bundle);
        expect_error(
            &format!(
                "videotestsrc num-buffers=1 ! lightsrscale model={} ! fakesink",
                model.display()
            ),
            &[file, problem],
        );
    }
}

#[test]
fn a_module_breaking_the_contract_fails_negotiation_clearly() {
    let model = fixture("wrong-scale");
    expect_error(
        &format!(
            "videotestsrc num-buffers=1 ! video/x-raw,width=16,height=8 ! lightsrscale model={} ! fakesink",
            model.display()
        ),
        &[
            "wrong-scale/x4-bicubic.pt",
            "the bundle contract says Uint8 of shape [1, 32, 64, 3]",
        ],
    );
}

#[test]
fn settings_the_bundle_cannot_honour_fail_at_start() {
    expect_error(
        "videotestsrc num-buffers=1 ! lightsrscale scale=3 ! fakesink",
        &["scale=3 is not offered", "[4, 2]"],
    );
    expect_error(
        "videotestsrc num-buffers=1 ! lightsrscale variant=huge ! fakesink",
        &["variant=huge is not in the x4 ladder", "bicubic"],
    );
    expect_error(
        "videotestsrc num-buffers=1 ! lightsrscale device=gpu ! fakesink",
        &["device=gpu: not a device", "use auto, cpu, cuda or cuda:N"],
    );
}

#[test]
fn device_cuda_without_cuda_is_a_clear_error_and_auto_warns() {
    let run = "videotestsrc num-buffers=1 ! video/x-raw,width=32,height=18 ! lightsrscale device=DEVICE ! fakesink";
    if tch::Cuda::is_available() {
        assert_eq!(
            first_error(&run.replace("DEVICE", "cuda")),
            None,
            "CUDA exists: device=cuda must run"
        );
        assert_eq!(
            first_error(&run.replace("DEVICE", "cuda:99")).map(|e| e.contains("cuda:99")),
            Some(true)
        );
        return;
    }
    expect_error(
        &run.replace("DEVICE", "cuda"),
        &["device=cuda: CUDA is not available", "use device=cpu"],
    );
    expect_error(
        &run.replace("DEVICE", "cuda:1"),
        &["device=cuda:1: CUDA is not available"],
    );
    let warnings = warnings_until_eos(&run.replace("DEVICE", "auto"));
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("device=auto: CUDA is not available, running on the CPU")),
        "{warnings:?}"
    );
    assert!(
        warnings_until_eos(&run.replace("DEVICE", "cpu")).is_empty(),
        "device=cpu needs no warning"
    );
}

#[test]
fn interlaced_input_is_refused_with_a_clear_message() {
    let p = pipeline("appsrc name=src format=time ! lightsrscale ! fakesink");
    let src: gst_app::AppSrc = p.by_name("src").unwrap().downcast().unwrap();
    let caps: gst::Caps =
        "video/x-raw,format=I420,width=64,height=48,framerate=25/1,interlace-mode=interleaved"
            .parse()
            .unwrap();
    src.set_caps(Some(&caps));
    p.set_state(gst::State::Playing).unwrap();
    let _ = src.push_buffer(gst::Buffer::with_size(64 * 48 * 3 / 2).unwrap());
    let _ = src.end_of_stream();
    let bus = p.bus().unwrap();
    let message = bus
        .timed_pop_filtered(TIMEOUT, &[gst::MessageType::Error])
        .expect("an error");
    p.set_state(gst::State::Null).unwrap();
    let text = describe(&message);
    assert!(
        text.contains("interlaced input") && text.contains("deinterlace"),
        "{text}"
    );
}

#[test]
fn unsupported_caps_are_not_negotiated_with_a_debug_log_saying_why() {
    let log = element_log_of(gst::DebugLevel::Debug, || {
        let p = pipeline("appsrc name=src format=time ! lightsrscale ! fakesink");
        let src: gst_app::AppSrc = p.by_name("src").unwrap().downcast().unwrap();
        src.set_caps(Some(
            &"video/x-raw,format=GRAY8,width=64,height=48,framerate=25/1"
                .parse()
                .unwrap(),
        ));
        p.set_state(gst::State::Playing).unwrap();
        let flow = src.push_buffer(gst::Buffer::with_size(64 * 48).unwrap());
        let message = p
            .bus()
            .unwrap()
            .timed_pop_filtered(TIMEOUT, &[gst::MessageType::Error]);
        p.set_state(gst::State::Null).unwrap();
        let text = message.map(|m| describe(&m)).unwrap_or_default();
        assert!(
            flow == Err(gst::FlowError::NotNegotiated) || text.contains("not-negotiated"),
            "{flow:?} {text}"
        );
    });
    assert!(
        log.iter()
            .any(|l| l.contains("GRAY8") && l.contains("not supported: lightsrscale takes")),
        "{log:#?}"
    );
    // 1001 is a multiple of neither 4 nor 2: no input size can produce it.
    expect_error(
        "videotestsrc num-buffers=1 ! video/x-raw,width=320,height=180 ! lightsrscale ! video/x-raw,width=1001 ! fakesink",
        &["not-negotiated"],
    );
}

/// Both on the heaviest rung: left to `auto`, a stream that is not live keeps to its frame
/// duration, and on a busy machine one of the two stepped down for a frame (a different picture).
#[test]
fn two_elements_run_concurrently_on_one_shared_bundle() {
    let model = fixture("ladder");
    let p = pipeline(&format!(
        "videotestsrc num-buffers=6 pattern=ball ! video/x-raw,format=RGB,width=48,height=32 ! tee name=t \
         t. ! queue ! lightsrscale model={0} scale=2 variant=tinyconv ! appsink name=a sync=false \
         t. ! queue ! lightsrscale model={0}/manifest.json scale=2 variant=tinyconv ! appsink name=b sync=false",
        model.display()
    ));
    p.set_state(gst::State::Playing).unwrap();
    let (a, b) = (sink(&p, "a"), sink(&p, "b"));
    let mut frames = 0;
    while let (Ok(x), Ok(y)) = (a.pull_sample(), b.pull_sample()) {
        let ((_, _, x), (_, _, y)) = (sample_rgb(&x), sample_rgb(&y));
        assert_eq!(
            bytes(&x),
            bytes(&y),
            "frame {frames}: the two streams disagree"
        );
        frames += 1;
    }
    p.set_state(gst::State::Null).unwrap();
    assert_eq!(frames, 6);
}

/// Every frame an appsink receives until EOS (its bytes), lightsrscale `sr`'s negotiated caps
/// (sink, src) and its `gpu-memory-frames` count.
fn frames_and_caps(description: &str) -> (Vec<Vec<u8>>, String, String, u64) {
    let p = pipeline(description);
    p.set_state(gst::State::Playing).unwrap();
    let out = sink(&p, "out");
    let mut frames = Vec::new();
    // until EOS, or a minute without a frame (an error or a stall: the bus says which)
    while let Some(sample) = out.try_pull_sample(TIMEOUT) {
        let buffer = sample.buffer().unwrap();
        frames.push(buffer.map_readable().unwrap().to_vec());
    }
    let sr = p.by_name("sr").unwrap();
    let caps = |pad: &str| {
        sr.static_pad(pad)
            .and_then(|p| p.current_caps())
            .map_or("none".into(), |c| c.to_string())
    };
    let negotiated = (caps("sink"), caps("src"));
    let on_gpu = sr
        .property::<gst::Structure>("stats")
        .get::<u64>("gpu-memory-frames")
        .unwrap();
    let error = p
        .bus()
        .unwrap()
        .pop_filtered(&[gst::MessageType::Error])
        .map(|m| describe(&m));
    p.set_state(gst::State::Null).unwrap();
    assert!(error.is_none(), "{description}: {error:?}");
    (frames, negotiated.0, negotiated.1, on_gpu)
}

#[test]
fn frames_in_cuda_memory_stay_on_the_gpu_and_give_the_system_memory_picture() {
    init();
    if !tch::Cuda::is_available() || gst::ElementFactory::find("cudaupload").is_none() {
        eprintln!(
            "skipped: needs CUDA and GStreamer's cudaupload / cudadownload (nvcodec with a driver)"
        );
        return;
    }
    let probe: gst::Caps = "video/x-raw(memory:CUDAMemory),format=RGBA,width=8,height=8"
        .parse()
        .unwrap();
    if let Err(why) = gstlightsrscale::cuda_buffer_pool_for(0, &probe) {
        eprintln!("skipped: the element cannot share CUDA memory here: {why}");
        return;
    }
    let source =
        "videotestsrc num-buffers=4 pattern=smpte ! video/x-raw,format=RGBA,width=96,height=64";
    let rung = "lightsrscale name=sr scale=2 variant=dense device=cuda";
    let appsink = "video/x-raw,format=RGBA ! appsink name=out sync=false";
    // cudaupload passes system memory through when downstream takes it (seen on an H200 with
    // GStreamer 1.22): ask for CUDA memory, as with any element that takes both
    let cuda = "video/x-raw(memory:CUDAMemory)";
    let (system, sys_in, _, sys_gpu) = frames_and_caps(&format!("{source} ! {rung} ! {appsink}"));
    assert_eq!(system.len(), 4);
    assert!(!sys_in.contains("CUDAMemory"), "{sys_in}");
    assert_eq!(sys_gpu, 0);
    for (label, description) in [
        (
            "CUDA memory in and out",
            format!("{source} ! cudaupload ! {cuda} ! {rung} ! {cuda} ! cudadownload ! {appsink}"),
        ),
        (
            "CUDA memory in, system memory out",
            format!("{source} ! cudaupload ! {cuda} ! {rung} ! {appsink}"),
        ),
    ] {
        let (frames, caps_in, caps_out, on_gpu) = frames_and_caps(&description);
        eprintln!("{label}: sink {caps_in}, src {caps_out}, {on_gpu} frames in place on the GPU");
        assert!(caps_in.contains("memory:CUDAMemory"), "{label}: {caps_in}");
        assert_eq!(
            caps_out.contains("memory:CUDAMemory"),
            label.ends_with("and out"),
            "{label}: {caps_out}"
        );
        assert_eq!(frames.len(), system.len(), "{label}: every frame comes out");
        assert_eq!(
            on_gpu, 4,
            "{label}: the frames were read in place (one CUDA context)"
        );
        for (i, (a, b)) in frames.iter().zip(&system).enumerate() {
            assert_eq!(
                max_diff(a, b),
                0,
                "{label}: frame {i} differs from the system-memory run"
            );
        }
    }
    // upstream is offered a CUDA pool of the shared context (propose_allocation), and
    // cudaupload writes its frames into it: every buffer reaching the element comes from it
    let p = pipeline(&format!(
        "{source} ! cudaupload ! {cuda} ! {rung} ! {cuda} ! cudadownload ! {appsink}"
    ));
    let from_ours = Arc::new(Mutex::new(Vec::new()));
    let seen = from_ours.clone();
    let pad = p.by_name("sr").unwrap().static_pad("sink").unwrap();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(buffer) = info.buffer() {
            // SAFETY: GstBuffer's public `pool` field, read while the buffer is alive
            let pool = unsafe { (*buffer.as_ptr()).pool };
            let ours = !pool.is_null() && {
                let pool: gst::BufferPool = unsafe { from_glib_none(pool) };
                gstlightsrscale::is_shared_cuda_pool(0, &pool)
            };
            seen.lock().unwrap().push(ours);
        }
        gst::PadProbeReturn::Ok
    });
    p.set_state(gst::State::Playing).unwrap();
    let out = sink(&p, "out");
    while out.try_pull_sample(TIMEOUT).is_some() {}
    p.set_state(gst::State::Null).unwrap();
    let from_ours = from_ours.lock().unwrap().clone();
    eprintln!("buffers from the proposed CUDA pool: {from_ours:?}");
    assert_eq!(from_ours, vec![true; 4]);
}

/// PSNR in dB of two 8-bit pictures of the same size.
fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (255.0 * 255.0 / mse.max(1e-10)).log10()
}

#[test]
fn nvh264dec_to_lightsrscale_in_cuda_memory_gives_the_system_memory_picture() {
    init();
    let needed = [
        "cudaupload",
        "cudadownload",
        "nvh264dec",
        "x264enc",
        "h264parse",
    ];
    let missing: Vec<_> = needed
        .into_iter()
        .filter(|name| gst::ElementFactory::find(name).is_none())
        .collect();
    if !tch::Cuda::is_available() || !missing.is_empty() {
        eprintln!("skipped: needs CUDA and GStreamer's nvcodec elements (missing: {missing:?})");
        return;
    }
    // the decode side of pipelines/restore-on-gpu.sh: an H.264 stream decoded on the GPU is
    // restored in place and written to CUDA memory; nvh264enc encodes it again where the GPU
    // has an encoder (an H100 / H200 has none)
    let cuda = "video/x-raw(memory:CUDAMemory)";
    let frames = 8;
    let stream = format!(
        "videotestsrc num-buffers={frames} pattern=smpte \
         ! video/x-raw,format=I420,width=320,height=240,framerate=25/1 \
         ! x264enc speed-preset=ultrafast qp-min=18 qp-max=18 ! h264parse ! nvh264dec"
    );
    let rung = "lightsrscale name=sr scale=2 variant=dense device=cuda";
    let gray = "videoconvert ! video/x-raw,format=GRAY8,width=640,height=480 \
                ! appsink name=out sync=false";
    let (system, sys_in, sys_out, _) = frames_and_caps(&format!(
        "{stream} ! cudadownload ! video/x-raw ! {rung} ! video/x-raw ! {gray}"
    ));
    assert!(!sys_in.contains("CUDAMemory") && !sys_out.contains("CUDAMemory"));
    let encode = if gst::ElementFactory::find("nvh264enc").is_some() {
        "nvh264enc ! h264parse ! nvh264dec ! "
    } else {
        eprintln!("nvcodec: no nvh264enc on this GPU: the output is checked without it");
        ""
    };
    let (restored, caps_in, caps_out, on_gpu) = frames_and_caps(&format!(
        "{stream} ! {cuda} ! {rung} ! {cuda} ! {encode}cudadownload ! {gray}"
    ));
    eprintln!("nvcodec: sink {caps_in}, src {caps_out}, {on_gpu} frames in place on the GPU");
    assert!(caps_in.contains("memory:CUDAMemory"), "{caps_in}");
    assert!(caps_out.contains("memory:CUDAMemory"), "{caps_out}");
    assert_eq!(restored.len(), frames, "every frame comes out");
    assert_eq!(on_gpu, frames as u64, "every frame was restored in place");
    let p = pipeline(
        "videotestsrc num-buffers=1 pattern=smpte \
         ! video/x-raw,format=GRAY8,width=640,height=480 ! appsink name=out sync=false",
    );
    p.set_state(gst::State::Playing).unwrap();
    let sample = sink(&p, "out").try_pull_sample(TIMEOUT).unwrap();
    let pattern = sample.buffer().unwrap().map_readable().unwrap().to_vec();
    p.set_state(gst::State::Null).unwrap();
    // the colour bars (the top two thirds): the -I / +Q bars below are out of the RGB gamut,
    // and the RGB the network works in clips them
    let bars = 640 * 320;
    for (i, (frame, reference)) in restored.iter().zip(&system).enumerate() {
        let db = psnr(&frame[..bars], &pattern[..bars]);
        let diff = max_diff(frame, reference);
        eprintln!(
            "nvcodec: frame {i}: PSNR-Y {db:.2} dB against the pattern, max diff {diff} against system memory"
        );
        assert!(
            db > 35.0,
            "frame {i}: PSNR-Y {db:.2} dB: not the test pattern"
        );
        if encode.is_empty() {
            assert_eq!(diff, 0, "frame {i} differs from the system-memory run");
        }
    }
}
