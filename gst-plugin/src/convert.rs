// SPDX-License-Identifier: MPL-2.0
//! Video frames <-> the RGB tensors of the bundle contract.
//!
//! No GStreamer types here: a frame is a [`FrameFormat`] plus its planes (bytes + stride).
//! Input planes are wrapped without copying (`from_blob` with the frame's strides). Conversions
//! (channel order, YUV <-> RGB with the frame's matrix and range, chroma resampling, alpha) run
//! as tensor operations on the engine's device, except YUV <-> RGB between host frames and CPU
//! tensors, which runs as one threaded pass over rows ([`host`]: the tensor path's float copies
//! cost a quarter of a CPU frame). Chroma is upsampled by replication and downsampled by 2x2
//! averaging.

use std::{fmt, marker::PhantomData};

mod host;

use tch::{Device, Kind, TchError, Tensor};

/// The raw layouts the element accepts (same layout in and out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelLayout {
    Rgb,
    Rgba,
    Rgbx,
    Bgrx,
    Bgra,
    /// Planar 4:2:0: Y, U, V.
    I420,
    /// Semi-planar 4:2:0: Y, interleaved UV.
    Nv12,
}

impl PixelLayout {
    /// Bytes per pixel of a packed RGB layout; None for YUV.
    fn packed_bytes(self) -> Option<i64> {
        match self {
            PixelLayout::Rgb => Some(3),
            PixelLayout::Rgba | PixelLayout::Rgbx | PixelLayout::Bgrx | PixelLayout::Bgra => {
                Some(4)
            }
            PixelLayout::I420 | PixelLayout::Nv12 => None,
        }
    }

    fn is_bgr(self) -> bool {
        matches!(self, PixelLayout::Bgrx | PixelLayout::Bgra)
    }

    pub fn has_alpha(self) -> bool {
        matches!(self, PixelLayout::Rgba | PixelLayout::Bgra)
    }
}

/// The YUV <-> RGB matrix (luma coefficients Kr, Kb).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YuvMatrix {
    Bt601,
    Bt709,
    Bt2020,
}

impl YuvMatrix {
    fn kr_kb(self) -> (f64, f64) {
        match self {
            YuvMatrix::Bt601 => (0.299, 0.114),
            YuvMatrix::Bt709 => (0.2126, 0.0722),
            YuvMatrix::Bt2020 => (0.2627, 0.0593),
        }
    }
}

/// Code range of YUV samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YuvRange {
    /// Y in 16..=235, U/V in 16..=240 ("TV", the usual one for video).
    Limited,
    /// Y, U, V in 0..=255 ("PC", JPEG).
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameFormat {
    pub layout: PixelLayout,
    pub width: usize,
    pub height: usize,
    /// Used by YUV layouts only.
    pub matrix: YuvMatrix,
    pub range: YuvRange,
}

/// One plane of an input frame.
#[derive(Debug, Clone, Copy)]
pub struct Plane<'a> {
    pub data: &'a [u8],
    /// Bytes from one row to the next (>= the row's bytes).
    pub stride: usize,
}

/// One plane of an output frame.
#[derive(Debug)]
pub struct PlaneMut<'a> {
    pub data: &'a mut [u8],
    pub stride: usize,
}

/// One plane by address: host memory (from [`Plane`] / [`PlaneMut`]), or a CUDA device pointer
/// under unified addressing (the element maps `memory:CUDAMemory` buffers this way, and such a
/// frame never visits the host).
#[derive(Debug, Clone, Copy)]
pub struct RawPlane {
    pub ptr: *mut u8,
    /// Bytes the plane spans from `ptr`.
    pub len: usize,
    pub stride: usize,
}

impl From<&Plane<'_>> for RawPlane {
    fn from(p: &Plane<'_>) -> RawPlane {
        RawPlane {
            ptr: p.data.as_ptr().cast_mut(),
            len: p.data.len(),
            stride: p.stride,
        }
    }
}

