// SPDX-License-Identifier: MPL-2.0
//! # lightsrscale
//!
//! Upscales video x2 or x4 (the scales its model bundle offers) with a super-resolution
//! TorchScript model ladder run by libtorch on CUDA or the CPU. With `model` empty it runs the
//! bundle embedded in the plugin. YUV input is converted with the caps' colorimetry.
//!
//! With `variant=auto` and `adaptive=true` (the defaults) a deadline policy ([`crate::policy`])
//! picks per frame the best rung of the ladder that makes the frame's deadline (live: running
//! time + pipeline latency; otherwise the frame duration), steps down at once on a miss, climbs
//! back after a sustained period with headroom, and drops a frame when even the lightest rung
//! cannot make it. The decisions are the [`super::scheduler::Scheduler`]'s; each rung is timed
//! by a short warm-up (live: on a thread of its own, the stream starting on the lightest rung)
//! and after every frame.
//! CPU rungs run on an inference thread ([`super::inference`]); a live frame still running
//! when the sink would stop showing it is made by GStreamer's scaler instead (`rescued`).
//! Switches are posted as `lightsrscale-variant` element messages, drops and quality changes
//! as QoS messages; `stats` holds the live figures.
//!
//! ## Example launch line
//! ```text
//! gst-launch-1.0 videotestsrc ! video/x-raw,format=NV12,width=480,height=270 ! lightsrscale scale=4 ! video/x-raw,width=1920,height=1080 ! fakesink
//! gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! videoconvert ! lightsrscale ! videoconvert ! autovideosink
//! gst-launch-1.0 -m videotestsrc is-live=true ! video/x-raw,width=320,height=180,framerate=25/1 ! lightsrscale scale=4 deadline-margin=5000000 ! fakesink sync=true
//! ```

use std::{
    sync::{
        Arc, LazyLock, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use gst::{glib, prelude::*, subclass::prelude::*};
use gst_base::subclass::prelude::*;
use gst_video::{prelude::*, subclass::prelude::*};

use super::{
    caps::{Way, fixate_to_scale, in_cuda_memory, memory_alternatives, scale_caps},
    cuda,
    inference::{InferenceThread, NotRun},
    pinned::{PinnedPool, pinned_bytes},
    report,
    scheduler::{
        CpuConfig, FrameClock, FramePlan, FrameTimes, LiveTiming, RungChoice, Scheduler,
        policy_config,
    },
};
use crate::{
    convert::{self, FrameFormat, PixelLayout, Plane, PlaneMut, RawPlane, YuvMatrix, YuvRange},
    cpushare::{self, OthersLoad},
    engine::{
        self, Bundle, BundleSource, DeviceRequest, EngineError, Ladder, Variant, manifest::AUTO,
    },
    policy::{self, FrameSize},
};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "lightsrscale",
        gst::DebugColorFlags::empty(),
        Some("Super-resolution scaler"),
    )
});

const DEFAULT_MODEL: &str = "";
/// 0: any scale the bundle offers, the largest one downstream accepts.
const DEFAULT_SCALE: u32 = 0;
const MAX_SCALE: u32 = 16;
const DEFAULT_DEVICE: &str = "auto";
const DEFAULT_VARIANT: &str = AUTO;
const DEFAULT_ADAPTIVE: bool = true;
/// Safety margin taken off every frame's budget, ns.
const DEFAULT_DEADLINE_MARGIN: u64 = 2_000_000;
const MAX_DEADLINE_MARGIN: u64 = 1_000_000_000;
/// "" = the end of the ladder.
const DEFAULT_BOUND: &str = "";
/// GStreamer video sinks' default `max-lateness` (ns): a frame this late is still shown, so
/// a frame expected within it is worth running rather than dropping.
const DEFAULT_MAX_LATENESS: u64 = 20_000_000;

/// Warm-up per rung: compiling runs not timed, then timed runs. A rung in the direct CPU form
/// (`engine::native`) or GStreamer's scaler has nothing to compile: its one untimed run sizes its
/// buffers (and, on a new thread, starts the OpenMP team); `discarded_runs`.
const WARM_UP_DISCARDED: usize = 2;
const WARM_UP_DISCARDED_DIRECT: usize = 1;
const WARM_UP_TIMED: usize = 5;
/// Total warm-up time after which the remaining rungs are left to be measured by probes.
const WARM_UP_LIMIT: Duration = Duration::from_secs(4);
/// A live warm-up stops at a rung whose first timed run takes this many frame durations: the
/// policy never climbs that far (it does not even recheck a rung over twice the budget), so the
/// heavier rungs are left out rather than holding the cores the stream needs (on 2 CPU cores
/// the x4 `fourier` rung takes 0.35 s a 320x180 frame: 7 runs of it were 2.5 s).
const WARM_UP_HOPELESS: u32 = 2;
/// A live warm-up times a rung no further once its first timed run takes longer than this many
/// frame durations: the policy climbs only to a rung that fits the budget with headroom (under
/// 0.8 of a frame; it rechecks a rung it left out later, on a quiet machine), so more runs would
/// only hold the cores the stream needs. x4 `dense-wide` on an AVX-512 CPU, estimated at 45 ms
/// and measured at 50-90 ms, took 0.45 s of a 0.6 s warm-up at 25 fps on 2 cores with all five.
const WARM_UP_ONE_RUN: f64 = 0.8;
// the warm-up stops only after a rung whose runs it would also have cut short
const _: () = assert!(WARM_UP_ONE_RUN < WARM_UP_HOPELESS as f64);
/// A live warm-up does not run a rung it estimates (from a lighter rung's cost here and the
/// manifest's timings) over this many frame durations either: the policy climbs only to a rung
/// that fits the budget with headroom (under 0.8 of a frame), so the estimate would have to be
/// 1.9x too high. Its runs held the stream on the weight-free rung: x4 `dense-wide`, estimated
/// at 71 ms and measured at 78, took 0.55 s of a 0.83 s warm-up at 25 fps on 2 cores. A quiet
/// machine still rechecks such a rung later (the policy's recheck reaches 2x the budget).
const WARM_UP_UNMEASURED: f64 = 1.5;
/// 0: libtorch's own choice (one intra-op thread per core).
const DEFAULT_THREADS: u32 = 0;
/// 0: tile only frames whose estimated working memory exceeds the budget ([`auto_tile`]).
const DEFAULT_TILE_SIZE: u32 = 0;
const DEFAULT_ADAPT_THREADS: bool = true;
/// Working memory of a learned rung per input pixel, an upper estimate: 8 fp32 tensors of 64
/// channels (the phase-form student keeps 3 or 4 of up to 48).
const BYTES_PER_INPUT_PIXEL: u64 = 8 * 64 * 4;

#[derive(Debug, Clone)]
struct Settings {
    model: String,
    scale: u32,
    device: String,
    variant: String,
    adaptive: bool,
    deadline_margin: u64,
    max_lateness: u64,
    min_variant: String,
    max_variant: String,
    threads: u32,
    tile_size: u32,
    adapt_threads: bool,
}

impl Settings {
    fn rung_choice(&self) -> RungChoice {
        RungChoice {
            variant: self.variant.clone(),
            adaptive: self.adaptive,
            min_variant: self.min_variant.clone(),
            max_variant: self.max_variant.clone(),
            deadline_margin: Duration::from_nanos(self.deadline_margin),
            max_lateness: Duration::from_nanos(self.max_lateness),
        }
    }
}

/// The policy settings the properties give for `ladder`.
fn ladder_config(ladder: &Ladder, settings: &Settings) -> Result<policy::PolicyConfig, String> {
    let names: Vec<&str> = ladder.variants.iter().map(|v| v.name()).collect();
    policy_config(&names, ladder.scale, &settings.rung_choice())
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            model: DEFAULT_MODEL.into(),
            scale: DEFAULT_SCALE,
            device: DEFAULT_DEVICE.into(),
            variant: DEFAULT_VARIANT.into(),
            adaptive: DEFAULT_ADAPTIVE,
            deadline_margin: DEFAULT_DEADLINE_MARGIN,
            max_lateness: DEFAULT_MAX_LATENESS,
            min_variant: DEFAULT_BOUND.into(),
            max_variant: DEFAULT_BOUND.into(),
            threads: DEFAULT_THREADS,
            tile_size: DEFAULT_TILE_SIZE,
            adapt_threads: DEFAULT_ADAPT_THREADS,
        }
    }
}

/// What one negotiated stream needs per frame.
struct Negotiated {
    input: FrameFormat,
    output: FrameFormat,
    /// Tile side in input pixels for learned rungs (0: whole frames).
    tile: i64,
    /// The rungs of the negotiated scale's ladder, best first (the scheduler's indices).
    variants: Vec<Arc<Variant>>,
    infos: (gst_video::VideoInfo, gst_video::VideoInfo),
    /// GStreamer's scaler for the weight-free rung (CPU only; see [`weight_free_scaler`]).
    scaler: Option<Arc<gst_video::VideoConverter>>,
    /// Output buffers in pinned host memory (CUDA, output in system memory; see
    /// [`super::pinned`]); `None` after a failed allocation, and the default buffers are used.
    pinned: Option<PinnedPool>,
    /// The shared CUDA context, when either side's caps are in `memory:CUDAMemory` (see
    /// [`super::cuda`]).
    cuda: Option<Arc<cuda::Shared>>,
}

/// The negotiated rungs, video infos and formats, whether the weight-free rung has GStreamer's
/// scaler, the tile size: what runs a blank frame outside the stream (warm-ups, priming).
type NegotiatedWork = (
    Vec<Arc<Variant>>,
    (gst_video::VideoInfo, gst_video::VideoInfo),
    (FrameFormat, FrameFormat),
    bool,
    i64,
);

/// Exists between start() and stop().
struct State {
    bundle: Arc<Bundle>,
    negotiated: Option<Negotiated>,
}

/// One frame's work, taken from the state so that no lock is held during inference.
struct FrameJob {
    input: FrameFormat,
    output: FrameFormat,
    variant: Arc<Variant>,
    /// Runs the variant instead of libtorch when it is the weight-free rung.
    scaler: Option<Arc<gst_video::VideoConverter>>,
    tile: i64,
    /// libtorch threads for a CPU rung (the scheduler's count; `None`: leave it).
    threads: Option<i32>,
    /// When GStreamer's scaler makes the frame instead of a CPU rung still running at the
    /// frame's deadline ([`Scheduler::rescue_after`]).
    rescue: Option<Rescue>,
}

/// A live frame of a CPU rung is given up on `limit` after `planned`, and the weight-free rung
/// (`stand_in`, GStreamer's scaler) makes it instead.
#[derive(Debug, Clone, Copy)]
struct Rescue {
    stand_in: usize,
    planned: Instant,
    limit: Duration,
}

/// What made a frame.
#[derive(Debug, Clone, Copy)]
enum Made {
    /// The rung the scheduler planned.
    Planned,
    /// The planned rung was given up on `waited` after the frame was planned; the scaler made
    /// the frame in `cost`.
    Rescued { waited: Duration, cost: Duration },
    /// A rung given up on before still ran: the scaler made the frame in `cost`.
    StoodIn { cost: Duration },
}

impl FrameJob {
    /// GStreamer's scaler, where it runs this job instead of libtorch (the weight-free rung).
    fn by_scaler(&self) -> Option<&gst_video::VideoConverter> {
        self.scaler
            .as_deref()
            .filter(|_| self.variant.is_weight_free())
    }
}

/// The tile side for `tile-size=0`: whole frames while the estimated working memory
/// ([`BYTES_PER_INPUT_PIXEL`]) fits half of the memory available now (CPU, `/proc/meminfo`) or
/// 4 GiB (CUDA, where libtorch offers no free-memory query through tch); else the largest square
/// tile that fits, a multiple of 32 and at least 64.
fn auto_tile(width: u32, height: u32, device: tch::Device) -> i64 {
    let budget = match device {
        tch::Device::Cpu => available_memory().map_or(4 << 30, |m| m / 2),
        _ => 4 << 30,
    };
    let need = u64::from(width) * u64::from(height) * BYTES_PER_INPUT_PIXEL;
    if need <= budget {
        return 0;
    }
    let side = ((budget / BYTES_PER_INPUT_PIXEL) as f64).sqrt() as i64;
    (side / 32 * 32).max(64)
}

