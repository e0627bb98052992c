// SPDX-License-Identifier: MPL-2.0
//! `manifest.json` of a bundle (model/BUNDLE.md, format version 1): parsing and the rules.
//!
//! Parsing checks every rule that can be checked from the text alone; whether each variant
//! file exists is checked by the bundle source, which knows where files live.

use serde::Deserialize;

use super::EngineError;

pub const FORMAT: &str = "lightsrscale-bundle";
pub const FORMAT_VERSION: u32 = 1;
/// Reserved: `variant=auto` asks the element to choose.
pub const AUTO: &str = "auto";

/// A validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub description: String,
    /// In manifest order; at most one per scale.
    pub ladders: Vec<LadderSpec>,
}

/// The variants available for one scale factor, heaviest / best first, lightest last.
#[derive(Debug, Clone, PartialEq)]
pub struct LadderSpec {
    pub scale: u32,
    pub variants: Vec<VariantSpec>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VariantSpec {
    pub name: String,
    /// Relative to the bundle directory.
    pub file: String,
    /// The same function in a form that runs faster on CUDA (`cuda_file`, optional): loaded
    /// instead of `file` when the device is CUDA.
    pub cuda_file: Option<String>,
    pub kind: String,
    /// May run with fp16 weights on CUDA.
    pub half: bool,
    pub fourier: bool,
    /// Informational: measured CPU cost of one 320x180 frame, if the exporter recorded it.
    pub cpu_ms_320x180: Option<f64>,
    pub objective: Objective,
    /// Input pixels on each side that influence an output pixel (`receptive_field`, optional):
    /// the overlap of tiles. Default [`DEFAULT_RECEPTIVE_FIELD`].
    pub receptive_field: u32,
}

/// Tile overlap when the manifest gives no `receptive_field`: covers the shipped student
/// (8 blocks of two 3x3 depthwise convs, a 3x3 head and tail: 18 pixels, plus the bicubic
/// skip's 2). Fourier rungs see the whole frame; for them tiling is an approximation.
pub const DEFAULT_RECEPTIVE_FIELD: u32 = 24;

/// What a variant was trained for (`"objective"`, optional; default `fidelity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Objective {
    /// Pixel losses: the closest to the original on average (highest PSNR), no invented detail.
    #[default]
    Fidelity,
    /// A GAN phase: plausible texture that the input does not determine, at some PSNR cost.
    Perceptual,
}