impl From<&mut PlaneMut<'_>> for RawPlane {
    fn from(p: &mut PlaneMut<'_>) -> RawPlane {
        RawPlane {
            ptr: p.data.as_mut_ptr(),
            len: p.data.len(),
            stride: p.stride,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertError(pub String);

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConvertError {}

impl From<TchError> for ConvertError {
    fn from(e: TchError) -> Self {
        ConvertError(format!(
            "libtorch: {}",
            e.to_string().lines().next().unwrap_or_default()
        ))
    }
}

/// A frame as the bundle contract wants it. `rgb` may be a view of the input frame's memory,
/// hence the lifetime.
#[derive(Debug)]
pub struct RgbFrame<'a> {
    /// uint8 (1, H, W, 3) RGB, possibly strided.
    pub rgb: Tensor,
    /// uint8 (1, H, W), for layouts with alpha.
    pub alpha: Option<Tensor>,
    frame: PhantomData<&'a [u8]>,
}

impl FrameFormat {
    /// (rows, bytes per row) of each plane.
    fn plane_shapes(&self) -> Vec<(i64, i64)> {
        let (w, h) = (self.width as i64, self.height as i64);
        let (cw, ch) = ((w + 1) / 2, (h + 1) / 2);
        match self.layout.packed_bytes() {
            Some(bpp) => vec![(h, w * bpp)],
            None if self.layout == PixelLayout::I420 => vec![(h, w), (ch, cw), (ch, cw)],
            None => vec![(h, w), (ch, 2 * cw)],
        }
    }

    fn chroma_size(&self) -> (i64, i64) {
        (
            self.height.div_ceil(2) as i64,
            self.width.div_ceil(2) as i64,
        )
    }

    /// Checks plane count, strides and lengths so that every view stays inside its slice.
    fn check_planes(&self, planes: &[(usize, usize)]) -> Result<(), ConvertError> {
        if self.width == 0 || self.height == 0 {
            return Err(ConvertError(format!(
                "empty frame {}x{}",
                self.width, self.height
            )));
        }
        let shapes = self.plane_shapes();
        if planes.len() != shapes.len() {
            return Err(ConvertError(format!(
                "{:?} needs {} planes, got {}",
                self.layout,
                shapes.len(),
                planes.len()
            )));
        }
        for (i, (&(len, stride), &(rows, row_bytes))) in planes.iter().zip(&shapes).enumerate() {
            let (rows, row_bytes) = (rows as usize, row_bytes as usize);
            let needed = (rows - 1) * stride + row_bytes;
            if stride < row_bytes || len < needed {
                return Err(ConvertError(format!(
                    "{:?} {}x{} plane {i}: stride {stride} and {len} bytes cannot hold {rows} rows \
                     of {row_bytes} bytes",
                    self.layout, self.width, self.height
                )));
            }
        }
        Ok(())
    }
}

/// A uint8 tensor over `data` (memory of `memory`: the CPU, or a CUDA device) with explicit
/// strides, without copying.
///
/// # Safety
/// The caller guarantees that every element addressed by `size`/`strides` lies inside the
/// memory `data` points at, on `memory`, and that the memory outlives the tensor and its views.
unsafe fn blob(
    data: *const u8,
    size: &[i64],
    strides: &[i64],
    memory: Device,
) -> Result<Tensor, ConvertError> {
    // SAFETY: forwarded to the caller, see above.
    Ok(unsafe { Tensor::f_from_blob(data, size, strides, Kind::Uint8, memory) }?)
}

/// Wraps an input frame as RGB (and alpha) tensors on `device`; YUV is converted there.
pub fn to_rgb<'a>(
    format: &FrameFormat,
    planes: &[Plane<'a>],
    device: Device,
) -> Result<RgbFrame<'a>, ConvertError> {
    let raw: Vec<RawPlane> = planes.iter().map(RawPlane::from).collect();
    // SAFETY: the planes are host slices that outlive the frame (its lifetime 'a)
    unsafe { raw_to_rgb(format, &raw, Device::Cpu, device) }
}

