// SPDX-License-Identifier: MPL-2.0
//! One rung of a ladder: a TorchScript module on a device, called under `no_grad`.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    time::{Duration, Instant},
};

use tch::{CModule, Device, Kind, Tensor};

use super::{EngineError, Objective, VariantSpec, bundle::first_line};

#[derive(Debug)]
pub struct Variant {
    name: String,
    scale: u32,
    /// The file it came from, as named in messages.
    file: String,
    /// Runs with fp16 weights (CUDA and `half: true` in the manifest).
    half: bool,
    objective: Objective,
    device: Device,
    module: CModule,
}

impl Variant {
    /// Wraps a loaded module: on CUDA, a `half` variant is cast to fp16 (its Fourier units keep
    /// computing in fp32 inside the module, per the bundle contract); on the CPU all run fp32.
    pub(super) fn new(
        spec: &VariantSpec,
        scale: u32,
        file: String,
        mut module: CModule,
        device: Device,
    ) -> Result<Variant, EngineError> {
        let half = spec.half && device.is_cuda();
        if half {
            // CModule::to has no Result form and panics on a libtorch error: contain it here.
            catch_unwind(AssertUnwindSafe(|| module.to(device, Kind::Half, false))).map_err(
                |_| EngineError::Module {
                    file: file.clone(),
                    problem: format!(
                        "could not be cast to fp16 on {device:?}; set \"half\": false"
                    ),
                },
            )?;
        }
        module.f_set_eval().map_err(|e| EngineError::Module {
            file: file.clone(),
            problem: first_line(&e),
        })?;
        Ok(Variant {
            name: spec.name.clone(),
            scale,
            file,
            half,
            objective: spec.objective,
            device,
            module,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn scale(&self) -> u32 {
        self.scale
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn is_half(&self) -> bool {
        self.half
    }

    /// What it was trained for (the manifest's `objective`).
    pub fn objective(&self) -> Objective {
        self.objective
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// uint8 (N, H, W, 3) RGB, on any device and possibly strided -> uint8
    /// (N, H*scale, W*scale, 3) RGB on this variant's device.
    pub fn upscale(&self, frames: &Tensor) -> Result<Tensor, EngineError> {
        let expected = self.output_size(frames)?;
        let input = frames
            .f_to_device(self.device)
            .map_err(|e| self.forward_error(&e))?;
        let _guard = tch::no_grad_guard();
        let output = self
            .module
            .forward_ts(&[input])
            .map_err(|e| self.forward_error(&e))?;
        let (size, kind) = (
            output.size(),
            output.f_kind().map_err(|e| self.forward_error(&e))?,
        );
        if size != expected || kind != Kind::Uint8 {
            return Err(EngineError::Forward {
                variant: self.describe(),
                problem: format!(
                    "returned {kind:?} of shape {size:?}, the bundle contract says Uint8 of shape \
                     {expected:?}; re-export the bundle with `lightsr export`"
                ),
            });
        }
        Ok(output)
    }

    /// Runs one blank frame of the given size, so the first real frame does not pay for
    /// libtorch's lazy initialisation; returns how long it took.
    pub fn warm_up(&self, height: i64, width: i64) -> Result<Duration, EngineError> {
        let start = Instant::now();
        let blank = Tensor::f_zeros([1, height, width, 3], (Kind::Uint8, self.device))
            .map_err(|e| self.forward_error(&e))?;
        // Reading the result back forces the (possibly asynchronous, on CUDA) work to finish.
        let output = self.upscale(&blank)?;
        output
            .f_sum(Kind::Int64)
            .and_then(|s| s.f_int64_value(&[]))
            .map_err(|e| self.forward_error(&e))?;
        Ok(start.elapsed())
    }

    fn output_size(&self, frames: &Tensor) -> Result<Vec<i64>, EngineError> {
        let size = frames.size();
        let kind = frames.f_kind().map_err(|e| self.forward_error(&e))?;
        match size.as_slice() {
            &[n, h, w, 3] if kind == Kind::Uint8 && n > 0 && h > 0 && w > 0 => {
                let s = i64::from(self.scale);
                Ok(vec![n, h * s, w * s, 3])
            }
            _ => Err(EngineError::Forward {
                variant: self.describe(),
                problem: format!(
                    "input is {kind:?} of shape {size:?}, expected Uint8 (N, H, W, 3)"
                ),
            }),
        }
    }

    fn describe(&self) -> String {
        format!("{} (x{}, {})", self.name, self.scale, self.file)
    }

    fn forward_error(&self, e: &tch::TchError) -> EngineError {
        EngineError::Forward {
            variant: self.describe(),
            problem: first_line(e),
        }
    }
}
