// SPDX-License-Identifier: MPL-2.0
//! A direct CPU path for the plain-convolution rungs in phase form (x86-64 with AVX2 and FMA;
//! AVX-512 kernels where the CPU has AVX-512F).
//!
//! The light rungs are thin: 6-28 channels at input resolution, a tail of `3 * s * s` channels
//! and the bicubic skip. oneDNN runs such layers far below the CPU's peak (x4 `dense-pruned`:
//! 27 ms a 320x180 frame for 0.37 GMACs on a 2-core EPYC that does 72 GMAC/s in a dense
//! 64-channel conv), so this module runs them itself: each 3x3 convolution as register-blocked
//! FMAs, with AVX2 over 2 strips of 8 pixels and blocks of up to 4 output channels, with AVX-512
//! over 4 strips of 16 pixels and up to 6 channels or 3 strips and 7-8 channels (module
//! `avx512`), read from zero-bordered rows; the bicubic skip separably (4 taps across, 4 down,
//! the vertical pass in the tail's epilogue); clamp, truncation and packing to bytes in the same
//! epilogue, then the pixel shuffle as a byte transpose. Each thread takes a band of output rows
//! and makes it through every layer row by row, each layer's rows in a ring of a few that stays
//! in the cache (`NativeNet::run_band`); neighbouring bands hand each other the rows of their
//! common edge, layer by layer (`Exchange`), rather than each making the other's. Both kernel sets compute
//! every value with the same operations in the same order (identical bytes). Bodies up to 16 channels wide with AVX2 ([`MAX_WIDTH`]), up to
//! 32 with AVX-512: oneDNN does better on wider ones.
//!
//! It computes exactly what `lightsr.deploy.PhaseDeploy` computes, from the TorchScript
//! module's own parameters, and [`NativeNet::from_module`] only accepts a module whose
//! parameters are exactly that shape (anything else, channel attention or SepConvs or a
//! half-resolution body, stays with libtorch). The variant checks it against the module on a
//! test frame before using it (`Variant::new`).

