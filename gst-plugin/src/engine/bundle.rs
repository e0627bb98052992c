// SPDX-License-Identifier: MPL-2.0
//! Where a bundle comes from (a directory or the embedded default) and the loaded bundle.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use tch::Device;

use super::{EngineError, Manifest, Variant, embedded, manifest::VariantSpec};

const MANIFEST: &str = "manifest.json";

/// The `model` property, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleSource {
    /// The default bundle compiled into the plugin (`model` empty).
    Embedded,
    /// A bundle directory on disk.
    Directory(PathBuf),
}

impl BundleSource {
    /// `""` is the embedded default; otherwise a bundle directory or its `manifest.json`.
    pub fn from_model_property(model: &str) -> Result<BundleSource, EngineError> {
        if model.trim().is_empty() {
            return Ok(BundleSource::Embedded);
        }
        let path = PathBuf::from(model);
        let problem = |problem: &str| EngineError::Path {
            path: path.clone(),
            problem: problem.into(),
        };
        if !path.exists() {
            return Err(problem(
                "does not exist; set model to a bundle directory (manifest.json + *.pt), its \
                 manifest.json, or leave it empty for the embedded default",
            ));
        }
        let dir = if path.is_dir() {
            path.clone()
        } else if path.file_name().is_some_and(|n| n == MANIFEST) {
            path.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            return Err(problem(
                "is a file but not a manifest.json; a bundle is a directory holding manifest.json \
                 and TorchScript files (see model/BUNDLE.md)",
            ));
        };
        let dir = dir
            .canonicalize()
            .map_err(|e| problem(&format!("cannot be resolved: {e}")))?;
        Ok(BundleSource::Directory(dir))
    }

    /// Names the bundle for the process-wide cache: the directory plus the manifest's
    /// modification time, so a bundle re-exported in place is loaded afresh.
    pub fn identity(&self) -> String {
        match self {
            BundleSource::Embedded => "embedded:default".into(),
            BundleSource::Directory(dir) => {
                let modified = fs::metadata(dir.join(MANIFEST))
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                format!("{}@{modified}", dir.display())
            }
        }
    }

    /// How a file of this bundle is named in messages.
    pub fn describe(&self, file: &str) -> String {
        match self {
            BundleSource::Embedded => format!("<embedded default bundle>/{file}"),
            BundleSource::Directory(dir) => dir.join(file).display().to_string(),
        }
    }

    pub fn read_manifest(&self) -> Result<Manifest, EngineError> {
        let origin = self.describe(MANIFEST);
        let missing = |problem: String| EngineError::Manifest {
            file: origin.clone(),
            problem,
        };
        let text = match self {
            BundleSource::Embedded => {
                let bytes = embedded::file(MANIFEST).ok_or_else(|| {
                    missing(
                        "this build embeds no default bundle (model/bundles/default was \
                             absent at build time); set model=PATH or rebuild"
                            .into(),
                    )
                })?;
                String::from_utf8(bytes.to_vec())
                    .map_err(|_| missing("is not UTF-8 text".into()))?
            }
            BundleSource::Directory(dir) => {
                fs::read_to_string(dir.join(MANIFEST)).map_err(|e| {
                    missing(format!(
                        "cannot be read ({e}); every bundle directory needs a manifest.json"
                    ))
                })?
            }
        };
        Manifest::parse(&text, &origin)
    }

    /// Loads one variant as a TorchScript module on `device`: its `cuda_file` on CUDA where the
    /// manifest gives one, else its `file`.
    pub fn load_variant(
        &self,
        spec: &VariantSpec,
        scale: u32,
        device: Device,
    ) -> Result<Variant, EngineError> {
        let name = match &spec.cuda_file {
            Some(cuda_file) if device.is_cuda() => cuda_file,
            _ => &spec.file,
        };
        let file = self.describe(name);
        let module = match self {
            BundleSource::Embedded => {
                let bytes = embedded::file(name).ok_or_else(|| EngineError::Module {
                    file: file.clone(),
                    problem: "is listed in the manifest but was not embedded".into(),
                })?;
                tch::CModule::load_data_on_device(&mut std::io::Cursor::new(bytes), device)
            }
            BundleSource::Directory(dir) => {
                let path = dir.join(name);
                if !path.is_file() {
                    return Err(EngineError::Module {
                        file,
                        problem: "is listed in the manifest but does not exist".into(),
                    });
                }
                tch::CModule::load_on_device(&path, device)
            }
        };
        let module = module.map_err(|e| EngineError::Module {
            file: file.clone(),
            problem: format!(
                "not a loadable TorchScript archive (torch.jit.save): {}",
                first_line(&e)
            ),
        })?;
        Variant::new(spec, scale, file, module, device)
    }
}

/// The variants of one scale factor, loaded, heaviest first.
#[derive(Debug)]
pub struct Ladder {
    pub scale: u32,
    pub variants: Vec<Arc<Variant>>,
}

impl Ladder {
    pub fn variant(&self, name: &str) -> Option<&Arc<Variant>> {
        self.variants.iter().find(|v| v.name() == name)
    }
}

/// A bundle with all its variants loaded on one device.
#[derive(Debug)]
pub struct Bundle {
    pub manifest: Manifest,
    pub device: Device,
    /// Same order as the manifest's ladders.
    pub ladders: Vec<Ladder>,
}

impl Bundle {
    /// Reads the manifest and loads every variant of every ladder on `device`.
    pub fn load(source: &BundleSource, device: Device) -> Result<Bundle, EngineError> {
        let manifest = source.read_manifest()?;
        if device == Device::Cpu {
            super::allocator::tune_for_tensors();
        }
        let mut ladders = Vec::with_capacity(manifest.ladders.len());
        for spec in &manifest.ladders {
            let variants = spec
                .variants
                .iter()
                .map(|v| source.load_variant(v, spec.scale, device).map(Arc::new))
                .collect::<Result<Vec<_>, _>>()?;
            ladders.push(Ladder {
                scale: spec.scale,
                variants,
            });
        }
        Ok(Bundle {
            manifest,
            device,
            ladders,
        })
    }

    pub fn ladder(&self, scale: u32) -> Option<&Ladder> {
        self.ladders.iter().find(|l| l.scale == scale)
    }

    /// Scale factors offered, largest first.
    pub fn scales(&self) -> Vec<u32> {
        self.manifest.scales()
    }
}

/// libtorch errors carry a C++ backtrace after the first line; users need the first line.
pub(super) fn first_line(e: &impl std::fmt::Display) -> String {
    e.to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}
