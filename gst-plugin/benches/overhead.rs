// SPDX-License-Identifier: MPL-2.0
//! Element overhead benchmark: per-frame time of `lightsrscale` (conversion + copies +
//! GStreamer) against the same TorchScript forward called directly, and against GStreamer's
//! own `videoscale method=catrom` on the same frames, in one process.
//!
//! ```text
//! cargo bench --bench overhead                       # embedded default bundle, 320x180 -> x4
//! LIGHTSRSCALE_BENCH_MODEL=DIR FRAMES=40 cargo bench --bench overhead
//! LIGHTSRSCALE_BENCH_DEVICE=cuda cargo bench --bench overhead   # on a CUDA machine
//! LIGHTSRSCALE_BENCH_VARIANT=fast cargo bench --bench overhead   # one rung (default: heaviest)
//! ```
//! Prints figures only; nothing is asserted. Measurements are interleaved (direct, RGB, NV12,
//! direct, ...) so that load from other processes hits every column alike; medians are shown.

use std::time::{Duration, Instant};

use gst::prelude::*;
use gstlightsrscale::engine::{Bundle, BundleSource, DeviceRequest, Variant};
use tch::{Device, Kind, Tensor};

/// `LIGHTSRSCALE_BENCH_SIZE=WxH` (default 320x180): the input frame size.
fn size() -> (u32, u32) {
    std::env::var("LIGHTSRSCALE_BENCH_SIZE")
        .ok()
        .and_then(|s| {
            let (w, h) = s.split_once('x')?;
            Some((w.parse().ok()?, h.parse().ok()?))
        })
        .unwrap_or((320, 180))
}

/// `LIGHTSRSCALE_BENCH_SCALE` (default 4).
fn scale() -> u32 {
    std::env::var("LIGHTSRSCALE_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4)
}

/// What an [`ElementRun`] times.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// lightsrscale on frames in system memory
    Element,
    /// lightsrscale on frames in CUDA memory
    CudaMemory,
    /// GStreamer's own scaler
    Videoscale,
}

struct ElementRun {
    label: String,
    path: Path,
    format: &'static str,
    harness: gst_check::Harness,
    input: gst::Buffer,
}

impl ElementRun {
    fn element(model: &str, device: &str, variant: &str) -> gst::Element {
        gst::ElementFactory::make("lightsrscale")
            .property("model", model)
            .property("scale", scale())
            .property("device", device)
            .property("variant", variant)
            .build()
            .expect("lightsrscale")
    }

    fn new(format: &'static str, model: &str, device: &str, variant: &str) -> ElementRun {
        let element = Self::element(model, device, variant);
        let harness = gst_check::Harness::with_element(&element, Some("sink"), Some("src"));
        Self::with_harness(
            format!("element, {format:<4}"),
            Path::Element,
            format,
            harness,
        )
    }

    /// With CUDA: RGBx frames already in CUDA memory (libtorch's context, GStreamer's CUDA
    /// pool), which the element reads and writes in place: no host copy at all.
    fn cuda_memory(model: &str, device: &str, variant: &str, index: usize) -> Option<ElementRun> {
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgbx, size().0, size().1)
            .fps(gst::Fraction::new(25, 1))
            .build()
            .ok()?;
        let mut caps = info.to_caps().ok()?;
        caps.get_mut()?
            .set_features(0, Some(gst::CapsFeatures::new(["memory:CUDAMemory"])));
        let pool = match gstlightsrscale::cuda_buffer_pool_for(index, &caps) {
            Ok(pool) => pool,
            Err(why) => {
                println!("  (no CUDA memory run: {why})");
                return None;
            }
        };
        let mut input = pool.acquire_buffer(None).ok()?;
        {
            let buffer = input.get_mut()?;
            let mut map = buffer.map_writable().ok()?;
            map.iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = (i * 7 % 251) as u8);
        }
        let element = Self::element(model, device, variant);
        let mut harness = gst_check::Harness::with_element(&element, Some("sink"), Some("src"));
        harness.play();
        harness.set_src_caps(caps);
        Some(ElementRun {
            label: "element, RGBx in CUDA memory".into(),
            path: Path::CudaMemory,
            format: "RGBx",
            harness,
            input,
        })
    }

    /// GStreamer's own scaler on the same frames: what the weight-free rung is held to.
    fn videoscale(format: &'static str) -> ElementRun {
        let harness = gst_check::Harness::new_parse(&format!(
            "videoscale method=catrom ! capsfilter caps=video/x-raw,width={},height={}",
            size().0 * scale(),
            size().1 * scale()
        ));
        Self::with_harness(
            format!("videoscale method=catrom, {format:<4}"),
            Path::Videoscale,
            format,
            harness,
        )
    }

    fn with_harness(
        label: String,
        path: Path,
        format: &'static str,
        mut harness: gst_check::Harness,
    ) -> ElementRun {
        harness.play();
        let info = gst_video::VideoInfo::builder(
            gst_video::VideoFormat::from_string(format),
            size().0,
            size().1,
        )
        .fps(gst::Fraction::new(25, 1))
        .build()
        .expect("video info");
        harness.set_src_caps(info.to_caps().expect("caps"));
        let mut input = gst::Buffer::with_size(info.size()).expect("buffer");
        input
            .get_mut()
            .expect("writable")
            .map_writable()
            .expect("map")
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i * 7 % 251) as u8);
        ElementRun {
            label,
            path,
            format,
            harness,
            input,
        }
    }

    /// One buffer in, one out: the time the element takes for a frame.
    fn frame(&mut self) -> Duration {
        let start = Instant::now();
        let out = self
            .harness
            .push_and_pull(self.input.clone())
            .expect("an output frame");
        let elapsed = start.elapsed();
        if self.path != Path::CudaMemory {
            assert_eq!(
                out.size(),
                (size().0 * size().1 * scale() * scale()) as usize
                    * if self.format == "NV12" { 3 } else { 6 }
                    / 2
            );
        }
        elapsed
    }
}

