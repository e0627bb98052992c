// SPDX-License-Identifier: MPL-2.0
//! One rung of a ladder: a TorchScript module on a device, called under `no_grad`.

use std::{
    collections::HashSet,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::ThreadId,
    time::{Duration, Instant},
};

use tch::{CModule, Device, Kind, Tensor};

use super::{EngineError, Objective, VariantSpec, bundle::first_line, native::NativeNet};

#[derive(Debug)]
pub struct Variant {
    name: String,
    scale: u32,
    /// The file it came from, as named in messages.
    file: String,
    /// Runs with fp16 weights (CUDA and `half: true` in the manifest).
    half: bool,
    objective: Objective,
    /// The manifest's `kind` is "bicubic": no weights, a fixed interpolation.
    weight_free: bool,
    /// Tile overlap in input pixels (the manifest's `receptive_field`).
    overlap: i64,
    /// The manifest's `cpu_ms_320x180`: what a frame cost on the exporting machine's CPU.
    reference_cpu_cost: Option<Duration>,
    device: Device,
    module: CModule,
    /// The direct CPU form of a thin plain-convolution rung ([`super::native`]), checked
    /// against the module at load; None where libtorch runs it.
    native: Option<NativeNet>,
    /// Whether [`Variant::upscale`] uses `native` (see [`Variant::set_direct`]).
    direct: AtomicBool,
    /// Why a rung of the direct path's shape runs in libtorch instead, for the log.
    direct_refused: Option<String>,
    /// The threads that ran it, per input size (see [`Variant::has_run_here`]).
    ran: Mutex<HashSet<(ThreadId, i64, i64)>>,
}

impl Variant {
    /// Wraps a loaded module: on CUDA, a `half` variant is cast to fp16 (its Fourier units keep
    /// computing in fp32 inside the module, per the bundle contract); on the CPU all run fp32.
    pub(super) fn new(
        spec: &VariantSpec,
        scale: u32,
        file: String,
        mut module: CModule,
        device: Device,
    ) -> Result<Variant, EngineError> {
        let half = spec.half && device.is_cuda();
        if half {
            // CModule::to has no Result form and panics on a libtorch error: contain it here.
            catch_unwind(AssertUnwindSafe(|| module.to(device, Kind::Half, false))).map_err(
                |_| EngineError::Module {
                    file: file.clone(),
                    problem: format!(
                        "could not be cast to fp16 on {device:?}; set \"half\": false"
                    ),
                },
            )?;
        }
        module.f_set_eval().map_err(|e| EngineError::Module {
            file: file.clone(),
            problem: first_line(&e),
        })?;
        // `LIGHTSRSCALE_DIRECT_CPU=avx2` keeps the direct form to its AVX2 kernels (and their
        // narrower rungs) on a CPU that has AVX-512
        let wide = std::env::var_os("LIGHTSRSCALE_DIRECT_CPU").is_none_or(|v| v != "avx2");
        let native = if device == Device::Cpu && spec.kind != "bicubic" {
            NativeNet::from_module(&module, scale, wide)
        } else {
            None
        };
        let (native, direct_refused) = match native {
            Some(net) => match direct_matches_module(&net, &module) {
                Ok(()) => (Some(net), None),
                Err(why) => (None, Some(why)),
            },
            None => (None, None),
        };
        let direct = native.is_some()
            && std::env::var_os("LIGHTSRSCALE_DIRECT_CPU").is_none_or(|v| v != "0");
        Ok(Variant {
            name: spec.name.clone(),
            scale,
            file,
            half,
            objective: spec.objective,
            weight_free: spec.kind == "bicubic",
            overlap: i64::from(spec.receptive_field),
            reference_cpu_cost: spec
                .cpu_ms_320x180
                .filter(|ms| ms.is_finite() && *ms > 0.0)
                .map(|ms| Duration::from_secs_f64(ms / 1e3)),
            device,
            module,
            native,
            direct: AtomicBool::new(direct),
            direct_refused,
            ran: Mutex::default(),
        })
    }

