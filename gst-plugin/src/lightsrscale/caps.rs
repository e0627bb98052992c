// SPDX-License-Identifier: MPL-2.0
//! Caps arithmetic of a scaler whose factors come from the loaded ladder: width and height
//! multiply (sink -> src) or divide (src -> sink) by each offered scale; every other field
//! (format, pixel-aspect-ratio, framerate, colorimetry) is kept as it is.

use gst::{glib, prelude::*};

use super::cuda::CAPS_FEATURE;

/// Which way caps are being transformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Input caps -> possible output caps: sizes x scale.
    Up,
    /// Output caps -> possible input caps: sizes / scale (exact multiples only).
    Down,
}

impl Way {
    pub fn of(direction: gst::PadDirection) -> Way {
        if direction == gst::PadDirection::Sink {
            Way::Up
        } else {
            Way::Down
        }
    }
}

/// Caps for every structure of `caps` times every scale, in that order (scales preferred
/// first). `scales` empty means "not known yet": sizes become unconstrained.
pub fn scale_caps(caps: &gst::CapsRef, scales: &[u32], way: Way) -> gst::Caps {
    if caps.is_any() {
        return gst::Caps::new_any();
    }
    let mut out = gst::Caps::new_empty();
    for (structure, features) in caps.iter_with_features() {
        if scales.is_empty() {
            let mut s = structure.to_owned();
            s.set("width", gst::IntRange::new(1, i32::MAX));
            s.set("height", gst::IntRange::new(1, i32::MAX));
            out.merge_structure_full(s, Some(features.to_owned()));
            continue;
        }
        for &scale in scales {
            if let Some(s) = scale_structure(structure, scale, way) {
                out.merge_structure_full(s, Some(features.to_owned()));
            }
        }
    }
    out
}

/// One structure with width and height scaled; None when no size can be scaled exactly.
pub fn scale_structure(
    structure: &gst::StructureRef,
    scale: u32,
    way: Way,
) -> Option<gst::Structure> {
    let scale = i32::try_from(scale).ok().filter(|s| *s >= 1)?;
    let mut out = structure.to_owned();
    for field in ["width", "height"] {
        if let Ok(value) = structure.value(field) {
            out.set_value(field, scale_value(value, scale, way)?);
        }
    }
    Some(out)
}

/// An int, int range or list of them, scaled; None when nothing is left.
fn scale_value(value: &glib::SendValue, scale: i32, way: Way) -> Option<glib::SendValue> {
    if let Ok(n) = value.get::<i32>() {
        return scale_int(n, scale, way).map(|n| n.to_send_value());
    }
    if let Ok(range) = value.get::<gst::IntRange<i32>>() {
        return scale_range(range.min(), range.max(), scale, way);
    }
    if let Ok(list) = value.get::<gst::List>() {
        let items: Vec<glib::SendValue> = list
            .iter()
            .filter_map(|v| scale_value(v, scale, way))
            .collect();
        return match items.len() {
            0 => None,
            1 => items.into_iter().next(),
            _ => Some(gst::List::new(items).to_send_value()),
        };
    }
    None
}

fn scale_int(n: i32, scale: i32, way: Way) -> Option<i32> {
    match way {
        Way::Up => n.checked_mul(scale),
        Way::Down => (n % scale == 0).then_some(n / scale).filter(|n| *n >= 1),
    }
}

/// Up: [min*s, max*s] in steps of s (only multiples of s are reachable). Down: the sizes
/// whose multiple falls inside [min, max].
fn scale_range(min: i32, max: i32, scale: i32, way: Way) -> Option<glib::SendValue> {
    let (lo, hi, step) = match way {
        Way::Up => {
            let lo = min.max(1).checked_mul(scale)?;
            (lo, max.saturating_mul(scale) / scale * scale, scale)
        }
        Way::Down => ((min.max(1) + scale - 1) / scale, max / scale, 1),
    };
    match lo.cmp(&hi) {
        std::cmp::Ordering::Greater => None,
        std::cmp::Ordering::Equal => Some(lo.to_send_value()),
        std::cmp::Ordering::Less => Some(gst::IntRange::with_step(lo, hi, step).to_send_value()),
    }
}

