// SPDX-License-Identifier: MPL-2.0
//! Conversion tests against reference YUV values (ITU-R BT.601 / BT.709 limited range, as
//! tabulated for 100% colour bars) and round-trip bounds.

use super::*;

const CPU: Device = Device::Cpu;

fn format(
    layout: PixelLayout,
    width: usize,
    height: usize,
    matrix: YuvMatrix,
    range: YuvRange,
) -> FrameFormat {
    FrameFormat {
        layout,
        width,
        height,
        matrix,
        range,
    }
}

fn bytes(t: &Tensor) -> Vec<u8> {
    let flat = t
        .f_to_device(CPU)
        .unwrap()
        .f_contiguous()
        .unwrap()
        .f_flatten(0, -1)
        .unwrap();
    Vec::<u8>::try_from(&flat).unwrap()
}

/// Plane views over (bytes, stride) pairs.
fn views(planes: &[(Vec<u8>, usize)]) -> Vec<Plane<'_>> {
    planes
        .iter()
        .map(|(d, s)| Plane {
            data: d,
            stride: *s,
        })
        .collect()
}

/// Writable plane views over (bytes, stride) pairs.
fn outs(planes: &mut [(Vec<u8>, usize)]) -> Vec<PlaneMut<'_>> {
    planes
        .iter_mut()
        .map(|(d, s)| PlaneMut {
            data: d,
            stride: *s,
        })
        .collect()
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
fn noise(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// An I420 frame whose every pixel is (y, u, v), rows padded by `pad` bytes of 0xAB.
fn flat_i420(width: usize, height: usize, yuv: [u8; 3], pad: usize) -> Vec<(Vec<u8>, usize)> {
    let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
    let plane = |w: usize, h: usize, v: u8| {
        let stride = w + pad;
        let mut data = vec![0xAB; stride * h];
        data.chunks_mut(stride).for_each(|row| row[..w].fill(v));
        (data, stride)
    };
    vec![
        plane(width, height, yuv[0]),
        plane(cw, ch, yuv[1]),
        plane(cw, ch, yuv[2]),
    ]
}

fn decode_flat(yuv: [u8; 3], matrix: YuvMatrix, range: YuvRange) -> Vec<u8> {
    let f = format(PixelLayout::I420, 4, 2, matrix, range);
    let planes = flat_i420(4, 2, yuv, 3);
    let views = views(&planes);
    let rgb = to_rgb(&f, &views, CPU).unwrap().rgb;
    assert_eq!(rgb.size(), [1, 2, 4, 3]);
    bytes(&rgb)[..3].to_vec()
}

fn encode_flat(rgb: [u8; 3], matrix: YuvMatrix, range: YuvRange) -> [u8; 3] {
    let pixels = Tensor::from_slice(&rgb.repeat(4)).reshape([2, 2, 3]);
    let (luma, chroma) = rgb_to_yuv(&pixels, matrix, range).unwrap();
    let (luma, chroma) = (bytes(&luma), bytes(&chroma));
    assert!(
        luma.iter().all(|&y| y == luma[0]),
        "flat colour gave uneven luma {luma:?}"
    );
    [luma[0], chroma[0], chroma[1]]
}

fn assert_close(got: &[u8], want: &[u8], tolerance: u8, what: &str) {
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap_or(0);
    assert!(
        got.len() == want.len() && worst <= tolerance,
        "{what}: got {got:?}, want {want:?}"
    );
}

use YuvMatrix::{Bt601, Bt709};
use YuvRange::{Full, Limited};

/// (RGB, matrix, range, YUV) from the standards' 100% colour bars.
const REFERENCE: [([u8; 3], YuvMatrix, YuvRange, [u8; 3]); 10] = [
    ([0, 0, 0], Bt709, Limited, [16, 128, 128]),
    ([255, 255, 255], Bt709, Limited, [235, 128, 128]),
    ([255, 0, 0], Bt709, Limited, [63, 102, 240]),
    ([0, 255, 0], Bt709, Limited, [173, 42, 26]),
    ([0, 0, 255], Bt709, Limited, [32, 240, 118]),
    ([255, 0, 0], Bt601, Limited, [81, 90, 240]),
    ([0, 255, 0], Bt601, Limited, [145, 54, 34]),
    ([0, 0, 255], Bt601, Limited, [41, 240, 110]),
    ([255, 255, 255], Bt709, Full, [255, 128, 128]),
    ([255, 0, 0], Bt601, Full, [76, 85, 255]),
];

#[test]
fn rgb_encodes_to_reference_yuv() {
    for (rgb, matrix, range, yuv) in REFERENCE {
        let got = encode_flat(rgb, matrix, range);
        assert_close(&got, &yuv, 0, &format!("{rgb:?} {matrix:?} {range:?}"));
    }
}

#[test]
fn reference_yuv_decodes_to_rgb() {
    for (rgb, matrix, range, yuv) in REFERENCE {
        // Full-range 100% red clips Cr at 255 (ideal 255.5): one code of error in R and G.
        let tolerance = if range == Full { 2 } else { 1 };
        let got = decode_flat(yuv, matrix, range);
        assert_close(
            &got,
            &rgb,
            tolerance,
            &format!("{yuv:?} {matrix:?} {range:?}"),
        );
    }
}

#[test]
fn matrices_differ_where_they_should() {
    // The same YUV is a different RGB under BT.601 and BT.709: guard against a swapped matrix.
    let bt601 = decode_flat([63, 102, 240], Bt601, Limited);
    let bt709 = decode_flat([63, 102, 240], Bt709, Limited);
    let distance: u32 = bt601
        .iter()
        .zip(&bt709)
        .map(|(a, b)| u32::from(a.abs_diff(*b)))
        .sum();
    assert!(distance > 20, "{bt601:?} vs {bt709:?}");
}

/// Random RGB that is constant over 2x2 blocks, so 4:2:0 subsampling itself loses nothing.
fn blocky_rgb(width: usize, height: usize, seed: u32) -> Vec<u8> {
    let colours = noise(width.div_ceil(2) * height.div_ceil(2) * 3, seed);
    let mut rgb = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        for x in 0..width {
            let block = (y / 2) * width.div_ceil(2) + x / 2;
            rgb.extend_from_slice(&colours[block * 3..block * 3 + 3]);
        }
    }
    rgb
}