use std::{
    ops::Range,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use tch::{CModule, Kind, Tensor};

/// One 3x3 convolution with zero padding 1: weights `[cout][cin][9]`, bias `[cout]`.
#[derive(Debug)]
struct Conv3 {
    cin: usize,
    cout: usize,
    weights: Vec<f32>,
    bias: Vec<f32>,
}

#[derive(Debug)]
struct Block {
    conv1: Conv3,
    /// PReLU slopes, one per channel of `conv1`'s output.
    slopes: Vec<f32>,
    conv2: Conv3,
}

/// The rung's layers, read from its TorchScript parameters.
#[derive(Debug)]
pub(super) struct NativeNet {
    scale: usize,
    width: usize,
    mean_weights: [[f32; 3]; 3],
    mean_bias: [f32; 3],
    initial: Conv3,
    blocks: Vec<Block>,
    /// Output channels in (colour, j, i) order ([`plane_major`]), the rounding's +0.5 in its
    /// bias.
    tail: Conv3,
    /// Per output phase, the 5 bicubic taps at input offsets -2..=2 (`bicubic_phase_kernel`).
    taps: Vec<[f32; 5]>,
    /// Whether the convolutions use the AVX-512 kernels (16 pixels a vector) rather than the
    /// AVX2 ones; only ever true where the CPU has AVX-512F ([`NativeNet::set_wide`]).
    wide: AtomicBool,
    /// Buffers of the last few frame sizes, most recent last.
    workspaces: Mutex<Vec<Workspace>>,
}

/// How many frame sizes keep their buffers (a tiled frame has up to 4 tile sizes), within
/// `KEPT_BYTES` beside the latest size's (the rings of a band take a few MB at most: about
/// 0.7 MB for x4 `dense-pruned` at 320 columns, 7 MB for x4 `dense` at 1920; a failed
/// allocation is an error, `try_reserve_exact`).
const KEPT_WORKSPACES: usize = 4;
const KEPT_BYTES: usize = 256 << 20;

/// Whether this CPU has the AVX-512 kernels' instructions (AVX-512F).
pub(super) fn wide_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        supported() && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The widest body this path takes with its AVX2 kernels, and with its AVX-512 ones (see
/// `from_module`).
const MAX_WIDTH: usize = 16;
const MAX_WIDTH_WIDE: usize = 32;

/// Whether this CPU can run the direct path.
pub(super) fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn values(t: &Tensor) -> Option<Vec<f32>> {
    let flat = t
        .f_detach()
        .and_then(|t| t.f_to_kind(Kind::Float))
        .and_then(|t| t.f_contiguous())
        .and_then(|t| t.f_flatten(0, -1))
        .ok()?;
    let n = flat.numel();
    let mut v = vec![0f32; n];
    flat.f_copy_data(&mut v, n).ok()?;
    Some(v)
}

/// Keys' cubic convolution kernel with torch's A = -0.75.
fn cubic(t: f64) -> f64 {
    let a = -0.75;
    let t = t.abs();
    if t <= 1.0 {
        ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    } else if t < 2.0 {
        ((a * t - 5.0 * a) * t + 8.0 * a) * t - 4.0 * a
    } else {
        0.0
    }
}

/// The first of phase `phase`'s 4 taps that can be non-zero, of its 5 at offsets -2..=2
/// (`phase_taps`: the phase's offset d = (phase + 1/2) / scale - 1/2 has its 4 cubic taps at
/// offsets floor(d) - 1..=floor(d) + 2; the other tap is exactly 0 and is skipped).
fn window(phase: usize, scale: usize) -> usize {
    usize::from(2 * phase + 1 >= scale)
}

/// Per phase of an upscale by `scale`, the taps at offsets -2..=2 of torch's bicubic
/// interpolation (align_corners=False): `lightsr.deploy.bicubic_phase_kernel`'s factors.
fn phase_taps(scale: usize) -> Vec<[f32; 5]> {
    (0..scale)
        .map(|phase| {
            let d = (phase as f64 + 0.5) / scale as f64 - 0.5;
            let floor = d.floor();
            let frac = d - floor;
            let mut taps = [0f64; 5];
            for k in -1i64..=2 {
                let index = usize::try_from(floor as i64 + k + 2).unwrap_or(0).min(4);
                taps[index] += cubic(k as f64 - frac);
            }
            taps.map(|t| t as f32)
        })
        .collect()
}

impl NativeNet {
    /// The direct form of `module`, a `PhaseDeploy` rung of plain 3x3 convolutions at input
    /// resolution, with the AVX-512 kernels if `wide` (and the CPU has them); None for any
    /// other module (it stays with libtorch) or on a CPU without AVX2 and FMA.
    pub(super) fn from_module(module: &CModule, scale: u32, wide: bool) -> Option<NativeNet> {
        let wide = wide && wide_supported();
        if !supported() || !(2..=4).contains(&scale) {
            return None;
        }
        let params = module.named_parameters().ok()?;
        let get = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, t)| t);
        let shape = |name: &str| get(name).map(Tensor::size);
        let conv3 = |prefix: &str, cin: usize| -> Option<Conv3> {
            let size = shape(&format!("{prefix}.weight"))?;
            let cout = usize::try_from(*size.first()?).ok()?;
            if size != [cout as i64, cin as i64, 3, 3] {
                return None;
            }
            let bias = values(get(&format!("{prefix}.bias"))?)?;
            (bias.len() == cout).then_some(())?;
            Some(Conv3 {
                cin,
                cout,
                weights: values(get(&format!("{prefix}.weight"))?)?,
                bias,
            })
        };
        let scale = scale as usize;
        if shape("sub_mean.weight")? != [3, 3, 1, 1] {
            return None;
        }
        let mean = values(get("sub_mean.weight")?)?;
        let mean_bias = values(get("sub_mean.bias")?)?;
        let initial = conv3("initial.0", 3)?;
        let width = initial.cout;
        let mut blocks = Vec::new();
        let mut expected = 6; // the sub_mean, initial and tail weights and biases
        while let Some(size) = shape(&format!("blocks1.{}.0.weight", blocks.len())) {
            let i = blocks.len();
            let mid = usize::try_from(*size.first()?).ok()?;
            let conv1 = conv3(&format!("blocks1.{i}.0"), width)?;
            let slopes = values(get(&format!("blocks1.{i}.1.weight"))?)?;
            let slopes = match slopes.len() {
                1 => vec![slopes[0]; mid],
                n if n == mid => slopes,
                _ => return None,
            };
            let conv2 = conv3(&format!("blocks2.{i}.0"), mid)?;
            (conv2.cout == width).then_some(())?;
            blocks.push(Block {
                conv1,
                slopes,
                conv2,
            });
            expected += 5;
        }
        let tail = conv3("tail", width)?;
        // Wider bodies are where oneDNN does well. With AVX2 on a Zen 3 EPYC, x4 `dense-wide`
        // (width 28) ran at 0.88x its libtorch speed in this form, x4 `dense` (16) at 1.2x,
        // `dense-pruned` (7) at 1.8-1.9x; with AVX-512 on a Xeon, x4 `dense-wide` at 1.6x,
        // x2 `dense-wide` at 2.0x.
        if width > if wide { MAX_WIDTH_WIDE } else { MAX_WIDTH } {
            return None;
        }
        // Nothing else: any other parameter (channel attention, a SepConv, a Fourier unit) is
        // a layer this path does not compute.
        if blocks.is_empty() || tail.cout != 3 * scale * scale || params.len() != expected {
            return None;
        }
        let mut mean_weights = [[0f32; 3]; 3];
        for (c, row) in mean_weights.iter_mut().enumerate() {
            row.copy_from_slice(&mean[c * 3..c * 3 + 3]);
        }
        Some(NativeNet {
            scale,
            width,
            mean_weights,
            mean_bias: mean_bias.try_into().ok()?,
            initial,
            blocks,
            tail: plane_major(tail, scale),
            taps: phase_taps(scale),
            wide: AtomicBool::new(wide),
            workspaces: Mutex::default(),
        })
    }

    /// Uses the AVX-512 kernels (where the CPU has them) or the AVX2 ones; both compute every
    /// value with the same operations in the same order. Returns whether AVX-512 is now used.
    /// A switch for benchmarks and tests: a body over [`MAX_WIDTH`] (accepted for AVX-512) then
    /// runs on the AVX2 kernels too, with the same bytes, slower than libtorch would.
    pub(super) fn set_wide(&self, on: bool) -> bool {
        let on = on && wide_supported();
        self.wide.store(on, Ordering::Relaxed);
        on
    }

    /// Whether the AVX-512 kernels are in use.
    pub(super) fn is_wide(&self) -> bool {
        self.wide.load(Ordering::Relaxed)
    }

    /// `frames`, uint8 (N, H, W, 3) RGB on the CPU, upscaled: uint8 (N, H*s, W*s, 3), on
    /// `threads` threads (this one and `threads - 1` more).
    pub(super) fn upscale(&self, frames: &Tensor, threads: usize) -> Result<Tensor, tch::TchError> {
        let input = frames.f_contiguous()?;
        let size = input.size();
        let (kind, device) = (input.f_kind()?, input.device());
        let (n, h, w) = match *size.as_slice() {
            [n, h, w, 3]
                if n > 0 && h > 0 && w > 0 && kind == Kind::Uint8 && device == tch::Device::Cpu =>
            {
                (n, h, w)
            }
            _ => {
                return Err(tch::TchError::Shape(format!(
                    "expected uint8 (N, H, W, 3) on the CPU, got {kind:?} {size:?} on {device:?}"
                )));
            }
        };
        let s = self.scale as i64;
        let output = Tensor::f_empty([n, h * s, w * s, 3], (Kind::Uint8, tch::Device::Cpu))?;
        let (n, h, w) = (n as usize, h as usize, w as usize);
        let frame_in = h * w * 3;
        let frame_out = frame_in * self.scale * self.scale;
        // SAFETY: both tensors are contiguous uint8 on the CPU with exactly these sizes, and
        // live across the slices' use; `output` is ours alone.
        let (src, dst) = unsafe {
            (
                std::slice::from_raw_parts(input.data_ptr() as *const u8, n * frame_in),
                std::slice::from_raw_parts_mut(output.data_ptr() as *mut u8, n * frame_out),
            )
        };
        // a kept workspace of this size (tiles of a frame come in a few sizes), or a new one;
        // two threads running this rung at once each take their own
        let kept = {
            let mut kept = self.workspaces.lock().unwrap_or_else(|e| e.into_inner());
            kept.iter()
                .position(|ws| ws.fits(h, w))
                .map(|i| kept.remove(i))
        };
        let mut ws = match kept {
            Some(ws) => ws,
            None => Workspace::new(h, w),
        };
        // bands of `MIN_BAND_ROWS` at least: each layer of a band waits at its edges for its
        // neighbours' rows (`Exchange`), which thinner bands would do for little work
        let threads = threads.clamp(1, (h / MIN_BAND_ROWS).max(1));
        ws.reserve(self, threads)?;
        for (frame, out) in src
            .chunks_exact(frame_in)
            .zip(dst.chunks_exact_mut(frame_out))
        {
            self.run_frame(&mut ws, frame, out, threads);
        }
        let mut kept = self.workspaces.lock().unwrap_or_else(|e| e.into_inner());
        kept.push(ws);
        if kept.len() > 1 {
            let sizes: Vec<usize> = kept.iter().map(Workspace::bytes).collect();
            kept.drain(..evicted(&sizes));
        }
        Ok(output)
    }

    fn run_frame(&self, ws: &mut Workspace, frame: &[u8], out: &mut [u8], threads: usize) {
        let geometry = Geometry {
            wide: self.is_wide(),
            ..ws.geometry
        };
        let out = Shared(out.as_mut_ptr());
        // this frame's rows in the exchange are those flagged with its number
        ws.frames += 1;
        let edges = Edges {
            exchange: &ws.exchange,
            frame: ws.frames,
        };
        let edges = &edges;
        // one set of rings and row buffers per band, each moved to the thread that runs it
        let count = threads.min(ws.bands.len());
        let bands = &mut ws.bands[..count];
        let threads = bands.len();
        // On the calling thread's OpenMP team where there is one (`crate::omp`): member t runs
        // band t with rings t (the team has at most `threads` members). A panic in a band
        // aborts: none is expected (every index is within the rings' sizes), and the element
        // cannot hand a frame on half made.
        let sets = Shared(bands.as_mut_ptr());
        if threads > 1
            && crate::omp::parallel(threads, &|t, n| {
                // the whole `Shared` (Sync), not its raw-pointer field, which the closure would
                // otherwise capture alone
                let sets = &sets;
                // SAFETY: member t alone uses set t (t < n <= threads, the sets' count), and
                // writes only the output rows of band t of n.
                let band = || unsafe {
                    let rings = &mut *sets.0.add(t);
                    self.run_band(t, n, &geometry, frame, out, rings, edges)
                };
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(band)).is_err() {
                    std::process::abort();
                }
            })
        {
            return;
        }
        let mut sets = bands.iter_mut();
        let own = sets.next().expect("one per thread");
        // The bands are cut for the helpers that did start (a refused thread, at a process
        // limit, must leave its rows to the others): each helper waits for its band and the
        // count before it starts, and returns if it is told none.
        std::thread::scope(|scope| {
            let mut helpers = Vec::new();
            for rings in sets {
                let (tell, told) = std::sync::mpsc::channel::<(usize, usize)>();
                let started = std::thread::Builder::new()
                    .name("lightsr-direct".into())
                    .spawn_scoped(scope, move || {
                        let Ok((t, threads)) = told.recv() else {
                            return;
                        };
                        // SAFETY: see `run_band`; band t of `threads`, rings of its own.
                        unsafe { self.run_band(t, threads, &geometry, frame, out, rings, edges) }
                    });
                if started.is_err() {
                    break;
                }
                helpers.push(tell);
            }
            let threads = helpers.len() + 1;
            for (t, tell) in helpers.iter().enumerate() {
                // a helper that started is waiting for this; it cannot have gone
                let _ = tell.send((t + 1, threads));
            }
            // SAFETY: see `run_band`.
            unsafe { self.run_band(0, threads, &geometry, frame, out, own, edges) }
        });
    }

    /// Output rows of band `t` of `threads`, every layer row by row: at step k, conv layer d
    /// (0 the first, then two a block, the tail last) makes its row k - d from the rows its
    /// input layer made up to this step, into a ring of a few rows that stays in the cache
    /// (a whole frame's planes, one layer at a time, did not: their 2 MB at 320x180 and 7
    /// channels exceed a core's L2, and the convolutions ran at 55-65% of their speed on data in
    /// L1). Each layer makes this band's rows only: the row past an edge that its successor
    /// reads is the neighbouring band's, handed over through `edges` (a band used to make
    /// `depth - 1 - d` rows past each edge at layer d itself: 12% more rows for a 22-layer rung
    /// in 2 bands of 90). Even bands go down and odd ones up, so that two neighbours reach their
    /// common edge together (both at their first rows or both at their last) and each waits
    /// there for a row its neighbour has just made; rows -1 and h of every ring are made zeros
    /// (the convolutions' padding).
    ///
    /// # Safety
    /// `rings` are `g`'s size, for this net; the output is the frame's, and this band's output
    /// rows are written by this thread alone; `edges` holds `threads - 1` edges of `g`'s size for
    /// this net, and every band of `threads` runs at the same time (each waits for its
    /// neighbours).
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_band(
        &self,
        t: usize,
        threads: usize,
        g: &Geometry,
        frame: &[u8],
        out: Shared<u8>,
        rings: &mut Rings,
        edges: &Edges,
    ) {
        let rows = band(g.h, t, threads);
        if rows.is_empty() {
            return;
        }
        let (y0, y1, h) = (rows.start as isize, rows.end as isize, g.h as isize);
        let blocks = self.blocks.len();
        let depth = 2 * blocks + 2;
        let down = t.is_multiple_of(2);
        // the edges with the band above and the band below, by their index
        let above = t.checked_sub(1);
        let below = (t + 1 < threads).then_some(t);
        let means = (y0 - 1).max(0)..(y1 + 1).min(h);
        let own = y0..y1;
        let Rings {
            bufs,
            padded,
            bytes,
            ..
        } = rings;
        let bufs = &*bufs;
        // the rows conv layer d makes (0 the first, then two a block)
        let output = |d: usize| {
            if d == 0 {
                bufs.features
            } else if d % 2 == 1 {
                bufs.middles[d / 2]
            } else {
                bufs.outs[d / 2 - 1]
            }
        };
        // Before a layer makes an edge row, the row past the edge of its input layer (`d`):
        // the neighbour's, waited for.
        // SAFETY (of both closures' calls): `edges` as this function's contract, the row
        // past the edge is inside the ring (-1..=h) and no row of the ring this band still
        // reads (`Exchange::fetch`).
        let fetch = |d: usize, r: isize| unsafe {
            if r == y0
                && let Some(e) = above
            {
                edges.fetch(e, Side::Upper, d, output(d), y0 - 1);
            }
            if r == y1 - 1
                && let Some(e) = below
            {
                edges.fetch(e, Side::Lower, d, output(d), y1);
            }
        };
        // After a layer made an edge row: handed to the neighbour.
        let publish = |d: usize, r: isize| unsafe {
            if r == y0
                && let Some(e) = above
            {
                edges.publish(e, Side::Lower, d, output(d), r);
            }
            if r == y1 - 1
                && let Some(e) = below
            {
                edges.publish(e, Side::Upper, d, output(d), r);
            }
        };
        // skip rows (input rows r - 2, replicated at the edges) of the band's tail rows: a tail
        // row y reads y..=y + 4
        let mut next_skip = if down { y0 } else { y1 + 3 };
        // Down: at step k, the mean row k + 1, layer d's row k - d, the tail's k - depth + 1;
        // up, mirrored: k - 1, k + d and k + depth - 1, k from y1 + 1 down. Either way each
        // layer makes the row its successor needs next, within the same step.
        let first = if down { y0 - 2 } else { y1 + 1 };
        let sign = if down { 1 } else { -1 };
        for k in 0..(y1 - y0) + depth as isize + 1 {
            let step = first + sign * k;
            // SAFETY (throughout): every row index below is in -1..=h, the rings' rows are
            // `g`'s, and each ring keeps enough rows for its readers (`Rings::new`).
            unsafe {
                let r = step + sign;
                if means.contains(&r) {
                    self.sub_mean(frame, bufs.mean, g, r as usize, padded);
                } else if (r == -1 && means.start == 0) || (r == h && means.end == h) {
                    bufs.mean.zero_row(r);
                }
                for d in 0..depth - 1 {
                    let r = step - sign * d as isize;
                    let made = output(d);
                    if !own.contains(&r) {
                        if (r == -1 && y0 == 0) || (r == h && y1 == h) {
                            made.zero_row(r);
                        }
                        continue;
                    }
                    let y = r as usize;
                    if d == 0 {
                        conv_row(&self.initial, bufs.mean, made, g, y, Epilogue::Plain);
                        publish(d, r);
                        continue;
                    }
                    fetch(d - 1, r);
                    let b = (d - 1) / 2;
                    let block = &self.blocks[b];
                    let input = if b == 0 {
                        bufs.features
                    } else {
                        bufs.outs[b - 1]
                    };
                    if d % 2 == 1 {
                        let epilogue = Epilogue::PRelu(&block.slopes);
                        conv_row(&block.conv1, input, made, g, y, epilogue);
                    } else {
                        let also = (b + 1 == blocks).then_some(bufs.features);
                        let epilogue = Epilogue::Add(input, also);
                        conv_row(&block.conv2, bufs.middles[b], made, g, y, epilogue);
                    }
                    publish(d, r);
                }
                let y = step - sign * (depth - 1) as isize;
                if y < y0 || y >= y1 {
                    continue;
                }
                if down {
                    while next_skip <= y + 4 {
                        self.horizontal_skip(frame, bufs.across, g, next_skip as usize, padded);
                        next_skip += 1;
                    }
                } else {
                    while next_skip >= y {
                        self.horizontal_skip(frame, bufs.across, g, next_skip as usize, padded);
                        next_skip -= 1;
                    }
                }
                fetch(depth - 2, y);
                let last = bufs.outs[blocks - 1];
                self.tail(last, bufs.across, out.0, g, y as usize, bytes);
            }
        }
        debug_assert!(next_skip == if down { y1 + 4 } else { y0 - 1 });
    }

    /// `sub_mean` (a 1x1 conv) of the frame's row `y` into its row of `mean`.
    unsafe fn sub_mean(&self, frame: &[u8], mean: Buf, g: &Geometry, y: usize, padded: &mut [f32]) {
        let w = g.w;
        let colours = padded_rows(&frame[y * w * 3..(y + 1) * w * 3], padded);
        for c in 0..3 {
            let [m0, m1, m2] = self.mean_weights[c];
            let b = self.mean_bias[c];
            // SAFETY: row y of plane c, columns 0..w: inside the ring's row.
            let row = unsafe { std::slice::from_raw_parts_mut(mean.at(c, y, 0), w) };
            let [r, gr, bl] = colours.map(|p| &p[2..2 + w]);
            for (((v, r), gr), bl) in row.iter_mut().zip(r).zip(gr).zip(bl) {
                *v = m0 * r + m1 * gr + m2 * bl + b;
            }
        }
    }

    /// The skip's horizontal pass for skip row `r`: for each colour c and column phase j, row
    /// `r` of plane (c, j) holds input row `r - 2` (replicated at the edges) filtered by phase
    /// j's taps.
    unsafe fn horizontal_skip(
        &self,
        frame: &[u8],
        across: Buf,
        g: &Geometry,
        r: usize,
        padded: &mut [f32],
    ) {
        let s = self.scale;
        let (h, w) = (g.h as i64, g.w);
        let y = (r as i64 - 2).clamp(0, h - 1) as usize;
        let colours = padded_rows(&frame[y * w * 3..(y + 1) * w * 3], padded);
        for (c, colour) in colours.iter().enumerate() {
            for (j, taps) in self.taps.iter().enumerate() {
                let first = window(j, s);
                let taps: &[f32; 4] = taps[first..first + 4].try_into().expect("4 taps");
                // SAFETY: row r of plane (c, j), columns 0..round_up(w, 8) <= stride.
                unsafe {
                    filter_row(
                        &colour[first..],
                        taps,
                        across.ptr.add((c * s + j) * across.plane + across.row(r)),
                        w,
                    )
                };
            }
        }
    }

    /// The tail conv of `input`'s row `y`, plus the skip's vertical pass, clamped and
    /// truncated, written pixel-shuffled into output rows y * s..(y + 1) * s.
    unsafe fn tail(
        &self,
        input: Buf,
        across: Buf,
        out: *mut u8,
        g: &Geometry,
        y: usize,
        bytes: &mut [u8],
    ) {
        let s = self.scale;
        let epilogue = Epilogue::Tail {
            across,
            taps: &self.taps,
            scale: s,
            bytes: bytes.as_mut_ptr(),
        };
        // SAFETY: as `conv_row`; `bytes` holds `channels` rows of `stride` bytes.
        unsafe { conv_row(&self.tail, input, Buf::NONE, g, y, epilogue) };
        let out_w = g.w * s * 3;
        for i in 0..s {
            // SAFETY: output row y*s + i of this frame, ours alone (row band).
            let row =
                unsafe { std::slice::from_raw_parts_mut(out.add((y * s + i) * out_w), out_w) };
            let phase = &bytes[i * s * 3 * g.stride..(i + 1) * s * 3 * g.stride];
            interleave(phase, g.stride, g.w, row);
        }
    }
}

