// SPDX-License-Identifier: MPL-2.0
//! YUV 4:2:0 <-> RGB for frames and tensors in host memory, as Rust loops over bands of rows
//! run on up to `threads` threads.
//!
//! The tensor path ([`super::rgb_to_yuv`], [`super::yuv_to_rgb`]) makes a float copy of the
//! frame and runs three or four passes over it (convolutions or a matmul, round / clamp, the
//! cast); on the CPU, at a 1280x720 output, that was 5 ms of a 25 ms x4 frame in NV12 (`cargo
//! bench --bench overhead`). These loops do the same arithmetic per pixel in one pass: luma of
//! each pixel, chroma of each 2x2 block's mean (odd edges replicated) on the way out; chroma
//! replicated 2x2 on the way in. In 16-bit fixed point, rounded half up: the codes equal the
//! tensor path's but for a few one apart, at near-ties (tested). On x86-64 the loops are also
//! compiled for AVX2 and chosen at run time: 0.6 ms to encode 1280x720 on one thread, against
//! 2.9 ms for the baseline (SSE2) build and 3-4 ms for the tensor path on two.

/// Tests set it to run the portable loops on a CPU with AVX2 too.
#[cfg(test)]
pub(super) static PORTABLE: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Whether the AVX2 build of the loops can run here.
#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    #[cfg(test)]
    if PORTABLE.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    std::arch::is_x86_feature_detected!("avx2")
}

/// `fn $name(args)` that runs `$body(args)` (an `#[inline(always)]` fn), compiled a second time
/// for AVX2 and chosen at run time on x86-64: 5x faster than the baseline (SSE2) build at
/// 1280x720, which lacks 32-bit multiplies and byte shuffles.
macro_rules! with_avx2 {
    ($name:ident, $body:ident, ($($arg:ident: $ty:ty),* $(,)?)) => {
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if avx2() {
                #[target_feature(enable = "avx2")]
                fn avx2_build($($arg: $ty),*) {
                    $body($($arg),*)
                }
                // SAFETY: this CPU has AVX2 (checked above)
                return unsafe { avx2_build($($arg),*) };
            }
            $body($($arg),*)
        }
    };
}

/// RGB in 0..=255 <-> YUV codes, as the tensor path's constants.
#[derive(Debug, Clone, Copy)]
pub(super) struct Coefficients {
    /// Luma codes (before the offset) per unit of R, G, B.
    pub luma: [f32; 3],
    pub luma_offset: f32,
    pub luma_scale: f32,
    /// (3, 2): chroma codes (before the 128 offset) per unit of R, G, B; columns Cb, Cr.
    pub to_chroma: [f32; 6],
    /// (2, 3): RGB per unit of (Cb - 128), (Cr - 128); rows Cb, Cr.
    pub from_chroma: [f32; 6],
}

/// The chroma plane(s) of an output or input frame: NV12's interleaved one, or I420's two.
pub(super) enum Chroma<T> {
    Interleaved(T, usize),
    Planar((T, usize), (T, usize)),
}

/// A plane's bytes, cut into bands of `rows` rows `stride` bytes apart (the last one shorter).
pub(super) trait Bands: Sized {
    fn bands(self, rows: usize, stride: usize) -> Vec<Self>;
}

impl Bands for &[u8] {
    fn bands(self, rows: usize, stride: usize) -> Vec<Self> {
        self.chunks(rows * stride).collect()
    }
}

impl Bands for &mut [u8] {
    fn bands(self, rows: usize, stride: usize) -> Vec<Self> {
        self.chunks_mut(rows * stride).collect()
    }
}

impl<T: Bands> Chroma<T> {
    /// The chroma plane(s) in bands of `rows` chroma rows.
    fn bands(self, rows: usize) -> Vec<Chroma<T>> {
        match self {
            Chroma::Interleaved(uv, s) => uv
                .bands(rows, s)
                .into_iter()
                .map(|b| Chroma::Interleaved(b, s))
                .collect(),
            Chroma::Planar((u, su), (v, sv)) => u
                .bands(rows, su)
                .into_iter()
                .zip(v.bands(rows, sv))
                .map(|(u, v)| Chroma::Planar((u, su), (v, sv)))
                .collect(),
        }
    }
}

/// Runs `job` on each band: on the calling thread's OpenMP team where there is one
/// (`crate::omp`: member t takes bands t, t + n, ...), else the first on this thread and the
/// others on threads of their own.
fn in_bands<R: Send, L: Send, C: Send>(
    bands: impl Iterator<Item = ((R, L), C)>,
    job: impl Fn(R, L, C) + Sync,
) {
    // each band once, to whichever member or thread takes it
    type Slot<T> = std::sync::Mutex<Option<T>>;
    let bands: Vec<Slot<((R, L), C)>> = bands.map(|b| Slot::new(Some(b))).collect();
    let take = |i: usize| bands[i].lock().unwrap_or_else(|e| e.into_inner()).take();
    if bands.len() > 1
        && crate::omp::parallel(bands.len(), &|t, n| {
            for i in (t..bands.len()).step_by(n) {
                if let Some(((rgb, luma), chroma)) = take(i) {
                    job(rgb, luma, chroma);
                }
            }
        })
    {
        return;
    }
    let bands = (0..bands.len()).filter_map(take);
    std::thread::scope(|scope| {
        let mut bands = bands;
        let first = bands.next();
        for ((rgb, luma), chroma) in bands {
            let job = &job;
            scope.spawn(move || job(rgb, luma, chroma));
        }
        if let Some(((rgb, luma), chroma)) = first {
            job(rgb, luma, chroma);
        }
    });
}