fn round_trip(
    layout: PixelLayout,
    width: usize,
    height: usize,
    range: YuvRange,
    rgb: &[u8],
) -> Vec<u8> {
    let f = format(layout, width, height, Bt709, range);
    let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
    let shapes: Vec<(usize, usize)> = match layout {
        PixelLayout::I420 => vec![(width, height), (cw, ch), (cw, ch)],
        _ => vec![(width, height), (2 * cw, ch)],
    };
    let mut planes: Vec<(Vec<u8>, usize)> = shapes
        .iter()
        .map(|&(w, h)| (vec![0; (w + 5) * h], w + 5))
        .collect();
    let input = Tensor::from_slice(rgb).reshape([1, height as i64, width as i64, 3]);
    let mut outs = outs(&mut planes);
    write_rgb(&f, &input, None, &mut outs).unwrap();
    let views = views(&planes);
    bytes(&to_rgb(&f, &views, CPU).unwrap().rgb)
}

#[test]
fn yuv_round_trip_error_is_bounded() {
    for (layout, w, h) in [
        (PixelLayout::I420, 6, 4),
        (PixelLayout::Nv12, 7, 5),
        (PixelLayout::I420, 33, 17),
    ] {
        for range in [Limited, Full] {
            let rgb = blocky_rgb(w, h, (w * h) as u32);
            let back = round_trip(layout, w, h, range, &rgb);
            let errors: Vec<u8> = rgb.iter().zip(&back).map(|(a, b)| a.abs_diff(*b)).collect();
            let worst = *errors.iter().max().unwrap();
            let mean = errors.iter().map(|&e| f64::from(e)).sum::<f64>() / errors.len() as f64;
            // 8-bit YUV cannot hold every RGB triple: a few codes of error, 1 on average.
            assert!(
                worst <= 4 && mean <= 1.0,
                "{layout:?} {w}x{h} {range:?}: worst {worst}, mean {mean}"
            );
        }
    }
}

#[test]
fn detailed_chroma_is_averaged_not_dropped() {
    // A 2x2 block of red and blue pixels: 4:2:0 keeps the block's mean chroma.
    let rgb = [255, 0, 0, 0, 0, 255, 0, 0, 255, 255, 0, 0];
    let pixels = Tensor::from_slice(&rgb).reshape([2, 2, 3]);
    let (_, chroma) = rgb_to_yuv(&pixels, Bt709, Limited).unwrap();
    let mean = encode_flat([128, 0, 128], Bt709, Limited);
    assert_close(&bytes(&chroma), &mean[1..], 1, "mean chroma of red/blue");
}

