//! Helpers every kernel emitter shares: the ABI function shell, loops, typed loads and stores,
//! vectors, and math calls. Emitters stay short by writing kernels in these terms.

use crate::error::{CodegenError, Result};
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::{Linkage, Module};
use inkwell::types::{BasicTypeEnum, FloatType, IntType, VectorType};
use inkwell::values::{
    BasicMetadataValueEnum, BasicValue, BasicValueEnum, FloatValue, FunctionValue, IntValue, PointerValue, VectorValue,
};
use inkwell::AddressSpace;
use inkwell::FloatPredicate;
use inkwell::IntPredicate;

/// Builder errors are LLVM misuse (a bug in an emitter), reported with the kernel being built.
pub fn llvm_err(e: impl std::fmt::Display) -> CodegenError {
    CodegenError::Kernel { message: e.to_string() }
}

fn basic<'ctx>(call: inkwell::values::CallSiteValue<'ctx>, name: &str) -> Result<BasicValueEnum<'ctx>> {
    match call.try_as_basic_value() {
        inkwell::values::ValueKind::Basic(v) => Ok(v),
        _ => Err(llvm_err(format!("{name} returned nothing"))),
    }
}

/// The module being filled and what the target offers.
pub struct KernelCx<'ctx> {
    pub context: &'ctx Context,
    pub module: Module<'ctx>,
    pub builder: Builder<'ctx>,
    /// f32 lanes of the widest vector unit the target has (16 with AVX-512, 8 with AVX2, 4).
    pub lanes: u32,
    /// Kernels for NVPTX: no libm to call, so math functions are generated inline
    /// ([`super::gpu::math`]).
    pub gpu: bool,
    /// GPU kernels compiled for the host to run in the SIMT simulator ([`super::gpu::sim`]):
    /// thread indices, shuffles and barriers become calls to the simulator.
    pub sim: bool,
}

/// The function being emitted: its ABI arguments.
pub struct KernelFn<'ctx> {
    pub function: FunctionValue<'ctx>,
    pub dims: PointerValue<'ctx>,
    pub bufs: PointerValue<'ctx>,
    pub begin: IntValue<'ctx>,
    pub end: IntValue<'ctx>,
}

impl<'ctx> KernelCx<'ctx> {
    pub fn new(context: &'ctx Context, name: &str, lanes: u32) -> KernelCx<'ctx> {
        KernelCx {
            context,
            module: context.create_module(name),
            builder: context.create_builder(),
            lanes,
            gpu: false,
            sim: false,
        }
    }

    /// A module of GPU kernels (NVPTX): 4-lane vectors (128-bit loads), math inline.
    pub fn new_gpu(context: &'ctx Context, name: &str) -> KernelCx<'ctx> {
        KernelCx { gpu: true, ..KernelCx::new(context, name, 4) }
    }

    /// GPU kernels for the host's SIMT simulator (tests).
    pub fn new_gpu_sim(context: &'ctx Context, name: &str) -> KernelCx<'ctx> {
        KernelCx { sim: true, ..KernelCx::new_gpu(context, name) }
    }

    pub fn f32(&self) -> FloatType<'ctx> {
        self.context.f32_type()
    }

    pub fn i64(&self) -> IntType<'ctx> {
        self.context.i64_type()
    }

    pub fn i32(&self) -> IntType<'ctx> {
        self.context.i32_type()
    }