/// Rows per band: whole chroma rows, at least 16 luma rows a thread.
fn band_rows(height: usize, threads: usize) -> usize {
    let threads = threads.clamp(1, height.div_ceil(16).max(1));
    (height.div_ceil(2).div_ceil(threads) * 2).max(2)
}

/// `rgb`: `height` rows of `width * 3` bytes, packed. Writes luma rows of `width` bytes at
/// `luma.1` bytes apart and chroma rows of `ceil(width / 2)` samples.
pub(super) fn rgb_to_yuv420(
    rgb: &[u8],
    width: usize,
    height: usize,
    c: &Coefficients,
    luma: (&mut [u8], usize),
    chroma: Chroma<&mut [u8]>,
    threads: usize,
) {
    let rows = band_rows(height, threads);
    let (luma, sy) = luma;
    let bands = rgb
        .chunks(rows * width * 3)
        .zip(luma.chunks_mut(rows * sy).map(|l| (l, sy)))
        .zip(chroma.bands(rows / 2));
    in_bands(bands, |rgb, luma, chroma| {
        encode_band(rgb, width, rgb.len() / (width * 3), c, luma, chroma);
    });
}

/// Fixed-point constants of the encode: 16 fractional bits, rounding and offsets folded in.
struct Fixed {
    luma: [i32; 3],
    luma_add: i32,
    /// Cb and Cr rows over a 2x2 block's R, G, B sums (the mean's / 4 folded in: 18 bits).
    cb: [i32; 3],
    cr: [i32; 3],
    chroma_add: i32,
}

impl Fixed {
    fn new(c: &Coefficients) -> Fixed {
        let q = |v: f32| (v * 65536.0).round() as i32;
        let m = &c.to_chroma;
        Fixed {
            luma: c.luma.map(q),
            luma_add: q(c.luma_offset) + (1 << 15),
            cb: [q(m[0]), q(m[2]), q(m[4])],
            cr: [q(m[1]), q(m[3]), q(m[5])],
            chroma_add: (128 << 18) + (1 << 17),
        }
    }
}

with_avx2!(
    encode_band,
    encode_band_body,
    (
        rgb: &[u8],
        width: usize,
        height: usize,
        c: &Coefficients,
        luma: (&mut [u8], usize),
        chroma: Chroma<&mut [u8]>
    )
);

#[inline(always)]
fn encode_band_body(
    rgb: &[u8],
    width: usize,
    height: usize,
    c: &Coefficients,
    (luma, sy): (&mut [u8], usize),
    mut chroma: Chroma<&mut [u8]>,
) {
    let f = Fixed::new(c);
    let row = |r: usize| &rgb[r * width * 3..(r + 1) * width * 3];
    let cw = width.div_ceil(2);
    let mut cb_row = vec![0u8; cw];
    let mut cr_row = vec![0u8; cw];
    for cy in 0..height.div_ceil(2) {
        let (r0, r1) = (2 * cy, (2 * cy + 1).min(height - 1));
        luma_row(row(r0), &mut luma[r0 * sy..r0 * sy + width], &f);
        if r1 > r0 {
            luma_row(row(r1), &mut luma[r1 * sy..r1 * sy + width], &f);
        }
        chroma_row(row(r0), row(r1), width, &mut cb_row, &mut cr_row, &f);
        match &mut chroma {
            Chroma::Interleaved(uv, s) => {
                let out = &mut uv[cy * *s..cy * *s + 2 * cw];
                for ((pair, &cb), &cr) in out.chunks_exact_mut(2).zip(&cb_row).zip(&cr_row) {
                    pair[0] = cb;
                    pair[1] = cr;
                }
            }
            Chroma::Planar((u, su), (v, sv)) => {
                u[cy * *su..cy * *su + cw].copy_from_slice(&cb_row);
                v[cy * *sv..cy * *sv + cw].copy_from_slice(&cr_row);
            }
        }
    }
}

#[inline(always)]
fn luma_row(rgb: &[u8], out: &mut [u8], f: &Fixed) {
    let [kr, kg, kb] = f.luma;
    for (y, px) in out.iter_mut().zip(rgb.chunks_exact(3)) {
        let v = kr * i32::from(px[0]) + kg * i32::from(px[1]) + kb * i32::from(px[2]) + f.luma_add;
        *y = (v >> 16).clamp(0, 255) as u8;
    }
}