/// The tail's output channels from PhaseDeploy's (i, j, colour) order (row phase, column
/// phase, colour) into (colour, j, i): the s row phases of skip plane (colour, j) together,
/// whose epilogue then loads the plane's 5 rows once for all s of them (`Epilogue::Tail`).
fn plane_major(conv: Conv3, s: usize) -> Conv3 {
    let taps = conv.cin * 9;
    let from = |n: usize| shuffle_row(n / s, n % s, s);
    Conv3 {
        weights: (0..conv.cout)
            .flat_map(|n| &conv.weights[from(n) * taps..(from(n) + 1) * taps])
            .copied()
            .collect(),
        bias: (0..conv.cout).map(|n| conv.bias[from(n)]).collect(),
        ..conv
    }
}

/// One row of RGB pixels as three rows of floats, one a colour, each replicate-padded by 2 on
/// the left and to its end on the right: `padded` is cut into three equal rows (their length
/// `Rings::new`), which are returned.
fn padded_rows<'a>(pixels: &[u8], padded: &'a mut [f32]) -> [&'a [f32]; 3] {
    let w = pixels.len() / 3;
    let len = padded.len() / 3;
    let (r, rest) = padded.split_at_mut(len);
    let (g, b) = rest.split_at_mut(len);
    for (((p, r), g), b) in pixels
        .chunks_exact(3)
        .zip(&mut r[2..])
        .zip(&mut g[2..])
        .zip(&mut b[2..])
    {
        (*r, *g, *b) = (p[0].into(), p[1].into(), p[2].into());
    }
    for row in [&mut *r, &mut *g, &mut *b] {
        let (first, last) = (row[2], row[w + 1]);
        row[..2].fill(first);
        row[w + 2..].fill(last);
    }
    [r, g, b]
}

/// How many of the kept workspaces (oldest first, of these sizes in bytes) to free: the oldest
/// go first, down to the newest alone if that alone is over the memory bound.
fn evicted(sizes: &[usize]) -> usize {
    let mut first = sizes.len().saturating_sub(KEPT_WORKSPACES);
    while first + 1 < sizes.len() && sizes[first..].iter().sum::<usize>() > KEPT_BYTES {
        first += 1;
    }
    first
}

