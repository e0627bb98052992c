// SPDX-License-Identifier: MPL-2.0
//! The `device` property: `auto`, `cpu`, `cuda` or `cuda:N`, resolved against libtorch.

use std::{fmt, str::FromStr};

use tch::{Cuda, Device};

use super::EngineError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    /// The first CUDA device if libtorch sees one, else the CPU.
    Auto,
    Cpu,
    /// `cuda` (index None: device 0) or `cuda:N`.
    Cuda(Option<usize>),
}

/// Where a bundle runs, and why if it is not where the user asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceChoice {
    pub device: Device,
    /// Set when `auto` fell back to the CPU; the element logs it as a warning.
    pub fallback: Option<String>,
}

impl FromStr for DeviceRequest {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || EngineError::Device {
            requested: s.to_string(),
            problem: "not a device; use auto, cpu, cuda or cuda:N (N = 0, 1, ...)".into(),
        };
        match s.trim() {
            "auto" | "" => Ok(DeviceRequest::Auto),
            "cpu" => Ok(DeviceRequest::Cpu),
            "cuda" => Ok(DeviceRequest::Cuda(None)),
            other => {
                let index = other.strip_prefix("cuda:").ok_or_else(bad)?;
                index
                    .parse()
                    .map(|i| DeviceRequest::Cuda(Some(i)))
                    .map_err(|_| bad())
            }
        }
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceRequest::Auto => f.write_str("auto"),
            DeviceRequest::Cpu => f.write_str("cpu"),
            DeviceRequest::Cuda(None) => f.write_str("cuda"),
            DeviceRequest::Cuda(Some(i)) => write!(f, "cuda:{i}"),
        }
    }
}

impl DeviceRequest {
    /// Resolves the request against the CUDA devices libtorch sees in this process.
    pub fn resolve(self) -> Result<DeviceChoice, EngineError> {
        self.resolve_with(cuda_device_count())
    }

    /// As [`resolve`](Self::resolve), with the number of CUDA devices given (for tests).
    pub fn resolve_with(self, cuda_devices: usize) -> Result<DeviceChoice, EngineError> {
        let choice = |device| {
            Ok(DeviceChoice {
                device,
                fallback: None,
            })
        };
        match self {
            DeviceRequest::Cpu => choice(Device::Cpu),
            DeviceRequest::Auto if cuda_devices > 0 => choice(Device::Cuda(0)),
            DeviceRequest::Auto => Ok(DeviceChoice {
                device: Device::Cpu,
                fallback: Some("device=auto: CUDA is not available, running on the CPU".into()),
            }),
            DeviceRequest::Cuda(index) => {
                let index = index.unwrap_or(0);
                if index < cuda_devices {
                    return choice(Device::Cuda(index));
                }
                Err(EngineError::Device {
                    requested: self.to_string(),
                    problem: cuda_missing_problem(index, cuda_devices),
                })
            }
        }
    }
}

fn cuda_missing_problem(index: usize, cuda_devices: usize) -> String {
    if cuda_devices == 0 {
        "CUDA is not available to libtorch in this process (no GPU, no driver, or a CPU-only \
         libtorch); use device=cpu, or device=auto to fall back to the CPU"
            .into()
    } else {
        format!(
            "CUDA device {index} does not exist, libtorch sees {cuda_devices} (cuda:0..cuda:{})",
            cuda_devices - 1
        )
    }
}

fn cuda_device_count() -> usize {
    if Cuda::is_available() {
        usize::try_from(Cuda::device_count()).unwrap_or(0)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling_and_rejects_others() {
        assert_eq!("auto".parse(), Ok(DeviceRequest::Auto));
        assert_eq!("cpu".parse(), Ok(DeviceRequest::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceRequest::Cuda(None)));
        assert_eq!("cuda:3".parse(), Ok(DeviceRequest::Cuda(Some(3))));
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "CPU0"] {
            let err = bad.parse::<DeviceRequest>().unwrap_err().to_string();
            assert!(
                err.contains("use auto, cpu, cuda or cuda:N"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn auto_falls_back_to_cpu_with_a_note_and_cuda_fails_clearly() {
        let auto = DeviceRequest::Auto.resolve_with(0).unwrap();
        assert_eq!(auto.device, Device::Cpu);
        assert!(auto.fallback.unwrap().contains("CUDA is not available"));
        assert_eq!(
            DeviceRequest::Auto.resolve_with(2).unwrap().device,
            Device::Cuda(0)
        );
        let err = DeviceRequest::Cuda(None)
            .resolve_with(0)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("device=cuda: CUDA is not available"),
            "{err}"
        );
        assert!(err.contains("use device=cpu"), "{err}");
        let err = DeviceRequest::Cuda(Some(2))
            .resolve_with(2)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CUDA device 2 does not exist, libtorch sees 2"),
            "{err}"
        );
        assert_eq!(
            DeviceRequest::Cuda(Some(1)).resolve_with(2).unwrap().device,
            Device::Cuda(1)
        );
    }

    #[test]
    fn real_resolution_matches_libtorch() {
        let cuda = DeviceRequest::Cuda(None).resolve();
        assert_eq!(cuda.is_ok(), Cuda::is_available());
        let auto = DeviceRequest::Auto.resolve().unwrap();
        assert_eq!(auto.fallback.is_some(), !Cuda::is_available());
    }
}