#[test]
fn flat_colour_stays_flat_at_odd_sizes_with_padded_strides() {
    for layout in [PixelLayout::I420, PixelLayout::Nv12] {
        let f = format(layout, 321, 181, Bt601, Limited);
        let planes = if layout == PixelLayout::I420 {
            flat_i420(321, 181, [120, 90, 200], 7)
        } else {
            let mut p = flat_i420(321, 181, [120, 90, 90], 7);
            p.truncate(2);
            p[1] = (vec![0xAB; 161 * 2 * 91 + 7 * 90], 161 * 2 + 7);
            let (data, stride) = &mut p[1];
            data.chunks_mut(*stride)
                .for_each(|row| row[..322].copy_from_slice(&[90, 200].repeat(161)));
            p
        };
        let views = views(&planes);
        let rgb = bytes(&to_rgb(&f, &views, CPU).unwrap().rgb);
        assert_eq!(rgb.len(), 321 * 181 * 3);
        assert!(
            rgb.chunks(3).all(|p| p == &rgb[..3]),
            "{layout:?}: not flat"
        );
        assert_close(
            &rgb[..3],
            &decode_flat([120, 90, 200], Bt601, Limited),
            0,
            "same colour",
        );
    }
}

#[test]
fn packed_layouts_honour_strides_channel_order_and_alpha() {
    let (w, h, stride) = (5usize, 3usize, 5 * 4 + 12);
    let pixel = |x: usize, y: usize| [(10 * x) as u8, (20 * y) as u8, 7, (x + y) as u8];
    let mut bgra = vec![0xAB; stride * h];
    for y in 0..h {
        for x in 0..w {
            let [r, g, b, a] = pixel(x, y);
            bgra[y * stride + 4 * x..][..4].copy_from_slice(&[b, g, r, a]);
        }
    }
    let f = format(PixelLayout::Bgra, w, h, Bt709, Limited);
    let frame = to_rgb(
        &f,
        &[Plane {
            data: &bgra,
            stride,
        }],
        CPU,
    )
    .unwrap();
    let (rgb, alpha) = (bytes(&frame.rgb), bytes(frame.alpha.as_ref().unwrap()));
    for (i, (y, x)) in (0..h).flat_map(|y| (0..w).map(move |x| (y, x))).enumerate() {
        assert_eq!(&rgb[3 * i..3 * i + 3], &pixel(x, y)[..3]);
        assert_eq!(alpha[i], pixel(x, y)[3]);
    }
    // Write it back as RGBx into a padded frame: x = 255, padding untouched.
    let mut out = vec![0xCD; stride * h];
    let f = format(PixelLayout::Rgbx, w, h, Bt709, Limited);
    write_rgb(
        &f,
        &frame.rgb,
        frame.alpha.as_ref(),
        &mut [PlaneMut {
            data: &mut out,
            stride,
        }],
    )
    .unwrap();
    for y in 0..h {
        let row = &out[y * stride..(y + 1) * stride];
        assert!(
            row[w * 4..].iter().all(|&b| b == 0xCD),
            "padding overwritten"
        );
        for x in 0..w {
            let [r, g, b, _] = pixel(x, y);
            assert_eq!(&row[4 * x..4 * x + 4], &[r, g, b, 255]);
        }
    }
}

#[test]
fn alpha_upscale_is_bicubic_and_keeps_opaque_opaque() {
    let opaque = Tensor::full([1, 3, 5], 255, (Kind::Uint8, CPU));
    let up = upscale_alpha(&opaque, 6, 10).unwrap();
    assert_eq!(up.size(), [1, 6, 10]);
    assert!(bytes(&up).iter().all(|&a| a == 255));
    let ramp = Tensor::from_slice(&noise(15, 3)).reshape([1, 3, 5]);
    let want =
        ramp.to_kind(Kind::Float)
            .unsqueeze(1)
            .upsample_bicubic2d([6, 10], false, None, None);
    let want = bytes(&want.round().clamp(0.0, 255.0).to_kind(Kind::Uint8));
    assert_eq!(bytes(&upscale_alpha(&ramp, 6, 10).unwrap()), want);
}

