//! The `kv_append` kernel: this step's keys (rotated when the spec has RoPE), values and positions
//! written to cache entries `len + t`. The cache is `[capacity, kv_heads, head_dim]` f32 for keys
//! and values and `[capacity]` i32 for positions; keys are stored post-RoPE so attention never
//! rotates them again.

use super::helpers::{copy_f32, spec_err};
use super::rotate::{check, rotate_head, rotation};
use crate::error::Result;
use crate::kernels::builder::{llvm_err, KernelCx};
use crate::kernels::spec::RopeParams;

/// Emits `kv_append`; task = token.
pub fn emit(cx: &KernelCx<'_>, name: &str, kv_heads: usize, head_dim: usize, rope: Option<&RopeParams>) -> Result<()> {
    if kv_heads == 0 || head_dim == 0 {
        return Err(spec_err(name, format!("{kv_heads} kv heads of dim {head_dim}")));
    }
    if let Some(r) = rope {
        check(name, r, head_dim)?;
    }
    let row = kv_heads * head_dim;
    let k = cx.begin_kernel(name);
    let len = cx.dim(&k, 1)?;
    let (keys, values, positions) = (cx.buf(&k, 0)?, cx.buf(&k, 1)?, cx.buf(&k, 2)?);
    let (cache_k, cache_v, cache_pos) = (cx.buf(&k, 3)?, cx.buf(&k, 4)?, cx.buf(&k, 5)?);
    let b = &cx.builder;
    let f32t = cx.f32().into();
    cx.for_range(k.begin, k.end, 1, |t| {
        let entry = b.build_int_add(len, t, "entry").map_err(llvm_err)?;
        let pos = cx.load_i32(positions, t)?;
        cx.store(cx.i32().into(), cache_pos, entry, pos, 4)?;
        let src = b.build_int_mul(t, cx.c64(row as i64), "src").map_err(llvm_err)?;
        let dst = b.build_int_mul(entry, cx.c64(row as i64), "dst").map_err(llvm_err)?;
        copy_f32(cx, cx.gep(f32t, cache_v, dst)?, cx.gep(f32t, values, src)?, row)?;
        let (k_src, k_dst) = (cx.gep(f32t, keys, src)?, cx.gep(f32t, cache_k, dst)?);
        let Some(rope) = rope else { return copy_f32(cx, k_dst, k_src, row) };
        let pos = b.build_int_s_extend(pos, cx.i64(), "pos").map_err(llvm_err)?;
        let rot = rotation(cx, rope, pos)?;
        cx.for_range(cx.c64(0), cx.c64(kv_heads as i64), 1, |g| {
            let off = b.build_int_mul(g, cx.c64(head_dim as i64), "hoff").map_err(llvm_err)?;
            rotate_head(cx, rope, &rot, head_dim, cx.gep(f32t, k_src, off)?, cx.gep(f32t, k_dst, off)?)
        })
    })?;
    cx.finish()
}