    /// Whether frames on the CPU run through the direct form of this rung ([`super::native`]:
    /// thin plain-convolution rungs on x86-64 with AVX2 and FMA) rather than libtorch.
    pub fn runs_direct(&self) -> bool {
        self.direct.load(Ordering::Relaxed)
    }

    /// Turns the direct CPU form on or off, where the rung has one (benchmarks compare the two;
    /// `LIGHTSRSCALE_DIRECT_CPU=0` starts every rung off). Returns whether it is now on.
    pub fn set_direct(&self, on: bool) -> bool {
        let on = on && self.native.is_some();
        self.direct.store(on, Ordering::Relaxed);
        on
    }

    /// The instruction set of the direct form's kernels ("AVX-512" or "AVX2"); None without
    /// a direct form.
    pub fn direct_isa(&self) -> Option<&'static str> {
        let net = self.native.as_ref()?;
        Some(if net.is_wide() { "AVX-512" } else { "AVX2" })
    }

    /// Runs the direct form's AVX-512 kernels (where the CPU has AVX-512F) or its AVX2 ones;
    /// they give the same values (benchmarks compare the two). Returns whether AVX-512 is now
    /// used.
    pub fn set_direct_wide(&self, on: bool) -> bool {
        self.native.as_ref().is_some_and(|net| net.set_wide(on))
    }

    /// Why a rung that has the direct form's shape runs in libtorch (its output on the test
    /// frame differed from the module's); None otherwise.
    pub fn direct_refused(&self) -> Option<&str> {
        self.direct_refused.as_deref()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn scale(&self) -> u32 {
        self.scale
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn is_half(&self) -> bool {
        self.half
    }

    /// What it was trained for (the manifest's `objective`).
    pub fn objective(&self) -> Objective {
        self.objective
    }

    /// A fixed interpolation without weights (the manifest's `kind` "bicubic"): the element
    /// may run it with GStreamer's own scaler instead of the module.
    pub fn is_weight_free(&self) -> bool {
        self.weight_free
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// What one 320x180 frame cost on the exporting machine's CPU (the manifest's
    /// `cpu_ms_320x180`), on the CPU only: the ratio of two rungs' figures says how their costs
    /// compare on another CPU and at another size, roughly (within about 30% on the shipped
    /// ladder).
    pub fn reference_cpu_cost(&self) -> Option<Duration> {
        self.reference_cpu_cost
            .filter(|_| self.device == Device::Cpu)
    }

    /// uint8 (N, H, W, 3) RGB, on any device and possibly strided -> uint8
    /// (N, H*scale, W*scale, 3) RGB on this variant's device.
    pub fn upscale(&self, frames: &Tensor) -> Result<Tensor, EngineError> {
        let frame = frames.size();
        let expected = self.output_size(frames, &frame)?;
        if let Some(net) = self.native.as_ref().filter(|_| self.runs_direct())
            && frames.device() == Device::Cpu
        {
            let threads = usize::try_from(tch::get_num_threads()).unwrap_or(1).max(1);
            let output = net
                .upscale(frames, threads)
                .map_err(|e| self.frame_error(&e, &frame))?;
            self.mark_run_here(frame[1], frame[2]);
            return Ok(output);
        }
        let input = frames
            .f_to_device(self.device)
            .map_err(|e| self.frame_error(&e, &frame))?;
        let _guard = tch::no_grad_guard();
        let output = self
            .module
            .forward_ts(&[input])
            .map_err(|e| self.frame_error(&e, &frame))?;
        let (size, kind) = (
            output.size(),
            output.f_kind().map_err(|e| self.forward_error(&e))?,
        );
        if size != expected || kind != Kind::Uint8 {
            return Err(EngineError::Forward {
                variant: self.describe(),
                problem: format!(
                    "returned {kind:?} of shape {size:?}, the bundle contract says Uint8 of shape \
                     {expected:?}; re-export the bundle with `lightsr export`"
                ),
            });
        }
        self.mark_run_here(frame[1], frame[2]);
        Ok(output)
    }

    fn mark_run_here(&self, height: i64, width: i64) {
        let here = (std::thread::current().id(), height, width);
        self.ran
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(here);
    }

    /// [`Variant::upscale`] in tiles of at most `tile` x `tile` input pixels, each read with
    /// the rung's receptive field around it and cropped back to its own area, so that a
    /// convolutional rung gives the same picture as untiled (to a grey level where float sums
    /// are ordered differently) with the memory of one tile. `tile` 0 or at least the frame:
    /// untiled.
    pub fn upscale_tiled(&self, frames: &Tensor, tile: i64) -> Result<Tensor, EngineError> {
        let size = frames.size();
        let &[n, h, w, c] = size.as_slice() else {
            return self.upscale(frames);
        };
        if tile <= 0 || (h <= tile && w <= tile) {
            return self.upscale(frames);
        }
        let s = i64::from(self.scale);
        let out = Tensor::f_empty([n, h * s, w * s, c], (Kind::Uint8, self.device))
            .map_err(|e| self.frame_error(&e, &size))?;
        let span = |start: i64, len: i64, total: i64| {
            let from = (start - self.overlap).max(0);
            let to = (start + len + self.overlap).min(total);
            (from, to - from, start - from)
        };
        for y in (0..h).step_by(tile as usize) {
            let th = tile.min(h - y);
            let (iy, ih, oy) = span(y, th, h);
            for x in (0..w).step_by(tile as usize) {
                let tw = tile.min(w - x);
                let (ix, iw, ox) = span(x, tw, w);
                let part = frames
                    .f_narrow(1, iy, ih)
                    .and_then(|t| t.f_narrow(2, ix, iw))
                    .map_err(|e| self.forward_error(&e))?;
                let up = self.upscale(&part)?;
                let keep = up
                    .f_narrow(1, oy * s, th * s)
                    .and_then(|t| t.f_narrow(2, ox * s, tw * s))
                    .map_err(|e| self.forward_error(&e))?;
                out.f_narrow(1, y * s, th * s)
                    .and_then(|t| t.f_narrow(2, x * s, tw * s))
                    .and_then(|mut t| t.f_copy_(&keep))
                    .map_err(|e| self.frame_error(&e, &size))?;
            }
        }
        self.mark_run_here(h, w); // asked by the whole frame's size
        Ok(out)
    }

    /// Whether this thread has run it on frames of this size. On CUDA a rung's first frame on
    /// a thread is slow even after other threads ran it: libtorch keeps cuDNN's execution plans
    /// per thread and per shape (on an H200, 230 ms for the x4 fourier rung's first 320x180
    /// frame on a new thread, against 5 ms once there; `tests/gpu/threads.py`).
    pub fn has_run_here(&self, height: i64, width: i64) -> bool {
        self.has_run_on(std::thread::current().id(), height, width)
    }

    /// Whether `thread` has run it on frames of this size ([`Variant::has_run_here`]).
    pub fn has_run_on(&self, thread: ThreadId, height: i64, width: i64) -> bool {
        self.ran
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(thread, height, width))
    }

    /// Runs one blank frame of the given size, so the first real frame does not pay for
    /// libtorch's lazy initialisation; returns how long it took.
    pub fn warm_up(&self, height: i64, width: i64) -> Result<Duration, EngineError> {
        let start = Instant::now();
        let blank = Tensor::f_zeros([1, height, width, 3], (Kind::Uint8, self.device))
            .map_err(|e| self.forward_error(&e))?;
        // Reading the result back forces the (possibly asynchronous, on CUDA) work to finish.
        let output = self.upscale(&blank)?;
        output
            .f_sum(Kind::Int64)
            .and_then(|s| s.f_int64_value(&[]))
            .map_err(|e| self.forward_error(&e))?;
        Ok(start.elapsed())
    }

    fn output_size(&self, frames: &Tensor, size: &[i64]) -> Result<Vec<i64>, EngineError> {
        let kind = frames.f_kind().map_err(|e| self.forward_error(&e))?;
        match *size {
            [n, h, w, 3] if kind == Kind::Uint8 && n > 0 && h > 0 && w > 0 => {
                let s = i64::from(self.scale);
                Ok(vec![n, h * s, w * s, 3])
            }
            _ => Err(EngineError::Forward {
                variant: self.describe(),
                problem: format!(
                    "input is {kind:?} of shape {size:?}, expected Uint8 (N, H, W, 3)"
                ),
            }),
        }
    }

    fn describe(&self) -> String {
        format!("{} (x{}, {})", self.name, self.scale, self.file)
    }

    fn forward_error(&self, e: &tch::TchError) -> EngineError {
        EngineError::Forward {
            variant: self.describe(),
            problem: torch_cause(&e.to_string()),
        }
    }

    /// A failed forward of `frame` (N, H, W, 3): out of memory is named as such, with the
    /// allocation, the frame and what to do about it.
    fn frame_error(&self, e: &tch::TchError, frame: &[i64]) -> EngineError {
        let message = e.to_string();
        let problem = match (out_of_memory(&message), frame) {
            (Some(allocation), &[n, h, w, _]) => format!(
                "out of memory on {:?}: {allocation} failed while upscaling {n} frame(s) of {w}x{h} \
                 x{}; use a lighter rung (variant= or max-variant=), a smaller scale, or tiles \
                 (tile-size=512) (libtorch: {})",
                self.device,
                self.scale,
                torch_cause(&message)
            ),
            _ => torch_cause(&message),
        };
        EngineError::Forward {
            variant: self.describe(),
            problem,
        }
    }
}

/// Whether `net` gives the module's picture on a test frame (odd sizes, every grey level,
/// edges and texture): to a grey level where float sums round differently, on at most 1% of
/// the values.
fn direct_matches_module(net: &NativeNet, module: &CModule) -> Result<(), String> {
    let (h, w) = (29i64, 43i64);
    let pixels: Vec<u8> = (0..h * w * 3)
        .map(|i| {
            let (y, x, c) = (i / (w * 3), i / 3 % w, i % 3);
            let ramp = (x * 6 + y * 3 + c * 40) % 256;
            let noise = (i * 2_654_435_761 % 97) - 48;
            let edge = if (x / 7 + y / 5) % 2 == 0 { 60 } else { -60 };
            (ramp + noise + edge).clamp(0, 255) as u8
        })
        .collect();
    let input = Tensor::f_from_slice(&pixels)
        .and_then(|t| t.f_view([1, h, w, 3]))
        .map_err(|e| first_line(&e))?;
    let reference = {
        let _guard = tch::no_grad_guard();
        module
            .forward_ts(&[&input])
            .map_err(|e| torch_cause(&e.to_string()))?
    };
    let direct = net.upscale(&input, 2).map_err(|e| first_line(&e))?;
    if reference.size() != direct.size() {
        return Err(format!(
            "the direct form gave shape {:?}, the module {:?}",
            direct.size(),
            reference.size()
        ));
    }
    let compare = || -> Result<(i64, i64), tch::TchError> {
        let diff = reference
            .f_to_kind(Kind::Int16)?
            .f_sub(&direct.f_to_kind(Kind::Int16)?)?
            .f_abs()?;
        let worst = diff.f_max()?.f_int64_value(&[])?;
        let off = diff.f_gt(0)?.f_sum(Kind::Int64)?.f_int64_value(&[])?;
        Ok((worst, off))
    };
    let (worst, off) = compare().map_err(|e| first_line(&e))?;
    let total = i64::try_from(direct.numel()).unwrap_or(i64::MAX);
    if worst > 1 || off * 100 > total {
        return Err(format!(
            "the direct form differs from the module on a test frame: at most {worst} grey \
             levels, {off} of {total} values differ"
        ));
    }
    Ok(())
}

/// What libtorch says went wrong. A TorchScript failure's first line only says "The following
/// operation failed in the TorchScript interpreter."; the cause is the last `...Error: ` line
/// after the traceback.
pub(crate) fn torch_cause(message: &str) -> String {
    let cause = message
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| {
            line.split_once(": ")
                .is_some_and(|(head, _)| head.ends_with("Error") && !head.contains(' '))
        })
        .map(|line| line.split_once(": ").map_or(line, |(_, rest)| rest));
    cause.map_or_else(|| first_line(&message), str::to_string)
}

