//! Where the CPU executor's activations and KV caches live: zeroed blocks aligned so that vector
//! loads never split cache lines.
//!
//! A `Vec` of that size comes from `malloc`, which maps large blocks 16 bytes into a page: every
//! 64-byte vector load of an activation then spans two cache lines. In SmolLM2's f32 prefill the
//! GEMM loads an activation vector for every 4 FMAs, and page-aligned activations made prefill
//! about 12% faster (docs/bench.md).

use crate::aligned::AlignedBuf;

/// Blocks of at least this many bytes start on a page, smaller ones on a cache line (as the
/// artifact writer places weights).
const PAGE: usize = 4096;
const LINE: usize = 64;

/// `bytes` zeroed bytes (at least one), on a page when `bytes ≥ 4096`, else on a cache line.
/// `None` when the size cannot be allocated.
pub fn zeroed(bytes: usize) -> Option<AlignedBuf> {
    AlignedBuf::zeroed(bytes, if bytes >= PAGE { PAGE } else { LINE })
}

#[cfg(test)]
mod tests {
    use super::zeroed;

    #[test]
    fn blocks_are_zeroed_and_aligned_by_size() {
        for (bytes, align) in [(0, 64), (1, 64), (100, 64), (4095, 64), (4096, 4096), (1 << 20, 4096)] {
            let mut s = zeroed(bytes).unwrap();
            assert_eq!(s.as_ptr() as usize % align, 0, "{bytes} bytes");
            assert_eq!(s.len(), bytes.max(1));
            assert!(s.as_mut_slice().iter().all(|&b| b == 0));
        }
        assert!(zeroed(usize::MAX).is_none());
    }
}