/// Fixates `othercaps` to the first scale (in preference order) that maps the fixed size of
/// `caps` onto a size `othercaps` allows; pixel-aspect-ratio and framerate are kept nearest
/// to `caps`. None if no scale fits.
pub fn fixate_to_scale(
    caps: &gst::CapsRef,
    othercaps: &gst::CapsRef,
    scales: &[u32],
    way: Way,
) -> Option<gst::Caps> {
    let fixed = caps.structure(0)?;
    let (width, height) = (
        fixed.get::<i32>("width").ok()?,
        fixed.get::<i32>("height").ok()?,
    );
    for &scale in scales {
        let scale = i32::try_from(scale).ok()?;
        let (Some(w), Some(h)) = (scale_int(width, scale, way), scale_int(height, scale, way))
        else {
            continue;
        };
        for (candidate, features) in othercaps.iter_with_features() {
            let mut s = candidate.to_owned();
            // Returns false for a field that is already fixed: the values decide.
            s.fixate_field_nearest_int("width", w);
            s.fixate_field_nearest_int("height", h);
            let fits = s.get::<i32>("width") == Ok(w) && s.get::<i32>("height") == Ok(h);
            if !fits {
                continue;
            }
            keep_nearest(&mut s, fixed);
            let mut out = gst::Caps::new_empty();
            out.get_mut()?
                .append_structure_full(s, Some(features.to_owned()));
            out.fixate();
            return Some(out);
        }
    }
    None
}

fn keep_nearest(s: &mut gst::StructureRef, fixed: &gst::StructureRef) {
    for field in ["pixel-aspect-ratio", "framerate"] {
        if let Ok(target) = fixed.get::<gst::Fraction>(field)
            && s.has_field(field)
        {
            s.fixate_field_nearest_fraction(field, target);
        }
    }
}

/// The memory of each structure of `caps`, and the other one: with `cuda` every structure in
/// system memory is followed by the same in `memory:CUDAMemory` and the reverse (the element
/// reads and writes either; the same memory on both sides is preferred); without it, structures
/// in CUDA memory are dropped.
pub fn memory_alternatives(caps: &gst::CapsRef, cuda: bool) -> gst::Caps {
    if caps.is_any() {
        return caps.to_owned();
    }
    let system = gst::CapsFeatures::new_empty();
    let device = gst::CapsFeatures::new([CAPS_FEATURE]);
    let mut out = gst::Caps::new_empty();
    for (structure, features) in caps.iter_with_features() {
        let on_device = features.contains(CAPS_FEATURE);
        if on_device && !cuda {
            continue;
        }
        out.merge_structure_full(structure.to_owned(), Some(features.to_owned()));
        let on_system =
            features.is_empty() || features.contains(gst::CAPS_FEATURE_MEMORY_SYSTEM_MEMORY);
        if cuda && (on_device || on_system) {
            let other = if on_device { &system } else { &device };
            out.merge_structure_full(structure.to_owned(), Some(other.clone()));
        }
    }
    out
}