fn band(total: usize, t: usize, threads: usize) -> Range<usize> {
    total * t / threads..total * (t + 1) / threads
}

/// Rows of a band at least (`NativeNet::upscale`).
const MIN_BAND_ROWS: usize = 16;

/// Sizes of a frame's rows: every buffer's rows are `stride` floats; a zero-bordered buffer
/// holds column x at `x + 1`.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    h: usize,
    w: usize,
    /// Row length: the width rounded up to whole 64-pixel groups, plus room to read past it.
    stride: usize,
    /// Whether this frame's convolutions use the AVX-512 kernels (`NativeNet::is_wide`).
    wide: bool,
}

/// A ring of rows of `channels` planes: buffer row p (in a zero-bordered buffer padded row p,
/// frame row p - 1) of channel c starts at `ptr + c * plane + (p % ring) * stride`. Rings hold
/// a power of two of rows, so that `p % ring` is a mask (a division by the ring's size, 14 of
/// them per row of a convolution, had cost 5-10% of the thin layers' 320-pixel rows).
#[derive(Debug, Clone, Copy)]
struct Buf {
    ptr: *mut f32,
    channels: usize,
    stride: usize,
    plane: usize,
    ring: usize,
}

impl Buf {
    /// For an epilogue that writes no buffer (the tail writes bytes).
    const NONE: Buf = Buf {
        ptr: std::ptr::null_mut(),
        channels: 0,
        stride: 0,
        plane: 0,
        ring: 1,
    };

    /// Offset of buffer row `p` within a plane.
    fn row(&self, p: usize) -> usize {
        (p & (self.ring - 1)) * self.stride
    }

    /// Frame row `y`, column `x` of channel `c` of a zero-bordered buffer.
    ///
    /// # Safety
    /// `c` below the buffer's channels, `x` inside its rows.
    unsafe fn at(&self, c: usize, y: usize, x: usize) -> *mut f32 {
        // SAFETY: as the caller's.
        unsafe { self.ptr.add(c * self.plane + self.row(y + 1) + x + 1) }
    }

    /// Frame row `r` (-1 or h: the convolutions' padding) of every channel of a zero-bordered
    /// buffer made zeros, the whole row.
    ///
    /// # Safety
    /// The buffer is one of `Rings::new`'s.
    unsafe fn zero_row(&self, r: isize) {
        let p = usize::try_from(r + 1).expect("rows from -1");
        for c in 0..self.channels {
            // SAFETY: row p of plane c, `stride` floats of the buffer's own.
            unsafe {
                std::ptr::write_bytes(self.ptr.add(c * self.plane + self.row(p)), 0, self.stride)
            };
        }
    }
}

/// Rows a ring keeps. At a step the input layer makes its row y + 1 before a convolution reads
/// rows y - 1..=y + 1 of it, so 3 are read; a block's second conv reads the block's input 2
/// rows behind that input's newest row, also within 3; the mean rows are made one step ahead
/// and read as 3. One row to spare. The first layer's features are read again by the last
/// block, `2 * blocks` rows behind their newest: `2 * blocks + 1`, and one to spare, rounded up
/// to a power of two (`Buf::row`).
const RING_ROWS: usize = 4;
const _: () = assert!(RING_ROWS.is_power_of_two() && SKIP_RING_ROWS.is_power_of_two());
/// The skip's rows: made up to y + 4 just before the tail reads rows y..=y + 4 (5), with room.
const SKIP_RING_ROWS: usize = 8;

/// One band's rings and row buffers (`NativeNet::run_band`), moved to the thread that runs it.
#[derive(Debug)]
struct Rings {
    /// The zero-bordered rings, one allocation.
    conv: Planes,
    /// The skip's planes (no border columns).
    skip: Planes,
    bufs: BandBufs,
    /// One input row, a row a colour, each replicate-padded by 2 on the left and at least 10
    /// on the right (`padded_rows`).
    padded: Vec<f32>,
    /// The tail's output channels of one row as bytes, `stride` each (`tail`).
    bytes: Vec<u8>,
}

// SAFETY: the raw pointers in `bufs` point into the rings' own heap buffers, which move with
// them; the rings are used by one thread at a time (`&mut`).
unsafe impl Send for Rings {}

#[derive(Debug)]
struct BandBufs {
    mean: Buf,
    features: Buf,
    /// Per block: its first conv's output, then its second's.
    middles: Vec<Buf>,
    outs: Vec<Buf>,
    across: Buf,
}

impl Rings {
    /// Zeroed rings for frames of `g`'s width; out of memory is an error libtorch's would read
    /// as one (`Variant`'s frame error names it, with the frame and what to do).
    fn new(net: &NativeNet, g: &Geometry) -> Result<Rings, tch::TchError> {
        let stride = g.stride;
        let blocks = net.blocks.len();
        // (channels, rows) of each zero-bordered ring, in the order `bufs` takes them
        let mut layout = vec![
            (3, RING_ROWS),
            (net.width, (2 * blocks + 2).next_power_of_two()),
        ];
        layout.extend(net.blocks.iter().map(|b| (b.conv1.cout, RING_ROWS)));
        layout.extend(net.blocks.iter().map(|_| (net.width, RING_ROWS)));
        let floats: usize = layout.iter().map(|(c, r)| c * r * stride).sum();
        // interior column 0 of every row at a 64-byte boundary (the kernels' stores and the
        // middle tap's loads then stay within cache lines); column 0 for the skip's planes
        let mut conv = Planes::zeroed(floats, 1)?;
        let skip_planes = 3 * net.scale;
        let mut skip = Planes::zeroed(skip_planes * SKIP_RING_ROWS * stride, 0)?;
        let mut next = conv.start();
        let mut bufs = layout.iter().map(|&(channels, ring)| {
            debug_assert!(ring.is_power_of_two(), "`Buf::row` masks");
            let buf = Buf {
                ptr: next,
                channels,
                stride,
                plane: ring * stride,
                ring,
            };
            // SAFETY: within `conv`'s `floats`, the layout's sum.
            next = unsafe { next.add(channels * ring * stride) };
            buf
        });
        let mean = bufs.next().expect("layout");
        let features = bufs.next().expect("layout");
        let middles: Vec<Buf> = bufs.by_ref().take(blocks).collect();
        let outs: Vec<Buf> = bufs.collect();
        let across = Buf {
            ptr: skip.start(),
            channels: skip_planes,
            stride,
            plane: SKIP_RING_ROWS * stride,
            ring: SKIP_RING_ROWS,
        };
        Ok(Rings {
            conv,
            skip,
            bufs: BandBufs {
                mean,
                features,
                middles,
                outs,
                across,
            },
            padded: vec![0.0; 3 * (g.w.div_ceil(8) * 8 + 12)],
            bytes: vec![0; net.tail.cout * stride],
        })
    }

    fn bytes(&self) -> usize {
        (self.conv.data.len() + self.skip.data.len() + self.padded.len()) * 4 + self.bytes.len()
    }
}

/// The buffers of one frame size, reused from frame to frame: one set of rings per band, and
/// the rows bands hand each other.
#[derive(Debug)]
struct Workspace {
    geometry: Geometry,
    bands: Vec<Rings>,
    /// For `bands.len() - 1` edges.
    exchange: Exchange,
    /// Frames made with these buffers: the exchange's rows of the frame in progress are flagged
    /// with its number.
    frames: u64,
}

impl Workspace {
    fn new(h: usize, w: usize) -> Workspace {
        // the AVX-512 kernels read 48 or 64 pixels (+ 2 for the taps) from below the width
        let stride = w.div_ceil(64) * 64 + 64;
        Workspace {
            geometry: Geometry {
                h,
                w,
                stride,
                wide: false,
            },
            bands: Vec::new(),
            exchange: Exchange::default(),
            frames: 0,
        }
    }

    /// Rings for `threads` bands at least, and the exchange between them.
    fn reserve(&mut self, net: &NativeNet, threads: usize) -> Result<(), tch::TchError> {
        while self.bands.len() < threads {
            self.bands.push(Rings::new(net, &self.geometry)?);
        }
        let edges = self.bands.len() - 1;
        if self.exchange.edges < edges {
            self.exchange = Exchange::new(net, &self.geometry, edges)?;
        }
        Ok(())
    }

    fn bytes(&self) -> usize {
        self.bands.iter().map(Rings::bytes).sum::<usize>() + self.exchange.bytes()
    }

    fn fits(&self, h: usize, w: usize) -> bool {
        self.geometry.h == h && self.geometry.w == w
    }
}

/// Which of the two rows at an edge between bands: the upper band's last row, or the lower
/// band's first.
#[derive(Debug, Clone, Copy)]
enum Side {
    Upper = 0,
    Lower = 1,
}

/// The rows neighbouring bands hand each other (`NativeNet::run_band`): for each edge between
/// bands e and e + 1, each side and each layer but the tail, one row of the layer's channels,
/// and a flag that holds the number of the frame whose row it is once the row is written.
#[derive(Debug)]
struct Exchange {
    edges: usize,
    /// The slots' rows (`data`, which owns them; null for none).
    rows: *mut f32,
    data: Option<Planes>,
    /// Per slot (edge, side, layer): where its row starts in `rows`, and its channels.
    slots: Vec<(usize, usize)>,
    flags: Vec<AtomicU64>,
    layers: usize,
    stride: usize,
}

