// SPDX-License-Identifier: MPL-2.0
//! The C allocator's thresholds for libtorch's per-frame CPU tensors.
//!
//! libtorch's CPU allocator is plain `malloc` / `free`. A learned rung's activations at
//! 320x180 are 2-12 MB each, above glibc's default mmap threshold (128 KiB, raised only by
//! frees of mapped blocks), so every frame maps them fresh and the kernel zero-fills every page
//! on first touch: measured on a 2-core EPYC, the x2 rung took 32.6 ms a frame that way and
//! 16.4 ms once the blocks were reused from the heap, x4 38.9 against 27.7 ms. So, once per
//! process, before the first CPU rung loads, the mmap threshold is raised to 256 MiB (glibc
//! 2.36 takes it: a 100 MB `malloc` then comes from the heap; 32 MiB where a glibc refuses
//! more) and the trim threshold to twice that: the heap then keeps the freed activations for
//! the next frame, up to a frame's working set. This is process-wide; set
//! `LIGHTSRSCALE_KEEP_MALLOC=1` to leave the host application's allocator settings alone.
use std::sync::OnceLock;

/// What [`tune_for_tensors`] did (the element logs it at DEBUG).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuning {
    /// Both thresholds set: mmap threshold in bytes.
    Raised(usize),
    /// `LIGHTSRSCALE_KEEP_MALLOC` is set.
    LeftAlone,
    /// Not glibc, or glibc refused.
    Unsupported,
}

/// Raises glibc's mmap and trim thresholds once per process (see the module docs); later
/// calls return the first call's result.
pub fn tune_for_tensors() -> Tuning {
    static RESULT: OnceLock<Tuning> = OnceLock::new();
    *RESULT.get_or_init(tune)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune() -> Tuning {
    if std::env::var_os("LIGHTSRSCALE_KEEP_MALLOC").is_some_and(|v| !v.is_empty() && v != "0") {
        return Tuning::LeftAlone;
    }
    for mib in [256usize, 32] {
        let bytes = mib << 20;
        // SAFETY: mallopt only sets allocator parameters; it returns 0 on a refused value
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, bytes as libc::c_int) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, (2 * bytes) as libc::c_int) == 1
        };
        if ok {
            return Tuning::Raised(bytes);
        }
    }
    Tuning::Unsupported
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune() -> Tuning {
    Tuning::Unsupported
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_raised_once_per_process() {
        let first = tune_for_tensors();
        if cfg!(all(target_os = "linux", target_env = "gnu"))
            && std::env::var_os("LIGHTSRSCALE_KEEP_MALLOC").is_none()
        {
            assert!(
                matches!(first, Tuning::Raised(b) if b >= 32 << 20),
                "{first:?}"
            );
        }
        assert_eq!(tune_for_tensors(), first);
    }
}