fn direct_forward(variant: &Variant, input: &Tensor) -> Duration {
    let start = Instant::now();
    let out = variant.upscale(input).expect("forward");
    if let Device::Cuda(index) = variant.device() {
        tch::Cuda::synchronize(index as i64);
    }
    let elapsed = start.elapsed();
    assert_eq!(out.size()[1], i64::from(size().1 * scale()));
    elapsed
}

/// This device's fp32 convolution throughput: a dense 3x3 conv of 64 channels on a frame of
/// the bench size, channels-last (what oneDNN / cuDNN run best). `sample` times one run;
/// `gmacs` is the rate of the median sample. Sampled beside the rung's frames, one each round,
/// so that the compute floor and the forward see the same moments of a shared machine (9 runs
/// after all the frames had read 1.4x and 1.7x for the same build within minutes).
struct Peak {
    device: Device,
    x: Tensor,
    k: Tensor,
    samples: Vec<Duration>,
}

impl Peak {
    fn new(device: Device) -> Peak {
        let (h, w, c) = (i64::from(size().1), i64::from(size().0), 64i64);
        // NHWC memory seen as NCHW: the channels-last layout the rungs run in
        let x = Tensor::randn([1, h, w, c], (Kind::Float, device)).permute([0, 3, 1, 2]);
        let k = Tensor::randn([c, 3, 3, c], (Kind::Float, device)).permute([0, 3, 1, 2]);
        let mut peak = Peak {
            device,
            x,
            k,
            samples: Vec::new(),
        };
        peak.sample();
        peak.samples.clear();
        peak
    }

