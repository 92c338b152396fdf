//! Compiling a few kernels into a shared library and calling them, for tests: kernels are checked
//! against the reference interpreter (`kiln_ir::interp`) on random data, and each is called with
//! its tasks split several ways, since results must not depend on the split.

use super::emit::compile_kernels;
use super::spec::KernelSpec;
use crate::error::{CodegenError, Result};
use crate::target::host_machine;
use std::path::PathBuf;

type KernelFnPtr = unsafe extern "C" fn(*const i64, *const *mut u8, i64, i64);

/// An object file linked into a shared library in a private temporary folder and loaded; the
/// folder is removed on drop.
pub struct TempLib {
    pub lib: libloading::Library,
    dir: PathBuf,
}

impl Drop for TempLib {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TempLib {
    /// Links `object` (for the host) and loads it; `tag` names the folder.
    pub fn link(object: &[u8], tag: &str) -> Result<TempLib> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kiln-{tag}-{}-{n}", std::process::id()));
        let err = |p: &std::path::Path, e: &dyn std::fmt::Display| CodegenError::Artifact {
            path: p.display().to_string(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(&dir).map_err(|e| err(&dir, &e))?;
        let so = dir.join("kernels.so");
        crate::link::link_shared(object, &so)?;
        // SAFETY: the library is ours, freshly linked, with no initializers.
        let lib = unsafe { libloading::Library::new(&so) }.map_err(|e| err(&so, &e))?;
        Ok(TempLib { lib, dir })
    }
}

/// A loaded library of test kernels.
pub struct TestLib {
    lib: TempLib,
}

/// Compiles `kernels` for the host and loads them.
pub fn build(kernels: &[(&str, KernelSpec)]) -> Result<TestLib> {
    let owned: Vec<(String, KernelSpec)> = kernels.iter().map(|(n, s)| (n.to_string(), s.clone())).collect();
    let object = compile_kernels(&owned, &host_machine()?)?;
    Ok(TestLib { lib: TempLib::link(&object, "kernel-test")? })
}

/// [`build`] with vectors of `lanes` f32 instead of the host's widest, so the AVX2 (8 lanes) and
/// SSE (4 lanes) code paths are tested on an AVX-512 machine too.
pub fn build_with_lanes(kernels: &[(&str, KernelSpec)], lanes: u32) -> Result<TestLib> {
    let target = host_machine()?;
    let context = inkwell::context::Context::create();
    let cx = super::builder::KernelCx::new(&context, "lanes", lanes);
    for (name, spec) in kernels {
        super::emit::emit_kernel(&cx, name, spec)?;
    }
    crate::emit::optimize(&cx.module, &target, crate::emit::DEFAULT_PIPELINE)?;
    let object = crate::emit::emit_object(&cx.module, &target)?;
    Ok(TestLib { lib: TempLib::link(&object, "kernel-test-lanes")? })
}

impl TestLib {
    /// Calls kernel `name` over tasks `0..tasks`, in `splits` roughly equal ranges (in reverse
    /// order, to catch kernels that depend on running in order).
    ///
    /// # Safety
    /// `bufs` must point to buffers of the sizes the kernel's contract implies for `dims`.
    pub unsafe fn call(&self, name: &str, dims: &[i64], bufs: &[*mut u8], tasks: i64, splits: i64) {
        let f: libloading::Symbol<KernelFnPtr> = self.lib.lib.get(name.as_bytes()).expect("kernel symbol");
        let splits = splits.clamp(1, tasks.max(1));
        let per = (tasks + splits - 1) / splits.max(1);
        let mut ranges = Vec::new();
        let mut b = 0;
        while b < tasks {
            ranges.push((b, (b + per).min(tasks)));
            b += per;
        }
        for (b, e) in ranges.into_iter().rev() {
            f(dims.as_ptr(), bufs.as_ptr(), b, e);
        }
    }
}

/// Pointer of a slice for a kernel's `bufs`.
pub fn ptr<T>(v: &mut [T]) -> *mut u8 {
    v.as_mut_ptr() as *mut u8
}

/// ‖got − want‖ / ‖want‖ over the lanes where `want` is finite (‖got − want‖ when `want` is all
/// zero). NaN must sit exactly where `want` has NaN, and an infinite `want` must be met exactly.
pub fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.is_nan(), w.is_nan(), "element {i}: got {g}, want {w}");
        if w.is_nan() {
            continue;
        }
        if w.is_infinite() {
            assert_eq!(g, w, "element {i}");
            continue;
        }
        num += (g as f64 - w as f64).powi(2);
        den += (w as f64).powi(2);
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}
