// SPDX-License-Identifier: MPL-2.0
//! # lightsrscale
//!
//! Upscales video x2 or x4 (the scales its model bundle offers) with a super-resolution
//! TorchScript model ladder run by libtorch on CUDA or the CPU. With `model` empty it runs the
//! bundle embedded in the plugin. YUV input is converted with the caps' colorimetry.
//!
//! ## Example launch line
//! ```text
//! gst-launch-1.0 videotestsrc ! video/x-raw,format=NV12,width=480,height=270 ! lightsrscale scale=4 ! video/x-raw,width=1920,height=1080 ! fakesink
//! gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! videoconvert ! lightsrscale ! videoconvert ! autovideosink
//! ```

use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use gst::{glib, prelude::*, subclass::prelude::*};
use gst_base::subclass::prelude::*;
use gst_video::{prelude::*, subclass::prelude::*};

use super::caps::{Way, fixate_to_scale, scale_caps};
use crate::{
    convert::{self, FrameFormat, PixelLayout, Plane, PlaneMut, YuvMatrix, YuvRange},
    engine::{
        self, Bundle, BundleSource, DeviceRequest, EngineError, Ladder, Variant, manifest::AUTO,
    },
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

#[derive(Debug, Clone)]
struct Settings {
    model: String,
    scale: u32,
    device: String,
    variant: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            model: DEFAULT_MODEL.into(),
            scale: DEFAULT_SCALE,
            device: DEFAULT_DEVICE.into(),
            variant: DEFAULT_VARIANT.into(),
        }
    }
}

/// What one negotiated stream needs per frame.
struct Negotiated {
    input: FrameFormat,
    output: FrameFormat,
    scale: u32,
    /// The variant that ran the last frame (or was warmed up for the first).
    active: Arc<Variant>,
}

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
}