/// MemAvailable of /proc/meminfo, in bytes.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub struct LightSrScale {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    /// Outlives start / stop: measured costs, warm-up state and the counters of `stats` stay
    /// for the element's life. Never locked while `state` is (and `state` never while it is).
    scheduler: Mutex<Scheduler>,
    /// The last bundle, kept across stop / start so that a restart does not reload it.
    kept_bundle: Mutex<Option<Arc<Bundle>>>,
    timing: Mutex<LiveTiming>,
    /// Processing latency this element last answered in a LATENCY query.
    answered_latency: Mutex<Option<Duration>>,
    /// Time axis of non-live streams without timestamps.
    epoch: Instant,
    /// Why CUDA memory is not offered has been logged.
    cuda_unavailable_logged: AtomicBool,
    /// Frames read or written in place in CUDA memory (`stats`: `gpu-memory-frames`).
    gpu_memory_frames: AtomicU64,
    /// Live warm-ups still running: stopped and joined by `stop` and at the element's end, so
    /// that none runs libtorch while the process exits (its exit handlers free oneDNN's
    /// primitive cache under a running convolution: a crash at the end of a clean run).
    warm_ups: Mutex<Vec<WarmUpThread>>,
    /// Rungs a warm-up measured that fit a frame, with the scheduler's generation they are for:
    /// the CUDA ones run once on the streaming thread before its next frame, untimed; live, the
    /// lightest CPU one primes the inference thread in the background (see
    /// [`LightSrScale::prime_pending`]).
    prime: Mutex<(u64, Vec<usize>)>,
    /// The thread CPU rungs run their frames on (see [`super::inference`]), started by the
    /// first such frame and ended (after its run in progress) by `stop` and at the element's end.
    inference: Mutex<Option<InferenceThread>>,
    /// Output planes of the inference thread's last frame, for its next one.
    spare_planes: Mutex<Vec<Vec<u8>>>,
}

/// A live warm-up's thread and the flag that stops it between two runs.
struct WarmUpThread {
    handle: std::thread::JoinHandle<()>,
    cancel: Arc<AtomicBool>,
}

impl WarmUpThread {
    /// Stops it after the run in progress and waits for it (not from its own thread, where the
    /// element's last reference can be dropped).
    fn stop(self) {
        self.cancel.store(true, Ordering::Relaxed);
        if self.handle.thread().id() != std::thread::current().id() {
            let _ = self.handle.join();
        }
    }
}

impl Default for LightSrScale {
    fn default() -> Self {
        Self {
            settings: Mutex::default(),
            state: Mutex::default(),
            scheduler: Mutex::default(),
            kept_bundle: Mutex::default(),
            timing: Mutex::default(),
            answered_latency: Mutex::default(),
            epoch: Instant::now(),
            cuda_unavailable_logged: AtomicBool::default(),
            gpu_memory_frames: AtomicU64::default(),
            warm_ups: Mutex::default(),
            prime: Mutex::default(),
            inference: Mutex::default(),
            spare_planes: Mutex::default(),
        }
    }
}