impl Default for Exchange {
    fn default() -> Exchange {
        Exchange {
            edges: 0,
            rows: std::ptr::null_mut(),
            data: None,
            slots: Vec::new(),
            flags: Vec::new(),
            layers: 0,
            stride: 0,
        }
    }
}

// SAFETY: `rows` points into `data`'s heap buffer, which moves with it. Bands write a slot's
// rows through it from several threads at once, but each slot from one band only, once a
// frame, and its one reader waits for the slot's flag (release / acquire) before it reads
// (`Edges`).
unsafe impl Send for Exchange {}
// SAFETY: as above.
unsafe impl Sync for Exchange {}

impl Exchange {
    /// Slots for `edges` edges of `g`'s rows for `net`'s layers; out of memory is an error
    /// (as `Planes::zeroed`).
    fn new(net: &NativeNet, g: &Geometry, edges: usize) -> Result<Exchange, tch::TchError> {
        // the channels conv layer d makes: the first conv, then two a block
        let layers: Vec<usize> = std::iter::once(net.width)
            .chain(net.blocks.iter().flat_map(|b| [b.conv1.cout, net.width]))
            .collect();
        let mut slots = Vec::new();
        let mut next = 0;
        for _ in 0..2 * edges {
            for &channels in &layers {
                slots.push((next, channels));
                next += channels * g.stride;
            }
        }
        let mut data = Planes::zeroed(next, 0)?;
        Ok(Exchange {
            edges,
            rows: data.start(),
            data: Some(data),
            flags: slots.iter().map(|_| AtomicU64::new(0)).collect(),
            slots,
            layers: layers.len(),
            stride: g.stride,
        })
    }

    fn bytes(&self) -> usize {
        self.data.as_ref().map_or(0, |r| r.data.len() * 4)
    }

    fn slot(&self, edge: usize, side: Side, layer: usize) -> usize {
        (2 * edge + side as usize) * self.layers + layer
    }
}

/// The exchange as the bands of one frame use it: rows flagged with `frame` are this frame's.
struct Edges<'a> {
    exchange: &'a Exchange,
    frame: u64,
}

impl Edges<'_> {
    /// Row `r` of `src` (every channel, the whole row), made by conv layer `layer`, handed over
    /// at `edge` from `side`.
    ///
    /// # Safety
    /// `src` is a ring of `layer`'s channels for the exchange's geometry holding row `r`; only
    /// one band writes a slot in a frame, and no band reads it before its flag says so.
    unsafe fn publish(&self, edge: usize, side: Side, layer: usize, src: Buf, r: isize) {
        let x = self.exchange;
        let i = x.slot(edge, side, layer);
        let (start, channels) = x.slots[i];
        let rows = x.rows;
        let p = usize::try_from(r + 1).expect("rows from -1");
        for c in 0..channels {
            // SAFETY: slot i's rows, written by this band alone in this frame (its reader
            // waits for the flag below); `src`'s row p of plane c, `stride` floats.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    src.ptr.add(c * src.plane + src.row(p)),
                    rows.add(start + c * x.stride),
                    x.stride,
                )
            };
        }
        x.flags[i].store(self.frame, Ordering::Release);
    }

    /// The row handed over at `edge` from `side` by conv layer `layer`, once its neighbour has
    /// written it, into row `r` of `dst`.
    ///
    /// # Safety
    /// `dst` is a ring of `layer`'s channels for the exchange's geometry in which row `r`'s
    /// place holds no row still to be read; the neighbouring band runs at the same time.
    unsafe fn fetch(&self, edge: usize, side: Side, layer: usize, dst: Buf, r: isize) {
        let x = self.exchange;
        let i = x.slot(edge, side, layer);
        let mut spins = 0u32;
        while x.flags[i].load(Ordering::Acquire) != self.frame {
            // a few microseconds at most when both bands run; a preempted neighbour is left
            // its core
            if spins < 4096 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
        let (start, channels) = x.slots[i];
        let rows = x.rows.cast_const();
        let p = usize::try_from(r + 1).expect("rows from -1");
        for c in 0..channels {
            // SAFETY: slot i's rows, complete (the flag's release); `dst`'s row p of plane c.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    rows.add(start + c * x.stride),
                    dst.ptr.add(c * dst.plane + dst.row(p)),
                    x.stride,
                )
            };
        }
    }
}

/// Zeroed floats whose element `first` (and so every row's, strides being multiples of 16
/// floats) sits at a 64-byte boundary.
#[derive(Debug)]
struct Planes {
    data: Vec<f32>,
    offset: usize,
}

impl Planes {
    /// `len` zeroed floats; out of memory is an error libtorch's would read as one
    /// (`Variant`'s frame error names it, with the frame and what to do).
    fn zeroed(len: usize, first: usize) -> Result<Planes, tch::TchError> {
        const LANES: usize = 16;
        let mut data = Vec::new();
        data.try_reserve_exact(len + LANES).map_err(|_| {
            tch::TchError::Torch(format!(
                "out of memory: the direct CPU form's buffers: you tried to allocate {} bytes",
                len * 4
            ))
        })?;
        data.resize(len + LANES, 0.0);
        let misaligned = (data.as_ptr() as usize / 4 + first) % LANES;
        let offset = (LANES - misaligned) % LANES;
        Ok(Planes { data, offset })
    }

    fn start(&mut self) -> *mut f32 {
        self.data[self.offset..].as_mut_ptr()
    }
}

/// A pointer the band threads share; each writes only its own rows (see `run_band`).
#[derive(Debug, Clone, Copy)]
struct Shared<T>(*mut T);
// SAFETY: only used by `run_band`'s threads, which write disjoint output rows.
unsafe impl<T> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Shared<T> {}

#[derive(Clone, Copy)]
enum Epilogue<'a> {
    Plain,
    /// PReLU with these per-channel slopes.
    PRelu(&'a [f32]),
    /// Plus the same pixel of these buffers (a residual, and the features before the tail).
    Add(Buf, Option<Buf>),
    /// Plus the skip's vertical pass over `across`, clamped to 0..=255 and truncated, into
    /// `bytes`, `cout` rows of `stride` bytes: channel (colour, j, i) ([`plane_major`]) into row
    /// (i * scale + j) * 3 + colour, the pixel shuffle's order.
    Tail {
        across: Buf,
        taps: &'a [[f32; 5]],
        scale: usize,
        bytes: *mut u8,
    },
}

/// An epilogue's operands for row `y`, read out of it once before a kernel's loops (those of
/// other kinds empty; the tail's scale is its kind's, `phases`).
struct Operands<'a> {
    slopes: &'a [f32],
    residual: Buf,
    also: Option<Buf>,
    across: Buf,
    phase_taps: &'a [[f32; 5]],
    bytes: *mut u8,
    /// For the tail: the offsets in the skip's planes of its rows y..y + 5 (input rows
    /// y - 2..=y + 2).
    skip_rows: [usize; 5],
}

impl<'a> Epilogue<'a> {
    fn operands(&self, y: usize) -> Operands<'a> {
        let mut operands = Operands {
            slopes: &[],
            residual: Buf::NONE,
            also: None,
            across: Buf::NONE,
            phase_taps: &[],
            bytes: std::ptr::null_mut(),
            skip_rows: [0; 5],
        };
        match *self {
            Epilogue::Plain => {}
            Epilogue::PRelu(slopes) => operands.slopes = slopes,
            Epilogue::Add(residual, also) => (operands.residual, operands.also) = (residual, also),
            Epilogue::Tail {
                across,
                taps,
                bytes,
                ..
            } => {
                operands.skip_rows = std::array::from_fn(|a| across.row(y + a));
                (operands.across, operands.phase_taps, operands.bytes) = (across, taps, bytes);
            }
        }
        operands
    }
}

/// The pixel shuffle's row (of the tail's bytes, (i, j, colour) order) of row phase `i` of skip
/// plane `plane` = colour * s + j: where [`plane_major`] took that channel from.
fn shuffle_row(plane: usize, i: usize, s: usize) -> usize {
    (i * s + plane % s) * 3 + plane / s
}

/// One output row `y` of `conv` from `src` (rows y - 1..=y + 1 made) into `dst`, then the
/// epilogue.
///
/// # Safety
/// The buffers are one band's `Rings` for `g` with `conv`'s channel counts; the CPU has AVX2
/// and FMA ([`supported`]).
unsafe fn conv_row(conv: &Conv3, src: Buf, dst: Buf, g: &Geometry, y: usize, epilogue: Epilogue) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: forwarded; `from_module` only builds a net where `supported()`, and `g.wide` is
    // only set where `wide_supported()` (`NativeNet::set_wide`).
    unsafe {
        if g.wide {
            avx512::conv_row(conv, src, dst, g, y, epilogue)
        } else {
            avx2::conv_row(conv, src, dst, g, y, epilogue)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (conv, src, dst, g, y, epilogue);
        unreachable!("NativeNet::from_module returns None off x86-64");
    }
}

/// `rows` (k of them, each `stride` bytes, `w` used) interleaved into `out`: byte x * k + j of
/// `out` is byte x of row j (the pixel shuffle of one output row: k = s * 3).
fn interleave(rows: &[u8], stride: usize, w: usize, out: &mut [u8]) {
    let k = rows.len() / stride;
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if k <= 16 && supported() {
        // SAFETY: the CPU has AVX2 (and so SSE2); bounds are checked inside.
        done = unsafe { avx2::interleave(rows, stride, w, out) };
    }
    for (j, row) in rows.chunks_exact(stride).enumerate() {
        for (x, &value) in row[..w].iter().enumerate().skip(done) {
            out[x * k + j] = value;
        }
    }
}