/// Cb and Cr of each 2x2 block of two rows (the last column replicated when `width` is odd).
#[inline(always)]
fn chroma_row(top: &[u8], bottom: &[u8], width: usize, cb: &mut [u8], cr: &mut [u8], f: &Fixed) {
    let block = |a: &[u8], b: &[u8], x0: usize, x1: usize| -> [i32; 3] {
        std::array::from_fn(|i| {
            i32::from(a[3 * x0 + i])
                + i32::from(a[3 * x1 + i])
                + i32::from(b[3 * x0 + i])
                + i32::from(b[3 * x1 + i])
        })
    };
    let code = |s: [i32; 3], k: [i32; 3]| -> u8 {
        ((k[0] * s[0] + k[1] * s[1] + k[2] * s[2] + f.chroma_add) >> 18).clamp(0, 255) as u8
    };
    let pairs = width / 2;
    let (tops, bottoms) = (top.chunks_exact(6), bottom.chunks_exact(6));
    for (((u, v), t), b) in cb
        .iter_mut()
        .zip(cr.iter_mut())
        .zip(tops)
        .zip(bottoms)
        .take(pairs)
    {
        let s = block(t, b, 0, 1);
        *u = code(s, f.cb);
        *v = code(s, f.cr);
    }
    if width % 2 == 1 {
        let x = width - 1;
        let s = block(top, bottom, x, x);
        cb[pairs] = code(s, f.cb);
        cr[pairs] = code(s, f.cr);
    }
}

/// The inverse: luma rows `luma.1` bytes apart and chroma rows into `height` packed rows of
/// `width * 3` RGB bytes, chroma replicated 2x2.
pub(super) fn yuv420_to_rgb(
    rgb: &mut [u8],
    width: usize,
    height: usize,
    c: &Coefficients,
    luma: (&[u8], usize),
    chroma: Chroma<&[u8]>,
    threads: usize,
) {
    let rows = band_rows(height, threads);
    let (luma, sy) = luma;
    let bands = rgb
        .chunks_mut(rows * width * 3)
        .zip(luma.chunks(rows * sy).map(|l| (l, sy)))
        .zip(chroma.bands(rows / 2));
    in_bands(bands, |rgb, luma, chroma| {
        let band_height = rgb.len() / (width * 3);
        decode_band(rgb, width, band_height, c, luma, chroma);
    });
}

with_avx2!(
    decode_band,
    decode_band_body,
    (
        rgb: &mut [u8],
        width: usize,
        height: usize,
        c: &Coefficients,
        luma: (&[u8], usize),
        chroma: Chroma<&[u8]>
    )
);

#[inline(always)]
fn decode_band_body(
    rgb: &mut [u8],
    width: usize,
    height: usize,
    c: &Coefficients,
    (luma, sy): (&[u8], usize),
    chroma: Chroma<&[u8]>,
) {
    let q = |v: f32| (v * 65536.0).round() as i32;
    let m = c.from_chroma;
    let luma_gain = q(1.0 / c.luma_scale);
    // Y's term with the offset and the rounding folded in
    let luma_add = -q(c.luma_offset / c.luma_scale) + (1 << 15);
    let cw = width.div_ceil(2);
    // per chroma sample: its R, G, B terms (fixed point, 16 bits)
    let mut terms = vec![[0i32; 3]; cw];
    for r in 0..height {
        let cy = r / 2;
        if r % 2 == 0 {
            let fill = |cb: u8, cr: u8, t: &mut [i32; 3]| {
                let (cb, cr) = (i32::from(cb) - 128, i32::from(cr) - 128);
                *t = [
                    q(m[0]) * cb + q(m[3]) * cr,
                    q(m[1]) * cb + q(m[4]) * cr,
                    q(m[2]) * cb + q(m[5]) * cr,
                ];
            };
            match &chroma {
                Chroma::Interleaved(uv, s) => {
                    let row = &uv[cy * s..cy * s + 2 * cw];
                    for (t, pair) in terms.iter_mut().zip(row.chunks_exact(2)) {
                        fill(pair[0], pair[1], t);
                    }
                }
                Chroma::Planar((u, su), (v, sv)) => {
                    let (u, v) = (&u[cy * su..cy * su + cw], &v[cy * sv..cy * sv + cw]);
                    for ((t, &cb), &cr) in terms.iter_mut().zip(u).zip(v) {
                        fill(cb, cr, t);
                    }
                }
            }
        }
        let y_row = &luma[r * sy..r * sy + width];
        let out = &mut rgb[r * width * 3..(r + 1) * width * 3];
        let clamp = |v: i32| (v >> 16).clamp(0, 255) as u8;
        for ((px, y), t) in out
            .chunks_exact_mut(6)
            .zip(y_row.chunks_exact(2))
            .zip(&terms)
        {
            for (i, &y) in y.iter().enumerate() {
                let y = i32::from(y) * luma_gain + luma_add;
                px[3 * i] = clamp(y + t[0]);
                px[3 * i + 1] = clamp(y + t[1]);
                px[3 * i + 2] = clamp(y + t[2]);
            }
        }
        if width % 2 == 1 {
            let (x, t) = (width - 1, terms[cw - 1]);
            let y = i32::from(y_row[x]) * luma_gain + luma_add;
            for i in 0..3 {
                out[3 * x + i] = clamp(y + t[i]);
            }
        }
    }
}