#[test]
fn short_or_mismatched_planes_are_errors_not_crashes() {
    let f = format(PixelLayout::Rgb, 4, 4, Bt709, Limited);
    let data = vec![0u8; 4 * 3 * 4 - 1];
    let err = to_rgb(
        &f,
        &[Plane {
            data: &data,
            stride: 12,
        }],
        CPU,
    )
    .unwrap_err();
    assert!(err.0.contains("cannot hold 4 rows of 12 bytes"), "{err}");
    let err = to_rgb(
        &f,
        &[Plane {
            data: &data,
            stride: 8,
        }],
        CPU,
    )
    .unwrap_err();
    assert!(err.0.contains("stride 8"), "{err}");
    let f = format(PixelLayout::I420, 4, 4, Bt709, Limited);
    let err = to_rgb(
        &f,
        &[Plane {
            data: &data,
            stride: 4,
        }],
        CPU,
    )
    .unwrap_err();
    assert!(err.0.contains("needs 3 planes, got 1"), "{err}");
    let mut out = vec![0u8; 4 * 4 * 3];
    let rgb = Tensor::zeros([1, 2, 2, 3], (Kind::Uint8, CPU));
    let f = format(PixelLayout::Rgb, 4, 4, Bt709, Limited);
    let err = write_rgb(
        &f,
        &rgb,
        None,
        &mut [PlaneMut {
            data: &mut out,
            stride: 12,
        }],
    )
    .unwrap_err();
    assert!(err.0.contains("expected Uint8 [1, 4, 4, 3]"), "{err}");
}

#[test]
fn tensors_of_the_wrong_rank_are_errors() {
    let flat = Tensor::zeros([12], (Kind::Uint8, CPU));
    let err = rgb_to_yuv(&flat, Bt709, Limited).unwrap_err();
    assert!(
        err.0
            .contains("RGB (H, W, 3): expected 3 dimensions, got shape [12]"),
        "{err}"
    );
    let err = yuv_to_rgb(&flat, &flat, Bt709, Limited).unwrap_err();
    assert!(
        err.0.contains("luma (H, W): expected 2 dimensions"),
        "{err}"
    );
}

#[test]
fn device_plane_paths_read_and_write_as_the_slice_paths_do() {
    // `to_rgb_in_device_memory` / `write_rgb_to_device_memory` take raw pointers with pitched
    // strides, as GStreamer's CUDA memory hands them; on the CPU "device" they must give the
    // same bytes as the slice-based functions, padding untouched.
    for layout in [PixelLayout::Nv12, PixelLayout::I420, PixelLayout::Rgbx] {
        let (w, h) = (13usize, 9usize);
        let f = format(layout, w, h, Bt709, Limited);
        let rgb = Tensor::from_slice(&blocky_rgb(w, h, 7)).reshape([1, h as i64, w as i64, 3]);
        let rows: Vec<(usize, usize)> = f
            .plane_shapes()
            .iter()
            .map(|&(r, b)| (r as usize, b as usize))
            .collect();
        let pitched = |_: ()| -> Vec<(Vec<u8>, usize)> {
            rows.iter()
                .map(|&(r, b)| (vec![0xAB; (b + 64) * r], b + 64))
                .collect()
        };
        let (mut by_slice, mut by_pointer) = (pitched(()), pitched(()));
        let mut outs = outs(&mut by_slice);
        write_rgb(&f, &rgb, None, &mut outs).unwrap();
        let device: Vec<RawPlane> = by_pointer
            .iter_mut()
            .map(|(d, s)| RawPlane {
                ptr: d.as_mut_ptr(),
                len: d.len(),
                stride: *s,
            })
            .collect();
        // SAFETY: host memory standing in for device memory, alive and unshared for the call
        unsafe { write_rgb_to_device_memory(&f, &rgb, None, &device, CPU) }.unwrap();
        assert_eq!(
            by_slice, by_pointer,
            "{layout:?}: written planes (padding included)"
        );
        let views = views(&by_slice);
        let want = bytes(&to_rgb(&f, &views, CPU).unwrap().rgb);
        // SAFETY: as above, read-only while the frame lives
        let got = unsafe { to_rgb_in_device_memory(&f, &device, CPU) }.unwrap();
        assert_eq!(bytes(&got.rgb), want, "{layout:?}: read back");
        // a plane too short for its rows is an error through the pointer path too
        let mut short = device.clone();
        short[0].len = rows[0].1;
        let err = unsafe { to_rgb_in_device_memory(&f, &short, CPU) }.unwrap_err();
        assert!(err.0.contains("cannot hold"), "{layout:?}: {err}");
    }
}