/// `out[x] = sum of taps[b] * padded[x + b]` for x in 0..round_up(w, 8).
///
/// # Safety
/// `out` has room for round_up(w, 8) floats; `padded` holds at least round_up(w, 8) + 3.
unsafe fn filter_row(padded: &[f32], taps: &[f32; 4], out: *mut f32, w: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: forwarded; only reached where `supported()`.
    unsafe {
        avx2::filter_row(padded, taps, out, w)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (padded, taps, out, w);
        unreachable!("NativeNet::from_module returns None off x86-64");
    }
}

/// The epilogue's kind as a constant of the kernels (`Epilogue`'s variants), so that each kind
/// gets a kernel of its own: with the kind matched inside the loop over strips, the compiler
/// kept the accumulators on the stack (zeroed by a `memset`, stored and reloaded at every group
/// of strips), and the convolutions ran at 70-75% of the same loop's speed with a plain store.
const PLAIN: u8 = 0;
const PRELU: u8 = 1;
const ADD: u8 = 2;
/// The tail at scale s is kind `TAIL + s - 2`.
const TAIL: u8 = 3;

/// `$row::<E>(args; epilogue)` for the kind `E` of the epilogue (`conv_row` of each kernel
/// set).
macro_rules! by_kind {
    ($row:ident($($arg:expr),+; $epilogue:expr)) => {
        match $epilogue {
            Epilogue::Plain => $row::<PLAIN>($($arg),+, $epilogue),
            Epilogue::PRelu(_) => $row::<PRELU>($($arg),+, $epilogue),
            Epilogue::Add(..) => $row::<ADD>($($arg),+, $epilogue),
            Epilogue::Tail { scale: 2, .. } => $row::<TAIL>($($arg),+, $epilogue),
            Epilogue::Tail { scale: 3, .. } => $row::<{ TAIL + 1 }>($($arg),+, $epilogue),
            Epilogue::Tail { scale: 4, .. } => $row::<{ TAIL + 2 }>($($arg),+, $epilogue),
            Epilogue::Tail { scale, .. } => unreachable!("scale {scale}: `from_module` takes 2..=4"),
        }
    };
}

/// The row phases of an epilogue kind: the scale for the tail's kinds, 1 for the others.
const fn phases(kind: u8) -> usize {
    if kind >= TAIL {
        (kind - TAIL) as usize + 2
    } else {
        1
    }
}

/// How `cout` output channels are cut into register blocks of at most `most`, as evenly as
/// possible (AVX2: 4, with 2 strips of 8 pixels 8 accumulators, as more spill on its 16
/// registers; AVX-512: 8, at most 24 accumulators of its 32 registers).
fn channel_blocks(cout: usize, most: usize) -> impl Iterator<Item = (usize, usize)> {
    let blocks = cout.div_ceil(most);
    (0..blocks).map(move |b| {
        let start = cout * b / blocks;
        (start, cout * (b + 1) / blocks - start)
    })
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{
        ADD, Buf, Conv3, Epilogue, Geometry, Operands, PLAIN, PRELU, TAIL, channel_blocks, phases,
        shuffle_row, window,
    };

    /// `super::interleave` for whole groups of 16 pixels whose 16-byte stores stay inside
    /// `out`; returns how many pixels it did (the caller does the rest).
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn interleave(rows: &[u8], stride: usize, w: usize, out: &mut [u8]) -> usize {
        let k = rows.len() / stride;
        assert!((1..=16).contains(&k) && rows.len() == k * stride && out.len() >= w * k);
        let mut x = 0;
        // pixel x + 15's 16-byte store ends at (x + 15) * k + 16 <= out.len()
        while x + 16 <= w && (x + 15) * k + 16 <= out.len() && x + 16 <= stride {
            let mut v = [_mm_setzero_si128(); 16];
            for (j, v) in v.iter_mut().enumerate().take(k) {
                // SAFETY: x + 16 <= stride: inside row j.
                *v = unsafe { _mm_loadu_si128(rows.as_ptr().add(j * stride + x).cast()) };
            }
            // 16 x 16 byte transpose: after it, v[BIT_REVERSED[p]] holds pixel x + p's bytes
            let v = transpose16(v);
            // in pixel order: each store's last 16 - k bytes are the next pixel's, rewritten next
            for (p, &from) in BIT_REVERSED.iter().enumerate() {
                // SAFETY: (x + p) * k + 16 <= (x + 15) * k + 16 <= out.len() (loop condition).
                unsafe { _mm_storeu_si128(out.as_mut_ptr().add((x + p) * k).cast(), v[from]) };
            }
            x += 16;
        }
        x
    }

    /// Where `transpose16` leaves each pixel: the 4-bit reversal of its index.
    const BIT_REVERSED: [usize; 16] = [0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15];

    /// Four rounds of byte, word, dword and qword unpacks.
    #[target_feature(enable = "avx2")]
    fn transpose16(r: [__m128i; 16]) -> [__m128i; 16] {
        let mut a = [_mm_setzero_si128(); 16];
        for i in 0..8 {
            a[2 * i] = _mm_unpacklo_epi8(r[2 * i], r[2 * i + 1]);
            a[2 * i + 1] = _mm_unpackhi_epi8(r[2 * i], r[2 * i + 1]);
        }
        let mut b = [_mm_setzero_si128(); 16];
        for i in 0..4 {
            for h in 0..2 {
                b[4 * i + h] = _mm_unpacklo_epi16(a[4 * i + h], a[4 * i + 2 + h]);
                b[4 * i + 2 + h] = _mm_unpackhi_epi16(a[4 * i + h], a[4 * i + 2 + h]);
            }
        }
        let mut c = [_mm_setzero_si128(); 16];
        for i in 0..2 {
            for h in 0..4 {
                c[8 * i + h] = _mm_unpacklo_epi32(b[8 * i + h], b[8 * i + 4 + h]);
                c[8 * i + 4 + h] = _mm_unpackhi_epi32(b[8 * i + h], b[8 * i + 4 + h]);
            }
        }
        let mut d = [_mm_setzero_si128(); 16];
        for h in 0..8 {
            d[h] = _mm_unpacklo_epi64(c[h], c[8 + h]);
            d[8 + h] = _mm_unpackhi_epi64(c[h], c[8 + h]);
        }
        d
    }

    /// # Safety
    /// See `super::filter_row`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn filter_row(padded: &[f32], taps: &[f32; 4], out: *mut f32, w: usize) {
        assert!(padded.len() >= w.div_ceil(8) * 8 + 3);
        let taps = taps.map(|t| _mm256_set1_ps(t));
        for x in (0..w).step_by(8) {
            let mut v = _mm256_setzero_ps();
            for (b, tap) in taps.iter().enumerate() {
                // SAFETY: x + b + 8 <= round_up(w, 8) + 3 <= padded.len() (asserted).
                v = _mm256_fmadd_ps(
                    *tap,
                    unsafe { _mm256_loadu_ps(padded.as_ptr().add(x + b)) },
                    v,
                );
            }
            // SAFETY: x + 8 <= round_up(w, 8): the caller's room.
            unsafe { _mm256_storeu_ps(out.add(x), v) };
        }
    }

    /// # Safety
    /// See `super::conv_row`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn conv_row(
        conv: &Conv3,
        src: Buf,
        dst: Buf,
        g: &Geometry,
        y: usize,
        epilogue: Epilogue,
    ) {
        // SAFETY: forwarded.
        unsafe { by_kind!(row(conv, src, dst, g, y; epilogue)) }
    }

    /// `conv_row` for an epilogue of kind `E` (see [`PLAIN`]).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn row<const E: u8>(
        conv: &Conv3,
        src: Buf,
        dst: Buf,
        g: &Geometry,
        y: usize,
        epilogue: Epilogue,
    ) {
        // the tail's blocks hold whole skip planes (`phases(E)` channels each)
        let s = phases(E);
        for (first, planes) in channel_blocks(conv.cout / s, 4 / s) {
            let (co, count) = (first * s, planes * s);
            // SAFETY: forwarded.
            unsafe {
                match count {
                    1 => block::<1, 4, E>(conv, co, src, dst, g, y, epilogue),
                    2 => block::<2, 4, E>(conv, co, src, dst, g, y, epilogue),
                    3 => block::<3, 2, E>(conv, co, src, dst, g, y, epilogue),
                    _ => block::<4, 2, E>(conv, co, src, dst, g, y, epilogue),
                }
            }
        }
    }

    /// Output channels `co..co + CB` of row `y`, `SB` strips of 8 pixels at a time: every input
    /// value loaded feeds CB FMAs, every weight broadcast SB.
    #[target_feature(enable = "avx2,fma")]
    // (the tail's epilogue indexes the accumulators by strip, then by channel: a range loop)
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    unsafe fn block<const CB: usize, const SB: usize, const E: u8>(
        conv: &Conv3,
        co: usize,
        src: Buf,
        dst: Buf,
        g: &Geometry,
        y: usize,
        epilogue: Epilogue,
    ) {
        let (stride, cin) = (g.stride, conv.cin);
        let weights = conv.weights.as_ptr();
        // the taps' offsets in a plane (padded rows y..y + 2: rows y - 1..=y + 1), kept a
        // loop as in `avx512::block`
        let offsets: [usize; 9] = std::array::from_fn(|tap| src.row(tap / 3 + y) + tap % 3);
        let Operands {
            slopes,
            residual,
            also,
            across,
            phase_taps,
            bytes,
            skip_rows,
        } = epilogue.operands(y);
        let taps = std::hint::black_box(9);
        let mut x0 = 0;
        while x0 < g.w {
            let mut acc = [[_mm256_setzero_ps(); SB]; CB];
            for ci in 0..cin {
                // SAFETY (all loads): padded row y (the row above y) of plane ci, from column
                // x0; reads reach 2 rows down and x0 + 8 * SB + 2 <= stride columns across.
                let base = unsafe { src.ptr.add(ci * src.plane + x0) };
                let wbase = unsafe { weights.add((co * cin + ci) * 9) };
                for (tap, &offset) in offsets.iter().enumerate().take(taps) {
                    let p = unsafe { base.add(offset) };
                    let mut v = [_mm256_setzero_ps(); SB];
                    for (s, v) in v.iter_mut().enumerate() {
                        *v = unsafe { _mm256_loadu_ps(p.add(s * 8)) };
                    }
                    for (c, acc) in acc.iter_mut().enumerate() {
                        let wv = unsafe { _mm256_broadcast_ss(&*wbase.add(c * cin * 9 + tap)) };
                        for (a, v) in acc.iter_mut().zip(v) {
                            *a = _mm256_fmadd_ps(wv, v, *a);
                        }
                    }
                }
            }
            if E >= TAIL {
                // channels in (colour, j, i) order: the s row phases i of skip plane
                // (colour, j) load its rows y..y + 5 (input rows y - 2..=y + 2) once
                let s = phases(E);
                debug_assert!(CB.is_multiple_of(s) && co.is_multiple_of(s));
                for st in 0..SB {
                    let x = x0 + st * 8;
                    if x >= g.w {
                        break;
                    }
                    for p in 0..CB / s {
                        let plane = co / s + p;
                        let column = unsafe { across.ptr.add(plane * across.plane + x) };
                        let rows: [__m256; 5] = std::array::from_fn(|a| unsafe {
                            _mm256_loadu_ps(column.add(skip_rows[a]))
                        });
                        for (i, phase) in phase_taps.iter().enumerate().take(s) {
                            let channel = co + p * s + i;
                            let mut r = _mm256_add_ps(
                                acc[p * s + i][st],
                                _mm256_set1_ps(conv.bias[channel]),
                            );
                            // its 4 taps that can be non-zero (`window`)
                            let first = window(i, s);
                            let taps = phase[first..first + 4].iter();
                            for (tap, row) in taps.zip(&rows[first..first + 4]) {
                                r = _mm256_fmadd_ps(_mm256_set1_ps(*tap), *row, r);
                            }
                            r = _mm256_min_ps(
                                _mm256_max_ps(r, _mm256_setzero_ps()),
                                _mm256_set1_ps(255.0),
                            );
                            // truncate to 8 x i32, pack to 8 bytes (lanes 0-3 and 4-7 sit in
                            // the low dword of each 128-bit half after the two packs)
                            let ints = _mm256_cvttps_epi32(r);
                            let words = _mm256_packus_epi32(ints, ints);
                            let packed = _mm256_packus_epi16(words, words);
                            let eight = _mm_unpacklo_epi32(
                                _mm256_castsi256_si128(packed),
                                _mm256_extracti128_si256(packed, 1),
                            );
                            let row = shuffle_row(plane, i, s);
                            // SAFETY: row `row` of `bytes`, x + 8 <= stride.
                            unsafe { _mm_storel_epi64(bytes.add(row * stride + x).cast(), eight) };
                        }
                    }
                }
                x0 += 8 * SB;
                continue;
            }
            for (c, acc) in acc.iter().enumerate() {
                let channel = co + c;
                let bias = _mm256_set1_ps(conv.bias[channel]);
                for (s, acc) in acc.iter().enumerate() {
                    let x = x0 + s * 8;
                    if x >= g.w {
                        break;
                    }
                    let mut r = _mm256_add_ps(*acc, bias);
                    // interior column x of row y (padded row y + 1) of each buffer
                    let at =
                        |b: Buf| unsafe { b.ptr.add(channel * b.plane + b.row(y + 1) + x + 1) };
                    // SAFETY (epilogue loads and the store): interior pixels x..x + 8 of row y,
                    // at most 7 columns past the width, inside the row's stride.
                    if E == PRELU {
                        let slope = _mm256_set1_ps(slopes[channel]);
                        let zero = _mm256_setzero_ps();
                        r = _mm256_fmadd_ps(slope, _mm256_min_ps(r, zero), _mm256_max_ps(r, zero));
                    } else if E == ADD {
                        r = _mm256_add_ps(r, unsafe { _mm256_loadu_ps(at(residual)) });
                        if let Some(b) = also {
                            r = _mm256_add_ps(r, unsafe { _mm256_loadu_ps(at(b)) });
                        }
                    }
                    let target = at(dst);
                    if x + 8 <= g.w {
                        unsafe { _mm256_storeu_ps(target, r) };
                    } else {
                        let mut lanes = [0f32; 8];
                        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), r) };
                        for (k, lane) in lanes.iter().enumerate().take(g.w - x) {
                            unsafe { *target.add(k) = *lane };
                        }
                    }
                }
            }
            x0 += 8 * SB;
        }
    }
}