    fn sample(&mut self) {
        let _guard = tch::no_grad_guard();
        let start = Instant::now();
        let y = self
            .x
            .conv2d(&self.k, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
        if let Device::Cuda(index) = self.device {
            tch::Cuda::synchronize(index as i64);
        }
        drop(y);
        self.samples.push(start.elapsed());
    }

    fn gmacs(&mut self) -> f64 {
        let (h, w, c) = (i64::from(size().1), i64::from(size().0), 64i64);
        let macs = (h * w * c * c * 9) as f64;
        macs / (median_ms(&mut self.samples) * 1e-3) / 1e9
    }
}

/// The variant's MACs at 320x180 from the bundle's manifest.json (`macs_320x180`), if given.
fn variant_macs(model: &str, scale: u32, name: &str) -> Option<f64> {
    let dir = if model.is_empty() {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/bundles/default")
    } else {
        std::path::PathBuf::from(model)
    };
    let file = if dir.is_dir() {
        dir.join("manifest.json")
    } else {
        dir
    };
    let text = std::fs::read_to_string(file).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["ladders"]
        .as_array()?
        .iter()
        .find(|l| l["scale"].as_u64() == Some(u64::from(scale)))?["variants"]
        .as_array()?
        .iter()
        .find(|v| v["name"].as_str() == Some(name))?["macs_320x180"]
        .as_f64()
}

fn median_ms(samples: &mut [Duration]) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

fn main() {
    gst::init().expect("gst init");
    gstlightsrscale::plugin_register_static().expect("register lightsrscale");
    let model = std::env::var("LIGHTSRSCALE_BENCH_MODEL").unwrap_or_default();
    let frames: usize = std::env::var("FRAMES")
        .ok()
        .and_then(|f| f.parse().ok())
        .unwrap_or(30);
    let source = BundleSource::from_model_property(&model).expect("bundle path");
    let device_name = std::env::var("LIGHTSRSCALE_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let request: DeviceRequest = device_name.parse().expect("a device");
    let device = request.resolve().expect("an available device").device;
    let bundle = Bundle::load(&source, device).expect("bundle");
    let ladder = bundle
        .ladder(scale())
        .expect("a ladder at LIGHTSRSCALE_BENCH_SCALE");
    let variant = match std::env::var("LIGHTSRSCALE_BENCH_VARIANT") {
        Ok(name) => ladder
            .variant(&name)
            .expect("a variant of the x4 ladder")
            .clone(),
        Err(_) => ladder.variants[0].clone(),
    };
    let input = Tensor::randint(
        256,
        [1, i64::from(size().1), i64::from(size().0), 3],
        (Kind::Uint8, device),
    );
    let mut runs = vec![
        ElementRun::new("RGB", &model, &device_name, variant.name()),
        ElementRun::new("NV12", &model, &device_name, variant.name()),
        ElementRun::videoscale("RGB"),
        ElementRun::videoscale("NV12"),
    ];
    if let Device::Cuda(index) = device {
        runs.extend(ElementRun::cuda_memory(
            &model,
            &device_name,
            variant.name(),
            index,
        ));
    }
    // Warm-up: one of each outside the measurement.
    direct_forward(&variant, &input);
    runs.iter_mut().for_each(|r| {
        r.frame();
    });

    // A rung with a direct CPU form (engine::native) is also timed through libtorch, side by side.
    // Where the direct form runs its AVX-512 kernels, its AVX2 kernels are timed too.
    let has_direct = variant.runs_direct();
    let wide = has_direct && variant.direct_isa() == Some("AVX-512");
    let mut torch = Vec::with_capacity(frames);
    let mut narrow = Vec::with_capacity(frames);
    if has_direct {
        variant.set_direct(false);
        direct_forward(&variant, &input);
        variant.set_direct(true);
    }
    if wide {
        variant.set_direct_wide(false);
        direct_forward(&variant, &input);
        variant.set_direct_wide(true);
    }
    let mut peak = Peak::new(device);
    let mut direct = Vec::with_capacity(frames);
    let mut element: Vec<Vec<Duration>> = vec![Vec::with_capacity(frames); runs.len()];
    for _ in 0..frames {
        if has_direct {
            variant.set_direct(false);
            torch.push(direct_forward(&variant, &input));
            variant.set_direct(true);
        }
        if wide {
            variant.set_direct_wide(false);
            narrow.push(direct_forward(&variant, &input));
            variant.set_direct_wide(true);
        }
        peak.sample();
        direct.push(direct_forward(&variant, &input));
        for (run, times) in runs.iter_mut().zip(&mut element) {
            times.push(run.frame());
        }
    }
    let forward_ms = median_ms(&mut direct);
    println!(
        "lightsrscale overhead: {}x{} -> x{}, bundle {:?}, variant {}, {device:?}, {} libtorch threads, {frames} frames, medians",
        size().0,
        size().1,
        scale(),
        bundle.manifest.name,
        variant.name(),
        tch::get_num_threads()
    );
    if has_direct {
        let torch_ms = median_ms(&mut torch);
        let isa = variant.direct_isa().unwrap_or_default();
        println!(
            "  {:<44}: {forward_ms:8.2} ms/frame  (libtorch: {torch_ms:.2} ms, {:.2}x the direct form)",
            format!("direct CPU form forward ({isa})"),
            torch_ms / forward_ms
        );
        if wide {
            let narrow_ms = median_ms(&mut narrow);
            println!(
                "  {:<44}: {narrow_ms:8.2} ms/frame  ({:.2}x the AVX-512 kernels)",
                "direct CPU form forward (AVX2)",
                narrow_ms / forward_ms
            );
        }
    } else {
        println!(
            "  {:<44}: {forward_ms:8.2} ms/frame",
            "direct TorchScript forward (u8 tensor on device)"
        );
    }
    let peak = peak.gmacs();
    match variant_macs(&model, scale(), variant.name()).filter(|m| *m > 0.0) {
        Some(macs_320x180) => {
            // MACs grow with the pixels
            let macs = macs_320x180 * f64::from(size().0 * size().1) / (320.0 * 180.0);
            let floor = macs / 1e9 / peak * 1e3;
            println!(
                "  {:<44}: {floor:8.2} ms/frame  ({:.2} GMACs at {peak:.0} GMAC/s, a dense 3x3 conv's rate, sampled beside the frames); the forward is {:.2}x it",
                "compute floor",
                macs / 1e9,
                forward_ms / floor
            );
        }
        None => println!(
            "  {:<44}: {peak:8.0} GMAC/s (no MACs in the manifest for this rung)",
            "peak"
        ),
    }
    let medians: Vec<f64> = element.iter_mut().map(|t| median_ms(t)).collect();
    for (run, ms) in runs.iter().zip(&medians) {
        let overhead = ms - forward_ms;
        print!("  {:<44}: {ms:8.2} ms/frame", run.label);
        if run.path != Path::Videoscale {
            print!(
                "  overhead {overhead:+6.2} ms = {:+5.1}% of the forward",
                100.0 * overhead / forward_ms
            );
            if run.path == Path::CudaMemory
                && let Some(stats) = run
                    .harness
                    .element()
                    .map(|e| e.property::<gst::Structure>("stats"))
            {
                print!(
                    ", {} frames in place on the GPU",
                    stats.get::<u64>("gpu-memory-frames").unwrap_or(0)
                );
            }
            if let Some(reference) = runs
                .iter()
                .zip(&medians)
                .find(|(r, _)| r.path == Path::Videoscale && r.format == run.format)
            {
                print!(", {:.2}x videoscale", ms / reference.1);
            }
        }
        println!();
    }
}