/// Equal but for a few codes one apart (float against fixed-point rounding at near-ties).
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_close(got, want, 1, what);
    let differ = got.iter().zip(want).filter(|(a, b)| a != b).count();
    assert!(
        differ * 200 <= want.len().max(200),
        "{what}: {differ} of {} codes differ",
        want.len()
    );
}

#[test]
fn host_loops_match_the_tensor_path_at_any_thread_count() {
    // Frames in host memory and CPU tensors are converted by `host`'s loops; CUDA tensors by
    // `rgb_to_yuv` / `yuv_to_rgb`. The two must give the same codes (one code apart at exact
    // rounding ties), whatever the size, layout, range and number of bands.
    // on the OpenMP team (crate::omp) and on threads of its own
    for (portable, team) in [(false, true), (true, true), (false, false)] {
        host::PORTABLE.store(portable, std::sync::atomic::Ordering::Relaxed);
        crate::omp::set_team(team);
        for (layout, w, h) in [
            (PixelLayout::Nv12, 64, 36),
            (PixelLayout::I420, 33, 17),
            (PixelLayout::Nv12, 7, 5),
            (PixelLayout::I420, 1, 1),
            (PixelLayout::Nv12, 321, 181),
        ] {
            for (matrix, range) in [(Bt709, Limited), (Bt601, Full)] {
                let c = YuvCoefficients::new(matrix, range).host();
                let rgb = noise(w * h * 3, (w * 7 + h) as u32);
                let pixels = Tensor::from_slice(&rgb).reshape([h as i64, w as i64, 3]);
                let (luma_t, chroma_t) = rgb_to_yuv(&pixels, matrix, range).unwrap();
                let (luma_t, chroma_t) = (bytes(&luma_t), bytes(&chroma_t));
                let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
                for threads in [1, 2, 3, 8] {
                    let what = format!(
                        "{layout:?} {w}x{h} {matrix:?} {range:?}, {threads} threads, portable {portable}, team {team}"
                    );
                    let (sy, sc) = (w + 3, 2 * cw + 5);
                    let mut luma = vec![0xAB; sy * h];
                    let (mut u, mut v) = (vec![0xAB; sc * ch], vec![0xAB; sc * ch]);
                    let chroma = match layout {
                        PixelLayout::I420 => {
                            host::Chroma::Planar((&mut u[..], sc), (&mut v[..], sc))
                        }
                        _ => host::Chroma::Interleaved(&mut u[..], sc),
                    };
                    host::rgb_to_yuv420(&rgb, w, h, &c, (&mut luma, sy), chroma, threads);
                    let rows = |plane: &[u8], stride: usize, n: usize, len: usize| -> Vec<u8> {
                        (0..n)
                            .flat_map(|r| plane[r * stride..r * stride + len].to_vec())
                            .collect()
                    };
                    assert_same(&rows(&luma, sy, h, w), &luma_t, &format!("{what}: luma"));
                    let chroma_host: Vec<u8> = match layout {
                        PixelLayout::I420 => rows(&u, sc, ch, cw)
                            .into_iter()
                            .zip(rows(&v, sc, ch, cw))
                            .flat_map(|(a, b)| [a, b])
                            .collect(),
                        _ => rows(&u, sc, ch, 2 * cw),
                    };
                    assert_same(&chroma_host, &chroma_t, &format!("{what}: chroma"));
                    let padding_kept = luma
                        .chunks(sy)
                        .all(|row| row[w..].iter().all(|&b| b == 0xAB));
                    assert!(padding_kept, "{what}: luma padding written");

                    // and back: the host decode against the tensor decode of the same planes
                    let luma_in =
                        Tensor::from_slice(&rows(&luma, sy, h, w)).reshape([h as i64, w as i64]);
                    let chroma_in =
                        Tensor::from_slice(&chroma_host).reshape([ch as i64, cw as i64, 2]);
                    let want = bytes(&yuv_to_rgb(&luma_in, &chroma_in, matrix, range).unwrap());
                    let mut got = vec![0u8; w * h * 3];
                    let chroma = match layout {
                        PixelLayout::I420 => host::Chroma::Planar((&u[..], sc), (&v[..], sc)),
                        _ => host::Chroma::Interleaved(&u[..], sc),
                    };
                    host::yuv420_to_rgb(&mut got, w, h, &c, (&luma, sy), chroma, threads);
                    assert_same(&got, &want, &format!("{what}: decode"));
                }
            }
        }
    }
    crate::omp::set_team(true);
}
