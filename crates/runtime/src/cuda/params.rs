//! The kernel parameters of a step, per the CUDA kernel ABI: by value, `i64 tasks`, then each of
//! the step's dims as `i64`, then each of its buffers as a 64-bit device address (0 for an absent
//! operand). Every parameter is 8 bytes, so a step's parameters are a `Vec<u64>`.
//!
//! Pure logic over the manifest and the device addresses, so it is unit-tested without a GPU.

use crate::artifact::manifest::{BufArg, BufferSpec, Step, Storage};
use crate::error::{Result, RuntimeError};

/// The device address of buffer `id`: its own allocation (`bases[id]`), or, for an alias, the
/// aliased buffer's address plus `offset_elems` (evaluated now: offsets may depend on symbols)
/// elements of the alias's type, recursively.
pub(super) fn buffer_addr(buffers: &[BufferSpec], bases: &[u64], symbols: &[i64], id: usize) -> Result<u64> {
    let mut id = id;
    let mut offset: i64 = 0;
    // A chain longer than the buffer list is a cycle: a corrupt manifest, not a hang.
    for _ in 0..=buffers.len() {
        let spec = buffers.get(id).ok_or_else(|| {
            RuntimeError::Artifact(format!("the program uses buffer {id}, which it does not declare"))
        })?;
        match &spec.storage {
            Storage::Alias { of, offset_elems } => {
                offset += offset_elems.eval(symbols) * spec.elem.size() as i64;
                id = *of;
            }
            _ => return Ok(bases[id].wrapping_add_signed(offset)),
        }
    }
    Err(RuntimeError::Artifact(format!("buffer aliases form a cycle through buffer {id}")))
}

/// Fills `out` with step `step`'s parameters for `tasks` tasks; `addr` gives each buffer
/// argument's device address.
pub(super) fn pack(
    step: &Step,
    tasks: i64,
    symbols: &[i64],
    mut addr: impl FnMut(&BufArg) -> Result<u64>,
    out: &mut Vec<u64>,
) -> Result<()> {
    out.clear();
    out.push(tasks as u64);
    out.extend(step.dims.iter().map(|d| d.eval(symbols) as u64));
    for a in &step.bufs {
        out.push(match a {
            BufArg::Null => 0,
            a => addr(a)?,
        });
    }
    Ok(())
}

/// The pointer array `cuLaunchKernel` and kernel graph nodes take: one pointer to each parameter
/// value. Valid while `values` is neither moved nor changed.
pub(super) fn pointers(values: &mut [u64]) -> Vec<*mut std::ffi::c_void> {
    values.iter_mut().map(|v| (v as *mut u64).cast()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::manifest::{DimExpr, ElemType};

    fn buf(name: &str, elem: ElemType, storage: Storage) -> BufferSpec {
        BufferSpec { name: name.into(), elem, elems: DimExpr::c(64), storage }
    }

    #[test]
    fn aliases_add_their_offsets_recursively() {
        let buffers = vec![
            buf("a", ElemType::F32, Storage::Activation),
            // 3 f32 past a.
            buf("b", ElemType::F32, Storage::Alias { of: 0, offset_elems: DimExpr::c(3) }),
            // T i64 past b (T = symbol 0).
            buf("c", ElemType::I64, Storage::Alias { of: 1, offset_elems: DimExpr::sym(0) }),
            buf("w", ElemType::U8, Storage::Weight { tensor: "w".into() }),
        ];
        let bases = [0x1000, 0, 0, 0x9000];
        let symbols = [5];
        assert_eq!(buffer_addr(&buffers, &bases, &symbols, 0).unwrap(), 0x1000);
        assert_eq!(buffer_addr(&buffers, &bases, &symbols, 1).unwrap(), 0x1000 + 12);
        assert_eq!(buffer_addr(&buffers, &bases, &symbols, 2).unwrap(), 0x1000 + 12 + 40);
        assert_eq!(buffer_addr(&buffers, &bases, &symbols, 3).unwrap(), 0x9000);
        assert!(buffer_addr(&buffers, &bases, &symbols, 7).is_err());
    }

    #[test]
    fn alias_cycles_are_errors() {
        let buffers = vec![
            buf("a", ElemType::F32, Storage::Alias { of: 1, offset_elems: DimExpr::c(0) }),
            buf("b", ElemType::F32, Storage::Alias { of: 0, offset_elems: DimExpr::c(0) }),
        ];
        let e = buffer_addr(&buffers, &[0, 0], &[], 0).unwrap_err().to_string();
        assert!(e.contains("cycle"), "{e}");
    }

    #[test]
    fn packs_tasks_dims_then_buffers_with_null_as_zero() {
        let step = Step {
            kernel: 0,
            label: "%3 = matmul".into(),
            // [T, 2T + 1, 7] with T = 4.
            dims: vec![DimExpr::sym(0), DimExpr { constant: 1, terms: vec![(0, 2)] }, DimExpr::c(7)],
            bufs: vec![
                BufArg::Buffer { id: 2 },
                BufArg::Null,
                BufArg::CacheKeys { slot: 1 },
                BufArg::CachePositions { slot: 1 },
            ],
            tasks: DimExpr::sym(0),
            binds: None,
            appends_to: None,
            speculative: None,
        };
        let mut out = vec![99; 3];
        let addr = |a: &BufArg| {
            Ok(match a {
                BufArg::Buffer { id } => 0x100 * *id as u64,
                BufArg::CacheKeys { slot } => 0xA000 + *slot as u64,
                BufArg::CachePositions { slot } => 0xC000 + *slot as u64,
                _ => unreachable!("Null never asks for an address"),
            })
        };
        pack(&step, 4, &[4], addr, &mut out).unwrap();
        assert_eq!(out, vec![4, 4, 9, 7, 0x200, 0, 0xA001, 0xC001]);
        // Negative values keep their two's-complement bits (the kernel reads i64).
        pack(&step, -1, &[4], addr, &mut out).unwrap();
        assert_eq!(out[0] as i64, -1);
    }

    #[test]
    fn pointers_point_at_each_value() {
        let mut values = vec![1u64, 2, 3];
        let ptrs = pointers(&mut values);
        assert_eq!(ptrs.len(), 3);
        for (i, p) in ptrs.iter().enumerate() {
            // SAFETY: the pointers point into `values`, alive and unchanged.
            assert_eq!(unsafe { *(*p as *const u64) }, i as u64 + 1);
        }
    }
}
