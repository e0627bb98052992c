// SPDX-License-Identifier: MPL-2.0
//! The model engine: loads a bundle's TorchScript variants onto a device and runs them.
//!
//! No GStreamer types here. Every libtorch call uses the Result-returning (`f_*`) API and
//! every failure becomes an [`EngineError`] whose message names the file or device and what
//! to do about it; nothing here panics on bad input.

pub mod allocator;
mod bundle;
mod cache;
mod device;
mod embedded;
pub mod manifest;
mod native;
mod variant;

use std::{fmt, path::PathBuf};

pub use bundle::{Bundle, BundleSource, Ladder};
pub use cache::load_shared;
pub use device::{DeviceChoice, DeviceRequest};
pub use manifest::{LadderSpec, Manifest, Objective, VariantSpec};
pub use variant::Variant;

#[derive(Debug, Clone, PartialEq)]
pub enum EngineError {
    /// The `model` path does not exist or cannot be read.
    Path { path: PathBuf, problem: String },
    /// `manifest.json` is missing, malformed or breaks a rule of BUNDLE.md.
    Manifest { file: String, problem: String },
    /// A variant file is missing or is not a usable TorchScript module.
    Module { file: String, problem: String },
    /// The requested device does not exist or cannot be used.
    Device { requested: String, problem: String },
    /// A forward pass failed or returned something that breaks the module contract.
    Forward { variant: String, problem: String },
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Path { path, problem } => {
                write!(f, "model path {}: {problem}", path.display())
            }
            EngineError::Manifest { file, problem } => {
                write!(f, "bundle manifest {file}: {problem}")
            }
            EngineError::Module { file, problem } => write!(f, "model file {file}: {problem}"),
            EngineError::Device { requested, problem } => {
                write!(f, "device={requested}: {problem}")
            }
            EngineError::Forward { variant, problem } => write!(f, "variant {variant}: {problem}"),
        }
    }
}

impl std::error::Error for EngineError {}
