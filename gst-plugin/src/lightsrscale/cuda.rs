// SPDX-License-Identifier: MPL-2.0
//! Frames in CUDA memory (`video/x-raw(memory:CUDAMemory)`), shared with GStreamer's CUDA
//! elements (`cudaupload`, `cudadownload`, `nvh264dec`, `nvh264enc`, ...) without a copy.
//!
//! GStreamer's CUDA library (`libgstcuda-1.0`, gst-plugins-bad 1.22+) has no Rust bindings and
//! Debian ships no headers for it, so the few functions used here are loaded at run time with
//! dlopen, with libcuda for the primary context: without them (no driver, no
//! gst-plugins-bad) the element simply offers system memory only.
//!
//! Memory is shared within one CUDA context. libtorch computes in the device's *primary*
//! context; GStreamer elements create their own unless given one. So the element wraps the
//! primary context as a `GstCudaContext` (`gst_cuda_context_new_wrapped`) and hands it to every
//! CUDA element that asks (context queries reach it even before it starts, so that downstream
//! elements, which start first, get it too), and posts it on the bus. Buffers from another
//! context are still accepted: they are mapped through host memory, as any element would.

use std::{
    ffi::{c_int, c_uint, c_void},
    ptr,
    sync::{Arc, Mutex, OnceLock},
};

use gst::{
    glib::{self, translate::*},
    prelude::*,
};

use crate::convert::RawPlane;

/// `GST_MAP_CUDA` of gstcudamemory.h: `GST_MAP_FLAG_LAST << 1`.
pub const MAP_CUDA: u32 = gst::ffi::GST_MAP_FLAG_LAST << 1;
/// `GST_CAPS_FEATURE_MEMORY_CUDA_MEMORY`.
pub const CAPS_FEATURE: &str = "memory:CUDAMemory";
/// `GST_CUDA_CONTEXT_TYPE`.
pub const CONTEXT_TYPE: &str = "gst.cuda.context";

type CuResult = c_int;
type CuDevice = c_int;
type CuContext = *mut c_void;
type GstCudaContext = c_void;

/// The public head of `GstCudaMemory` (gstcudamemory.h, unchanged since 1.22).
#[repr(C)]
struct GstCudaMemory {
    mem: gst::ffi::GstMemory,
    context: *mut GstCudaContext,
}

/// The public head of `GstCudaBufferPool` (gstcudabufferpool.h, 1.22+).
#[repr(C)]
struct GstCudaBufferPoolHead {
    parent: gst::ffi::GstBufferPool,
    context: *mut GstCudaContext,
}

/// The functions of libgstcuda-1.0 and libcuda this module calls.
pub struct Library {
    _gst_cuda: libloading::Library,
    _cuda: libloading::Library,
    cu_init: unsafe extern "C" fn(c_uint) -> CuResult,
    cu_device_get: unsafe extern "C" fn(*mut CuDevice, c_int) -> CuResult,
    cu_primary_retain: unsafe extern "C" fn(*mut CuContext, CuDevice) -> CuResult,
    context_new_wrapped: unsafe extern "C" fn(CuContext, CuDevice) -> *mut GstCudaContext,
    context_get_handle: unsafe extern "C" fn(*mut GstCudaContext) -> *mut c_void,
    handle_context_query: unsafe extern "C" fn(
        *mut gst::ffi::GstElement,
        *mut gst::ffi::GstQuery,
        *mut GstCudaContext,
    ) -> glib::ffi::gboolean,
    context_new_cuda_context:
        unsafe extern "C" fn(*mut GstCudaContext) -> *mut gst::ffi::GstContext,
    buffer_pool_new: unsafe extern "C" fn(*mut GstCudaContext) -> *mut gst::ffi::GstBufferPool,
    buffer_pool_get_type: unsafe extern "C" fn() -> glib::ffi::GType,
    is_cuda_memory: unsafe extern "C" fn(*mut gst::ffi::GstMemory) -> glib::ffi::gboolean,
    /// 1.24+: waits for work queued on the memory's CUDA stream.
    memory_sync: Option<unsafe extern "C" fn(*mut GstCudaMemory)>,
}

impl Library {
    /// The library, loaded once per process; Err says why CUDA memory is not offered.
    pub fn get() -> Result<&'static Library, &'static str> {
        static LIBRARY: OnceLock<Result<Library, String>> = OnceLock::new();
        LIBRARY
            .get_or_init(|| unsafe { Library::load() })
            .as_ref()
            .map_err(String::as_str)
    }

