// SPDX-License-Identifier: MPL-2.0
//! Output buffers in page-locked (pinned) host memory, for rungs that run on CUDA with frames
//! in system memory. The frame's copy from the GPU into a pageable GStreamer buffer goes
//! through the driver's staging buffers: 1.6-2.1 ms for a 3840x2160 RGB frame on an H200,
//! against 0.46 ms into pinned memory (`tests/gpu/levers.py`). Pinning costs a zero-fill and
//! a copy of the frame per allocation, so the memory is kept: each buffer's memory returns to
//! the pool when downstream releases the buffer, and the next frame reuses it.

use std::sync::{Arc, Mutex};

use tch::{Device, Kind, TchError, Tensor};

use super::imp::lock;

/// Allocates pinned host memory of a size: `Tensor::pin_memory` for a CUDA device (tests pass
/// another allocator).
pub type Allocate = fn(usize, Device) -> Result<Tensor, TchError>;

pub fn pinned_bytes(len: usize, device: Device) -> Result<Tensor, TchError> {
    let len = i64::try_from(len).map_err(|_| TchError::Convert(format!("{len} bytes")))?;
    // `_pin_memory`, the op behind `pin_memory`: that one warns on stderr, once per process, that
    // its device argument is deprecated (torch 2.11), and tch always passes one.
    Tensor::f_zeros([len], (Kind::Uint8, Device::Cpu))?.f_internal_pin_memory(device)
}

/// Frames of one size, in host memory that `allocate` makes (pinned for `device`); clones
/// share the free list.
#[derive(Clone)]
pub struct PinnedPool {
    len: usize,
    device: Device,
    allocate: Allocate,
    free: Arc<Mutex<Vec<Tensor>>>,
}

impl PinnedPool {
    pub fn new(len: usize, device: Device, allocate: Allocate) -> PinnedPool {
        PinnedPool {
            len,
            device,
            allocate,
            free: Arc::default(),
        }
    }

    /// A buffer of the pool's size: memory a released buffer returned, else new memory.
    pub fn buffer(&self) -> Result<gst::Buffer, String> {
        let reused = lock(&self.free).pop();
        let tensor = match reused {
            Some(t) => t,
            None => (self.allocate)(self.len, self.device).map_err(|e| {
                format!(
                    "could not allocate {} bytes of pinned host memory: {e}",
                    self.len
                )
            })?,
        };
        let memory = PinnedMemory::new(tensor, self.len, Arc::downgrade(&self.free))?;
        Ok(gst::Buffer::from_mut_slice(memory))
    }

    /// Allocations kept for reuse (those not held by buffers downstream).
    #[cfg(test)]
    pub fn idle(&self) -> usize {
        lock(&self.free).len()
    }
}

/// One buffer's memory: a tensor's bytes, handed back to its pool when GStreamer frees it.
struct PinnedMemory {
    tensor: Option<Tensor>,
    data: *mut u8,
    len: usize,
    home: std::sync::Weak<Mutex<Vec<Tensor>>>,
}

// SAFETY: the tensor owns the memory behind `data` and moves with it; nothing else aliases it.
unsafe impl Send for PinnedMemory {}

impl PinnedMemory {
    fn new(
        tensor: Tensor,
        len: usize,
        home: std::sync::Weak<Mutex<Vec<Tensor>>>,
    ) -> Result<PinnedMemory, String> {
        let ok = tensor.f_kind().ok() == Some(Kind::Uint8)
            && tensor.is_contiguous()
            && tensor.numel() == len;
        if !ok {
            return Err(format!(
                "pinned memory of {:?} does not hold {len} bytes",
                tensor.size()
            ));
        }
        let data = tensor.data_ptr().cast::<u8>();
        Ok(PinnedMemory {
            tensor: Some(tensor),
            data,
            len,
            home,
        })
    }
}

impl AsRef<[u8]> for PinnedMemory {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `data` points at `len` initialised bytes (zeroed at allocation) owned by the
        // tensor, which lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }
}

impl AsMut<[u8]> for PinnedMemory {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_ref`; `&mut self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.data, self.len) }
    }
}

/// Released frames kept for reuse at most; beyond (after a burst downstream held many), the
/// memory is freed.
const KEEP: usize = 8;

impl Drop for PinnedMemory {
    fn drop(&mut self) {
        if let (Some(tensor), Some(home)) = (self.tensor.take(), self.home.upgrade()) {
            let mut free = lock(&home);
            if free.len() < KEEP {
                free.push(tensor);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(len: usize, _: Device) -> Result<Tensor, TchError> {
        Tensor::f_zeros([len as i64], (Kind::Uint8, Device::Cpu))
    }

    fn address(buffer: &gst::Buffer) -> usize {
        buffer.map_readable().unwrap().as_ptr() as usize
    }

    #[test]
    fn released_memory_is_reused_and_live_buffers_never_share() {
        gst::init().unwrap();
        let pool = PinnedPool::new(1000, Device::Cpu, plain);
        let mut a = pool.buffer().unwrap();
        let b = pool.buffer().unwrap();
        assert_eq!(a.size(), 1000);
        assert_ne!(address(&a), address(&b));
        a.get_mut()
            .unwrap()
            .map_writable()
            .unwrap()
            .copy_from_slice(&[7u8; 1000]);
        let a_addr = address(&a);
        drop(a);
        assert_eq!(pool.idle(), 1);
        let c = pool.buffer().unwrap();
        assert_eq!(address(&c), a_addr, "the released memory came back");
        assert_eq!(pool.idle(), 0);
        drop((b, c));
        assert_eq!(pool.idle(), 2);
    }

    #[test]
    fn at_most_a_few_released_frames_are_kept() {
        gst::init().unwrap();
        let pool = PinnedPool::new(16, Device::Cpu, plain);
        let burst: Vec<gst::Buffer> = (0..KEEP + 5).map(|_| pool.buffer().unwrap()).collect();
        drop(burst);
        assert_eq!(pool.idle(), KEEP);
    }

    #[test]
    fn buffers_outliving_their_pool_free_their_memory() {
        gst::init().unwrap();
        let pool = PinnedPool::new(64, Device::Cpu, plain);
        let buffer = pool.buffer().unwrap();
        drop(pool);
        assert_eq!(buffer.map_readable().unwrap().len(), 64);
        drop(buffer); // no pool to return to: the tensor is freed
    }

    #[test]
    fn a_failed_allocation_names_the_size() {
        gst::init().unwrap();
        let failing: Allocate = |_, _| Err(TchError::Torch("no CUDA host allocator".into()));
        let err = PinnedPool::new(5, Device::Cuda(0), failing)
            .buffer()
            .unwrap_err();
        assert!(err.contains("5 bytes of pinned host memory"), "{err}");
        assert!(err.contains("no CUDA host allocator"), "{err}");
    }
}