/// [`to_rgb`] of a frame in the memory of `device` (a CUDA device): no copy to or from the
/// host; the conversions read the planes in place.
///
/// # Safety
/// Each plane's `ptr` must address `len` bytes of `device`'s memory that stay valid and
/// unchanged while the returned frame (and any view of it) lives.
pub unsafe fn to_rgb_in_device_memory(
    format: &FrameFormat,
    planes: &[RawPlane],
    device: Device,
) -> Result<RgbFrame<'static>, ConvertError> {
    // SAFETY: forwarded to the caller
    unsafe { raw_to_rgb(format, planes, device, device) }
}

/// # Safety
/// Each plane addresses `len` bytes of `memory`'s memory that outlive the frame.
unsafe fn raw_to_rgb<'a>(
    format: &FrameFormat,
    planes: &[RawPlane],
    memory: Device,
    device: Device,
) -> Result<RgbFrame<'a>, ConvertError> {
    let geometry: Vec<(usize, usize)> = planes.iter().map(|p| (p.len, p.stride)).collect();
    format.check_planes(&geometry)?;
    let (h, w) = (format.height as i64, format.width as i64);
    // SAFETY (every `blob` below): check_planes proved each plane holds its rows at its stride.
    let (rgb, alpha) = match format.layout.packed_bytes() {
        Some(bpp) => {
            let s = planes[0].stride as i64;
            let pixels =
                unsafe { blob(planes[0].ptr, &[1, h, w, bpp], &[h * s, s, bpp, 1], memory)? };
            let rgb = pixels.f_narrow(3, 0, 3)?;
            let rgb = if format.layout.is_bgr() {
                rgb.f_flip([3])?
            } else {
                rgb
            };
            let alpha = match format.layout.has_alpha() {
                true => Some(pixels.f_select(3, 3)?.f_to_device(device)?),
                false => None,
            };
            (rgb.f_to_device(device)?, alpha)
        }
        None => (yuv_planes_to_rgb(format, planes, memory, device)?, None),
    };
    Ok(RgbFrame {
        rgb,
        alpha,
        frame: PhantomData,
    })
}

fn yuv_planes_to_rgb(
    format: &FrameFormat,
    planes: &[RawPlane],
    memory: Device,
    device: Device,
) -> Result<Tensor, ConvertError> {
    let (h, w) = (format.height as i64, format.width as i64);
    let (ch, cw) = format.chroma_size();
    if memory == Device::Cpu && device == Device::Cpu {
        // SAFETY: raw_to_rgb checked each plane's rows and stride; the planes are host memory
        return unsafe { yuv_planes_to_rgb_on_host(format, planes) };
    }
    let sy = planes[0].stride as i64;
    // SAFETY (every `blob` here): raw_to_rgb checked each plane's rows and stride.
    let luma = unsafe { blob(planes[0].ptr, &[h, w], &[sy, 1], memory)? };
    let chroma = if format.layout == PixelLayout::I420 {
        let (su, sv) = (planes[1].stride as i64, planes[2].stride as i64);
        let u = unsafe { blob(planes[1].ptr, &[ch, cw], &[su, 1], memory)? };
        let v = unsafe { blob(planes[2].ptr, &[ch, cw], &[sv, 1], memory)? };
        Tensor::f_stack(&[u.f_to_device(device)?, v.f_to_device(device)?], 2)?
    } else {
        let suv = planes[1].stride as i64;
        unsafe { blob(planes[1].ptr, &[ch, cw, 2], &[suv, 2, 1], memory)? }.f_to_device(device)?
    };
    yuv_to_rgb(
        &luma.f_to_device(device)?,
        &chroma,
        format.matrix,
        format.range,
    )
}

