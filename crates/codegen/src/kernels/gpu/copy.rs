//! `copy` on the GPU (permute, slice, split and concat pieces): a block per outer index, its
//! threads over the flattened inner box, so consecutive threads write consecutive outputs. f32
//! and i32 data are both moved as 32-bit words.

use super::entry;
use super::{Arity, Launch};
use crate::error::Result;
use crate::kernels::builder::{llvm_err, KernelCx};
use crate::kernels::spec::KernelSpec;

const BLOCK: u32 = 256;

pub fn emit(cx: &KernelCx<'_>, name: &str, spec: &KernelSpec, arity: Arity) -> Result<Launch> {
    let KernelSpec::Copy { .. } = spec else {
        return Err(llvm_err(format!("{name}: not a copy kernel")));
    };
    let e = entry::begin(cx, name, arity.dims, arity.bufs, BLOCK)?;
    let i0 = entry::block(cx)?;
    let b = &cx.builder;
    entry::guard_and_finish(cx, &e, i0, || {
        let d = &e.dims;
        let (e1, e2, e3) = (d[1], d[2], d[3]);
        let (s0, s1, s2, s3, offset) = (d[4], d[5], d[6], d[7], d[8]);
        let (x, out) = (e.bufs[0], e.bufs[1]);
        let mul = |a, c, n| b.build_int_mul(a, c, n).map_err(llvm_err);
        let add = |a, c, n| b.build_int_add(a, c, n).map_err(llvm_err);
        let e23 = mul(e2, e3, "e23")?;
        let inner = mul(e1, e23, "inner")?;
        let out0 = mul(i0, inner, "out0")?;
        let src0 = add(offset, mul(i0, s0, "a0")?, "src0")?;
        cx.for_range(entry::thread(cx)?, inner, BLOCK as i64, |f| {
            let i1 = b.build_int_signed_div(f, e23, "i1").map_err(llvm_err)?;
            let r = b.build_int_signed_rem(f, e23, "r").map_err(llvm_err)?;
            let i2 = b.build_int_signed_div(r, e3, "i2").map_err(llvm_err)?;
            let i3 = b.build_int_signed_rem(r, e3, "i3").map_err(llvm_err)?;
            let src = add(
                src0,
                add(mul(i1, s1, "a1")?, add(mul(i2, s2, "a2")?, mul(i3, s3, "a3")?, "a23")?, "a123")?,
                "src",
            )?;
            let v = cx.load_i32(x, src)?;
            cx.store(cx.i32().into(), out, add(out0, f, "dst")?, v, 4)
        })
    })?;
    Ok(Launch::new(BLOCK, 1))
}