/// `Some("an allocation of 995.3 MB")` when `message` is libtorch's out-of-memory error (CPU
/// allocator or CUDA caching allocator), else None.
pub(crate) fn out_of_memory(message: &str) -> Option<String> {
    let oom = [
        "out of memory",
        "can't allocate memory",
        "not enough memory",
    ];
    if !oom.iter().any(|m| message.contains(m)) {
        return None;
    }
    let amount = ["tried to allocate ", "Tried to allocate "]
        .iter()
        .find_map(|key| message.split_once(key).map(|(_, rest)| rest))
        .and_then(|rest| {
            rest.split([' ', '('])
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
                .into()
        })
        .map(|a: String| a.trim().trim_end_matches('.').to_string());
    Some(match amount.as_deref() {
        Some(a) if a.ends_with(" bytes") => match a.trim_end_matches(" bytes").parse::<f64>() {
            Ok(bytes) if bytes >= 1e9 => format!("an allocation of {:.2} GB", bytes / 1e9),
            Ok(bytes) if bytes >= 1e6 => format!("an allocation of {:.1} MB", bytes / 1e6),
            Ok(bytes) => format!("an allocation of {bytes} bytes"),
            Err(_) => format!("an allocation of {a}"),
        },
        Some(a) if !a.is_empty() => format!("an allocation of {a}"),
        _ => "an allocation".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPU_OOM: &str = "The following operation failed in the TorchScript interpreter.\n\
        Traceback of TorchScript, serialized code (most recent call last):\n\
          File \"code/__torch__/lightsr/deploy.py\", line 38, in forward\n\
        def add(a : float, b : Tensor) -> Tensor:\n  return b + a\n\
        RuntimeError: [enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't \
        allocate memory: you tried to allocate 995328000 bytes. Error code 12 (Cannot allocate memory)\n";
    const CUDA_OOM: &str = "The following operation failed in the TorchScript interpreter.\n\
        RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.15 GiB total \
        capacity; 77.02 GiB already allocated)\n";

    #[test]
    fn the_cause_of_a_torchscript_failure_is_its_last_error_line() {
        assert!(torch_cause(CPU_OOM).starts_with("[enforce fail at alloc_cpu.cpp:127]"));
        assert!(torch_cause(CPU_OOM).contains("995328000 bytes"));
        assert_eq!(
            torch_cause("Expected 4-dimensional input\nmore"),
            "Expected 4-dimensional input"
        );
        assert_eq!(
            torch_cause("The following operation failed.\nValueError: bad value"),
            "bad value"
        );
    }

    #[test]
    fn out_of_memory_is_recognised_with_its_allocation() {
        assert_eq!(
            out_of_memory(CPU_OOM).as_deref(),
            Some("an allocation of 995.3 MB")
        );
        assert_eq!(
            out_of_memory(CUDA_OOM).as_deref(),
            Some("an allocation of 2.00 GiB")
        );
        assert_eq!(out_of_memory("RuntimeError: shape mismatch"), None);
        // the direct CPU form's own buffers (engine::native)
        let direct =
            "out of memory: the direct CPU form's buffers: you tried to allocate 2500000 bytes";
        assert_eq!(
            out_of_memory(direct).as_deref(),
            Some("an allocation of 2.5 MB")
        );
        let small = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 4096 bytes.";
        assert_eq!(
            out_of_memory(small).as_deref(),
            Some("an allocation of 4096 bytes")
        );
    }
}
