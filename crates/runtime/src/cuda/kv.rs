//! The KV cache on the device: per slot, keys and values `[max_context, kv_heads, head_dim]` f32
//! and positions `[max_context]` i32, zeroed at load. The lengths stay on the host, as in the CPU
//! executor: kernels read them through the `CacheLen` symbols and the runtime grows them after each
//! appending step.

use cudarc::driver::sys::CUstream;

use super::memory::{read_bytes, DeviceBuffer};
use crate::artifact::manifest::{KvSlotSpec, Symbol};
use crate::error::Result;

pub(super) struct KvSlot {
    pub keys: DeviceBuffer,
    pub values: DeviceBuffer,
    pub positions: DeviceBuffer,
    /// Entries in use.
    pub len: usize,
    /// A private slot of an attention without a cache: emptied before every call.
    pub scratch: bool,
    /// The symbol holding `len` for the program, if any step reads it.
    pub len_symbol: Option<usize>,
}

impl KvSlot {
    pub fn new(spec: &KvSlotSpec, max_context: usize, symbols: &[Symbol], stream: CUstream) -> Result<KvSlot> {
        let n = max_context * spec.kv_heads * spec.head_dim * 4;
        let slot = spec.slot;
        Ok(KvSlot {
            keys: DeviceBuffer::zeroed(n, stream, &format!("KV-cache slot {slot} keys"))?,
            values: DeviceBuffer::zeroed(n, stream, &format!("KV-cache slot {slot} values"))?,
            positions: DeviceBuffer::zeroed(max_context * 4, stream, &format!("KV-cache slot {slot} positions"))?,
            len: 0,
            scratch: spec.scratch,
            len_symbol: symbols.iter().position(|s| *s == Symbol::CacheLen { slot }),
        })
    }

    /// The positions of the entries in use, read from the device.
    pub fn read_positions(&self, stream: CUstream) -> Result<Vec<i32>> {
        let mut bytes = vec![0u8; self.len * 4];
        read_bytes(self.positions.addr(), &mut bytes, stream, "reading KV-cache positions")?;
        Ok(bytes.chunks_exact(4).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]])).collect())
    }
}

/// Entries kept when forgetting every position at `len` or later: the leading run of entries
/// before it (as the CPU executor does).
pub(super) fn kept(positions: &[i32], len: usize) -> usize {
    positions.iter().take_while(|&&p| (p as usize) < len).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_the_entries_before_the_position() {
        assert_eq!(kept(&[0, 1, 2, 3], 2), 2);
        assert_eq!(kept(&[0, 1, 2, 3], 10), 4);
        assert_eq!(kept(&[0, 1, 2, 3], 0), 0);
        assert_eq!(kept(&[], 3), 0);
    }
}