/// [`yuv_planes_to_rgb`] of host planes into a CPU tensor, in one pass ([`host`]).
///
/// # Safety
/// Each plane addresses `len` readable bytes of host memory, checked by `check_planes`.
unsafe fn yuv_planes_to_rgb_on_host(
    format: &FrameFormat,
    planes: &[RawPlane],
) -> Result<Tensor, ConvertError> {
    let (h, w) = (format.height, format.width);
    let c = YuvCoefficients::new(format.matrix, format.range).host();
    // SAFETY: forwarded to the caller
    let plane = |p: &RawPlane| unsafe { std::slice::from_raw_parts(p.ptr.cast_const(), p.len) };
    let chroma = host_chroma(format, planes, plane);
    let rgb = Tensor::f_empty([1, h as i64, w as i64, 3], (Kind::Uint8, Device::Cpu))?;
    // SAFETY: a fresh contiguous uint8 tensor of h * w * 3 bytes that nothing else sees
    let out = unsafe { std::slice::from_raw_parts_mut(rgb.data_ptr().cast::<u8>(), h * w * 3) };
    let luma = (plane(&planes[0]), planes[0].stride);
    host::yuv420_to_rgb(out, w, h, &c, luma, chroma, host_threads());
    Ok(rgb)
}

/// The chroma plane(s) of a host frame for [`host`]'s loops, each as `plane` makes it.
fn host_chroma<'a, T>(
    format: &FrameFormat,
    planes: &'a [RawPlane],
    plane: impl Fn(&'a RawPlane) -> T,
) -> host::Chroma<T> {
    match format.layout {
        PixelLayout::I420 => host::Chroma::Planar(
            (plane(&planes[1]), planes[1].stride),
            (plane(&planes[2]), planes[2].stride),
        ),
        _ => host::Chroma::Interleaved(plane(&planes[1]), planes[1].stride),
    }
}

/// Threads for a host conversion: the calling thread's libtorch count (the element's, which
/// the thread governor lowers under load).
fn host_threads() -> usize {
    usize::try_from(tch::get_num_threads())
        .unwrap_or(1)
        .clamp(1, 8)
}

/// Coefficients between RGB in 0..=255 and YUV codes.
struct YuvCoefficients {
    kr: f64,
    kb: f64,
    /// Luma codes per RGB unit and luma code of black.
    luma_scale: f64,
    luma_offset: f64,
    /// Chroma codes per unit of (B - Y) / (2 (1 - Kb)).
    chroma_scale: f64,
}

impl YuvCoefficients {
    fn new(matrix: YuvMatrix, range: YuvRange) -> Self {
        let (kr, kb) = matrix.kr_kb();
        let (luma_scale, luma_offset, chroma_scale) = match range {
            YuvRange::Limited => (219.0 / 255.0, 16.0, 224.0 / 255.0),
            YuvRange::Full => (1.0, 0.0, 1.0),
        };
        YuvCoefficients {
            kr,
            kb,
            luma_scale,
            luma_offset,
            chroma_scale,
        }
    }

    fn kg(&self) -> f64 {
        1.0 - self.kr - self.kb
    }

    /// The same constants for the host loops.
    fn host(&self) -> host::Coefficients {
        host::Coefficients {
            luma: self.rgb_to_luma(),
            luma_offset: self.luma_offset as f32,
            luma_scale: self.luma_scale as f32,
            to_chroma: self.rgb_to_chroma(),
            from_chroma: self.chroma_to_rgb(),
        }
    }

    /// (2, 3): RGB contribution of (Cb - 128, Cr - 128), rows Cb and Cr.
    fn chroma_to_rgb(&self) -> [f32; 6] {
        let (kr, kb, kg, s) = (self.kr, self.kb, self.kg(), self.chroma_scale);
        let cb = [0.0, -2.0 * kb * (1.0 - kb) / kg / s, 2.0 * (1.0 - kb) / s];
        let cr = [2.0 * (1.0 - kr) / s, -2.0 * kr * (1.0 - kr) / kg / s, 0.0];
        [cb[0], cb[1], cb[2], cr[0], cr[1], cr[2]].map(|c| c as f32)
    }

    /// (3,): luma codes (before the offset) from RGB.
    fn rgb_to_luma(&self) -> [f32; 3] {
        [self.kr, self.kg(), self.kb].map(|k| (k * self.luma_scale) as f32)
    }

    /// (2, 3, 2, 2): Cb and Cr of the mean of a 2x2 RGB block, as a stride-2 convolution.
    fn rgb_to_chroma_2x2(&self) -> Vec<f32> {
        let m = self.rgb_to_chroma();
        let mut kernel = Vec::with_capacity(24);
        for out in 0..2 {
            for channel in 0..3 {
                kernel.extend([m[2 * channel + out] / 4.0; 4]);
            }
        }
        kernel
    }