impl Objective {
    fn parse(text: &str) -> Result<Objective, String> {
        match text {
            "fidelity" => Ok(Objective::Fidelity),
            "perceptual" => Ok(Objective::Perceptual),
            other => Err(format!(
                "\"objective\" is {other:?}, expected \"fidelity\" or \"perceptual\""
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Objective::Fidelity => "fidelity",
            Objective::Perceptual => "perceptual",
        }
    }
}

#[derive(Deserialize)]
struct RawManifest {
    format: String,
    format_version: u32,
    name: String,
    #[serde(default)]
    description: String,
    io: Option<RawIo>,
    ladders: Vec<RawLadder>,
}

#[derive(Deserialize)]
struct RawIo {
    layout: String,
    dtype: String,
    channels: String,
}

#[derive(Deserialize)]
struct RawLadder {
    scale: i64,
    variants: Vec<RawVariant>,
}

#[derive(Deserialize)]
struct RawVariant {
    name: String,
    file: String,
    cuda_file: Option<String>,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    half: bool,
    #[serde(default)]
    fourier: bool,
    cpu_ms_320x180: Option<f64>,
    objective: Option<String>,
    receptive_field: Option<u32>,
}

impl Manifest {
    /// Parses and validates manifest text; `origin` names the file in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest, EngineError> {
        let bad = |problem: String| EngineError::Manifest {
            file: origin.to_string(),
            problem,
        };
        let raw: RawManifest =
            serde_json::from_str(text).map_err(|e| bad(format!("not a valid manifest: {e}")))?;
        check_header(&raw).map_err(bad)?;
        let mut ladders: Vec<LadderSpec> = Vec::with_capacity(raw.ladders.len());
        for raw_ladder in raw.ladders {
            let ladder = check_ladder(raw_ladder).map_err(bad)?;
            if ladders.iter().any(|l| l.scale == ladder.scale) {
                return Err(bad(format!(
                    "two ladders for scale {}; keep one per scale",
                    ladder.scale
                )));
            }
            ladders.push(ladder);
        }
        Ok(Manifest {
            name: raw.name,
            description: raw.description,
            ladders,
        })
    }

    /// Scale factors offered, largest first.
    pub fn scales(&self) -> Vec<u32> {
        let mut scales: Vec<u32> = self.ladders.iter().map(|l| l.scale).collect();
        scales.sort_unstable_by(|a, b| b.cmp(a));
        scales
    }

    pub fn ladder(&self, scale: u32) -> Option<&LadderSpec> {
        self.ladders.iter().find(|l| l.scale == scale)
    }
}

fn check_header(raw: &RawManifest) -> Result<(), String> {
    if raw.format != FORMAT {
        return Err(format!(
            "\"format\" is {:?}, expected {FORMAT:?}",
            raw.format
        ));
    }
    if raw.format_version != FORMAT_VERSION {
        return Err(format!(
            "\"format_version\" is {}, this element reads version {FORMAT_VERSION}; re-export the bundle",
            raw.format_version
        ));
    }
    if let Some(io) = &raw.io
        && (io.layout != "NHWC" || io.dtype != "uint8" || io.channels != "RGB")
    {
        return Err(format!(
            "\"io\" is {}/{}/{}, the element feeds NHWC/uint8/RGB",
            io.layout, io.dtype, io.channels
        ));
    }
    if raw.ladders.is_empty() {
        return Err("\"ladders\" is empty; a bundle needs at least one ladder".into());
    }
    Ok(())
}

fn check_ladder(raw: RawLadder) -> Result<LadderSpec, String> {
    let scale = u32::try_from(raw.scale)
        .ok()
        .filter(|s| (2..=16).contains(s))
        .ok_or_else(|| format!("ladder scale {} is not an integer in 2..=16", raw.scale))?;
    if raw.variants.is_empty() {
        return Err(format!("ladder x{scale} has no variants"));
    }
    let mut variants: Vec<VariantSpec> = Vec::with_capacity(raw.variants.len());
    for v in raw.variants {
        check_variant_name(&v.name).map_err(|p| format!("ladder x{scale}: {p}"))?;
        if variants.iter().any(|o| o.name == v.name) {
            return Err(format!(
                "ladder x{scale}: variant name {:?} appears twice",
                v.name
            ));
        }
        for file in std::iter::once(&v.file).chain(&v.cuda_file) {
            check_relative_file(file)
                .map_err(|p| format!("ladder x{scale}, variant {}: {p}", v.name))?;
        }
        let objective = v
            .objective
            .as_deref()
            .map(Objective::parse)
            .transpose()
            .map_err(|p| format!("ladder x{scale}, variant {}: {p}", v.name))?
            .unwrap_or_default();
        variants.push(VariantSpec {
            name: v.name,
            file: v.file,
            cuda_file: v.cuda_file,
            kind: v.kind,
            half: v.half,
            fourier: v.fourier,
            cpu_ms_320x180: v.cpu_ms_320x180,
            objective,
            receptive_field: v.receptive_field.unwrap_or(DEFAULT_RECEPTIVE_FIELD),
        });
    }
    Ok(LadderSpec { scale, variants })
}

fn check_variant_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        return Err(format!("variant name {name:?} must match [a-z0-9-]+"));
    }
    if name == AUTO {
        return Err("variant name \"auto\" is reserved".into());
    }
    Ok(())
}