    /// # Safety
    /// Loads shared libraries and trusts the C signatures written here (gstcudacontext.h,
    /// gstcudautils.h, gstcudamemory.h, gstcudabufferpool.h of 1.22; cuda.h).
    unsafe fn load() -> Result<Library, String> {
        let open = |name: &str| {
            unsafe { libloading::Library::new(name) }.map_err(|e| format!("{name}: {e}"))
        };
        let gst_cuda = open("libgstcuda-1.0.so.0")?;
        let cuda = open("libcuda.so.1")?;
        macro_rules! sym {
            ($lib:expr, $name:literal) => {
                *unsafe { $lib.get(concat!($name, "\0").as_bytes()) }
                    .map_err(|e| format!("{}: {e}", $name))?
            };
        }
        let load_library: unsafe extern "C" fn() -> glib::ffi::gboolean =
            sym!(gst_cuda, "gst_cuda_load_library");
        if unsafe { load_library() } == glib::ffi::GFALSE {
            return Err("gst_cuda_load_library failed (no usable CUDA driver)".into());
        }
        let init_once: unsafe extern "C" fn() = sym!(gst_cuda, "gst_cuda_memory_init_once");
        unsafe { init_once() };
        let memory_sync = unsafe { gst_cuda.get(b"gst_cuda_memory_sync\0") }
            .ok()
            .map(|s| *s);
        Ok(Library {
            cu_init: sym!(cuda, "cuInit"),
            cu_device_get: sym!(cuda, "cuDeviceGet"),
            cu_primary_retain: sym!(cuda, "cuDevicePrimaryCtxRetain"),
            context_new_wrapped: sym!(gst_cuda, "gst_cuda_context_new_wrapped"),
            context_get_handle: sym!(gst_cuda, "gst_cuda_context_get_handle"),
            handle_context_query: sym!(gst_cuda, "gst_cuda_handle_context_query"),
            context_new_cuda_context: sym!(gst_cuda, "gst_context_new_cuda_context"),
            buffer_pool_new: sym!(gst_cuda, "gst_cuda_buffer_pool_new"),
            buffer_pool_get_type: sym!(gst_cuda, "gst_cuda_buffer_pool_get_type"),
            is_cuda_memory: sym!(gst_cuda, "gst_is_cuda_memory"),
            memory_sync,
            _gst_cuda: gst_cuda,
            _cuda: cuda,
        })
    }
}

/// The wrapped context of CUDA device `index`, made once per process and kept for its life:
/// other elements, pools and buffers in flight may hold the `GstCudaContext` longer than any
/// element, and `gst_cuda_context_new_wrapped` needs the CUDA context alive as long as it is.
/// Every element of the process hands out the same `GstCudaContext`. A failure is kept too
/// (the libraries or the driver do not come back within a process).
pub fn shared(index: usize) -> Result<Arc<Shared>, String> {
    type Made = Result<Arc<Shared>, String>;
    static SHARED: Mutex<Vec<(usize, Made)>> = Mutex::new(Vec::new());
    let mut all = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, made)) = all.iter().find(|(i, _)| *i == index) {
        return made.clone();
    }
    let made = Library::get()
        .map_err(str::to_string)
        .and_then(|lib| Shared::new(lib, index))
        .map(Arc::new);
    all.push((index, made.clone()));
    made
}

/// libtorch's context on one CUDA device, wrapped for GStreamer; see [`shared`].
pub struct Shared {
    lib: &'static Library,
    handle: CuContext,
    context: *mut GstCudaContext,
}