impl Drop for LightSrScale {
    fn drop(&mut self) {
        self.stop_warm_ups();
        self.stop_inference();
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// GStreamer's video scaler as the weight-free rung on the CPU: Keys' cubic with torch's
/// a = -0.75 (Mitchell-Netravali B = 0, C = 0.75), straight from the input to the output
/// format with ORC-optimised code, no RGB tensors and no libtorch. It differs from the
/// bundle's bicubic module only by GStreamer's fixed-point taps and by scaling YUV planes
/// (chroma at its own resolution) instead of RGB.
fn weight_free_scaler(
    in_info: &gst_video::VideoInfo,
    out_info: &gst_video::VideoInfo,
) -> Result<gst_video::VideoConverter, String> {
    let mut config = gst_video::VideoConverterConfig::new();
    config.set_resampler_method(gst_video::VideoResamplerMethod::Cubic);
    config.set_chroma_resampler_method(gst_video::VideoResamplerMethod::Cubic);
    config.set_dither_method(gst_video::VideoDitherMethod::None);
    config.set("GstVideoResampler.cubic-b", 0.0f64);
    config.set("GstVideoResampler.cubic-c", 0.75f64);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    config.set_threads(u32::try_from(threads).unwrap_or(1));
    gst_video::VideoConverter::new(in_info, out_info, Some(config))
        .map_err(|e| format!("cannot set up GStreamer's scaler for the bicubic rung: {e}"))
}

/// How CPU rungs choose their thread count: `threads` (0: libtorch's default, at most one per
/// core), fewer under load when `adapt` and not more threads than cores were asked for;
/// `None` on CUDA.
fn cpu_config(device: tch::Device, threads: u32, adapt: bool) -> Option<CpuConfig> {
    if device != tch::Device::Cpu {
        return None;
    }
    let usable = std::thread::available_parallelism().map_or(1, |n| n.get());
    // the governor compares other processes' use of the CPUs it sums (the affinity mask) with
    // those CPUs: under a CPU quota below them (a container's --cpus) it cannot tell
    let summed = cpushare::affinity_cpus().unwrap_or(usable);
    let cores = u32::try_from(summed).unwrap_or(u32::MAX);
    let threads = match threads {
        0 => libtorch_default_threads().clamp(1, cores),
        n => n,
    };
    Some(CpuConfig {
        cores,
        threads,
        adapt: adapt && threads <= cores && usable >= summed,
    })
}

/// libtorch's intra-op thread count before any element set one: read at plugin load
/// ([`super::register`]), or at the first call.
pub(super) fn libtorch_default_threads() -> u32 {
    static DEFAULT: OnceLock<u32> = OnceLock::new();
    *DEFAULT.get_or_init(|| u32::try_from(tch::get_num_threads()).unwrap_or(1).max(1))
}

/// The thread count for CPU rungs outside the streaming thread (warm-ups; the next start):
/// the `threads` property, or libtorch's default.
fn full_threads(threads: u32) -> i32 {
    let n = if threads > 0 {
        threads
    } else {
        libtorch_default_threads()
    };
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The scales to offer, preferred first: the `scale` property if set, else all the bundle has.
fn offered_scales(bundle: &Bundle, settings: &Settings) -> Vec<u32> {
    match settings.scale {
        0 => bundle.scales(),
        s => bundle.scales().into_iter().filter(|b| *b == s).collect(),
    }
}

/// The conversion view of a negotiated video format.
fn frame_format(info: &gst_video::VideoInfo) -> Result<FrameFormat, String> {
    use gst_video::{VideoColorMatrix as M, VideoColorRange as R, VideoFormat as F};
    let layout = match info.format() {
        F::Rgb => PixelLayout::Rgb,
        F::Rgba => PixelLayout::Rgba,
        F::Rgbx => PixelLayout::Rgbx,
        F::Bgrx => PixelLayout::Bgrx,
        F::Bgra => PixelLayout::Bgra,
        F::I420 => PixelLayout::I420,
        F::Nv12 => PixelLayout::Nv12,
        other => return Err(format!("format {other:?} is not supported")),
    };
    let colorimetry = info.colorimetry();
    let matrix = match colorimetry.matrix() {
        M::Bt601 | M::Fcc => YuvMatrix::Bt601,
        M::Bt709 | M::Smpte240m => YuvMatrix::Bt709,
        M::Bt2020 => YuvMatrix::Bt2020,
        // GStreamer's own default for unspecified YUV: BT.601 for SD, BT.709 above.
        _ if info.height() <= 576 => YuvMatrix::Bt601,
        _ => YuvMatrix::Bt709,
    };
    let range = if colorimetry.range() == R::Range0_255 {
        YuvRange::Full
    } else {
        YuvRange::Limited
    };
    Ok(FrameFormat {
        layout,
        width: info.width() as usize,
        height: info.height() as usize,
        matrix,
        range,
    })
}

fn engine_error_msg(e: &EngineError) -> gst::ErrorMessage {
    match e {
        EngineError::Path { .. } => gst::error_msg!(gst::ResourceError::NotFound, ("{e}")),
        EngineError::Manifest { .. } | EngineError::Module { .. } => {
            gst::error_msg!(gst::ResourceError::OpenRead, ("{e}"))
        }
        EngineError::Device { .. } => gst::error_msg!(gst::LibraryError::Settings, ("{e}")),
        EngineError::Forward { .. } => gst::error_msg!(gst::LibraryError::Failed, ("{e}")),
    }
}

impl LightSrScale {
    /// The CUDA device the `device` property resolves to, if any (no bundle needed).
    fn cuda_index(&self) -> Option<usize> {
        let request: DeviceRequest = lock(&self.settings).device.parse().ok()?;
        if request == DeviceRequest::Cpu {
            return None;
        }
        match request.resolve().ok()?.device {
            tch::Device::Cuda(index) => Some(index),
            _ => None,
        }
    }

    /// libtorch's context on the element's CUDA device, wrapped for GStreamer ([`cuda::shared`]:
    /// made on first use, also before start, since downstream CUDA elements start first and ask
    /// for it then); `None` where CUDA memory cannot be shared (logged once).
    fn cuda_shared(&self) -> Option<Arc<cuda::Shared>> {
        let index = self.cuda_index()?;
        cuda::shared(index)
            .inspect_err(|why| {
                if !self.cuda_unavailable_logged.swap(true, Ordering::Relaxed) {
                    gst::info!(
                        CAT,
                        imp = self,
                        "frames in CUDA memory are not offered: {why}"
                    );
                }
            })
            .ok()
    }

    /// The CUDA context negotiated for frames in CUDA memory (`set_info`), if either side is.
    fn negotiated_cuda(&self) -> Option<Arc<cuda::Shared>> {
        lock(&self.state)
            .as_ref()
            .and_then(|s| s.negotiated.as_ref())
            .and_then(|n| n.cuda.clone())
    }

    /// Loads (or shares) the bundle on the device the settings ask for.
    fn load_bundle(&self, settings: &Settings) -> Result<Arc<Bundle>, gst::ErrorMessage> {
        let source =
            BundleSource::from_model_property(&settings.model).map_err(|e| engine_error_msg(&e))?;
        let request: DeviceRequest = settings.device.parse().map_err(|e| engine_error_msg(&e))?;
        let choice = request.resolve().map_err(|e| engine_error_msg(&e))?;
        if let Some(note) = &choice.fallback {
            gst::warning!(CAT, imp = self, "{note}");
            gst::element_imp_warning!(self, gst::LibraryError::Settings, ("{note}"));
        }
        let bundle =
            engine::load_shared(&source, choice.device).map_err(|e| engine_error_msg(&e))?;
        gst::info!(
            CAT,
            imp = self,
            "bundle {:?} ({}) on {:?}, scales {:?}",
            bundle.manifest.name,
            source.describe("manifest.json"),
            bundle.device,
            bundle.scales()
        );
        if bundle.device == tch::Device::Cpu {
            let tuning = engine::allocator::tune_for_tensors();
            gst::debug!(CAT, imp = self, "C allocator for CPU tensors: {tuning:?}");
            gst::debug!(
                CAT,
                imp = self,
                "the direct CPU form's bands and the YUV conversions run on {}",
                if crate::omp::available() {
                    "the calling thread's OpenMP team (libgomp)"
                } else {
                    "threads of the element's own (no libgomp, or LIGHTSRSCALE_DIRECT_OMP=0)"
                }
            );
            for variant in bundle.ladders.iter().flat_map(|l| &l.variants) {
                let (scale, name) = (variant.scale(), variant.name());
                if let Some(isa) = variant.direct_isa().filter(|_| variant.runs_direct()) {
                    gst::debug!(CAT, imp = self, "x{scale} {name}: direct CPU form ({isa})");
                } else if let Some(why) = variant.direct_refused() {
                    gst::warning!(CAT, imp = self, "x{scale} {name} runs in libtorch: {why}");
                }
            }
        }
        Ok(bundle)
    }

    /// Rejects at start what would otherwise only fail at negotiation.
    fn check_settings(bundle: &Bundle, settings: &Settings) -> Result<(), gst::ErrorMessage> {
        let scales = bundle.scales();
        if settings.scale != 0 && !scales.contains(&settings.scale) {
            return Err(gst::error_msg!(
                gst::LibraryError::Settings,
                (
                    "scale={} is not offered by bundle {:?} (it offers {scales:?}); use one of those or scale=0",
                    settings.scale,
                    bundle.manifest.name
                )
            ));
        }
        let candidates = offered_scales(bundle, settings);
        let known = candidates
            .iter()
            .filter_map(|s| bundle.ladder(*s))
            .any(|l| ladder_config(l, settings).is_ok());
        if !known {
            let ladder = candidates.first().and_then(|s| bundle.ladder(*s));
            let why = ladder
                .map(|l| ladder_config(l, settings).err().unwrap_or_default())
                .unwrap_or_default();
            return Err(gst::error_msg!(gst::LibraryError::Settings, ("{why}")));
        }
        Ok(())
    }

    /// The scales this element offers now; empty before start (sizes then stay open).
    fn scales(&self) -> Vec<u32> {
        let settings = lock(&self.settings).clone();
        match lock(&self.state).as_ref() {
            Some(state) => offered_scales(&state.bundle, &settings),
            None if settings.scale != 0 => vec![settings.scale],
            None => Vec::new(),
        }
    }

    /// The frame's times on GStreamer's clock, for the scheduler.
    fn frame_times(&self, buffer: &gst::BufferRef) -> FrameTimes {
        let obj = self.obj();
        FrameTimes {
            running_time: running_time_of(&obj.segment(), buffer.pts()),
            clock_now: obj.current_running_time().map(gst::ClockTime::nseconds),
            monotonic_now: self.epoch.elapsed().as_nanos() as u64,
            buffer_duration: buffer.duration().map(Duration::from),
        }
    }

    /// Asks the scheduler what to do with the next frame, and takes what that needs.
    fn plan_frame(
        &self,
        buffer: &gst::BufferRef,
    ) -> Result<(FramePlan, FrameClock, FrameJob), String> {
        let planned = Instant::now();
        let times = self.frame_times(buffer);
        let timing = *lock(&self.timing);
        let (plan, clock, threads) = {
            let mut scheduler = lock(&self.scheduler);
            // CPU rungs: what other processes took of the cores since the last frames
            let (others, threads) = match scheduler.threads() {
                Some(_) => scheduler.cpu_threads(OthersLoad::read_sample(times.monotonic_now)),
                None => (None, None),
            };
            if let Some(others) = others {
                gst::log!(
                    CAT,
                    imp = self,
                    "other processes' CPU use: {:.2} cores lately, {:.2} settled",
                    others.recent,
                    others.settled
                );
            }
            let clock = scheduler.clock(times, timing);
            (scheduler.plan(&clock), clock, threads)
        };
        if let Some(threads) = threads.and_then(|t| i32::try_from(t).ok())
            && tch::get_num_threads() != threads
        {
            // this (the streaming) thread's OpenMP team size, for the frames from this one on
            tch::set_num_threads(threads);
            gst::debug!(
                CAT,
                imp = self,
                "{threads} libtorch thread(s) per frame (other processes' CPU use)"
            );
        }
        let state = lock(&self.state);
        let negotiated = state
            .as_ref()
            .and_then(|s| s.negotiated.as_ref())
            .ok_or("no caps negotiated")?;
        let variant = negotiated
            .variants
            .get(plan.decision.variant)
            .cloned()
            .ok_or("the scheduler chose a variant outside the ladder")?;
        // GStreamer's scaler can stand in for a CPU rung (it is the weight-free rung there)
        let stand_in = negotiated
            .scaler
            .as_ref()
            .filter(|_| variant.device() == tch::Device::Cpu && !variant.is_weight_free())
            .and_then(|_| negotiated.variants.iter().position(|v| v.is_weight_free()));
        let mut job = FrameJob {
            input: negotiated.input,
            output: negotiated.output,
            variant,
            scaler: negotiated.scaler.clone(),
            tile: negotiated.tile,
            threads: threads.and_then(|t| i32::try_from(t).ok()),
            rescue: None,
        };
        drop(state);
        job.rescue = stand_in.and_then(|stand_in| {
            let limit = lock(&self.scheduler).rescue_after(&plan, &clock, stand_in)?;
            Some(Rescue {
                stand_in,
                planned,
                limit,
            })
        });
        Ok((plan, clock, job))
    }

    /// DEBUG log of the decision inputs; bus messages and notifications (no lock held).
    fn report(&self, plan: &FramePlan, clock: &FrameClock) {
        let d = &plan.decision;
        // the rung names are copied only for a log line that is on, a switch or a QoS message
        let names = || lock(&self.scheduler).names().to_vec();
        gst::debug!(
            CAT,
            imp = self,
            "rt {:?} now {} remaining {:?} period {:?} load {:.2}{} qos {:.2} -> {} {}{} ({}), \
             predicted {:?}, budget {:?}",
            clock.running_time,
            clock.now,
            clock.budget.remaining,
            clock.budget.period,
            plan.load,
            if plan.quiet { " quiet" } else { "" },
            plan.qos_proportion,
            if d.drop { "drop" } else { "run" },
            names().get(d.variant).map_or("?", String::as_str),
            if d.probe { " (probe)" } else { "" },
            d.reason,
            d.predicted_cost,
            d.budget
        );
        let obj = self.obj();
        if let Some(switch) = &d.switch {
            let structure =
                report::variant_message(&names(), switch, clock.running_time, plan.load);
            gst::info!(CAT, imp = self, "switch: {structure}");
            let _ = obj.post_message(gst::message::Element::builder(structure).src(&*obj).build());
        }
        let quality_changed = d.switch.is_some_and(|s| s.from.is_some());
        if d.drop || quality_changed {
            let variants = lock(&self.scheduler).names().len();
            self.post_qos(plan, clock, variants);
        }
        if plan.renamed {
            obj.notify("active-variant");
        }
    }

    /// QoS message with processed / dropped counts, as the plugin writer's guide asks on a
    /// drop or a quality change. Jitter: how far the predicted cost exceeds the budget.
    fn post_qos(&self, plan: &FramePlan, clock: &FrameClock, variants: usize) {
        let obj = self.obj();
        let d = &plan.decision;
        let predicted = d.predicted_cost.unwrap_or_default().as_nanos() as i64;
        let jitter = predicted - d.budget.as_nanos().min(i64::MAX as u128) as i64;
        let active = d.switch.map_or(d.variant, |s| s.to);
        let rt = clock.running_time.map(gst::ClockTime::from_nseconds);
        let message = gst::message::Qos::builder(clock.is_live())
            .running_time(rt)
            .stream_time(rt)
            .timestamp(rt)
            .duration(
                clock
                    .budget
                    .period
                    .and_then(|d| gst::ClockTime::try_from(d).ok()),
            )
            .values(
                jitter,
                plan.qos_proportion,
                report::quality(active, variants),
            )
            .stats(
                gst::format::Buffers::from_u64(plan.processed),
                gst::format::Buffers::from_u64(plan.dropped),
            )
            .src(&*obj)
            .build();
        let _ = obj.post_message(message);
    }

    /// What runs a blank frame outside the stream (see [`NegotiatedWork`]).
    fn negotiated_work(&self) -> Option<NegotiatedWork> {
        let state = lock(&self.state);
        let n = state.as_ref()?.negotiated.as_ref()?;
        Some((
            n.variants.clone(),
            n.infos.clone(),
            (n.input, n.output),
            n.scaler.is_some(),
            n.tile,
        ))
    }

    /// Measures the rungs the scheduler has no cost for at this size. Live, on a thread of its
    /// own, so the stream never waits (it runs the lightest allowed rung until the costs are
    /// in); otherwise here, before the frame (no viewer waits for a file).
    fn warm_up_pending(&self) -> Result<(), String> {
        let (warm_up, threads) = {
            let mut scheduler = lock(&self.scheduler);
            let Some(warm_up) = scheduler.take_warm_up() else {
                return Ok(());
            };
            (warm_up, scheduler.threads())
        };
        let Some((variants, infos, formats, scaler, tile)) = self.negotiated_work() else {
            lock(&self.scheduler).finish_warm_up(warm_up.generation, &[]);
            return Ok(());
        };
        let live = self.upstream_live();
        let live_frame = warm_up.frame.filter(|_| live);
        let limits = WarmUpLimits {
            one_run: live_frame.map(|f| f.mul_f64(WARM_UP_ONE_RUN)),
            hopeless: live_frame.map(|f| f * WARM_UP_HOPELESS),
            unmeasured: live_frame.map(|f| f.mul_f64(WARM_UP_UNMEASURED)),
        };
        let generation = warm_up.generation;
        let element = self.obj().downgrade();
        let cancel = Arc::new(AtomicBool::new(false));
        let stopped = cancel.clone();
        // Only a rung in the order needs GStreamer's scaler built for the warm-up.
        let scaler = scaler && warm_up.order.iter().any(|&v| variants[v].is_weight_free());
        // Hands the scheduler what was measured (always, so no warm-up stays pending), then
        // returns the failure if any and if it is still about the current ladder and size.
        let run = move || -> Result<(), String> {
            if let Some(threads) = threads {
                // measured with the thread count the frames run with now
                tch::set_num_threads(i32::try_from(threads).unwrap_or(1));
            }
            // The costs go to the scheduler together at the end, not rung by rung: seeded one by
            // one, the stream climbed to the lightest learned rung while the heavier ones were
            // measured, both on the same 2 cores, missed frames and fell back for good (learned
            // share 2-4% instead of 84-95% at 320x180 -> x4, gst-plugin/README.md).
            let seeds = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let job = (formats, scaler, tile);
                measure_rungs(&variants, &warm_up.order, &infos, job, limits, &stopped)
            }))
            .unwrap_or_else(|_| Err("the warm-up panicked".to_string()));
            let Some(element) = element.upgrade() else {
                return Ok(());
            };
            let imp = element.imp();
            if let Ok(seeds) = &seeds {
                gst::info!(
                    CAT,
                    imp = imp,
                    "warm-up at {}x{}: {}",
                    formats.0.width,
                    formats.0.height,
                    seeds
                        .iter()
                        .map(|(v, samples)| format!("{} {samples:?}", variants[*v].name()))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let measured = seeds.as_deref().unwrap_or_default();
            // Measured elsewhere (live): the streaming thread primes those that fit a frame
            // before its next frame: CUDA rungs on itself, the lightest CPU rung on the
            // inference thread in the background (in place, they ran there and are skipped;
            // `prime_pending` drops a former ladder's or size's by generation). Listed before
            // the scheduler has the costs, so the frame that climbs has queued the priming; one
            // that climbs in between primes the thread in the background itself (`prime_if_cold`).
            {
                let fits = |samples: &[Duration]| {
                    median(samples).is_some_and(|m| warm_up.frame.is_none_or(|f| m <= f))
                };
                let mut prime = lock(&imp.prime);
                if prime.0 != warm_up.generation {
                    *prime = (warm_up.generation, Vec::new());
                }
                prime
                    .1
                    .extend(measured.iter().filter(|(_, s)| fits(s)).map(|(v, _)| *v));
            }
            let current = lock(&imp.scheduler).finish_warm_up(warm_up.generation, measured);
            match seeds {
                Err(e) if !current => {
                    gst::warning!(CAT, imp = imp, "warm-up of a former stream failed: {e}");
                    Ok(())
                }
                other => other.map(|_| ()),
            }
        };
        if !live {
            return run();
        }
        let element = self.obj().downgrade();
        let spawned = std::thread::Builder::new()
            .name("lightsrscale-warm-up".into())
            .spawn(move || {
                if let (Err(e), Some(element)) = (run(), element.upgrade()) {
                    gst::element_imp_error!(element.imp(), gst::StreamError::Failed, ("{e}"));
                }
            });
        match spawned {
            Ok(handle) => {
                let mut warm_ups = lock(&self.warm_ups);
                // One at a time: an older one measures a former size or ladder (its results
                // are ignored by generation), so it stops after its run in progress.
                warm_ups.retain(|w| !w.handle.is_finished());
                for older in warm_ups.iter() {
                    older.cancel.store(true, Ordering::Relaxed);
                }
                warm_ups.push(WarmUpThread { handle, cancel });
            }
            Err(e) => {
                gst::warning!(
                    CAT,
                    imp = self,
                    "no warm-up thread ({e}): rungs are measured by probes"
                );
                lock(&self.scheduler).finish_warm_up(generation, &[]);
            }
        }
        Ok(())
    }

    /// Runs the CUDA rungs in `prime` once each on this (the streaming) thread, untimed, where
    /// this thread has not run them at this size. libtorch keeps cuDNN's execution plans per
    /// thread and per shape, so a rung's first frame here is slow even after a warm-up on
    /// another thread (on an H200, 230 ms for the x4 fourier rung at 320x180, then 5 ms;
    /// `tests/gpu/threads.py`). Timed as a frame, that first run read as a load of 30: every
    /// rung was predicted far over the budget and the stream took seconds to climb back. Run
    /// here, all at once after the warm-up, it costs the frames of one stall (dropped and
    /// counted as late), and a fallback later does not pay it. A rung that still reaches a frame
    /// cold is primed there ([`LightSrScale::run_frame`]). A failure here is left to that frame.
    /// Live, the CPU rungs' thread is primed too, in the background
    /// ([`LightSrScale::prime_in_background`]).
    fn prime_pending(&self) -> Result<(), String> {
        let (generation, pending) = std::mem::take(&mut *lock(&self.prime));
        if pending.is_empty() || generation != lock(&self.scheduler).generation() {
            return Ok(());
        }
        let Some(work) = self.negotiated_work() else {
            return Ok(());
        };
        // the lightest learned CPU rung that fits a frame (the ladder is heaviest first); live
        // only: not live, the warm-up ran here and the first learned frame primes the thread
        // in its own time, which is not counted in its cost
        let cpu = pending
            .iter()
            .copied()
            .filter(|&v| {
                work.0
                    .get(v)
                    .is_some_and(|r| !r.device().is_cuda() && !r.is_weight_free())
            })
            .max();
        if let Some(v) = cpu
            && self.upstream_live()
        {
            self.prime_in_background(&work.0[v], &work.0, work.2.0, work.4);
        }
        let mut cold: Vec<usize> = pending
            .into_iter()
            .filter(|&v| {
                let rung = work.0.get(v);
                rung.is_some_and(|r| {
                    r.device().is_cuda()
                        && is_cold_on(r, &work.0, &work.2.0, std::thread::current().id())
                })
            })
            .collect();
        cold.sort_unstable();
        cold.dedup();
        let started = Instant::now();
        let mut primed = Vec::new();
        let (variants, infos, formats, _, tile) = &work;
        for v in cold {
            let job = FrameJob {
                input: formats.0,
                output: formats.1,
                variant: variants[v].clone(),
                scaler: None,
                tile: *tile,
                threads: None,
                rescue: None,
            };
            match prime_rung(&job, infos) {
                Ok(_) => primed.push(work.0[v].name()),
                Err(e) => gst::warning!(CAT, imp = self, "priming {}: {e}", work.0[v].name()),
            }
        }
        if !primed.is_empty() {
            gst::info!(
                CAT,
                imp = self,
                "ran {} once on the streaming thread in {:?} (CUDA's per-thread plans), untimed",
                primed.join(", "),
                started.elapsed()
            );
        }
        Ok(())
    }

    /// Primes the inference thread with `rung` at this frame size without waiting for it, where
    /// no CPU rung of `ladder` ran there at that size. Called at the frame after a live warm-up,
    /// while the stream is on GStreamer's scaler, and by a live frame with a rescue that finds
    /// the thread cold (`prime_if_cold`): the first learned frame on that thread pays for the
    /// thread's OpenMP team and malloc arena (`is_cold_on`), and primed on the frame's own
    /// time, as the frame that climbs or probes, it took the rung's time twice (x4
    /// `dense-pruned` on a slower 2-core machine: 59 ms of priming, then the 33 ms probe, a frame
    /// dropped, the probe a miss, the stream held on `bicubic`). Frames planned on a learned
    /// rung while it runs are made by the scaler where they have a rescue, as behind a frame
    /// given up on ([`InferenceThread::busy`]); others wait for it, the wait not counted in their
    /// cost.
    fn prime_in_background(
        &self,
        rung: &Arc<Variant>,
        ladder: &[Arc<Variant>],
        input: FrameFormat,
        tile: i64,
    ) {
        let (height, width) = (input.height as i64, input.width as i64);
        // the count the frames run with now (the governor's), else the inference thread's own
        let threads = lock(&self.scheduler)
            .threads()
            .and_then(|t| i32::try_from(t).ok());
        let Ok(mut guard) = self.inference_thread() else {
            return; // the frame that needs the thread says why it cannot start
        };
        let Some(inference) = guard.as_mut() else {
            return;
        };
        if inference.busy() || !is_cold_on(rung, ladder, &input, inference.id()) {
            return;
        }
        let run = priming_run(rung.clone(), (height, width), tile, threads);
        let what = format!("the background priming with {}", rung.name());
        match inference.run(&what, run, Some((Instant::now(), Duration::ZERO))) {
            Err(NotRun::GaveUp(_)) | Ok(Ok(())) => gst::info!(
                CAT,
                imp = self,
                "priming the inference thread with {} at {width}x{height} in the background",
                rung.name()
            ),
            Ok(Err(e)) | Err(NotRun::Gone(e)) => {
                gst::warning!(CAT, imp = self, "priming {}: {e}", rung.name());
            }
        }
    }

    /// Ends the inference thread after its run in progress and waits for it.
    fn stop_inference(&self) {
        // joined outside the lock
        let thread = lock(&self.inference).take();
        if let Some(thread) = thread {
            thread.join();
        }
    }

    /// Stops the live warm-ups after their runs in progress and waits for them.
    fn stop_warm_ups(&self) {
        let warm_ups = std::mem::take(&mut *lock(&self.warm_ups));
        for warm_up in warm_ups {
            warm_up.stop();
        }
    }

    /// Whether upstream is live: as the pipeline's last LATENCY query through this element said,
    /// else as upstream answers one now. A live source's first caps (and the warm-up they start)
    /// come before the pipeline's query: without asking, that warm-up ran on the streaming thread
    /// and held the first frames for up to [`WARM_UP_LIMIT`].
    fn upstream_live(&self) -> bool {
        if lock(&self.answered_latency).is_some() {
            return lock(&self.timing).live;
        }
        let mut query = gst::query::Latency::new();
        let asked = self
            .obj()
            .static_pad("sink")
            .is_some_and(|pad| pad.peer_query(&mut query));
        gst::debug!(
            CAT,
            imp = self,
            "upstream latency query: answered {asked}, {:?}",
            query.result()
        );
        asked && query.result().0
    }

    /// Posts a latency message when the processing latency changed materially since the last
    /// LATENCY query this element answered (the bin then queries again).
    fn check_latency(&self) {
        let latency = lock(&self.scheduler).processing_latency();
        let answered = *lock(&self.answered_latency);
        if let Some(old) = answered.filter(|old| policy::latency_changed_materially(*old, latency))
        {
            gst::debug!(CAT, imp = self, "processing latency {old:?} -> {latency:?}");
            let obj = self.obj();
            let _ = obj.post_message(gst::message::Latency::builder().src(&*obj).build());
        }
    }

    /// Pushes new property values into the running scheduler; an invalid one is reported and
    /// left out (it fails the next negotiation with the same message).
    fn update_policy(&self) {
        let settings = lock(&self.settings).clone();
        let scale = lock(&self.scheduler).scale();
        let config = {
            let state = lock(&self.state);
            let Some(state) = state.as_ref().filter(|s| s.negotiated.is_some()) else {
                return;
            };
            let Some(ladder) = state.bundle.ladder(scale) else {
                return;
            };
            ladder_config(ladder, &settings)
        };
        match config {
            Ok(config) => lock(&self.scheduler).set_config(config),
            Err(why) => {
                gst::warning!(CAT, imp = self, "{why}");
                gst::element_imp_warning!(self, gst::LibraryError::Settings, ("{why}"));
            }
        }
    }

    fn stats(&self) -> gst::Structure {
        let latency = lock(&self.answered_latency).unwrap_or_default();
        let view = lock(&self.scheduler).stats();
        let outlook = report::Outlook {
            load: view.load,
            qos_proportion: view.qos_proportion,
            latency,
            predicted: view.predicted,
        };
        let mut stats = report::stats_structure(&view.names, &view.stats, &outlook);
        stats.set(
            "gpu-memory-frames",
            self.gpu_memory_frames.load(Ordering::Relaxed),
        );
        stats.set("threads", view.threads.unwrap_or(0));
        stats
    }
}

fn running_time_of(segment: &gst::Segment, pts: Option<gst::ClockTime>) -> Option<u64> {
    let segment = segment.downcast_ref::<gst::ClockTime>()?;
    segment.to_running_time(pts?).map(|t| t.nseconds())
}

/// How far a warm-up measures (all `None` when not live: every rung, every run).
#[derive(Clone, Copy, Debug)]
struct WarmUpLimits {
    /// A rung whose first timed run takes longer keeps that one sample ([`WARM_UP_ONE_RUN`]).
    one_run: Option<Duration>,
    /// The warm-up stops after a rung whose first timed run takes longer ([`WARM_UP_HOPELESS`]).
    hopeless: Option<Duration>,
    /// A rung estimated over it is not run ([`WARM_UP_UNMEASURED`], [`left_unrun`]).
    unmeasured: Option<Duration>,
}

/// Runs each rung in `order` (lightest first) on a blank frame of the negotiated formats
/// (compiling runs untimed, then timed ones): the scheduler's first cost estimates. Bounded by
/// [`WARM_UP_LIMIT`]; a rung whose first timed run took longer than `limits.one_run` keeps
/// that one sample, and the warm-up stops after one over `limits.hopeless`, or at a rung
/// [`estimated_cost`] puts over `limits.unmeasured` (its estimate as its one sample, and it is
/// not run); rungs not reached are left to probes.
/// `job`: the formats, whether the weight-free rung gets a scaler of its own (a converter is
/// not for two threads at once), the tile size. `cancel` stops it after the run in progress,
/// the rung cut short left out.
fn measure_rungs(
    variants: &[Arc<Variant>],
    order: &[usize],
    infos: &(gst_video::VideoInfo, gst_video::VideoInfo),
    job: ((FrameFormat, FrameFormat), bool, i64),
    limits: WarmUpLimits,
    cancel: &AtomicBool,
) -> Result<Vec<(usize, Vec<Duration>)>, String> {
    let (formats, scaler, tile) = job;
    let (inframe, mut outframe) = blank_frames(infos)?;
    let scaler = if scaler {
        Some(Arc::new(weight_free_scaler(&infos.0, &infos.1)?))
    } else {
        None
    };
    let started = Instant::now();
    let mut seeds = Vec::new();
    // The last learned rung measured: its median cost here and its manifest reference cost.
    let mut last_learned: Option<(Duration, Duration)> = None;
    let cancelled = || cancel.load(Ordering::Relaxed);
    for &v in order {
        if started.elapsed() > WARM_UP_LIMIT || cancelled() {
            break;
        }
        let reference = variants[v].reference_cpu_cost();
        if let Some(estimate) = left_unrun(last_learned, reference, limits.unmeasured) {
            // Predicted over the frame from a lighter rung's cost here: seeded with the
            // estimate (so the policy never probes it blind), not run (its compiling runs alone
            // would take the cores for a second at the start of a live stream).
            seeds.push((v, vec![estimate]));
            break;
        }
        let job = FrameJob {
            input: formats.0,
            output: formats.1,
            variant: variants[v].clone(),
            scaler: scaler.clone(),
            tile,
            threads: None,
            rescue: None,
        };
        if job.by_scaler().is_some() {
            // GStreamer's scaler runs it; the module still has to keep the bundle contract
            // (it runs on other devices, and a broken bundle should not pass unnoticed).
            let (h, w) = (formats.0.height as i64, formats.0.width as i64);
            job.variant.warm_up(h, w).map_err(|e| e.to_string())?;
        }
        let discarded = discarded_runs(&job);
        let mut samples = Vec::with_capacity(WARM_UP_TIMED);
        for run in 0..discarded + WARM_UP_TIMED {
            let t = Instant::now();
            let mut out = outframe.as_mut_video_frame_ref();
            upscale_frame(&job, &inframe.as_video_frame_ref(), &mut out)?;
            if run >= discarded {
                samples.push(t.elapsed());
            }
            if started.elapsed() > WARM_UP_LIMIT && !samples.is_empty() {
                break;
            }
            if far_over(&samples, limits.one_run) || cancelled() {
                break;
            }
        }
        if cancelled() {
            // a rung cut short is left out (no partial costs)
            break;
        }
        let stop = far_over(&samples, limits.hopeless);
        if let (Some(median), Some(reference)) = (median(&samples), reference)
            && !job.variant.is_weight_free()
        {
            last_learned = Some((median, reference));
        }
        seeds.push((v, samples));
        if stop {
            break;
        }
    }
    Ok(seeds)
}

/// A black input frame and an output frame of the negotiated formats, in system memory.
fn blank_frames(
    infos: &(gst_video::VideoInfo, gst_video::VideoInfo),
) -> Result<
    (
        gst_video::VideoFrame<gst_video::video_frame::Readable>,
        gst_video::VideoFrame<gst_video::video_frame::Writable>,
    ),
    String,
> {
    let blank = |info: &gst_video::VideoInfo| gst::Buffer::from_mut_slice(vec![0u8; info.size()]);
    let inframe = gst_video::VideoFrame::from_buffer_readable(blank(&infos.0), &infos.0)
        .map_err(|_| "cannot map a blank input frame")?;
    let outframe = gst_video::VideoFrame::from_buffer_writable(blank(&infos.1), &infos.1)
        .map_err(|_| "cannot map a blank output frame")?;
    Ok((inframe, outframe))
}

/// Whether `rung`'s next frame on `thread` (the streaming thread, or the CPU rungs' inference
/// thread) pays a first run's cost (see `run_frame`). On
/// CUDA per rung: libtorch keeps cuDNN's plans per thread and per shape. On the CPU per thread:
/// the first run pays for the thread's OpenMP team and for its malloc arena growing to a frame's
/// activations, and once any rung of the ladder ran here at this size the others run as in the
/// stream (first runs after another rung: x4 `dense-pruned` 24.7 ms, 22-24 ms in the stream;
/// x2 `dense-wide` 55 against 52 ms). Priming each one had cost every probe, recheck and
/// fall-back onto it a second frame's time: the x2 recheck of `dense-wide` held the stream
/// 107 ms, and a frame was dropped.
fn is_cold_on(
    rung: &Variant,
    ladder: &[Arc<Variant>],
    input: &FrameFormat,
    thread: std::thread::ThreadId,
) -> bool {
    let (height, width) = (input.height as i64, input.width as i64);
    if rung.device().is_cuda() {
        return !rung.has_run_on(thread, height, width);
    }
    !ladder
        .iter()
        .any(|r| !r.device().is_cuda() && r.has_run_on(thread, height, width))
}

/// Whether this thread has run `rung` on frames of `input`'s size.
fn ran_here(rung: &Variant, input: &FrameFormat) -> bool {
    rung.has_run_here(input.height as i64, input.width as i64)
}

/// Runs `job` once on a blank frame of the negotiated formats (`infos`); how long it took.
fn prime_rung(
    job: &FrameJob,
    infos: &(gst_video::VideoInfo, gst_video::VideoInfo),
) -> Result<Duration, String> {
    let started = Instant::now();
    let (inframe, mut outframe) = blank_frames(infos)?;
    let mut out = outframe.as_mut_video_frame_ref();
    upscale_frame(job, &inframe.as_video_frame_ref(), &mut out)?;
    Ok(started.elapsed())
}

/// A rung's cost here estimated from the last learned rung measured here (`last`: its median
/// cost here and its manifest reference) and the rung's own manifest reference.
fn estimated_cost(
    last: Option<(Duration, Duration)>,
    reference: Option<Duration>,
) -> Option<Duration> {
    let ((measured, last_reference), reference) = (last?, reference?);
    (!last_reference.is_zero())
        .then(|| measured.mul_f64(reference.as_secs_f64() / last_reference.as_secs_f64()))
}

/// The estimate of a rung a live warm-up leaves unrun: over `unmeasured`
/// ([`WARM_UP_UNMEASURED`] frame durations; `None`, not live: every rung runs).
fn left_unrun(
    last: Option<(Duration, Duration)>,
    reference: Option<Duration>,
    unmeasured: Option<Duration>,
) -> Option<Duration> {
    estimated_cost(last, reference).filter(|e| unmeasured.is_some_and(|limit| *e > limit))
}

fn median(samples: &[Duration]) -> Option<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied()
}

/// Whether a rung's first timed warm-up run took longer than `limit`.
fn far_over(samples: &[Duration], limit: Option<Duration>) -> bool {
    matches!((samples.first(), limit), (Some(&first), Some(limit)) if first > limit)
}

/// The untimed runs before a rung's timed ones in a warm-up: libtorch's profiling executor
/// specialises a TorchScript module over its first two runs; the direct CPU form and GStreamer's
/// scaler only set up on their first.
fn discarded_runs(job: &FrameJob) -> usize {
    let settled_at_once = job.by_scaler().is_some() || job.variant.runs_direct();
    if settled_at_once {
        WARM_UP_DISCARDED_DIRECT
    } else {
        WARM_UP_DISCARDED
    }
}

/// Runs one frame: GStreamer's scaler for the weight-free rung on the CPU, else the rung's
/// TorchScript module between the conversions to and from RGB tensors.
fn upscale_frame(
    job: &FrameJob,
    inframe: &gst_video::VideoFrameRef<&gst::BufferRef>,
    outframe: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
) -> Result<(), String> {
    if let Some(scaler) = job.by_scaler() {
        scaler.frame_ref(inframe, outframe);
        return Ok(());
    }
    let frame = convert::to_rgb(&job.input, &host_planes(inframe)?, job.variant.device())
        .map_err(|e| e.to_string())?;
    let (upscaled, alpha) = upscale_rgb(job, &frame)?;
    convert::write_rgb(
        &job.output,
        &upscaled,
        alpha.as_ref(),
        &mut host_planes_mut(outframe)?,
    )
    .map_err(|e| e.to_string())
}

/// The rung's upscale of a frame, and its alpha's (bicubic).
fn upscale_rgb(
    job: &FrameJob,
    frame: &convert::RgbFrame,
) -> Result<(tch::Tensor, Option<tch::Tensor>), String> {
    let output = (job.output.height, job.output.width);
    upscale_tensors(
        &job.variant,
        &frame.rgb,
        frame.alpha.as_ref(),
        job.tile,
        output,
    )
}

/// `rung`'s upscale of an RGB frame in tiles of `tile` (0: whole), and its alpha's (bicubic)
/// to `output` (height, width).
fn upscale_tensors(
    rung: &Variant,
    rgb: &tch::Tensor,
    alpha: Option<&tch::Tensor>,
    tile: i64,
    (height, width): (usize, usize),
) -> Result<(tch::Tensor, Option<tch::Tensor>), String> {
    let upscaled = rung.upscale_tiled(rgb, tile).map_err(|e| e.to_string())?;
    let alpha = alpha
        .map(|a| convert::upscale_alpha(a, height, width))
        .transpose()
        .map_err(|e| e.to_string())?;
    Ok((upscaled, alpha))
}

/// A blank frame of `height` x `width` through `rung` on the frame's own path (tiles as a
/// frame will be, `threads` as [`use_threads`]), for the inference thread: it primes the thread.
fn priming_run(
    rung: Arc<Variant>,
    (height, width): (i64, i64),
    tile: i64,
    threads: Option<i32>,
) -> impl FnOnce() -> Result<(), String> + Send + 'static {
    move || {
        use_threads(threads);
        let blank =
            tch::Tensor::f_zeros([1, height, width, 3], (tch::Kind::Uint8, tch::Device::Cpu))
                .map_err(|e| e.to_string())?;
        rung.upscale_tiled(&blank, tile)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// One frame of a CPU rung from copied input planes to output planes of `out_layout` (bytes,
/// stride per plane), written into `spare` where it has the planes' sizes: the whole frame's
/// libtorch work, for the inference thread.
fn upscale_planes(
    rung: &Variant,
    tile: i64,
    (in_format, input): (&FrameFormat, &[(Vec<u8>, usize)]),
    (out_format, out_layout): (&FrameFormat, &[(usize, usize)]),
    spare: Vec<Vec<u8>>,
) -> Result<Vec<Vec<u8>>, String> {
    let planes: Vec<Plane> = input
        .iter()
        .map(|(data, stride)| Plane {
            data,
            stride: *stride,
        })
        .collect();
    let fits = spare.len() == out_layout.len()
        && spare
            .iter()
            .zip(out_layout)
            .all(|(p, (len, _))| p.len() == *len);
    let mut out = match fits {
        true => spare,
        false => out_layout.iter().map(|(len, _)| vec![0u8; *len]).collect(),
    };
    let mut out_planes: Vec<PlaneMut> = out
        .iter_mut()
        .zip(out_layout)
        .map(|(data, (_, stride))| PlaneMut {
            data,
            stride: *stride,
        })
        .collect();
    upscale_into(
        rung,
        tile,
        (in_format, &planes),
        (out_format, &mut out_planes),
    )?;
    Ok(out)
}

/// One frame of a CPU rung from input planes into output planes: the whole frame's libtorch
/// work, for the inference thread.
fn upscale_into(
    rung: &Variant,
    tile: i64,
    (in_format, input): (&FrameFormat, &[Plane]),
    (out_format, output): (&FrameFormat, &mut [PlaneMut]),
) -> Result<(), String> {
    let frame = convert::to_rgb(in_format, input, tch::Device::Cpu).map_err(|e| e.to_string())?;
    let size = (out_format.height, out_format.width);
    let (upscaled, alpha) = upscale_tensors(rung, &frame.rgb, frame.alpha.as_ref(), tile, size)?;
    convert::write_rgb(out_format, &upscaled, alpha.as_ref(), output).map_err(|e| e.to_string())
}

/// A frame's input and output planes by address, for a job on the inference thread that its
/// caller waits for to its end ([`LightSrScale::upscale_host_frame`]).
struct FramePlanes {
    input: Vec<RawPlane>,
    output: Vec<RawPlane>,
}

// SAFETY: the planes are a mapped frame's, which its caller keeps mapped, and does not touch,
// until the job that uses them has ended.
unsafe impl Send for FramePlanes {}

impl FramePlanes {
    /// The planes as slices.
    ///
    /// # Safety
    /// The frame is mapped for the slices' life, and nothing else reads or writes it meanwhile.
    unsafe fn planes(&mut self) -> (Vec<Plane<'_>>, Vec<PlaneMut<'_>>) {
        // SAFETY: as the caller's.
        let input = self.input.iter().map(|p| Plane {
            data: unsafe { std::slice::from_raw_parts(p.ptr, p.len) },
            stride: p.stride,
        });
        // SAFETY: as the caller's; each output plane is a distinct range of the frame.
        let output = self.output.iter().map(|p| PlaneMut {
            data: unsafe { std::slice::from_raw_parts_mut(p.ptr, p.len) },
            stride: p.stride,
        });
        (input.collect(), output.collect())
    }
}

/// Sets this thread's libtorch (OpenMP) thread count where it differs.
fn use_threads(threads: Option<i32>) {
    if let Some(threads) = threads
        && tch::get_num_threads() != threads
    {
        tch::set_num_threads(threads);
    }
}

/// [`upscale_frame`] where one side or both are in CUDA memory of the element's context
/// (`in_device` / `out_device`): those are read or written in place on the GPU.
fn upscale_cuda_memory(
    job: &FrameJob,
    inbuf: &gst::BufferRef,
    outbuf: &mut gst::BufferRef,
    infos: &(gst_video::VideoInfo, gst_video::VideoInfo),
    (in_device, out_device): (bool, bool),
) -> Result<(), String> {
    let device = job.variant.device();
    let tch::Device::Cuda(index) = device else {
        return Err(format!(
            "frames in CUDA memory, but the rung runs on {device:?}"
        ));
    };
    // Both frames are mapped first and unmapped last; `_sync` drops before them, on every
    // path, so no queued kernel still reads or writes a frame that goes back to its pool.
    // SAFETY (both maps): BaseTransform hands `inbuf` mapped by nobody and `outbuf` writable
    // and unmapped; they outlive the mappings
    let device_in = match in_device {
        true => Some(unsafe { cuda::DeviceFrame::map(inbuf, &infos.0, false) }?),
        false => None,
    };
    let device_out = match out_device {
        true => Some(unsafe { cuda::DeviceFrame::map(outbuf, &infos.1, true) }?),
        false => None,
    };
    let host_in = match device_in {
        Some(_) => None,
        None => Some(
            gst_video::VideoFrameRef::from_buffer_ref_readable(inbuf, &infos.0)
                .map_err(|e| format!("could not map the input frame: {e}"))?,
        ),
    };
    let mut host_out = match device_out {
        Some(_) => None,
        None => Some(
            gst_video::VideoFrameRef::from_buffer_ref_writable(outbuf, &infos.1)
                .map_err(|e| format!("could not map the output frame: {e}"))?,
        ),
    };
    let _sync = SyncOnDrop(index);
    let frame = match (&device_in, &host_in) {
        // SAFETY: the planes stay mapped and unchanged until `_sync` has waited
        (Some(d), _) => unsafe {
            convert::to_rgb_in_device_memory(&job.input, &d.planes(), device)
        },
        (None, Some(h)) => convert::to_rgb(&job.input, &host_planes(h)?, device),
        (None, None) => unreachable!("one of the two is mapped"),
    }
    .map_err(|e| e.to_string())?;
    let (upscaled, alpha) = upscale_rgb(job, &frame)?;
    match (&device_out, &mut host_out) {
        // SAFETY: mapped for writing by this element only, until after `_sync` has waited
        (Some(d), _) => unsafe {
            convert::write_rgb_to_device_memory(
                &job.output,
                &upscaled,
                alpha.as_ref(),
                &d.planes(),
                device,
            )
        },
        (None, Some(h)) => convert::write_rgb(
            &job.output,
            &upscaled,
            alpha.as_ref(),
            &mut host_planes_mut(h)?,
        ),
        (None, None) => unreachable!("one of the two is mapped"),
    }
    .map_err(|e| e.to_string())
}

/// Waits for the work queued on a CUDA device when dropped.
struct SyncOnDrop(usize);

impl Drop for SyncOnDrop {
    fn drop(&mut self) {
        tch::Cuda::synchronize(self.0 as i64);
    }
}

fn host_planes<'a>(
    frame: &'a gst_video::VideoFrameRef<&gst::BufferRef>,
) -> Result<Vec<Plane<'a>>, String> {
    let strides = frame.plane_stride();
    (0..frame.n_planes())
        .map(|i| {
            Ok(Plane {
                data: frame.plane_data(i).map_err(|e| e.to_string())?,
                stride: stride(strides[i as usize])?,
            })
        })
        .collect()
}