/// The convolutions with AVX-512F: the AVX2 kernels' scheme at 16 pixels a vector, with twice
/// the strips (32 vector registers): every lane sees the same operations in the same order as
/// in [`avx2`], so both give the same values.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{
        ADD, Buf, Conv3, Epilogue, Geometry, Operands, PLAIN, PRELU, TAIL, channel_blocks, phases,
        shuffle_row, window,
    };

    /// # Safety
    /// See `super::conv_row`; the CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn conv_row(
        conv: &Conv3,
        src: Buf,
        dst: Buf,
        g: &Geometry,
        y: usize,
        epilogue: Epilogue,
    ) {
        // SAFETY: forwarded.
        unsafe { by_kind!(row(conv, src, dst, g, y; epilogue)) }
    }

    /// `conv_row` for an epilogue of kind `E`.
    #[target_feature(enable = "avx512f")]
    unsafe fn row<const E: u8>(
        conv: &Conv3,
        src: Buf,
        dst: Buf,
        g: &Geometry,
        y: usize,
        epilogue: Epilogue,
    ) {
        // the tail's blocks hold whole skip planes (`phases(E)` channels each)
        let s = phases(E);
        for (first, planes) in channel_blocks(conv.cout / s, 8 / s) {
            let (co, count) = (first * s, planes * s);
            // SAFETY: forwarded.
            unsafe {
                match count {
                    1 => block::<1, 4, E>(conv, co, src, dst, g, y, epilogue),
                    2 => block::<2, 4, E>(conv, co, src, dst, g, y, epilogue),
                    3 => block::<3, 4, E>(conv, co, src, dst, g, y, epilogue),
                    4 => block::<4, 4, E>(conv, co, src, dst, g, y, epilogue),
                    5 => block::<5, 4, E>(conv, co, src, dst, g, y, epilogue),
                    6 => block::<6, 4, E>(conv, co, src, dst, g, y, epilogue),
                    7 => block::<7, 3, E>(conv, co, src, dst, g, y, epilogue),
                    _ => block::<8, 3, E>(conv, co, src, dst, g, y, epilogue),
                }
            }
        }
    }

    /// Output channels `co..co + CB` of row `y`, `SB` strips of 16 pixels at a time, then the
    /// epilogue of kind `E` (`epilogue` is of that kind).
    #[target_feature(enable = "avx512f")]
    // (the tail's epilogue indexes the accumulators by strip, then by channel: a range loop)
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    unsafe fn block<const CB: usize, const SB: usize, const E: u8>(
        conv: &Conv3,
        co: usize,
        src: Buf,
        dst: Buf,
        g: &Geometry,
        y: usize,
        epilogue: Epilogue,
    ) {
        let cin = conv.cin;
        let weights = conv.weights.as_ptr();
        let stride = g.stride;
        // the taps' offsets in a plane (padded rows y..y + 2: rows y - 1..=y + 1, wherever its
        // ring keeps them), row by row; the loop over them is kept a loop
        // (`black_box`): unrolled, the compiler hoists all 9 * CB weight broadcasts and
        // spills them to the stack, which ran the kernel at half speed
        let offsets: [usize; 9] = std::array::from_fn(|tap| src.row(tap / 3 + y) + tap % 3);
        let Operands {
            slopes,
            residual,
            also,
            across,
            phase_taps,
            bytes,
            skip_rows,
        } = epilogue.operands(y);
        let taps = std::hint::black_box(9);
        let mut x0 = 0;
        while x0 < g.w {
            let mut acc = [[_mm512_setzero_ps(); SB]; CB];
            for ci in 0..cin {
                // SAFETY (all loads): padded row y (the row above y) of plane ci, from column
                // x0 (a multiple of 16 * SB, 64 or 48, below the width); reads reach 2 rows down
                // and x0 + 16 * SB + 2 <= round_up(w, 16 * SB) + 2 <= w + 66 <= stride columns
                // across (stride = round_up(w, 64) + 64).
                let base = unsafe { src.ptr.add(ci * src.plane + x0) };
                let wbase = unsafe { weights.add((co * cin + ci) * 9) };
                for (tap, &offset) in offsets.iter().enumerate().take(taps) {
                    let p = unsafe { base.add(offset) };
                    let mut v = [_mm512_setzero_ps(); SB];
                    for (s, v) in v.iter_mut().enumerate() {
                        *v = unsafe { _mm512_loadu_ps(p.add(s * 16)) };
                    }
                    for (c, acc) in acc.iter_mut().enumerate() {
                        let wv = _mm512_set1_ps(unsafe { *wbase.add(c * cin * 9 + tap) });
                        for (a, v) in acc.iter_mut().zip(v) {
                            *a = _mm512_fmadd_ps(wv, v, *a);
                        }
                    }
                }
            }
            if E >= TAIL {
                // channels in (colour, j, i) order: the s row phases i of skip plane
                // (colour, j) load its rows y..y + 5 (input rows y - 2..=y + 2) once
                let s = phases(E);
                debug_assert!(CB.is_multiple_of(s) && co.is_multiple_of(s));
                for st in 0..SB {
                    let x = x0 + st * 16;
                    if x >= g.w {
                        break;
                    }
                    for p in 0..CB / s {
                        let plane = co / s + p;
                        let column = unsafe { across.ptr.add(plane * across.plane + x) };
                        let rows: [__m512; 5] = std::array::from_fn(|a| unsafe {
                            _mm512_loadu_ps(column.add(skip_rows[a]))
                        });
                        for (i, phase) in phase_taps.iter().enumerate().take(s) {
                            let channel = co + p * s + i;
                            let mut r = _mm512_add_ps(
                                acc[p * s + i][st],
                                _mm512_set1_ps(conv.bias[channel]),
                            );
                            // its 4 taps that can be non-zero (`window`)
                            let first = window(i, s);
                            let taps = phase[first..first + 4].iter();
                            for (tap, row) in taps.zip(&rows[first..first + 4]) {
                                r = _mm512_fmadd_ps(_mm512_set1_ps(*tap), *row, r);
                            }
                            r = _mm512_min_ps(
                                _mm512_max_ps(r, _mm512_setzero_ps()),
                                _mm512_set1_ps(255.0),
                            );
                            // truncate to 16 x i32, narrow to 16 bytes (values are 0..=255)
                            let sixteen = _mm512_cvtusepi32_epi8(_mm512_cvttps_epi32(r));
                            let row = shuffle_row(plane, i, s);
                            // SAFETY: row `row` of `bytes`, x + 16 <= round_up(w, 16) <= stride.
                            unsafe {
                                _mm_storeu_si128(bytes.add(row * stride + x).cast(), sixteen)
                            };
                        }
                    }
                }
                x0 += 16 * SB;
                continue;
            }
            for (c, acc) in acc.iter().enumerate() {
                let channel = co + c;
                let bias = _mm512_set1_ps(conv.bias[channel]);
                for (s, acc) in acc.iter().enumerate() {
                    let x = x0 + s * 16;
                    if x >= g.w {
                        break;
                    }
                    let mut r = _mm512_add_ps(*acc, bias);
                    // interior column x of row y (padded row y + 1) of each buffer
                    let at =
                        |b: Buf| unsafe { b.ptr.add(channel * b.plane + b.row(y + 1) + x + 1) };
                    // SAFETY (epilogue loads and the stores): interior pixels x..x + 16 of row
                    // y, at most 15 columns past the width, inside the row's stride.
                    if E == PRELU {
                        let slope = _mm512_set1_ps(slopes[channel]);
                        let zero = _mm512_setzero_ps();
                        r = _mm512_fmadd_ps(slope, _mm512_min_ps(r, zero), _mm512_max_ps(r, zero));
                    } else if E == ADD {
                        r = _mm512_add_ps(r, unsafe { _mm512_loadu_ps(at(residual)) });
                        if let Some(b) = also {
                            r = _mm512_add_ps(r, unsafe { _mm512_loadu_ps(at(b)) });
                        }
                    }
                    let target = at(dst);
                    let lanes = g.w - x;
                    if lanes >= 16 {
                        unsafe { _mm512_storeu_ps(target, r) };
                    } else {
                        // only the row's own pixels: the borders stay zero
                        let mask: __mmask16 = (1 << lanes) - 1;
                        unsafe { _mm512_mask_storeu_ps(target, mask, r) };
                    }
                }
            }
            x0 += 16 * SB;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_phase_taps_are_torchs_bicubic() {
        for scale in [2, 3, 4] {
            let taps = phase_taps(scale);
            for (phase, t) in taps.iter().enumerate() {
                let sum: f32 = t.iter().sum();
                assert!(
                    (sum - 1.0).abs() < 1e-6,
                    "x{scale} phase {phase}: taps sum to {sum}"
                );
                // mirror phases have mirrored taps
                let mut mirrored = taps[scale - 1 - phase];
                mirrored.reverse();
                for (a, b) in t.iter().zip(mirrored) {
                    assert!((a - b).abs() < 1e-6, "x{scale} phase {phase}: {t:?}");
                }
            }
        }
        // x4 phase 0 samples h - 0.375: Keys' weights at distances 1.625, 0.625, 0.375, 1.375;
        // x2 phase 0 samples h - 0.25: 1.75, 0.75, 0.25, 1.25
        for (scale, d) in [
            (4, [1.625, 0.625, 0.375, 1.375]),
            (2, [1.75, 0.75, 0.25, 1.25]),
        ] {
            let t = phase_taps(scale)[0];
            for (k, distance) in d.iter().enumerate() {
                assert!(
                    (f64::from(t[k]) - cubic(*distance)).abs() < 1e-6,
                    "x{scale}: {t:?}"
                );
            }
            assert_eq!(t[4], 0.0);
        }
        // the tap outside each phase's window of 4 is exactly zero (the kernels skip it)
        for scale in [2, 3, 4] {
            for (phase, t) in phase_taps(scale).iter().enumerate() {
                let first = window(phase, scale);
                let outside = if first == 0 { t[4] } else { t[0] };
                assert_eq!(outside, 0.0, "x{scale} phase {phase}: {t:?}");
            }
        }
    }

    #[test]
    fn channels_are_cut_into_even_blocks() {
        let cut = |n, most| channel_blocks(n, most).collect::<Vec<_>>();
        assert_eq!(cut(7, 4), [(0, 3), (3, 4)]);
        assert_eq!(cut(4, 4), [(0, 4)]);
        assert_eq!(cut(48, 4).len(), 12);
        assert_eq!(cut(7, 8), [(0, 7)]);
        assert_eq!(cut(28, 8), [(0, 7), (7, 7), (14, 7), (21, 7)]);
        for (n, most) in (1..=64).flat_map(|n| [(n, 4), (n, 8)]) {
            let blocks = cut(n, most);
            assert!(
                blocks.iter().all(|&(_, b)| (1..=most).contains(&b)),
                "{n}: {blocks:?}"
            );
            // as even as possible: sizes differ by at most one
            let sizes = blocks.iter().map(|&(_, b)| b);
            assert!(
                sizes.clone().max().unwrap() - sizes.min().unwrap() <= 1,
                "{n}: {blocks:?}"
            );
            let starts: Vec<usize> = blocks.iter().map(|&(s, _)| s).collect();
            let ends: Vec<usize> = blocks.iter().map(|&(s, b)| s + b).collect();
            assert_eq!(starts[0], 0);
            assert_eq!(ends[ends.len() - 1], n);
            assert_eq!(starts[1..], ends[..ends.len() - 1]);
        }
    }

    #[test]
    fn rows_interleave_into_pixels() {
        for k in [1, 3, 6, 9, 12, 16] {
            for w in [1usize, 5, 16, 17, 18, 33, 34, 35, 100] {
                // as `Geometry`'s: 64 floats of room past the width rounded to 64
                let stride = w.div_ceil(64) * 64 + 64;
                let rows: Vec<u8> = (0..k * stride).map(|i| (i * 7 + i / 13) as u8).collect();
                let mut out = vec![0u8; w * k];
                interleave(&rows, stride, w, &mut out);
                for x in 0..w {
                    for j in 0..k {
                        assert_eq!(
                            out[x * k + j],
                            rows[j * stride + x],
                            "k {k} w {w} x {x} j {j}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn kept_buffers_stay_few_and_within_the_memory_bound() {
        let mb = 1 << 20;
        assert_eq!(evicted(&[]), 0);
        assert_eq!(evicted(&[mb; 4]), 0);
        assert_eq!(evicted(&[mb; 6]), 2); // at most 4 sizes
        assert_eq!(evicted(&[200 * mb, 100 * mb]), 1); // 300 MB: the older goes
        assert_eq!(evicted(&[mb, 700 * mb]), 1); // the newest stays alone, however large
        assert_eq!(evicted(&[700 * mb, mb]), 1);
        assert_eq!(evicted(&[100 * mb, 100 * mb, 50 * mb]), 0);
    }

    #[test]
    fn bands_cover_every_row_once() {
        for (total, threads) in [(180, 2), (7, 3), (1, 1), (5, 4)] {
            let rows: Vec<usize> = (0..threads).flat_map(|t| band(total, t, threads)).collect();
            assert_eq!(rows, (0..total).collect::<Vec<_>>());
        }
    }
}