#[derive(Default)]
pub struct LightSrScale {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Picks the rung of `ladder` that runs the next frame: the ONE place where a variant is chosen.
///
/// `variant=auto` takes the heaviest (best) rung; a name takes that rung. A deadline policy
/// (adaptive fallback down the ladder) plugs in here.
fn choose_variant(ladder: &Ladder, settings: &Settings) -> Result<Arc<Variant>, String> {
    if settings.variant == AUTO {
        return ladder
            .variants
            .first()
            .cloned()
            .ok_or_else(|| format!("ladder x{} is empty", ladder.scale));
    }
    ladder.variant(&settings.variant).cloned().ok_or_else(|| {
        let names: Vec<&str> = ladder.variants.iter().map(|v| v.name()).collect();
        format!(
            "variant={} is not in the x{} ladder of this bundle (it has: {}); use variant=auto or one of those",
            settings.variant,
            ladder.scale,
            names.join(", ")
        )
    })
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
            .any(|l| choose_variant(l, settings).is_ok());
        if !known {
            let ladder = candidates.first().and_then(|s| bundle.ladder(*s));
            let why = ladder
                .map(|l| choose_variant(l, settings).err().unwrap_or_default())
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

    /// Takes what the next frame needs from the state; picks its variant.
    fn frame_job(&self, settings: &Settings) -> Result<FrameJob, String> {
        let (job, switched) = {
            let mut state = lock(&self.state);
            let state = state.as_mut().ok_or("not started")?;
            let negotiated = state.negotiated.as_mut().ok_or("no caps negotiated")?;
            let ladder = state
                .bundle
                .ladder(negotiated.scale)
                .ok_or("the negotiated scale has no ladder")?;
            let variant = choose_variant(ladder, settings)?;
            let switched = !Arc::ptr_eq(&variant, &negotiated.active);
            if switched {
                gst::info!(
                    CAT,
                    imp = self,
                    "variant {} -> {}",
                    negotiated.active.name(),
                    variant.name()
                );
                negotiated.active = variant.clone();
            }
            (
                FrameJob {
                    input: negotiated.input,
                    output: negotiated.output,
                    variant,
                },
                switched,
            )
        };
        if switched {
            // Outside the lock: a notify handler may read active-variant.
            self.obj().notify("active-variant");
        }
        Ok(job)
    }

    fn upscale_frame(
        &self,
        job: &FrameJob,
        inframe: &gst_video::VideoFrameRef<&gst::BufferRef>,
        outframe: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
    ) -> Result<(), String> {
        let in_strides = inframe.plane_stride();
        let in_planes = (0..inframe.n_planes())
            .map(|i| {
                let data = inframe.plane_data(i).map_err(|e| e.to_string())?;
                Ok(Plane {
                    data,
                    stride: stride(in_strides[i as usize])?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let frame = convert::to_rgb(&job.input, &in_planes, job.variant.device())
            .map_err(|e| e.to_string())?;
        let upscaled = job.variant.upscale(&frame.rgb).map_err(|e| e.to_string())?;
        let alpha = frame
            .alpha
            .as_ref()
            .map(|a| convert::upscale_alpha(a, job.output.height, job.output.width))
            .transpose()
            .map_err(|e| e.to_string())?;
        let out_strides: Vec<i32> = outframe.plane_stride().to_vec();
        let mut out_planes = Vec::with_capacity(out_strides.len());
        for (data, s) in outframe.planes_data_mut().into_iter().zip(out_strides) {
            out_planes.push(PlaneMut {
                data,
                stride: stride(s)?,
            });
        }
        convert::write_rgb(&job.output, &upscaled, alpha.as_ref(), &mut out_planes)
            .map_err(|e| e.to_string())
    }
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
                    .blurb("Ladder rung to run: auto (the best one) or a variant name from the bundle manifest")
                    .default_value(Some(DEFAULT_VARIANT))
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("active-variant")
                    .nick("Active variant")
                    .blurb("Name of the variant that processed the last frame (empty before caps)")
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
            "variant" => {
                settings.variant = value
                    .get::<Option<String>>()
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| DEFAULT_VARIANT.into())
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

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = lock(&self.settings);
        match pspec.name() {
            "model" => settings.model.to_value(),
            "scale" => settings.scale.to_value(),
            "device" => settings.device.to_value(),
            "variant" => settings.variant.to_value(),
            "active-variant" => {
                drop(settings);
                let state = lock(&self.state);
                let active = state
                    .as_ref()
                    .and_then(|s| s.negotiated.as_ref())
                    .map(|n| n.active.name().to_string());
                active.unwrap_or_default().to_value()
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
            let caps = gst_video::VideoCapsBuilder::new()
                .format_list([F::Rgb, F::Rgba, F::Rgbx, F::Bgrx, F::Bgra, F::I420, F::Nv12])
                .build();
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
        let bundle = self.load_bundle(&settings)?;
        Self::check_settings(&bundle, &settings)?;
        *lock(&self.state) = Some(State {
            bundle,
            negotiated: None,
        });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        // Dropping the last Arc of a bundle frees it (the cache holds it weakly).
        *lock(&self.state) = None;
        Ok(())
    }

    fn transform_caps(
        &self,
        direction: gst::PadDirection,
        caps: &gst::Caps,
        filter: Option<&gst::Caps>,
    ) -> Option<gst::Caps> {
        let scales = self.scales();
        let way = Way::of(direction);
        let other = scale_caps(caps, &scales, way);
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
        let settings = lock(&self.settings).clone();
        let bundle = lock(&self.state).as_ref().map(|s| s.bundle.clone());
        let bundle = bundle.ok_or_else(|| fail("caps before start".into()))?;
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
        let variant = choose_variant(ladder, &settings).map_err(fail)?;
        let warm_up = variant
            .warm_up(input.height as i64, input.width as i64)
            .map_err(|e| fail(e.to_string()))?;
        gst::info!(
            CAT,
            imp = self,
            "{}x{} -> {}x{} {:?} with {} on {:?}, warm-up {warm_up:?}",
            input.width,
            input.height,
            output.width,
            output.height,
            input.layout,
            variant.name(),
            variant.device()
        );
        let mut state = lock(&self.state);
        let state = state
            .as_mut()
            .ok_or_else(|| fail("stopped during negotiation".into()))?;
        state.negotiated = Some(Negotiated {
            input,
            output,
            scale,
            active: variant,
        });
        Ok(())
    }

    fn transform_frame(
        &self,
        inframe: &gst_video::VideoFrameRef<&gst::BufferRef>,
        outframe: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = lock(&self.settings).clone();
        let result = self
            .frame_job(&settings)
            .and_then(|job| self.upscale_frame(&job, inframe, outframe));
        result.map(|()| gst::FlowSuccess::Ok).map_err(|message| {
            gst::element_imp_error!(self, gst::StreamError::Failed, ("{message}"));
            gst::FlowError::Error
        })
    }
}