    /// (3, 2): chroma codes (before the 128 offset) from RGB, columns Cb and Cr.
    fn rgb_to_chroma(&self) -> [f32; 6] {
        let (kr, kb, kg, s) = (self.kr, self.kb, self.kg(), self.chroma_scale);
        let cb = [-kr, -kg, 1.0 - kb].map(|c| c * s / (2.0 * (1.0 - kb)));
        let cr = [1.0 - kr, -kg, -kb].map(|c| c * s / (2.0 * (1.0 - kr)));
        [cb[0], cr[0], cb[1], cr[1], cb[2], cr[2]].map(|c| c as f32)
    }
}

fn constant(values: &[f32], shape: &[i64], device: Device) -> Result<Tensor, ConvertError> {
    Ok(Tensor::f_from_slice(values)?
        .f_reshape(shape)?
        .f_to_device(device)?)
}

/// The sizes of a tensor that must have `N` dimensions.
fn dims<const N: usize>(t: &Tensor, what: &str) -> Result<[i64; N], ConvertError> {
    t.size().try_into().map_err(|size| {
        ConvertError(format!(
            "{what}: expected {N} dimensions, got shape {size:?}"
        ))
    })
}

/// Rounds, clamps to 0..=255 and casts to uint8.
fn to_u8(mut t: Tensor) -> Result<Tensor, ConvertError> {
    Ok(t.f_round_()?.f_clamp_(0.0, 255.0)?.f_to_kind(Kind::Uint8)?)
}

/// luma uint8 (H, W) and chroma uint8 (ceil(H/2), ceil(W/2), 2) -> uint8 (1, H, W, 3) RGB.
/// The chroma term is computed at chroma resolution, then replicated 2x2.
pub fn yuv_to_rgb(
    luma: &Tensor,
    chroma: &Tensor,
    matrix: YuvMatrix,
    range: YuvRange,
) -> Result<Tensor, ConvertError> {
    let c = YuvCoefficients::new(matrix, range);
    let device = luma.device();
    let [h, w] = dims(luma, "luma (H, W)")?;
    let [ch, cw, _] = dims(chroma, "chroma (H/2, W/2, 2)")?;
    let mut y = luma.f_to_kind(Kind::Float)?;
    y.f_sub_scalar_(c.luma_offset)?
        .f_mul_scalar_(1.0 / c.luma_scale)
        .map(drop)?;
    let mut chroma = chroma.f_to_kind(Kind::Float)?;
    chroma.f_sub_scalar_(128.0).map(drop)?;
    let rgb_chroma = chroma.f_matmul(&constant(&c.chroma_to_rgb(), &[2, 3], device)?)?;
    let rgb_chroma = rgb_chroma
        .f_repeat_interleave_self_int(2, 0, 2 * ch)?
        .f_narrow(0, 0, h)?
        .f_repeat_interleave_self_int(2, 1, 2 * cw)?
        .f_narrow(1, 0, w)?;
    to_u8(rgb_chroma.f_add(&y.f_unsqueeze(2)?)?.f_unsqueeze(0)?)
}

