//! Building GPU kernels for the SIMT simulator (`kiln_runtime::simt`), so tests check their logic
//! without a GPU: the kernels are emitted exactly as for the GPU ([`super::compile_ptx`]) except
//! that thread indices, shuffles, barriers and `mma.sync` call the simulator's hooks and
//! `lg2/ex2.approx` call libm, and compiled for the host. [`compile_sim`] also serves
//! `kiln compile --target cuda-sim`.

use super::{Arity, Launch};
use crate::error::{CodegenError, Result};
use crate::kernels::builder::KernelCx;
use crate::kernels::spec::KernelSpec;
use crate::target::TargetInfo;
use inkwell::context::Context;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

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

/// A library of simulated GPU kernels; its files are removed on drop.
pub struct SimLib {
    lib: libloading::Library,
    dir: PathBuf,
    launches: HashMap<String, Launch>,
    sim: kiln_runtime::simt::Simulator,
}

impl Drop for SimLib {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Emits `kernels` as GPU kernels for the simulator and loads them.
pub fn build(kernels: &[(&str, KernelSpec, Arity)]) -> Result<SimLib> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let err = |path: &std::path::Path, e: &dyn std::fmt::Display| CodegenError::Artifact {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let owned: Vec<(String, KernelSpec, Arity)> =
        kernels.iter().map(|(n, s, a)| (n.to_string(), s.clone(), *a)).collect();
    let (object, launches) = compile_sim(&owned, &crate::target::host_machine()?)?;
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("kiln-gpu-sim-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| err(&dir, &e))?;
    let so = dir.join("kernels.so");
    crate::link::link_shared(&object, &so)?;
    // SAFETY: our freshly linked library, no initializers; its hook global is pointer-sized.
    let lib = unsafe { libloading::Library::new(&so) }.map_err(|e| err(&so, &e))?;
    unsafe { kiln_runtime::simt::install_hooks(&lib) };
    let max = launches.iter().map(|l| if l.block_sync { l.block as usize } else { 0 }).max().unwrap_or(0);
    let launches = owned.iter().map(|(n, _, _)| n.clone()).zip(launches).collect();
    Ok(SimLib { lib, dir, launches, sim: kiln_runtime::simt::Simulator::new(max) })
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
            self.lib.get(format!("{name}__sim").as_bytes()).expect("simulated kernel");
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