// SAFETY: a GstCudaContext is a thread-safe GstObject and the CUDA handles are process-wide.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// Retains the primary context of CUDA device `index` and wraps it.
    fn new(lib: &'static Library, index: usize) -> Result<Shared, String> {
        let check = |what: &str, r: CuResult| match r {
            0 => Ok(()),
            e => Err(format!("{what} failed (CUresult {e})")),
        };
        let ordinal = c_int::try_from(index).map_err(|_| format!("CUDA device {index}"))?;
        let (mut device, mut handle) = (0, ptr::null_mut());
        // SAFETY: plain CUDA driver calls with out-pointers to locals
        unsafe {
            check("cuInit", (lib.cu_init)(0))?;
            check("cuDeviceGet", (lib.cu_device_get)(&mut device, ordinal))?;
            check(
                "cuDevicePrimaryCtxRetain",
                (lib.cu_primary_retain)(&mut handle, device),
            )?;
        }
        // SAFETY: a retained primary context (never released: see `shared`) and its device
        let context = unsafe { (lib.context_new_wrapped)(handle, device) };
        if context.is_null() {
            return Err("gst_cuda_context_new_wrapped failed".into());
        }
        Ok(Shared {
            lib,
            handle,
            context,
        })
    }

    /// Answers a context query for GStreamer's CUDA context with this one.
    pub fn answer(&self, element: &gst::Element, query: &mut gst::QueryRef) -> bool {
        let gst::QueryViewMut::Context(q) = query.view_mut() else {
            return false;
        };
        if q.context_type() != CONTEXT_TYPE {
            return false;
        }
        // SAFETY: valid element, query and context; the call fills the query
        unsafe {
            (self.lib.handle_context_query)(
                element.to_glib_none().0,
                query.as_mut_ptr(),
                self.context,
            ) != glib::ffi::GFALSE
        }
    }

    /// A `have-context` message carrying this context, so that the pipeline hands it to CUDA
    /// elements that did not ask.
    pub fn have_context_message(&self, element: &gst::Element) -> gst::Message {
        // SAFETY: returns a new GstContext (transfer full)
        let context: gst::Context =
            unsafe { from_glib_full((self.lib.context_new_cuda_context)(self.context)) };
        gst::message::HaveContext::builder(context)
            .src(element)
            .build()
    }

    /// A new `GstCudaBufferPool` on this context, configured for `caps` (in CUDA memory) with
    /// at least `min_buffers`, with video meta (its planes are pitched), and the frame size.
    pub fn buffer_pool(
        &self,
        caps: &gst::Caps,
        min_buffers: u32,
    ) -> Result<(gst::BufferPool, u32), String> {
        let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| e.to_string())?;
        let size = u32::try_from(info.size()).map_err(|_| "frame too large".to_string())?;
        // SAFETY: transfer full, NULL on failure
        let pool = unsafe { (self.lib.buffer_pool_new)(self.context) };
        if pool.is_null() {
            return Err("gst_cuda_buffer_pool_new failed".into());
        }
        let pool: gst::BufferPool = unsafe { from_glib_full(pool) };
        let mut config = pool.config();
        config.set_params(Some(caps), size, min_buffers, 0);
        config.add_option(gst_video::BUFFER_POOL_OPTION_VIDEO_META.as_ref());
        pool.set_config(config)
            .map_err(|e| format!("CUDA buffer pool: {e}"))?;
        Ok((pool, size))
    }

    /// Whether `pool` is a `GstCudaBufferPool` of this context (whose buffers the element
    /// can use in place).
    pub fn is_own_pool(&self, pool: &gst::BufferPool) -> bool {
        // SAFETY: a registered GType
        let ty: glib::Type = unsafe { from_glib((self.lib.buffer_pool_get_type)()) };
        if !pool.type_().is_a(ty) {
            return false;
        }
        // SAFETY: a GstCudaBufferPool, whose public head is { GstBufferPool; GstCudaContext * }
        unsafe {
            let ctx = (*pool.as_ptr().cast::<GstCudaBufferPoolHead>()).context;
            !ctx.is_null() && (self.lib.context_get_handle)(ctx) == self.handle
        }
    }

    /// Whether every memory of `buffer` is CUDA memory of this context (so that it can be
    /// mapped as device pointers libtorch may use); waits for work queued on them (1.24+).
    pub fn owns(&self, buffer: &gst::BufferRef) -> bool {
        buffer.n_memory() > 0
            && buffer.iter_memories().all(|m| {
                let mem = m.as_mut_ptr();
                // SAFETY: a valid GstMemory; checked to be a GstCudaMemory before the cast
                unsafe {
                    (self.lib.is_cuda_memory)(mem) != glib::ffi::GFALSE && {
                        let cmem = mem.cast::<GstCudaMemory>();
                        let ctx = (*cmem).context;
                        !ctx.is_null() && (self.lib.context_get_handle)(ctx) == self.handle && {
                            if let Some(sync) = self.lib.memory_sync {
                                sync(cmem);
                            }
                            true
                        }
                    }
                }
            })
    }
}