/// uint8 (H, W, 3) RGB -> (luma uint8 (H, W), chroma uint8 (ceil(H/2), ceil(W/2), 2)).
///
/// Two convolutions over the channels-last float frame: 1x1 for luma, 2x2 stride 2 for chroma,
/// whose kernel is the chroma matrix spread over the block, so each chroma sample is the mean
/// chroma of its 2x2 block (the transform is linear). Odd edges are replicated, which keeps
/// the mean of the pixels that exist.
pub fn rgb_to_yuv(
    rgb: &Tensor,
    matrix: YuvMatrix,
    range: YuvRange,
) -> Result<(Tensor, Tensor), ConvertError> {
    let c = YuvCoefficients::new(matrix, range);
    let device = rgb.device();
    let [h, w, _] = dims(rgb, "RGB (H, W, 3)")?;
    // (1, 3, H, W) viewed over an NHWC float copy: channels-last strides, which oneDNN's
    // convolution takes as is (an NCHW-contiguous input would be far slower).
    let x = rgb
        .f_to_kind(Kind::Float)?
        .f_contiguous()?
        .f_reshape([1, h, w, 3])?
        .f_permute([0, 3, 1, 2])?;
    let luma_kernel = constant(&c.rgb_to_luma(), &[1, 3, 1, 1], device)?;
    let luma_bias = constant(&[c.luma_offset as f32], &[1], device)?;
    let luma = x.f_conv2d(&luma_kernel, Some(&luma_bias), [1, 1], [0, 0], [1, 1], 1)?;
    let x = match (h % 2, w % 2) {
        (0, 0) => x,
        (dh, dw) => x.f_replication_pad2d([0, dw, 0, dh])?,
    };
    let chroma_kernel = constant(&c.rgb_to_chroma_2x2(), &[2, 3, 2, 2], device)?;
    let chroma_bias = constant(&[128.0, 128.0], &[2], device)?;
    let chroma = x.f_conv2d(
        &chroma_kernel,
        Some(&chroma_bias),
        [2, 2],
        [0, 0],
        [1, 1],
        1,
    )?;
    let luma = luma.f_select(0, 0)?.f_select(0, 0)?;
    let chroma = chroma.f_select(0, 0)?.f_permute([1, 2, 0])?;
    Ok((to_u8(luma)?, to_u8(chroma)?))
}

/// Bicubic upscaling of an alpha plane uint8 (1, H, W) to (1, height, width).
pub fn upscale_alpha(alpha: &Tensor, height: usize, width: usize) -> Result<Tensor, ConvertError> {
    let scaled = alpha
        .f_to_kind(Kind::Float)?
        .f_unsqueeze(1)?
        .f_upsample_bicubic2d([height as i64, width as i64], false, None, None)?;
    to_u8(scaled.f_select(1, 0)?)
}

/// Writes uint8 (1, H, W, 3) RGB (any device) into an output frame; `alpha` (1, H, W) fills
/// the alpha channel of layouts that have one (255 when None), padding bytes are untouched.
pub fn write_rgb(
    format: &FrameFormat,
    rgb: &Tensor,
    alpha: Option<&Tensor>,
    planes: &mut [PlaneMut],
) -> Result<(), ConvertError> {
    let raw: Vec<RawPlane> = planes.iter_mut().map(RawPlane::from).collect();
    // SAFETY: host slices borrowed mutably for the whole call
    unsafe { write_raw(format, rgb, alpha, &raw, Device::Cpu) }
}

/// [`write_rgb`] into a frame in the memory of `device` (a CUDA device), without the host.
///
/// # Safety
/// Each plane's `ptr` must address `len` writable bytes of `device`'s memory that nothing else
/// uses during the call.
pub unsafe fn write_rgb_to_device_memory(
    format: &FrameFormat,
    rgb: &Tensor,
    alpha: Option<&Tensor>,
    planes: &[RawPlane],
    device: Device,
) -> Result<(), ConvertError> {
    // SAFETY: forwarded to the caller
    unsafe { write_raw(format, rgb, alpha, planes, device) }
}

/// # Safety
/// Each plane addresses `len` writable bytes of `memory`'s memory, used by nothing else.
unsafe fn write_raw(
    format: &FrameFormat,
    rgb: &Tensor,
    alpha: Option<&Tensor>,
    planes: &[RawPlane],
    memory: Device,
) -> Result<(), ConvertError> {
    let geometry: Vec<(usize, usize)> = planes.iter().map(|p| (p.len, p.stride)).collect();
    format.check_planes(&geometry)?;
    let (h, w) = (format.height as i64, format.width as i64);
    let expected = [1, h, w, 3];
    if rgb.size() != expected || rgb.f_kind()? != Kind::Uint8 {
        return Err(ConvertError(format!(
            "cannot write {:?} {:?} into a {w}x{h} frame, expected Uint8 {expected:?}",
            rgb.f_kind()?,
            rgb.size()
        )));
    }
    let rgb = rgb.f_select(0, 0)?;
    match format.layout.packed_bytes() {
        Some(bpp) => write_packed(format, &rgb, alpha, &planes[0], bpp, memory),
        None => write_yuv(format, &rgb, planes, memory),
    }
}