fn host_planes_mut<'a>(
    frame: &'a mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
) -> Result<Vec<PlaneMut<'a>>, String> {
    let strides: Vec<i32> = frame.plane_stride().to_vec();
    frame
        .planes_data_mut()
        .into_iter()
        .zip(strides)
        .map(|(data, s)| {
            Ok(PlaneMut {
                data,
                stride: stride(s)?,
            })
        })
        .collect()
}

fn stride(s: i32) -> Result<usize, String> {
    usize::try_from(s).map_err(|_| format!("negative stride {s} is not supported"))
}

#[glib::object_subclass]
impl ObjectSubclass for LightSrScale {
    const NAME: &'static str = "GstLightSrScale";
    type Type = super::LightSrScale;
    type ParentType = gst_video::VideoFilter;
}

impl ObjectImpl for LightSrScale {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("model")
                    .nick("Model bundle")
                    .blurb(
                        "Bundle directory (manifest.json + TorchScript files, see model/BUNDLE.md) \
                         or its manifest.json; empty = the default bundle embedded in the plugin",
                    )
                    .default_value(Some(DEFAULT_MODEL))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("scale")
                    .nick("Scale factor")
                    .blurb(
                        "Upscaling factor; must be one of the bundle's ladders (default bundle: 2, 4). \
                         0 = any the bundle offers, the largest one downstream accepts",
                    )
                    .minimum(0)
                    .maximum(MAX_SCALE)
                    .default_value(DEFAULT_SCALE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("device")
                    .nick("Device")
                    .blurb(
                        "Where libtorch runs the model: auto (first CUDA device, else CPU with a \
                         warning), cpu, cuda or cuda:N",
                    )
                    .default_value(Some(DEFAULT_DEVICE))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("variant")
                    .nick("Variant")
                    .blurb(
                        "Ladder rung to run: auto (the deadline policy picks, see adaptive) or a \
                         variant name from the bundle manifest (fixed: no adaptation)",
                    )
                    .default_value(Some(DEFAULT_VARIANT))
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("adaptive")
                    .nick("Adaptive")
                    .blurb(
                        "With variant=auto: per frame, the best rung that makes the deadline \
                         (falls back at once, climbs back after a sustained period, drops when \
                         nothing fits); false: always the best allowed rung (max-variant)",
                    )
                    .default_value(DEFAULT_ADAPTIVE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("deadline-margin")
                    .nick("Deadline margin")
                    .blurb("Safety margin taken off every frame's time budget, in nanoseconds")
                    .maximum(MAX_DEADLINE_MARGIN)
                    .default_value(DEFAULT_DEADLINE_MARGIN)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("max-lateness")
                    .nick("Max lateness")
                    .blurb(
                        "How late (ns) a frame may reach the sink and still be shown (the sink's \
                         max-lateness): a live frame that arrives late by less than this, or that \
                         no rung fits but is expected within this, still runs instead of being \
                         dropped",
                    )
                    .maximum(MAX_DEADLINE_MARGIN)
                    .default_value(DEFAULT_MAX_LATENESS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("min-variant")
                    .nick("Lightest variant")
                    .blurb("Lightest rung the policy may use (a variant name); empty = the ladder's last")
                    .default_value(Some(DEFAULT_BOUND))
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("max-variant")
                    .nick("Best variant")
                    .blurb("Best rung the policy may use (a variant name); empty = the ladder's first")
                    .default_value(Some(DEFAULT_BOUND))
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("active-variant")
                    .nick("Active variant")
                    .blurb(
                        "The rung the stream runs on (probe and catch-up frames aside); empty \
                         before the first frame unless a variant is fixed",
                    )
                    .read_only()
                    .build(),
                glib::ParamSpecUInt::builder("threads")
                    .nick("CPU threads")
                    .blurb(
                        "libtorch intra-op threads for CPU rungs, set when the element starts; \
                         process-wide (libtorch has one pool per process). 0 = libtorch's \
                         default, one per core. See adapt-threads",
                    )
                    .minimum(0)
                    .maximum(256)
                    .default_value(DEFAULT_THREADS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("tile-size")
                    .nick("Tile size")
                    .blurb(
                        "Learned rungs process frames in tiles of at most this many input pixels \
                         per side, overlapping by the rung's receptive field, so large frames fit \
                         in memory without seams; 0 = automatic (whole frames while their working \
                         memory fits half of the available memory)",
                    )
                    .minimum(0)
                    .maximum(1 << 16)
                    .default_value(DEFAULT_TILE_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("adapt-threads")
                    .nick("Adapt CPU threads")
                    .blurb(
                        "Run CPU rungs on fewer libtorch threads while other processes keep the \
                         cores busy (read from /proc/stat before each frame), and on `threads` \
                         again once the cores are free: a thread that shares its core stalls \
                         the others at every layer",
                    )
                    .default_value(DEFAULT_ADAPT_THREADS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb(
                        "lightsrscale-stats: active-variant, processed, dropped, switches, probes, \
                         misses, rescued, load, qos-proportion, latency (ns), variants (per rung: name, \
                         frames, mean-cost, p95-cost, predicted-cost in ns), gpu-memory-frames, \
                         threads (libtorch threads of CPU rungs now; 0 on CUDA)",
                    )
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = lock(&self.settings);
        match pspec.name() {
            "model" => {
                settings.model = value
                    .get::<Option<String>>()
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            }
            "device" => {
                settings.device = value
                    .get::<Option<String>>()
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| DEFAULT_DEVICE.into())
            }
            "variant" | "min-variant" | "max-variant" => {
                let text = value.get::<Option<String>>().ok().flatten();
                let text = text.map(|t| t.trim().to_string());
                match pspec.name() {
                    "variant" => settings.variant = text.unwrap_or_else(|| DEFAULT_VARIANT.into()),
                    "min-variant" => settings.min_variant = text.unwrap_or_default(),
                    _ => settings.max_variant = text.unwrap_or_default(),
                }
                drop(settings);
                self.update_policy();
            }
            "adaptive" => {
                settings.adaptive = value.get().unwrap_or(DEFAULT_ADAPTIVE);
                drop(settings);
                self.update_policy();
            }
            "deadline-margin" => {
                settings.deadline_margin = value.get().unwrap_or(DEFAULT_DEADLINE_MARGIN);
                drop(settings);
                self.update_policy();
            }
            "max-lateness" => {
                settings.max_lateness = value.get().unwrap_or(DEFAULT_MAX_LATENESS);
                drop(settings);
                self.update_policy();
            }
            "threads" => settings.threads = value.get().unwrap_or(DEFAULT_THREADS),
            "tile-size" => settings.tile_size = value.get().unwrap_or(DEFAULT_TILE_SIZE),
            "adapt-threads" => {
                settings.adapt_threads = value.get().unwrap_or(DEFAULT_ADAPT_THREADS)
            }
            "scale" => {
                let scale = value.get().unwrap_or(DEFAULT_SCALE);
                if scale != settings.scale {
                    settings.scale = scale;
                    drop(settings);
                    gst::debug!(
                        CAT,
                        imp = self,
                        "scale={scale}: renegotiating the output size"
                    );
                    self.obj().reconfigure_src();
                }
            }
            other => gst::warning!(CAT, imp = self, "no writable property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        // The deadline policy drops late frames itself (and counts them); GstVideoFilter's
        // own QoS dropping would drop a second time, behind its back.
        self.obj().set_property("qos", false);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = lock(&self.settings);
        match pspec.name() {
            "model" => settings.model.to_value(),
            "scale" => settings.scale.to_value(),
            "device" => settings.device.to_value(),
            "variant" => settings.variant.to_value(),
            "adaptive" => settings.adaptive.to_value(),
            "deadline-margin" => settings.deadline_margin.to_value(),
            "max-lateness" => settings.max_lateness.to_value(),
            "min-variant" => settings.min_variant.to_value(),
            "max-variant" => settings.max_variant.to_value(),
            "threads" => settings.threads.to_value(),
            "tile-size" => settings.tile_size.to_value(),
            "adapt-threads" => settings.adapt_threads.to_value(),
            "active-variant" => {
                drop(settings);
                lock(&self.scheduler).active_name().to_value()
            }
            "stats" => {
                drop(settings);
                self.stats().to_value()
            }
            _ => glib::Value::from_type(pspec.value_type()),
        }
    }
}

impl GstObjectImpl for LightSrScale {}

impl ElementImpl for LightSrScale {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Light super-resolution scaler",
                "Filter/Effect/Converter/Video/Scaler",
                "Upscales video x2/x4 with a TorchScript super-resolution model ladder through \
                 libtorch (CUDA or CPU); the default ladder is embedded. Example: videotestsrc ! \
                 video/x-raw,format=NV12,width=480,height=270 ! lightsrscale scale=4 ! fakesink",
                "lightsrscale developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            use gst_video::VideoFormat as F;
            let formats = [F::Rgb, F::Rgba, F::Rgbx, F::Bgrx, F::Bgra, F::I420, F::Nv12];
            // CUDA memory is listed everywhere; caps queries drop it where it cannot be shared
            let mut caps = gst_video::VideoCapsBuilder::new()
                .format_list(formats)
                .build();
            caps.merge(
                gst_video::VideoCapsBuilder::new()
                    .features([cuda::CAPS_FEATURE])
                    .format_list(formats)
                    .build(),
            );
            let pad = |name, direction| {
                gst::PadTemplate::new(name, direction, gst::PadPresence::Always, &caps)
                    .expect("valid template")
            };
            vec![
                pad("src", gst::PadDirection::Src),
                pad("sink", gst::PadDirection::Sink),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for LightSrScale {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::NeverInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = lock(&self.settings).clone();
        // libtorch's intra-op pool is one per process: the last element started sets it
        // (libtorch's own count is read first, before any element changes it).
        tch::set_num_threads(full_threads(settings.threads));
        let bundle = self.load_bundle(&settings)?;
        Self::check_settings(&bundle, &settings)?;
        let mut kept = lock(&self.kept_bundle);
        if !kept.as_ref().is_some_and(|k| Arc::ptr_eq(k, &bundle)) {
            lock(&self.scheduler).forget_ladder();
        }
        *kept = Some(bundle.clone());
        drop(kept);
        if let tch::Device::Cuda(index) = bundle.device
            && let Ok(shared) = cuda::shared(index)
        {
            let element = self.obj();
            let _ = element.post_message(shared.have_context_message(element.upcast_ref()));
        }
        lock(&self.scheduler).set_cpu(cpu_config(
            bundle.device,
            settings.threads,
            settings.adapt_threads,
        ));
        *lock(&self.state) = Some(State {
            bundle,
            negotiated: None,
        });
        Ok(())
    }

    /// Buffers in CUDA memory of the element's context are read and written on the GPU in
    /// place; everything else goes through VideoFilter's mapped frames (`transform_frame`).
    fn transform(
        &self,
        inbuf: &gst::Buffer,
        outbuf: &mut gst::BufferRef,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let cuda = lock(&self.state)
            .as_ref()
            .and_then(|s| s.negotiated.as_ref())
            .and_then(|n| Some((n.cuda.clone()?, n.infos.clone())));
        let Some((shared, infos)) = cuda else {
            return self.parent_transform(inbuf, outbuf);
        };
        match (shared.owns(inbuf), shared.owns(outbuf)) {
            (false, false) => self.parent_transform(inbuf, outbuf),
            sides => self.run_frame(inbuf, |job| {
                upscale_cuda_memory(job, inbuf, outbuf, &infos, sides)?;
                self.gpu_memory_frames.fetch_add(1, Ordering::Relaxed);
                Ok(Made::Planned)
            }),
        }
    }

    /// Output in CUDA memory comes from a `GstCudaBufferPool` of the element's context when
    /// downstream offers no CUDA pool.
    fn decide_allocation(
        &self,
        query: &mut gst::query::Allocation,
    ) -> Result<(), gst::LoggableError> {
        let (caps, _) = query.get_owned();
        if let Some(caps) = caps.filter(|c| in_cuda_memory(c))
            && let Some(shared) = self.negotiated_cuda()
        {
            let first = query.allocation_pools().next();
            let has_cuda_pool = first
                .as_ref()
                .and_then(|(pool, ..)| pool.as_ref())
                .is_some_and(|p| shared.is_own_pool(p));
            if !has_cuda_pool {
                let (pool, size) = shared
                    .buffer_pool(&caps, 2)
                    .map_err(|e| gst::loggable_error!(CAT, "{e}"))?;
                if first.is_some() {
                    query.set_nth_allocation_pool(0, Some(&pool), size, 2, 0);
                } else {
                    query.add_allocation_pool(Some(&pool), size, 2, 0);
                }
            }
        }
        self.parent_decide_allocation(query)
    }

    /// Upstream elements that write CUDA memory (`cudaupload`, `cudaconvert`, decoders) are
    /// offered a CUDA buffer pool of the shared context, so that their frames can be read in
    /// place; every upstream element is told that video meta (strides, offsets) is understood.
    fn propose_allocation(
        &self,
        decide_query: Option<&gst::query::Allocation>,
        query: &mut gst::query::Allocation,
    ) -> Result<(), gst::LoggableError> {
        self.parent_propose_allocation(decide_query, query)?;
        let (caps, need_pool) = query.get_owned();
        if need_pool
            && let Some(caps) = caps.filter(|c| in_cuda_memory(c))
            && let Some(shared) = self.negotiated_cuda()
        {
            let (pool, size) = shared
                .buffer_pool(&caps, 2)
                .map_err(|e| gst::loggable_error!(CAT, "{e}"))?;
            query.add_allocation_pool(Some(&pool), size, 2, 0);
        }
        query.add_allocation_meta::<gst_video::VideoMeta>(None);
        Ok(())
    }

    /// On CUDA, output buffers come from a pool of pinned host memory (the GPU -> host copy of
    /// the result is 3-4x faster into it); elsewhere, and if pinning fails, the default ones.
    fn prepare_output_buffer(
        &self,
        inbuf: gst_base::subclass::base_transform::InputBuffer,
    ) -> Result<gst_base::subclass::base_transform::PrepareOutputBufferSuccess, gst::FlowError>
    {
        // the pool is cloned out of the state lock: a first allocation pins a whole frame
        let pool = lock(&self.state)
            .as_ref()
            .and_then(|s| s.negotiated.as_ref())
            .and_then(|n| n.pinned.clone());
        let pinned = match pool.map(|p| p.buffer()) {
            Some(Ok(buffer)) => Some(buffer),
            Some(Err(message)) => {
                gst::warning!(
                    CAT,
                    imp = self,
                    "{message}; output buffers stay in pageable memory"
                );
                if let Some(n) = lock(&self.state)
                    .as_mut()
                    .and_then(|s| s.negotiated.as_mut())
                {
                    n.pinned = None;
                }
                None
            }
            None => None,
        };
        let Some(mut outbuf) = pinned else {
            return self.parent_prepare_output_buffer(inbuf);
        };
        let inbuf = match inbuf {
            gst_base::subclass::base_transform::InputBuffer::Writable(b) => &*b,
            gst_base::subclass::base_transform::InputBuffer::Readable(b) => b,
        };
        let out = outbuf.get_mut().ok_or(gst::FlowError::Error)?;
        self.copy_metadata(inbuf, out)
            .map_err(|_| gst::FlowError::Error)?;
        Ok(gst_base::subclass::base_transform::PrepareOutputBufferSuccess::Buffer(outbuf))
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        // Before the state goes: a warm-up still running stops after its run in progress and
        // hands on only the rungs it measured in full.
        self.stop_warm_ups();
        // A frame given up on at its deadline may still run there: libtorch must not run while
        // the process exits (see `warm_ups`).
        self.stop_inference();
        // The bundle stays loaded (`kept_bundle`) and the scheduler keeps its costs, so a
        // restart neither reloads nor re-measures; another bundle at the next start, or the
        // element's end, frees it (the process-wide cache holds bundles weakly).
        *lock(&self.state) = None;
        *lock(&self.timing) = LiveTiming::default();
        *lock(&self.answered_latency) = None;
        // the next start's running time starts at 0 again
        lock(&self.scheduler).restart_time();
        // threads a busy machine took off the frames come back for whatever runs next
        tch::set_num_threads(full_threads(lock(&self.settings).threads));
        Ok(())
    }

    fn query(&self, direction: gst::PadDirection, query: &mut gst::QueryRef) -> bool {
        let cuda_context = match query.view() {
            gst::QueryView::Context(c) => c.context_type() == cuda::CONTEXT_TYPE,
            _ => false,
        };
        if cuda_context
            && let Some(shared) = self.cuda_shared()
            && shared.answer(self.obj().upcast_ref(), query)
        {
            return true;
        }
        if let gst::QueryView::Caps(_) = query.view() {
            if !BaseTransformImplExt::parent_query(self, direction, query) {
                return false;
            }
            // CUDA memory only where it can be shared (the template lists it everywhere); the
            // answer stays a subset of the query's filter
            if self.cuda_shared().is_none()
                && let gst::QueryViewMut::Caps(q) = query.view_mut()
                && let Some(result) = q.result_owned()
            {
                q.set_result(&memory_alternatives(&result, false));
            }
            return true;
        }
        let is_latency = matches!(query.view(), gst::QueryView::Latency(_));
        if direction != gst::PadDirection::Src || !is_latency {
            return BaseTransformImplExt::parent_query(self, direction, query);
        }
        if !BaseTransformImplExt::parent_query(self, direction, query) {
            return false;
        }
        let ours = lock(&self.scheduler).processing_latency();
        let added = gst::ClockTime::try_from(ours).unwrap_or(gst::ClockTime::ZERO);
        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
            let (live, min, max) = q.result();
            q.set(live, min + added, max.map(|m| m + added));
            gst::debug!(
                CAT,
                imp = self,
                "latency: upstream live {live} min {min} max {max:?}, ours {ours:?}"
            );
            let mut timing = lock(&self.timing);
            timing.live = live;
            timing.upstream_min = min.into();
            *lock(&self.answered_latency) = Some(ours);
        }
        true
    }

    fn src_event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::Qos(qos) => {
                let (_, proportion, diff, timestamp) = qos.get();
                gst::debug!(
                    CAT,
                    imp = self,
                    "upstream QoS: proportion {proportion:.3} jitter {diff} at {timestamp:?}"
                );
                if let Some(t) = timestamp {
                    lock(&self.scheduler).on_qos(proportion, diff, t.nseconds());
                }
            }
            gst::EventView::Latency(latency) => {
                lock(&self.timing).pipeline_latency = Some(latency.latency().into());
            }
            _ => (),
        }
        self.parent_src_event(event)
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        if let gst::EventView::FlushStop(_) = event.view() {
            lock(&self.scheduler).restart_time();
        }
        self.parent_sink_event(event)
    }

    fn transform_caps(
        &self,
        direction: gst::PadDirection,
        caps: &gst::Caps,
        filter: Option<&gst::Caps>,
    ) -> Option<gst::Caps> {
        let scales = self.scales();
        let way = Way::of(direction);
        let other = memory_alternatives(
            &scale_caps(caps, &scales, way),
            self.cuda_shared().is_some(),
        );
        if other.is_empty() && !caps.is_empty() {
            gst::debug!(
                CAT,
                imp = self,
                "no scale in {scales:?} maps {caps} ({way:?}): caps not supported"
            );
        }
        gst::trace!(CAT, imp = self, "{way:?} x{scales:?}: {caps} -> {other}");
        let Some(filter) = filter else {
            return Some(other);
        };
        let allowed = filter.intersect_with_mode(&other, gst::CapsIntersectMode::First);
        if allowed.is_empty() && !other.is_empty() {
            gst::debug!(
                CAT,
                imp = self,
                "{way:?} x{scales:?} of {caps} gives {other}, none of it allowed by {filter}"
            );
        }
        Some(allowed)
    }

    fn accept_caps(&self, direction: gst::PadDirection, caps: &gst::Caps) -> bool {
        let accepted = self.parent_accept_caps(direction, caps);
        if !accepted {
            let template = Self::pad_templates()[0].caps().clone();
            let why = if caps.can_intersect(&template) {
                format!(
                    "no scale the bundle offers ({:?}) fits the peer",
                    self.scales()
                )
            } else {
                format!("not supported: lightsrscale takes {template}")
            };
            gst::debug!(CAT, imp = self, "{direction:?} caps {caps} refused: {why}");
        }
        accepted
    }

    fn fixate_caps(
        &self,
        direction: gst::PadDirection,
        caps: &gst::Caps,
        othercaps: gst::Caps,
    ) -> gst::Caps {
        let scales = self.scales();
        match fixate_to_scale(caps, &othercaps, &scales, Way::of(direction)) {
            Some(fixed) => {
                gst::debug!(CAT, imp = self, "fixated {othercaps} to {fixed}");
                fixed
            }
            None => {
                gst::debug!(
                    CAT,
                    imp = self,
                    "no scale in {scales:?} fits {othercaps} for {caps}"
                );
                self.parent_fixate_caps(direction, caps, othercaps)
            }
        }
    }
}

impl VideoFilterImpl for LightSrScale {
    fn set_info(
        &self,
        incaps: &gst::Caps,
        in_info: &gst_video::VideoInfo,
        outcaps: &gst::Caps,
        out_info: &gst_video::VideoInfo,
    ) -> Result<(), gst::LoggableError> {
        let fail = |message: String| {
            gst::debug!(CAT, imp = self, "refusing {incaps} -> {outcaps}: {message}");
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ("{message}"));
            gst::loggable_error!(CAT, "{message}")
        };
        if in_info.interlace_mode() != gst_video::VideoInterlaceMode::Progressive {
            return Err(fail(format!(
                "interlaced input ({:?}) is not supported: put a deinterlacer (e.g. deinterlace) before lightsrscale",
                in_info.interlace_mode()
            )));
        }
        let input = frame_format(in_info).map_err(fail)?;
        let output = frame_format(out_info).map_err(fail)?;
        let cuda_memory = (in_cuda_memory(incaps), in_cuda_memory(outcaps));
        let settings = lock(&self.settings).clone();
        let bundle = lock(&self.state).as_ref().map(|s| s.bundle.clone());
        let bundle = bundle.ok_or_else(|| fail("caps before start".into()))?;
        let cuda =
            match (cuda_memory, bundle.device) {
                ((false, false), _) => None,
                (_, tch::Device::Cuda(index)) => Some(cuda::shared(index).map_err(|why| {
                    fail(format!("frames in CUDA memory cannot be shared: {why}"))
                })?),
                (_, device) => {
                    return Err(fail(format!(
                        "frames in CUDA memory need the element on CUDA (it runs on {device:?}): \
                     set device=cuda, or put cudadownload before lightsrscale"
                    )));
                }
            };
        let scale = out_info.width() / in_info.width().max(1);
        if out_info.width() != in_info.width() * scale
            || out_info.height() != in_info.height() * scale
        {
            return Err(fail(format!(
                "{}x{} -> {}x{} is not an integer upscale",
                in_info.width(),
                in_info.height(),
                out_info.width(),
                out_info.height()
            )));
        }
        let ladder = bundle
            .ladder(scale)
            .ok_or_else(|| fail(format!("the bundle has no x{scale} ladder")))?;
        let config = ladder_config(ladder, &settings).map_err(fail)?;
        let size = FrameSize::new(in_info.width(), in_info.height());
        let frame_duration = policy::frame_duration(in_info.fps().numer(), in_info.fps().denom());
        let tile = match settings.tile_size {
            0 => auto_tile(in_info.width(), in_info.height(), bundle.device),
            t => i64::from(t),
        };
        if tile > 0 {
            gst::info!(
                CAT,
                imp = self,
                "learned rungs run in tiles of {tile}x{tile} input pixels"
            );
        }
        let weight_free = ladder.variants.iter().any(|v| v.is_weight_free());
        let scaler = match bundle.device {
            tch::Device::Cpu if weight_free => Some(Arc::new(
                weight_free_scaler(in_info, out_info).map_err(fail)?,
            )),
            _ => None,
        };
        gst::info!(
            CAT,
            imp = self,
            "{}x{} -> {}x{} {:?} x{scale} on {:?}, frame duration {frame_duration:?}",
            input.width,
            input.height,
            output.width,
            output.height,
            input.layout,
            bundle.device,
        );
        // The same ladder keeps its costs (per size) and its active rung across caps changes.
        lock(&self.scheduler).negotiate(
            ladder
                .variants
                .iter()
                .map(|v| v.name().to_string())
                .collect(),
            scale,
            size,
            config,
            frame_duration,
        );
        {
            let mut state = lock(&self.state);
            let state = state
                .as_mut()
                .ok_or_else(|| fail("stopped during negotiation".into()))?;
            state.negotiated = Some(Negotiated {
                input,
                output,
                tile,
                variants: ladder.variants.clone(),
                infos: (in_info.clone(), out_info.clone()),
                scaler,
                pinned: (bundle.device.is_cuda() && !cuda_memory.1)
                    .then(|| PinnedPool::new(out_info.size(), bundle.device, pinned_bytes)),
                cuda,
            });
        }
        self.warm_up_pending().map_err(fail)?;
        self.check_latency();
        Ok(())
    }

    fn transform_frame(
        &self,
        inframe: &gst_video::VideoFrameRef<&gst::BufferRef>,
        outframe: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.run_frame(inframe.buffer(), |job| {
            self.upscale_host_frame(job, inframe, outframe)
        })
    }
}

impl LightSrScale {
    /// One frame: the scheduler's plan (run, or drop), `work` on the chosen rung (or what made
    /// the frame instead, see [`Made`]), the cost.
    fn run_frame(
        &self,
        inbuf: &gst::BufferRef,
        work: impl FnOnce(&FrameJob) -> Result<Made, String>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let fail = |message: String| {
            gst::element_imp_error!(self, gst::StreamError::Failed, ("{message}"));
            gst::FlowError::Error
        };
        let ended = lock(&self.inference)
            .as_mut()
            .and_then(InferenceThread::take_ended);
        if let Some((what, took)) = ended {
            gst::info!(CAT, imp = self, "{what} took {took:?} in all");
        }
        self.warm_up_pending().map_err(fail)?;
        self.prime_pending().map_err(fail)?;
        let (plan, clock, mut job) = self.plan_frame(inbuf).map_err(fail)?;
        self.report(&plan, &clock);
        if plan.decision.drop {
            return Ok(gst_base::BASE_TRANSFORM_FLOW_DROPPED);
        }
        // The first libtorch rung a thread runs at this size (on the CPU usually the first
        // learned rung a live stream climbs to from GStreamer's scaler; on CUDA every rung, as a
        // start, a climb, a probe or a fall-back reaches it: see `is_cold_on`) runs once
        // untimed before the frame, and the frame is judged as if that stall had not happened:
        // it is not the rung's cost (nor a reason to give the frame up). Live on the CPU, where
        // the frame may be made by the scaler, the inference thread is primed in the background
        // instead (`prime_in_background`; after a live warm-up already at its end).
        // On CUDA that first run takes cuDNN's plans (up to 0.25 s); on the CPU it is 1.5-2x a
        // frame (the thread's OpenMP team and caches: x2 `dense` 33-46 ms against 22 ms once
        // warm), over the budget often enough that the climb after a warm-up fell straight back.
        // GStreamer's scaler (the weight-free rung on the CPU) is not libtorch: never cold.
        let stall = match job.by_scaler() {
            Some(_) => Duration::ZERO,
            None => self.prime_if_cold(&job).map_err(fail)?,
        };
        if let Some(rescue) = job.rescue.as_mut() {
            rescue.planned += stall;
        }
        let started = Instant::now();
        let made = work(&job).map_err(fail)?;
        let cost = started.elapsed();
        let clock_after = self
            .obj()
            .current_running_time()
            .map(|t| t.nseconds().saturating_sub(stall.as_nanos() as u64));
        let met = clock.met(cost, clock_after);
        let variant = plan.decision.variant;
        let stand_in = job.rescue.map_or(variant, |r| r.stand_in);
        match made {
            Made::Planned => lock(&self.scheduler).record(variant, cost, met),
            Made::Rescued { waited, cost } => {
                gst::info!(
                    CAT,
                    imp = self,
                    "{} still ran {waited:?} after the frame was planned, at its deadline: \
                     GStreamer's scaler made the frame in {cost:?} (the run goes on to its end \
                     on the inference thread)",
                    job.variant.name()
                );
                lock(&self.scheduler).record_rescued(variant, waited, stand_in, cost);
            }
            Made::StoodIn { cost } => {
                gst::debug!(
                    CAT,
                    imp = self,
                    "a frame given up on still runs: GStreamer's scaler made this one ({} \
                     planned) in {cost:?}",
                    job.variant.name()
                );
                lock(&self.scheduler).record_stand_in(stand_in, cost, met);
            }
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// Runs `job`'s rung once on a blank frame where it would otherwise pay a first run's cost
    /// in a frame: on CUDA on this (the streaming) thread, on the CPU on the inference thread
    /// (see `is_cold_on`); how long that took.
    fn prime_if_cold(&self, job: &FrameJob) -> Result<Duration, String> {
        let rung = &job.variant;
        let (height, width) = (job.input.height as i64, job.input.width as i64);
        let (stall, thread) = if rung.device().is_cuda() {
            if ran_here(rung, &job.input) {
                return Ok(Duration::ZERO);
            }
            let Some((ladder, infos, ..)) = self.negotiated_work() else {
                return Ok(Duration::ZERO);
            };
            if !is_cold_on(rung, &ladder, &job.input, std::thread::current().id()) {
                return Ok(Duration::ZERO);
            }
            (prime_rung(job, &infos)?, "the streaming thread")
        } else {
            let id = self.inference_thread()?.as_ref().map(InferenceThread::id);
            let Some(id) = id.filter(|id| !rung.has_run_on(*id, height, width)) else {
                return Ok(Duration::ZERO);
            };
            let Some((ladder, ..)) = self.negotiated_work() else {
                return Ok(Duration::ZERO);
            };
            if !is_cold_on(rung, &ladder, &job.input, id) {
                return Ok(Duration::ZERO);
            }
            let mut guard = self.inference_thread()?;
            let Some(inference) = guard.as_mut() else {
                return Ok(Duration::ZERO);
            };
            // busy: a frame given up on or a priming in the background still runs there, and
            // leaves the thread warm. With a rescue this frame is made by the scaler meanwhile
            // (`upscale_host_frame`); without one it waits, and the wait is no cost of its rung.
            if inference.busy() {
                if job.rescue.is_some() {
                    return Ok(Duration::ZERO);
                }
                let started = Instant::now();
                inference
                    .run("waiting for the inference thread", || (), None)
                    .map_err(|e| e.to_string())?;
                return Ok(started.elapsed());
            }
            // Live with a rescue (a frame that climbed as the warm-up ended, before its priming
            // was listed; a restart that kept the costs): primed in the background while the
            // scaler makes this frame, rather than in its time.
            if job.rescue.is_some() {
                drop(guard);
                self.prime_in_background(rung, &ladder, job.input, job.tile);
                return Ok(Duration::ZERO);
            }
            let run = priming_run(rung.clone(), (height, width), job.tile, job.threads);
            let started = Instant::now();
            inference
                .run("priming", run, None)
                .map_err(|e| e.to_string())??;
            (started.elapsed(), "the inference thread")
        };
        gst::info!(
            CAT,
            imp = self,
            "ran {} once on {thread} in {stall:?} before its first frame there (per-thread \
             state: cuDNN's plans, OpenMP's team), untimed",
            rung.name()
        );
        Ok(stall)
    }

    /// The inference thread, started if need be.
    fn inference_thread(&self) -> Result<MutexGuard<'_, Option<InferenceThread>>, String> {
        let mut guard = lock(&self.inference);
        if guard.is_none() {
            *guard = Some(InferenceThread::spawn("lightsrscale-inference")?);
        }
        Ok(guard)
    }

    /// One frame in system memory: GStreamer's scaler for the weight-free rung; a CUDA rung on
    /// this thread; a CPU rung on the inference thread, given up on at the frame's deadline
    /// when `job.rescue` says so, the scaler then making the frame (as it does while a frame
    /// given up on still runs).
    fn upscale_host_frame(
        &self,
        job: &FrameJob,
        inframe: &gst_video::VideoFrameRef<&gst::BufferRef>,
        outframe: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
    ) -> Result<Made, String> {
        if job.by_scaler().is_some() || job.variant.device().is_cuda() {
            upscale_frame(job, inframe, outframe)?;
            return Ok(Made::Planned);
        }
        let stand_in = |outframe: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>| {
            let scaler = job
                .scaler
                .as_ref()
                .ok_or("no scaler to stand in for the rung")?;
            let started = Instant::now();
            scaler.frame_ref(inframe, outframe);
            Ok::<_, String>(started.elapsed())
        };
        let mut guard = self.inference_thread()?;
        let inference = guard.as_mut().ok_or("no inference thread")?;
        // no time left for the rung (the frame was planned already late): the scaler at once
        if let Some(rescue) = job.rescue.filter(|r| r.planned.elapsed() >= r.limit) {
            return Ok(Made::Rescued {
                waited: rescue.planned.elapsed(),
                cost: stand_in(outframe)?,
            });
        }
        if inference.busy() && job.rescue.is_some() {
            return Ok(Made::StoodIn {
                cost: stand_in(outframe)?,
            });
        }
        // Every libtorch operation of the frame (conversions and forward) runs there, on one
        // OpenMP team. Without a rescue this thread waits for the job's end, so the job reads
        // and writes this frame's own planes.
        if job.rescue.is_none() {
            let mut planes = FramePlanes {
                input: host_planes(inframe)?.iter().map(RawPlane::from).collect(),
                output: host_planes_mut(outframe)?
                    .iter_mut()
                    .map(RawPlane::from)
                    .collect(),
            };
            let (rung, tile, threads) = (job.variant.clone(), job.tile, job.threads);
            let (in_format, out_format) = (job.input, job.output);
            let result = inference.run(
                &format!("the {} frame", job.variant.name()),
                move || {
                    use_threads(threads);
                    // SAFETY: `run` without a limit returns once this job has ended (or if it
                    // never ran), and the frames stay mapped and untouched until then.
                    let (input, mut output) = unsafe { planes.planes() };
                    upscale_into(
                        &rung,
                        tile,
                        (&in_format, &input),
                        (&out_format, &mut output),
                    )
                },
                None,
            );
            drop(guard);
            return match result {
                Ok(made) => made.map(|()| Made::Planned),
                Err(NotRun::Gone(why)) => Err(why),
                Err(NotRun::GaveUp(waited)) => Err(format!(
                    "the {} frame was given up on after {waited:?} without a limit",
                    job.variant.name()
                )),
            };
        }
        // With a rescue this thread may stop waiting before the job ends: the input planes are
        // copied in and the output planes out, so nothing there reads or writes this frame's
        // memory after that.
        let input: Vec<(Vec<u8>, usize)> = host_planes(inframe)?
            .iter()
            .map(|p| (p.data.to_vec(), p.stride))
            .collect();
        let strides = outframe.plane_stride().to_vec();
        let out_layout = (0..outframe.n_planes())
            .map(|i| {
                let len = outframe.plane_data(i).map_err(|e| e.to_string())?.len();
                Ok((len, stride(strides[i as usize])?))
            })
            .collect::<Result<Vec<(usize, usize)>, String>>()?;
        let spare = std::mem::take(&mut *lock(&self.spare_planes));
        let (rung, tile, threads) = (job.variant.clone(), job.tile, job.threads);
        let (in_format, out_format) = (job.input, job.output);
        let limit = job.rescue.map(|r| (r.planned, r.limit));
        let result = inference.run(
            &format!("the {} frame given up on", job.variant.name()),
            move || {
                use_threads(threads);
                upscale_planes(
                    &rung,
                    tile,
                    (&in_format, &input),
                    (&out_format, &out_layout),
                    spare,
                )
            },
            limit,
        );
        drop(guard);
        match result {
            Ok(planes) => {
                let planes = planes?;
                for (to, from) in outframe.planes_data_mut().into_iter().zip(&planes) {
                    to.copy_from_slice(from);
                }
                *lock(&self.spare_planes) = planes;
                Ok(Made::Planned)
            }
            Err(NotRun::GaveUp(waited)) => Ok(Made::Rescued {
                waited,
                cost: stand_in(outframe)?,
            }),
            Err(NotRun::Gone(why)) => Err(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_tiles_only_for_frames_beyond_the_memory_budget() {
        let cuda = tch::Device::Cuda(0); // the fixed 4 GiB budget: no device needed
        assert_eq!(auto_tile(1920, 1080, cuda), 0, "1080p input fits whole");
        // 4K input: 17 GB estimated; tiles of 1440 (sqrt(4 GiB / 2 KiB) = 1448, to 32s)
        assert_eq!(auto_tile(3840, 2160, cuda), 1440);
        assert_eq!(auto_tile(320, 180, tch::Device::Cpu), 0);
        assert!(available_memory().is_some_and(|m| m > 0));
    }

    #[test]
    fn a_live_warm_up_stops_at_the_first_timed_run_far_over_the_frame() {
        let ms = Duration::from_millis;
        let limit = Some(ms(40) * WARM_UP_HOPELESS); // 25 fps
        assert!(!far_over(&[], limit), "compiling runs are not judged");
        assert!(!far_over(&[ms(75)], limit), "1.9 frames: measured on");
        assert!(far_over(&[ms(100)], limit), "x4 dense-wide in a slow hour");
        assert!(
            far_over(&[ms(350)], limit),
            "the x4 fourier rung on 2 cores"
        );
        assert!(
            !far_over(&[ms(20), ms(350)], limit),
            "only the first timed run counts"
        );
        assert!(
            !far_over(&[ms(350)], None),
            "not live: every rung is measured"
        );
        // a rung over the climb's headroom keeps its first timed run alone, and the warm-up
        // goes on
        let one_run = Some(ms(40).mul_f64(WARM_UP_ONE_RUN));
        assert!(far_over(&[ms(38)], one_run), "x4 dense-wide on AVX-512");
        assert!(
            !far_over(&[ms(38)], limit),
            "... which does not stop the warm-up"
        );
        assert!(!far_over(&[ms(30)], one_run), "x4 dense: five timed runs");
    }

    #[test]
    fn a_live_warm_up_does_not_run_a_rung_estimated_far_over_the_frame() {
        let ms = Duration::from_millis;
        // The shipped x4 ladder's manifest: dense-wide 87 ms, fourier 352 ms on the exporting
        // CPU; dense-wide measured 78 ms here: fourier is estimated at 78 x 352 / 87 = 316 ms.
        let fourier = estimated_cost(Some((ms(78), ms(87))), Some(ms(352))).unwrap();
        assert!((315..=316).contains(&fourier.as_millis()), "{fourier:?}");
        let unmeasured = Some(ms(40).mul_f64(WARM_UP_UNMEASURED)); // 25 fps
        assert_eq!(
            left_unrun(Some((ms(78), ms(87))), Some(ms(352)), unmeasured),
            Some(fourier),
            "left out at 25 fps"
        );
        // the default bundle's manifest: x4 dense 25.66 ms, dense-wide 84.34 ms; dense measured
        // 21.7 ms in a warm-up on 2 cores, dense-wide then 78 ms: estimated at 71 ms, left out
        let wide = left_unrun(
            Some((ms(21) + ms(7) / 10, ms(25))),
            Some(ms(84)),
            unmeasured,
        );
        assert!(wide.is_some_and(|e| e > ms(70)), "{wide:?}");
        // x2 dense-wide on an AVX-512 CPU: x2 dense 8 ms here (18.3 ms in the manifest), so
        // dense-wide (64.2 ms there) is estimated at 28 ms and measured (it takes 25 ms)
        assert_eq!(
            left_unrun(Some((ms(8), ms(18))), Some(ms(64)), unmeasured),
            None
        );
        assert_eq!(
            left_unrun(Some((ms(78), ms(87))), Some(ms(352)), None),
            None,
            "not live"
        );
        assert_eq!(
            estimated_cost(None, Some(ms(352))),
            None,
            "no learned rung measured yet: the first one is run"
        );
        assert_eq!(
            estimated_cost(Some((ms(78), ms(87))), None),
            None,
            "a manifest without export timings: measured as before"
        );
        assert_eq!(estimated_cost(Some((ms(78), ms(0))), Some(ms(352))), None);
        assert_eq!(median(&[ms(5), ms(1), ms(9), ms(3), ms(4)]), Some(ms(4)));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn a_frames_thread_count_reaches_the_inference_thread_and_only_it() {
        let mut thread = InferenceThread::spawn("test-inference").unwrap();
        let here = tch::get_num_threads();
        for threads in [1, 2, 1] {
            let seen = thread
                .run(
                    "threads",
                    move || {
                        use_threads(Some(threads));
                        tch::get_num_threads()
                    },
                    None,
                )
                .unwrap();
            assert_eq!(seen, threads);
        }
        // `None` leaves the thread's count as the last frame set it
        let kept = thread
            .run(
                "threads",
                || {
                    use_threads(None);
                    tch::get_num_threads()
                },
                None,
            )
            .unwrap();
        assert_eq!(kept, 1);
        assert_eq!(
            tch::get_num_threads(),
            here,
            "the caller's count is its own"
        );
    }
}