/// A `GstCudaBufferPool` on libtorch's context of CUDA device `index`, configured for `caps`
/// (in `memory:CUDAMemory`) and active: frames that the element reads in place, for benchmarks
/// that need CUDA memory without GStreamer's `cudaupload`.
pub fn buffer_pool_for(index: usize, caps: &gst::Caps) -> Result<gst::BufferPool, String> {
    let (pool, _) = shared(index)?.buffer_pool(caps, 1)?;
    pool.set_active(true).map_err(|e| e.to_string())?;
    Ok(pool)
}

/// Whether `pool` is a CUDA buffer pool of the context the element shares on device `index`
/// (for tests: the pool `propose_allocation` offers upstream).
pub fn is_shared_pool(index: usize, pool: &gst::BufferPool) -> bool {
    shared(index).is_ok_and(|s| s.is_own_pool(pool))
}

/// A video frame mapped as CUDA device pointers (`GST_MAP_CUDA`), unmapped on drop.
pub struct DeviceFrame {
    frame: gst_video::ffi::GstVideoFrame,
}

impl DeviceFrame {
    /// Maps `buffer` (CUDA memory, see [`Shared::owns`]) for reading or writing on the GPU.
    ///
    /// # Safety
    /// `buffer` must outlive the frame; for `write`, it must be writable and not mapped
    /// elsewhere.
    pub unsafe fn map(
        buffer: &gst::BufferRef,
        info: &gst_video::VideoInfo,
        write: bool,
    ) -> Result<DeviceFrame, String> {
        let access = if write {
            gst::ffi::GST_MAP_WRITE
        } else {
            gst::ffi::GST_MAP_READ
        } | gst_video::ffi::GST_VIDEO_FRAME_MAP_FLAG_NO_REF;
        let mut frame = std::mem::MaybeUninit::<gst_video::ffi::GstVideoFrame>::zeroed();
        // SAFETY: valid info and buffer; `frame` is filled on success
        let ok = unsafe {
            gst_video::ffi::gst_video_frame_map(
                frame.as_mut_ptr(),
                info.to_glib_none().0.cast_mut(),
                buffer.as_mut_ptr(),
                access | MAP_CUDA,
            )
        };
        if ok == glib::ffi::GFALSE {
            return Err("could not map the CUDA memory frame on the GPU".into());
        }
        Ok(DeviceFrame {
            frame: unsafe { frame.assume_init() },
        })
    }

    /// Each plane's device pointer, extent and stride.
    pub fn planes(&self) -> Vec<RawPlane> {
        let info = &self.frame.info;
        let finfo = info.finfo;
        let n = if finfo.is_null() {
            0
        } else {
            // SAFETY: a mapped frame's format info
            unsafe { (*finfo).n_planes as usize }
        };
        (0..n)
            .map(|i| {
                let stride = info.stride[i].max(0) as usize;
                // SAFETY: as above; plane i's rows (chroma ones subsampled)
                let rows = unsafe {
                    let h = info.height as u32;
                    let shift = (*finfo).h_sub[plane_component(finfo, i)];
                    ((h + (1 << shift) - 1) >> shift) as usize
                };
                RawPlane {
                    ptr: self.frame.data[i].cast(),
                    len: stride * rows,
                    stride,
                }
            })
            .collect()
    }
}

/// The first component stored in plane `plane` (for its subsampling).
///
/// # Safety
/// `finfo` is a valid GstVideoFormatInfo.
unsafe fn plane_component(finfo: *const gst_video::ffi::GstVideoFormatInfo, plane: usize) -> usize {
    let finfo = unsafe { &*finfo };
    (0..finfo.n_components as usize)
        .find(|&c| finfo.plane[c] as usize == plane)
        .unwrap_or(0)
}

impl Drop for DeviceFrame {
    fn drop(&mut self) {
        // SAFETY: mapped in `map`
        unsafe { gst_video::ffi::gst_video_frame_unmap(&mut self.frame) };
    }
}

#[cfg(test)]
mod tests {
    use gst_video::prelude::*;

    use super::super::caps::in_cuda_memory;
    use super::*;

    #[test]
    fn the_map_flag_and_feature_are_gstreamer_s() {
        assert_eq!(MAP_CUDA, 1 << 17);
        assert_eq!(CAPS_FEATURE, "memory:CUDAMemory");
    }