fn write_packed(
    format: &FrameFormat,
    rgb: &Tensor,
    alpha: Option<&Tensor>,
    plane: &RawPlane,
    bpp: i64,
    memory: Device,
) -> Result<(), ConvertError> {
    let (h, w, s) = (
        format.height as i64,
        format.width as i64,
        plane.stride as i64,
    );
    // SAFETY: write_raw checked the plane holds h rows of w * bpp bytes at this stride; the
    // view is dropped before the call returns.
    let pixels = unsafe { blob(plane.ptr, &[h, w, bpp], &[s, bpp, 1], memory)? };
    let rgb = if format.layout.is_bgr() {
        rgb.f_flip([2])?
    } else {
        rgb.shallow_clone()
    };
    pixels.f_narrow(2, 0, 3)?.f_copy_(&rgb)?;
    if bpp == 4 {
        let mut fourth = pixels.f_select(2, 3)?;
        match alpha {
            Some(alpha) if format.layout.has_alpha() => fourth.f_copy_(&alpha.f_select(0, 0)?)?,
            _ => {
                fourth.f_fill_(255).map(drop)?;
            }
        }
    }
    Ok(())
}

fn write_yuv(
    format: &FrameFormat,
    rgb: &Tensor,
    planes: &[RawPlane],
    memory: Device,
) -> Result<(), ConvertError> {
    let (h, w) = (format.height as i64, format.width as i64);
    let (ch, cw) = format.chroma_size();
    if memory == Device::Cpu && rgb.device() == Device::Cpu {
        // SAFETY: write_raw checked each plane's rows and stride; the planes are host memory
        return unsafe { write_yuv_on_host(format, rgb, planes) };
    }
    let (luma, chroma) = rgb_to_yuv(rgb, format.matrix, format.range)?;
    let sy = planes[0].stride as i64;
    // SAFETY (every `blob` here): write_raw checked each plane's rows and stride.
    unsafe { blob(planes[0].ptr, &[h, w], &[sy, 1], memory)? }.f_copy_(&luma)?;
    if format.layout == PixelLayout::I420 {
        for (i, plane) in planes[1..3].iter().enumerate() {
            let s = plane.stride as i64;
            let mut view = unsafe { blob(plane.ptr, &[ch, cw], &[s, 1], memory)? };
            view.f_copy_(&chroma.f_select(2, i as i64)?)?;
        }
    } else {
        let s = planes[1].stride as i64;
        unsafe { blob(planes[1].ptr, &[ch, cw, 2], &[s, 2, 1], memory)? }.f_copy_(&chroma)?;
    }
    Ok(())
}

/// [`write_yuv`] of a CPU tensor into host planes, in one pass ([`host`]).
///
/// # Safety
/// Each plane addresses `len` writable bytes of host memory that nothing else uses during the
/// call, checked by `check_planes`.
unsafe fn write_yuv_on_host(
    format: &FrameFormat,
    rgb: &Tensor,
    planes: &[RawPlane],
) -> Result<(), ConvertError> {
    let (h, w) = (format.height, format.width);
    let c = YuvCoefficients::new(format.matrix, format.range).host();
    let rgb = rgb.f_contiguous()?;
    // SAFETY: write_raw checked a uint8 (H, W, 3) tensor of this frame's size; contiguous now,
    // alive and unchanged for the call
    let pixels = unsafe { std::slice::from_raw_parts(rgb.data_ptr().cast::<u8>(), h * w * 3) };
    // SAFETY: forwarded to the caller; the planes are distinct
    let plane = |p: &RawPlane| unsafe { std::slice::from_raw_parts_mut(p.ptr, p.len) };
    let chroma = host_chroma(format, planes, plane);
    let luma = (plane(&planes[0]), planes[0].stride);
    host::rgb_to_yuv420(pixels, w, h, &c, luma, chroma, host_threads());
    Ok(())
}

#[cfg(test)]
mod tests;
