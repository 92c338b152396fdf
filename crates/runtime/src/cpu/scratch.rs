//! Zeroed scratch memory for activations and KV caches, aligned so that vector loads never split
//! cache lines.
//!
//! A `Vec` of that size comes from `malloc`, which maps large blocks 16 bytes into a page: every
//! 64-byte vector load of an activation then spans two cache lines. In SmolLM2's f32 prefill the
//! GEMM loads an activation vector for every 4 FMAs, and page-aligned activations made prefill
//! about 12% faster (docs/bench.md).

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

/// Blocks of at least this many bytes start on a page, smaller ones on a cache line (as the
/// artifact writer places weights).
const PAGE: usize = 4096;
const LINE: usize = 64;

/// An owned, zero-initialised, aligned block of bytes that never moves or grows.
pub struct Scratch {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: `Scratch` owns its block exclusively, like a `Box<[u8]>`.
unsafe impl Send for Scratch {}
unsafe impl Sync for Scratch {}

impl Scratch {
    /// `bytes` zeroed bytes (at least one), on a page when `bytes ≥ 4096`, else on a cache line.
    /// `None` when the size cannot be allocated.
    pub fn zeroed(bytes: usize) -> Option<Scratch> {
        let bytes = bytes.max(1);
        let align = if bytes >= PAGE { PAGE } else { LINE };
        let layout = Layout::from_size_align(bytes, align).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) })?;
        Some(Scratch { ptr, layout })
    }

    /// The block's first byte (kernels read and write through it).
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::Scratch;

    #[test]
    fn blocks_are_zeroed_and_aligned_by_size() {
        for (bytes, align) in [(0, 64), (1, 64), (100, 64), (4095, 64), (4096, 4096), (1 << 20, 4096)] {
            let s = Scratch::zeroed(bytes).unwrap();
            assert_eq!(s.as_mut_ptr() as usize % align, 0, "{bytes} bytes");
            assert_eq!(s.layout.size(), bytes.max(1));
            // SAFETY: the block has `len` initialised bytes.
            let data = unsafe { std::slice::from_raw_parts(s.as_mut_ptr(), s.layout.size()) };
            assert!(data.iter().all(|&b| b == 0));
        }
        assert!(Scratch::zeroed(usize::MAX).is_none());
    }
}