    /// Writes a deterministic pattern into `buffer` through a host mapping (CUDA memory
    /// uploads it when next mapped on the GPU).
    fn fill(buffer: &mut gst::BufferRef, info: &gst_video::VideoInfo) {
        let mut frame = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, info).unwrap();
        let stride = frame.plane_stride()[0] as usize;
        let row = info.width() as usize * 4;
        let data = frame.plane_data_mut(0).unwrap();
        for y in 0..info.height() as usize {
            for (x, b) in data[y * stride..y * stride + row].iter_mut().enumerate() {
                *b = ((x * 7 + y * 13 + (x / 4) * (y / 3)) % 251) as u8;
            }
        }
    }

    /// The rows of a frame's first plane, without padding.
    fn rows(buffer: &gst::BufferRef, info: &gst_video::VideoInfo) -> Vec<u8> {
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, info).unwrap();
        let stride = frame.plane_stride()[0] as usize;
        let row = info.width() as usize * 4;
        let data = frame.plane_data(0).unwrap();
        (0..info.height() as usize)
            .flat_map(|y| data[y * stride..y * stride + row].to_vec())
            .collect()
    }

    fn upscale(caps: &gst::Caps, input: gst::Buffer) -> (gst::Buffer, gst::Caps, u64) {
        let element = gst::ElementFactory::make("lightsrscale")
            .property_from_str("device", "cuda")
            .property_from_str("scale", "2")
            .property_from_str("variant", "deep")
            .build()
            .unwrap();
        let mut h = gst_check::Harness::with_element(&element, Some("sink"), Some("src"));
        h.play();
        h.set_src_caps(caps.clone());
        let out = h.push_and_pull(input).expect("an output frame");
        let out_caps = h.sinkpad().unwrap().current_caps().unwrap();
        let on_gpu = element
            .property::<gst::Structure>("stats")
            .get::<u64>("gpu-memory-frames")
            .unwrap();
        (out, out_caps, on_gpu)
    }

    #[test]
    fn frames_in_cuda_memory_are_upscaled_in_place_as_in_system_memory_when_cuda_exists() {
        gst::init().unwrap();
        if !tch::Cuda::is_available() {
            eprintln!("skipped: CUDA is not available in this process");
            return;
        }
        if let Err(why) = Library::get() {
            eprintln!("skipped: GStreamer's CUDA library is not usable here: {why}");
            return;
        }
        let _ = gst::Element::register(
            None,
            "lightsrscale",
            gst::Rank::NONE,
            <super::super::LightSrScale as glib::prelude::StaticType>::static_type(),
        );
        let shared = shared(0).expect("libtorch's context, wrapped");
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgba, 96, 64)
            .fps(gst::Fraction::new(25, 1))
            .build()
            .unwrap();
        let system_caps = info.to_caps().unwrap();
        let mut cuda_caps = system_caps.copy();
        cuda_caps
            .make_mut()
            .set_features(0, Some(gst::CapsFeatures::new([CAPS_FEATURE])));
        // a frame in CUDA memory of libtorch's context, from GStreamer's own CUDA pool
        let (pool, _) = shared.buffer_pool(&cuda_caps, 1).unwrap();
        assert!(shared.is_own_pool(&pool));
        pool.set_active(true).unwrap();
        let mut on_device = pool.acquire_buffer(None).unwrap();
        fill(on_device.get_mut().unwrap(), &info);
        assert!(shared.owns(&on_device), "our pool's memory is ours");
        let mut in_memory = gst::Buffer::with_size(info.size()).unwrap();
        fill(in_memory.get_mut().unwrap(), &info);

        let (want, want_caps, want_gpu) = upscale(&system_caps, in_memory);
        let (got, got_caps, got_gpu) = upscale(&cuda_caps, on_device);
        eprintln!("system memory: {want_caps}; CUDA memory: {got_caps}");
        assert!(!in_cuda_memory(&want_caps) && in_cuda_memory(&got_caps));
        assert_eq!(
            (want_gpu, got_gpu),
            (0, 1),
            "read and written in place on the GPU"
        );
        assert!(
            shared.owns(&got),
            "the output is CUDA memory of the same context"
        );
        let out_info = gst_video::VideoInfo::from_caps(&want_caps).unwrap();
        assert_eq!((out_info.width(), out_info.height()), (192, 128));
        let (a, b) = (rows(&want, &out_info), rows(&got, &out_info));
        let worst = a.iter().zip(&b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
        assert!(
            worst <= 1,
            "the CUDA memory output differs from the system memory one by {worst}"
        );
        pool.set_active(false).unwrap();
    }
}
