//! Building GPU kernels for the SIMT simulator (`kiln_runtime::simt`), so tests check their logic
//! without a GPU: the kernels are emitted exactly as for the GPU ([`super::compile_ptx`]) except
//! that thread indices, shuffles, barriers and `mma.sync` call the simulator's hooks and
//! `lg2/ex2.approx` call libm, and compiled for the host. [`compile_sim`] also serves
//! `kiln compile --target cuda-sim`.

use super::{Arity, Launch};
use crate::error::Result;
use crate::kernels::builder::KernelCx;
use crate::kernels::spec::KernelSpec;
use crate::kernels::testing::TempLib;
use crate::target::TargetInfo;
use inkwell::context::Context;
use std::collections::HashMap;

/// Emits `kernels` as simulated GPU kernels into one module for `target` (the host) and returns
/// the object file and each kernel's launch geometry.
pub fn compile_sim(kernels: &[(String, KernelSpec, Arity)], target: &TargetInfo) -> Result<(Vec<u8>, Vec<Launch>)> {
    let context = Context::create();
    let cx = KernelCx::new_gpu_sim(&context, "kiln_sim_kernels");
    let mut launches = Vec::with_capacity(kernels.len());
    for (name, spec, arity) in kernels {
        launches.push(super::emit_gpu_kernel(&cx, name, spec, *arity)?);
    }
    crate::emit::optimize(&cx.module, target, crate::emit::DEFAULT_PIPELINE)?;
    Ok((crate::emit::emit_object(&cx.module, target)?, launches))
}

/// A library of simulated GPU kernels.
pub struct SimLib {
    lib: TempLib,
    launches: HashMap<String, Launch>,
    sim: kiln_runtime::simt::Simulator,
}

/// Emits `kernels` as GPU kernels for the simulator and loads them.
pub fn build(kernels: &[(&str, KernelSpec, Arity)]) -> Result<SimLib> {
    let owned: Vec<(String, KernelSpec, Arity)> =
        kernels.iter().map(|(n, s, a)| (n.to_string(), s.clone(), *a)).collect();
    let (object, launches) = compile_sim(&owned, &crate::target::host_machine()?)?;
    let lib = TempLib::link(&object, "gpu-sim")?;
    // SAFETY: a library of simulated kernels: its hook global is pointer-sized.
    unsafe { kiln_runtime::simt::install_hooks(&lib.lib) };
    let max = launches.iter().map(|l| if l.block_sync { l.block as usize } else { 0 }).max().unwrap_or(0);
    let launches = owned.iter().map(|(n, _, _)| n.clone()).zip(launches).collect();
    Ok(SimLib { lib, launches, sim: kiln_runtime::simt::Simulator::new(max) })
}

impl SimLib {
    /// The launch geometry `name` was emitted with.
    pub fn launch(&self, name: &str) -> Launch {
        self.launches[name]
    }

    /// Runs kernel `name` for `tasks` tasks: its grid's blocks in turn, each block's threads at
    /// once.
    ///
    /// # Safety
    /// `bufs` must point to buffers of the sizes the kernel's contract implies for `dims`.
    pub unsafe fn run(&self, name: &str, tasks: i64, dims: &[i64], bufs: &[*mut u8]) {
        let f: libloading::Symbol<kiln_runtime::simt::SimFn> =
            self.lib.lib.get(format!("{name}__sim").as_bytes()).expect("simulated kernel");
        let launch = self.launches[name];
        let mut params: Vec<i64> = dims.to_vec();
        params.extend(bufs.iter().map(|&p| p as i64));
        // Split-K scratch, zeroed as the ABI requires; the kernel must leave its counters zeroed.
        let mut scratch = vec![0u64; launch.scratch_bytes(tasks).div_ceil(8)];
        if launch.scratch_per_task > 0 {
            params.push(scratch.as_mut_ptr() as i64);
        }
        self.sim.launch(*f, launch, tasks, &params);
        if launch.scratch_per_task > 0 {
            let counters_left = (0..tasks as usize).any(|t| {
                let at = t * launch.scratch_per_task as usize;
                (scratch[at / 8] >> (8 * (at % 8))) as u32 != 0
            });
            assert!(!counters_left, "{name}: a split-K counter was left non-zero");
        }
    }
}