    pub fn ptr(&self) -> inkwell::types::PointerType<'ctx> {
        self.context.ptr_type(AddressSpace::default())
    }

    pub fn vf32(&self, lanes: u32) -> VectorType<'ctx> {
        self.f32().vec_type(lanes)
    }

    pub fn c64(&self, v: i64) -> IntValue<'ctx> {
        self.i64().const_int(v as u64, true)
    }

    pub fn cf(&self, v: f32) -> FloatValue<'ctx> {
        self.f32().const_float(v as f64)
    }

    /// `void name(const i64* dims, void* const* bufs, i64 begin, i64 end)`, positioned at its entry.
    pub fn begin_kernel(&self, name: &str) -> KernelFn<'ctx> {
        let ty = self
            .context
            .void_type()
            .fn_type(&[self.ptr().into(), self.ptr().into(), self.i64().into(), self.i64().into()], false);
        let function = self.module.add_function(name, ty, Some(Linkage::External));
        let entry = self.context.append_basic_block(function, "entry");
        self.builder.position_at_end(entry);
        let p = |i: u32| function.get_nth_param(i).expect("ABI parameter");
        KernelFn {
            function,
            dims: p(0).into_pointer_value(),
            bufs: p(1).into_pointer_value(),
            begin: p(2).into_int_value(),
            end: p(3).into_int_value(),
        }
    }

    /// Returns from the kernel.
    pub fn finish(&self) -> Result<()> {
        self.builder.build_return(None).map_err(llvm_err)?;
        Ok(())
    }

    /// `dims[i]`.
    pub fn dim(&self, k: &KernelFn<'ctx>, i: u64) -> Result<IntValue<'ctx>> {
        let p = self.gep(self.i64().into(), k.dims, self.c64(i as i64))?;
        Ok(self.builder.build_load(self.i64(), p, "dim").map_err(llvm_err)?.into_int_value())
    }

    /// `bufs[i]`.
    pub fn buf(&self, k: &KernelFn<'ctx>, i: u64) -> Result<PointerValue<'ctx>> {
        let p = self.gep(self.ptr().into(), k.bufs, self.c64(i as i64))?;
        Ok(self.builder.build_load(self.ptr(), p, "buf").map_err(llvm_err)?.into_pointer_value())
    }

    /// `&base[idx]` for elements of `ty`.
    pub fn gep(
        &self,
        ty: BasicTypeEnum<'ctx>,
        base: PointerValue<'ctx>,
        idx: IntValue<'ctx>,
    ) -> Result<PointerValue<'ctx>> {
        // SAFETY: emitters index within the buffers the ABI hands them.
        unsafe { self.builder.build_in_bounds_gep(ty, base, &[idx], "p").map_err(llvm_err) }
    }

    /// `&base[idx]` in bytes.
    pub fn gep_bytes(&self, base: PointerValue<'ctx>, idx: IntValue<'ctx>) -> Result<PointerValue<'ctx>> {
        self.gep(self.context.i8_type().into(), base, idx)
    }

    /// Loads a value of `ty` from `&base[idx]` with alignment `align` (bytes).
    pub fn load(
        &self,
        ty: BasicTypeEnum<'ctx>,
        base: PointerValue<'ctx>,
        idx: IntValue<'ctx>,
        align: u32,
    ) -> Result<BasicValueEnum<'ctx>> {
        self.load_ptr(ty, self.gep(ty, base, idx)?, align)
    }

    pub fn store(
        &self,
        ty: BasicTypeEnum<'ctx>,
        base: PointerValue<'ctx>,
        idx: IntValue<'ctx>,
        v: impl BasicValue<'ctx>,
        align: u32,
    ) -> Result<()> {
        let p = self.gep(ty, base, idx)?;
        let st = self.builder.build_store(p, v).map_err(llvm_err)?;
        st.set_alignment(align).map_err(llvm_err)?;
        Ok(())
    }

    /// Loads a value of `ty` at byte offset `bytes` from `base` with alignment `align`.
    pub fn load_at(
        &self,
        ty: BasicTypeEnum<'ctx>,
        base: PointerValue<'ctx>,
        bytes: IntValue<'ctx>,
        align: u32,
    ) -> Result<BasicValueEnum<'ctx>> {
        self.load_ptr(ty, self.gep_bytes(base, bytes)?, align)
    }

    /// Loads a value of `ty` from `p` with alignment `align`.
    fn load_ptr(&self, ty: BasicTypeEnum<'ctx>, p: PointerValue<'ctx>, align: u32) -> Result<BasicValueEnum<'ctx>> {
        let v = self.builder.build_load(ty, p, "ld").map_err(llvm_err)?;
        if let Some(inst) = v.as_instruction_value() {
            inst.set_alignment(align).map_err(llvm_err)?;
        }
        Ok(v)
    }

    pub fn load_f32(&self, base: PointerValue<'ctx>, idx: IntValue<'ctx>) -> Result<FloatValue<'ctx>> {
        Ok(self.load(self.f32().into(), base, idx, 4)?.into_float_value())
    }

    pub fn store_f32(&self, base: PointerValue<'ctx>, idx: IntValue<'ctx>, v: FloatValue<'ctx>) -> Result<()> {
        self.store(self.f32().into(), base, idx, v, 4)
    }

    pub fn load_i32(&self, base: PointerValue<'ctx>, idx: IntValue<'ctx>) -> Result<IntValue<'ctx>> {
        Ok(self.load(self.i32().into(), base, idx, 4)?.into_int_value())
    }

    /// `lanes` f32 starting at element `idx` (unaligned).
    pub fn load_vf32(&self, base: PointerValue<'ctx>, idx: IntValue<'ctx>, lanes: u32) -> Result<VectorValue<'ctx>> {
        let p = self.gep(self.f32().into(), base, idx)?;
        let v = self.builder.build_load(self.vf32(lanes), p, "ldv").map_err(llvm_err)?;
        v.as_instruction_value().expect("a load").set_alignment(4).map_err(llvm_err)?;
        Ok(v.into_vector_value())
    }

    pub fn store_vf32(&self, base: PointerValue<'ctx>, idx: IntValue<'ctx>, v: VectorValue<'ctx>) -> Result<()> {
        let p = self.gep(self.f32().into(), base, idx)?;
        let st = self.builder.build_store(p, v).map_err(llvm_err)?;
        st.set_alignment(4).map_err(llvm_err)?;
        Ok(())
    }

    /// A vector of `lanes` copies of `v`.
    pub fn splat(&self, v: FloatValue<'ctx>, lanes: u32) -> Result<VectorValue<'ctx>> {
        let undef = self.vf32(lanes).get_undef();
        let one = self.builder.build_insert_element(undef, v, self.i32().const_zero(), "s").map_err(llvm_err)?;
        let mask = self.i32().vec_type(lanes).const_zero();
        self.builder.build_shuffle_vector(one, undef, mask, "splat").map_err(llvm_err)
    }

    /// A vector of `lanes` copies of the integer `v` (of its own width).
    pub fn splat_int(&self, v: IntValue<'ctx>, lanes: u32) -> Result<VectorValue<'ctx>> {
        let undef = v.get_type().vec_type(lanes).get_undef();
        let one = self.builder.build_insert_element(undef, v, self.i32().const_zero(), "s").map_err(llvm_err)?;
        let mask = self.i32().vec_type(lanes).const_zero();
        self.builder.build_shuffle_vector(one, undef, mask, "splat").map_err(llvm_err)
    }

    /// Sum of a vector's lanes (a shuffle tree: the same order on every target with these lanes).
    pub fn hsum(&self, v: VectorValue<'ctx>) -> Result<FloatValue<'ctx>> {
        let mut v = v;
        let mut n = v.get_type().get_size();
        while n > 1 {
            let half = n / 2;
            let lo: Vec<_> = (0..half).map(|i| self.i32().const_int(i as u64, false)).collect();
            let hi: Vec<_> = (half..n).map(|i| self.i32().const_int(i as u64, false)).collect();
            let a = self.builder.build_shuffle_vector(v, v, VectorType::const_vector(&lo), "lo").map_err(llvm_err)?;
            let b = self.builder.build_shuffle_vector(v, v, VectorType::const_vector(&hi), "hi").map_err(llvm_err)?;
            v = self.builder.build_float_add(a, b, "hs").map_err(llvm_err)?;
            n = half;
        }
        let e = self.builder.build_extract_element(v, self.i32().const_zero(), "h").map_err(llvm_err)?;
        Ok(e.into_float_value())
    }

    /// The element-wise sum of `vs` by a fixed pairwise tree (element i with i + ⌈n/2⌉, until one
    /// is left): short dependency chains, and the same order on every target.
    pub fn pairwise_sum(&self, mut vs: Vec<VectorValue<'ctx>>) -> Result<VectorValue<'ctx>> {
        while vs.len() > 1 {
            let half = vs.len().div_ceil(2);
            for i in 0..vs.len() - half {
                vs[i] = self.builder.build_float_add(vs[i], vs[i + half], "pairs").map_err(llvm_err)?;
            }
            vs.truncate(half);
        }
        vs.pop().ok_or_else(|| llvm_err("a sum of no vectors"))
    }

    /// The horizontal sums of `vs` (a power of two of them, at most their width) as one vector of
    /// `vs.len()` lanes, lane i = Σ of `vs[i]`, by a transposing tree: each level adds the two
    /// halves of every vector's segment while packing two vectors into one, then the last vector's
    /// segments are halved in place. Each sum pairs lanes exactly as [`KernelCx::hsum`] does (so the
    /// results are bit-identical to it) for `2·n − 2 + 2·log2(width / n)` shuffles instead of
    /// `2·n·log2(width)`.
    pub fn lane_sums(&self, vs: &[VectorValue<'ctx>]) -> Result<VectorValue<'ctx>> {
        let b = &self.builder;
        let width = vs.first().ok_or_else(|| llvm_err("lane_sums of no vectors"))?.get_type().get_size() as usize;
        if !vs.len().is_power_of_two() || vs.len() > width {
            return Err(llvm_err(format!("lane_sums of {} vectors of {width} lanes", vs.len())));
        }
        // `segments` segments of `segment` lanes per vector: the segment's lanes `lo` (first half)
        // or `hi` (second half), over the concatenation of two vectors of `2 · segments` segments.
        let pick = |segments: usize, segment: usize, hi: bool| {
            let half = segment / 2;
            let idx: Vec<_> = (0..segments)
                .flat_map(|seg| (0..half).map(move |i| seg * segment + i + if hi { half } else { 0 }))
                .map(|i| self.i32().const_int(i as u64, false))
                .collect();
            VectorType::const_vector(&idx)
        };
        let mut vs = vs.to_vec();
        let mut segment = width;
        while vs.len() > 1 {
            vs = vs
                .chunks(2)
                .map(|pair| {
                    let segments = 2 * width / segment;
                    let lo = b.build_shuffle_vector(pair[0], pair[1], pick(segments, segment, false), "lo");
                    let hi = b.build_shuffle_vector(pair[0], pair[1], pick(segments, segment, true), "hi");
                    b.build_float_add(lo.map_err(llvm_err)?, hi.map_err(llvm_err)?, "sums").map_err(llvm_err)
                })
                .collect::<Result<_>>()?;
            segment /= 2;
        }
        let mut v = vs[0];
        let segments = width / segment;
        while segment > 1 {
            let lo = b.build_shuffle_vector(v, v, pick(segments, segment, false), "lo").map_err(llvm_err)?;
            let hi = b.build_shuffle_vector(v, v, pick(segments, segment, true), "hi").map_err(llvm_err)?;
            v = b.build_float_add(lo, hi, "sums").map_err(llvm_err)?;
            segment /= 2;
        }
        Ok(v)
    }

    /// Calls an LLVM intrinsic overloaded on `tys` (`llvm.fma`, `llvm.sqrt`, `llvm.exp`, `llvm.maxnum`...).
    pub fn intrinsic(
        &self,
        name: &str,
        tys: &[BasicTypeEnum<'ctx>],
        args: &[BasicMetadataValueEnum<'ctx>],
    ) -> Result<BasicValueEnum<'ctx>> {
        basic(self.intrinsic_call(name, tys, args)?, name)
    }

    /// Calls an LLVM intrinsic and returns the call (for intrinsics that return nothing, or a
    /// struct).
    pub fn intrinsic_call(
        &self,
        name: &str,
        tys: &[BasicTypeEnum<'ctx>],
        args: &[BasicMetadataValueEnum<'ctx>],
    ) -> Result<inkwell::values::CallSiteValue<'ctx>> {
        let i = Intrinsic::find(name).ok_or_else(|| llvm_err(format!("no intrinsic {name}")))?;
        let f = i.get_declaration(&self.module, tys).ok_or_else(|| llvm_err(format!("cannot declare {name}")))?;
        let call_name = if f.get_type().get_return_type().is_some() { "call" } else { "" };
        self.builder.build_call(f, args, call_name).map_err(llvm_err)
    }

    /// `a·b + c`, scalar or vector (`llvm.fma`).
    pub fn fma<V: BasicValue<'ctx>>(&self, a: V, b: V, c: V) -> Result<BasicValueEnum<'ctx>> {
        let ty = a.as_basic_value_enum().get_type();
        self.intrinsic(
            "llvm.fma",
            &[ty],
            &[a.as_basic_value_enum().into(), b.as_basic_value_enum().into(), c.as_basic_value_enum().into()],
        )
    }

    /// Calls a C math function `float name(float...)` from libm (`expf`, `tanhf`, `erff`, `logf`, `powf`).
    /// On the GPU, the same functions are generated inline instead ([`super::gpu::math`]).
    pub fn libm(&self, name: &str, args: &[FloatValue<'ctx>]) -> Result<FloatValue<'ctx>> {
        if self.gpu {
            return super::gpu::math::call(self, name, args);
        }
        let f = self.module.get_function(name).unwrap_or_else(|| {
            let params: Vec<_> = args.iter().map(|_| self.f32().into()).collect();
            self.module.add_function(name, self.f32().fn_type(&params, false), Some(Linkage::External))
        });
        let args: Vec<BasicMetadataValueEnum> = args.iter().map(|&a| a.into()).collect();
        let call = self.builder.build_call(f, &args, "m").map_err(llvm_err)?;
        Ok(basic(call, name)?.into_float_value())
    }

    /// A counted loop `for i in (start..end).step_by(step)`: `body(i)` emits the loop body at the
    /// builder's position (it may create blocks of its own). Leaves the builder after the loop.
    pub fn for_range(
        &self,
        start: IntValue<'ctx>,
        end: IntValue<'ctx>,
        step: i64,
        mut body: impl FnMut(IntValue<'ctx>) -> Result<()>,
    ) -> Result<()> {
        self.for_range_acc(start, end, step, &[], |i, _| body(i).map(|()| Vec::new()))?;
        Ok(())
    }

    /// A loop carrying float (or vector) accumulators: `body(i, accs) -> new accs`. Returns the
    /// final values.
    pub fn for_range_acc(
        &self,
        start: IntValue<'ctx>,
        end: IntValue<'ctx>,
        step: i64,
        init: &[BasicValueEnum<'ctx>],
        mut body: impl FnMut(IntValue<'ctx>, &[BasicValueEnum<'ctx>]) -> Result<Vec<BasicValueEnum<'ctx>>>,
    ) -> Result<Vec<BasicValueEnum<'ctx>>> {
        let f = self.builder.get_insert_block().and_then(|b| b.get_parent()).expect("inside a function");
        let pre = self.builder.get_insert_block().expect("a block");
        let head = self.context.append_basic_block(f, "loop");
        let body_bb = self.context.append_basic_block(f, "body");
        let exit = self.context.append_basic_block(f, "exit");
        self.builder.build_unconditional_branch(head).map_err(llvm_err)?;
        self.builder.position_at_end(head);
        let i = self.builder.build_phi(self.i64(), "i").map_err(llvm_err)?;
        i.add_incoming(&[(&start, pre)]);
        let mut phis = Vec::new();
        for v in init {
            let p = self.builder.build_phi(v.get_type(), "acc").map_err(llvm_err)?;
            p.add_incoming(&[(v, pre)]);
            phis.push(p);
        }
        let iv = i.as_basic_value().into_int_value();
        let cur: Vec<BasicValueEnum> = phis.iter().map(|p| p.as_basic_value()).collect();
        let go = self.builder.build_int_compare(IntPredicate::SLT, iv, end, "go").map_err(llvm_err)?;
        self.builder.build_conditional_branch(go, body_bb, exit).map_err(llvm_err)?;
        self.builder.position_at_end(body_bb);
        let next_vals = body(iv, &cur)?;
        let next = self.builder.build_int_add(iv, self.c64(step), "next").map_err(llvm_err)?;
        let latch = self.builder.get_insert_block().expect("a block");
        self.builder.build_unconditional_branch(head).map_err(llvm_err)?;
        i.add_incoming(&[(&next, latch)]);
        for (p, v) in phis.iter().zip(&next_vals) {
            p.add_incoming(&[(v, latch)]);
        }
        self.builder.position_at_end(exit);
        Ok(cur)
    }

    /// `if cond { then() }`.
    pub fn if_then(&self, cond: IntValue<'ctx>, then: impl FnOnce() -> Result<()>) -> Result<()> {
        let f = self.builder.get_insert_block().and_then(|b| b.get_parent()).expect("inside a function");
        let then_bb = self.context.append_basic_block(f, "then");
        let done = self.context.append_basic_block(f, "done");
        self.builder.build_conditional_branch(cond, then_bb, done).map_err(llvm_err)?;
        self.builder.position_at_end(then_bb);
        then()?;
        self.builder.build_unconditional_branch(done).map_err(llvm_err)?;
        self.builder.position_at_end(done);
        Ok(())
    }

    /// `max(a, b)` for floats (NaN-ignoring, `llvm.maxnum`).
    pub fn fmax(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
        Ok(self.intrinsic("llvm.maxnum", &[self.f32().into()], &[a.into(), b.into()])?.into_float_value())
    }

    pub fn fcmp(&self, p: FloatPredicate, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> Result<IntValue<'ctx>> {
        self.builder.build_float_compare(p, a, b, "fc").map_err(llvm_err)
    }

    pub fn icmp(&self, p: IntPredicate, a: IntValue<'ctx>, b: IntValue<'ctx>) -> Result<IntValue<'ctx>> {
        self.builder.build_int_compare(p, a, b, "ic").map_err(llvm_err)
    }
}
