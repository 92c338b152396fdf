//! Zeroed memory at a chosen alignment: buffers for `O_DIRECT` reads (the offload loader) and the
//! CPU executor's activations and KV caches, which must not start at `malloc`'s whim; and the
//! alignment rule those and the artifact's weights share ([`alignment_for`]).

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

/// A cache line: where blocks smaller than a page start.
pub const LINE: usize = 64;
/// A page: where blocks of at least this size start.
pub const PAGE: usize = 4096;

/// Where data of `len` bytes that kernels read with vector loads should start: on a page from
/// 4 KiB up, else on a cache line. The artifact writer places weights so, and the CPU executor
/// its activations and KV caches.
///
/// Why: a `Vec` of that size comes from `malloc`, which maps large blocks 16 bytes into a page, so
/// every 64-byte vector load of an activation spanned two cache lines (in SmolLM2's f32 prefill
/// the GEMM loads one per 4 FMAs; page-aligned activations made prefill about 12% faster); and
/// the interleaved f32 GEMV streams a page-aligned matrix at 16–17 GB/s but one starting 192 or
/// 2496 bytes into a page at about 14 (docs/bench.md).
pub fn alignment_for(len: usize) -> usize {
    if len >= PAGE {
        PAGE
    } else {
        LINE
    }
}

/// An owned, zero-initialised block of bytes at a fixed alignment that never moves or grows.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: `AlignedBuf` owns its block exclusively, like a `Box<[u8]>`; shared references hand out
// only the raw pointer.
unsafe impl Send for AlignedBuf {}
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `len` zeroed bytes (at least one) starting at a multiple of `align` (a power of two).
    /// `None` when the size or alignment cannot be allocated.
    pub fn zeroed(len: usize, align: usize) -> Option<AlignedBuf> {
        let layout = Layout::from_size_align(len.max(1), align).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) })?;
        Some(AlignedBuf { ptr, layout })
    }

    pub fn len(&self) -> usize {
        self.layout.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The block's first byte (kernels and the I/O thread write through it).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: owned, initialised (zeroed) memory of `len` bytes.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.len()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::{alignment_for, AlignedBuf};

    #[test]
    fn blocks_are_zeroed_at_their_alignment() {
        for (len, align) in [(0, 64), (1, 64), (100, 4096), (1 << 20, 4096), (3, 1 << 16)] {
            let mut b = AlignedBuf::zeroed(len, align).unwrap();
            assert_eq!(b.as_ptr() as usize % align, 0, "{len} bytes at {align}");
            assert_eq!(b.len(), len.max(1));
            assert!(b.as_mut_slice().iter().all(|&x| x == 0));
        }
        assert!(AlignedBuf::zeroed(64, 3).is_none(), "not a power of two");
        for (len, align) in [(0, 64), (100, 64), (4095, 64), (4096, 4096), (1 << 20, 4096)] {
            assert_eq!(alignment_for(len), align, "{len} bytes");
        }
        assert!(AlignedBuf::zeroed(usize::MAX, 64).is_none(), "too large");
    }
}