fn check_relative_file(file: &str) -> Result<(), String> {
    let path = std::path::Path::new(file);
    if file.is_empty() || path.is_absolute() {
        return Err(format!(
            "file {file:?} must be a path relative to the bundle directory"
        ));
    }
    if path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!("file {file:?} must not contain \"..\""));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(ladders: &str) -> String {
        format!(
            r#"{{"format": "lightsrscale-bundle", "format_version": 1, "name": "t",
                "io": {{"layout": "NHWC", "dtype": "uint8", "channels": "RGB"}},
                "ladders": {ladders}}}"#
        )
    }

    fn variant(name: &str, file: &str) -> String {
        format!(r#"{{"name": "{name}", "file": "{file}", "kind": "bicubic", "half": false}}"#)
    }

    fn problem(text: &str) -> String {
        Manifest::parse(text, "/b/manifest.json")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn parses_two_ladders_in_order_and_lists_scales_largest_first() {
        let text = manifest(&format!(
            r#"[{{"scale": 2, "variants": [{}, {}]}}, {{"scale": 4, "variants": [{}]}}]"#,
            variant("heavy", "a.pt"),
            variant("bicubic", "b.pt"),
            variant("bicubic", "c.pt")
        ));
        let m = Manifest::parse(&text, "m").unwrap();
        assert_eq!(m.scales(), vec![4, 2]);
        let names: Vec<&str> = m
            .ladder(2)
            .unwrap()
            .variants
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(names, ["heavy", "bicubic"]);
        assert!(m.ladder(3).is_none());
        assert!(
            m.ladder(2)
                .unwrap()
                .variants
                .iter()
                .all(|v| v.objective == Objective::Fidelity)
        );
    }

    #[test]
    fn reads_the_objective_of_a_variant() {
        let gan = variant("gan", "g.pt").replace('}', r#", "objective": "perceptual"}"#);
        let pre = variant("pre", "p.pt").replace('}', r#", "objective": "fidelity"}"#);
        let text = manifest(&format!(r#"[{{"scale": 4, "variants": [{gan}, {pre}]}}]"#));
        let m = Manifest::parse(&text, "m").unwrap();
        let objectives: Vec<&str> = m
            .ladder(4)
            .unwrap()
            .variants
            .iter()
            .map(|v| v.objective.as_str())
            .collect();
        assert_eq!(objectives, ["perceptual", "fidelity"]);
    }

    #[test]
    fn rejects_each_broken_rule_naming_file_and_rule() {
        let one = |v: &str| manifest(&format!(r#"[{{"scale": 4, "variants": [{v}]}}]"#));
        let cases = [
            ("{", "not a valid manifest"),
            (&manifest("[]"), "\"ladders\" is empty"),
            (
                &manifest(r#"[{"scale": 1, "variants": []}]"#),
                "scale 1 is not an integer",
            ),
            (
                &manifest(r#"[{"scale": 4, "variants": []}]"#),
                "has no variants",
            ),
            (&one(&variant("auto", "a.pt")), "reserved"),
            (&one(&variant("Big Net", "a.pt")), "must match [a-z0-9-]+"),
            (&one(&variant("a", "../a.pt")), "must not contain \"..\""),
            (
                &one(&variant("a", "a.pt").replace('}', r#", "cuda_file": "../g.pt"}"#)),
                "variant a: file \"../g.pt\" must not contain \"..\"",
            ),
            (
                &one(&variant("a", "/abs/a.pt")),
                "relative to the bundle directory",
            ),
            (
                &one(&format!(
                    "{}, {}",
                    variant("a", "a.pt"),
                    variant("a", "b.pt")
                )),
                "appears twice",
            ),
            (
                &manifest(&format!(
                    r#"[{{"scale": 4, "variants": [{0}]}}, {{"scale": 4, "variants": [{0}]}}]"#,
                    variant("a", "a.pt")
                )),
                "two ladders for scale 4",
            ),
            (
                &one(&variant("a", "a.pt").replace('}', r#", "objective": "sharp"}"#)),
                "variant a: \"objective\" is \"sharp\", expected \"fidelity\" or \"perceptual\"",
            ),
        ];
        for (text, expected) in cases {
            let message = problem(text);
            assert!(message.contains("/b/manifest.json"), "{message}");
            assert!(
                message.contains(expected),
                "expected {expected:?} in {message:?}"
            );
        }
    }

    #[test]
    fn rejects_wrong_format_version_and_io() {
        let text = manifest("[]").replace("\"format_version\": 1", "\"format_version\": 2");
        assert!(problem(&text).contains("format_version\" is 2"));
        let text = manifest("[]").replace("\"uint8\"", "\"float32\"");
        assert!(problem(&text).contains("NHWC/float32/RGB"));
        let text = manifest("[]").replace("lightsrscale-bundle", "onnx");
        assert!(problem(&text).contains("\"format\" is \"onnx\""));
    }
}