/// Whether fixed `caps` are in CUDA memory.
pub fn in_cuda_memory(caps: &gst::CapsRef) -> bool {
    caps.features(0).is_some_and(|f| f.contains(CAPS_FEATURE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(text: &str) -> gst::Caps {
        gst::init().unwrap();
        text.parse().unwrap()
    }

    #[test]
    fn fixed_sizes_multiply_and_divide_exactly() {
        let input = caps("video/x-raw,format=NV12,width=480,height=270,framerate=25/1");
        let up = scale_caps(&input, &[4, 2], Way::Up);
        assert_eq!(up.size(), 2);
        assert_eq!(up.structure(0).unwrap().get::<i32>("width"), Ok(1920));
        assert_eq!(up.structure(1).unwrap().get::<i32>("height"), Ok(540));
        assert_eq!(
            up.structure(0).unwrap().get::<gst::Fraction>("framerate"),
            Ok(gst::Fraction::new(25, 1))
        );
        let output = caps("video/x-raw,format=NV12,width=1920,height=1082");
        let down = scale_caps(&output, &[4, 2], Way::Down);
        // 1082 is not a multiple of 4: only x2 (960x541) remains.
        assert_eq!(down.size(), 1);
        assert_eq!(down.structure(0).unwrap().get::<i32>("height"), Ok(541));
    }

    #[test]
    fn ranges_become_stepped_ranges_and_lists_are_mapped() {
        let input = caps("video/x-raw,width=[1,100],height={ 3, 5 }");
        let up = scale_caps(&input, &[4], Way::Up);
        let s = up.structure(0).unwrap();
        let w = s.get::<gst::IntRange<i32>>("width").unwrap();
        assert_eq!((w.min(), w.max(), w.step()), (4, 400, 4));
        let heights: Vec<i32> = s
            .get::<gst::List>("height")
            .unwrap()
            .iter()
            .map(|v| v.get().unwrap())
            .collect();
        assert_eq!(heights, [12, 20]);
        let output = caps("video/x-raw,width=[10,17],height=[1,8]");
        let down = scale_caps(&output, &[4], Way::Down);
        let s = down.structure(0).unwrap();
        let w = s.get::<gst::IntRange<i32>>("width").unwrap();
        assert_eq!((w.min(), w.max()), (3, 4));
        let h = s.get::<gst::IntRange<i32>>("height").unwrap();
        assert_eq!((h.min(), h.max()), (1, 2));
        assert!(scale_caps(&caps("video/x-raw,width=[1,3]"), &[4], Way::Down).is_empty());
        assert!(scale_caps(&gst::Caps::new_any(), &[4], Way::Up).is_any());
        let huge = scale_caps(&caps("video/x-raw,width=[1,2147483647]"), &[4], Way::Up);
        let w = huge
            .structure(0)
            .unwrap()
            .get::<gst::IntRange<i32>>("width")
            .unwrap();
        assert_eq!(w.max() % 4, 0);
    }

    #[test]
    fn fixation_prefers_the_first_scale_downstream_allows() {
        let input = caps("video/x-raw,width=320,height=180,pixel-aspect-ratio=1/1,framerate=30/1");
        let other = caps(
            "video/x-raw,width=[1,2000],height=[1,2000],pixel-aspect-ratio=[1/2,2/1],framerate=[0/1,60/1]",
        );
        let fixed = fixate_to_scale(&input, &other, &[4, 2], Way::Up).unwrap();
        let s = fixed.structure(0).unwrap();
        assert_eq!(
            (s.get::<i32>("width"), s.get::<i32>("height")),
            (Ok(1280), Ok(720))
        );
        assert_eq!(
            s.get::<gst::Fraction>("framerate"),
            Ok(gst::Fraction::new(30, 1))
        );
        assert_eq!(
            s.get::<gst::Fraction>("pixel-aspect-ratio"),
            Ok(gst::Fraction::new(1, 1))
        );
        let only_x2 = caps("video/x-raw,width=640,height=360");
        let fixed = fixate_to_scale(&input, &only_x2, &[4, 2], Way::Up).unwrap();
        assert_eq!(fixed.structure(0).unwrap().get::<i32>("width"), Ok(640));
        assert!(
            fixate_to_scale(
                &input,
                &caps("video/x-raw,width=700,height=360"),
                &[4, 2],
                Way::Up
            )
            .is_none()
        );
    }

    #[test]
    fn memory_alternatives_follow_each_structure_or_drop_cuda() {
        gst::init().unwrap();
        let feature = CAPS_FEATURE;
        let caps: gst::Caps =
            "video/x-raw, format=RGBA; video/x-raw(memory:CUDAMemory), format=NV12"
                .parse()
                .unwrap();
        let both = memory_alternatives(&caps, true);
        let listed: Vec<(String, bool)> = both
            .iter_with_features()
            .map(|(s, f)| (s.get::<String>("format").unwrap(), f.contains(feature)))
            .collect();
        assert_eq!(
            listed,
            [
                ("RGBA".into(), false),
                ("RGBA".into(), true),
                ("NV12".into(), true),
                ("NV12".into(), false)
            ]
        );
        let system = memory_alternatives(&caps, false);
        assert_eq!(system.size(), 1);
        assert!(!in_cuda_memory(&system));
        let fixed: gst::Caps = "video/x-raw(memory:CUDAMemory), format=NV12, width=2, height=2"
            .parse()
            .unwrap();
        assert!(in_cuda_memory(&fixed));
        assert!(memory_alternatives(&gst::Caps::new_any(), false).is_any());
    }
}
