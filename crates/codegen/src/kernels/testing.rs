//! Compiling a few kernels into a shared library and calling them, for tests: kernels are checked
//! against the reference interpreter (`kiln_ir::interp`) on random data, and each is called with
//! its tasks split several ways, since results must not depend on the split.

use super::emit::compile_kernels;
use super::spec::KernelSpec;
use crate::error::{CodegenError, Result};
use crate::target::host_machine;
use std::path::PathBuf;

type KernelFnPtr = unsafe extern "C" fn(*const i64, *const *mut u8, i64, i64);

/// A loaded library of test kernels; the files are removed on drop.
pub struct TestLib {
    lib: libloading::Library,
    dir: PathBuf,
}

impl Drop for TestLib {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Compiles `kernels` for the host and loads them.
pub fn build(kernels: &[(&str, KernelSpec)]) -> Result<TestLib> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let owned: Vec<(String, KernelSpec)> = kernels.iter().map(|(n, s)| (n.to_string(), s.clone())).collect();
    let target = host_machine()?;
    let object = compile_kernels(&owned, &target)?;
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("kiln-kernel-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| CodegenError::Artifact { path: dir.display().to_string(), message: e.to_string() })?;
    let so = dir.join("kernels.so");
    crate::link::link_shared(&object, &so)?;
    // SAFETY: the library is ours, freshly linked, with no initializers.
    let lib = unsafe { libloading::Library::new(&so) }
        .map_err(|e| CodegenError::Artifact { path: so.display().to_string(), message: e.to_string() })?;
    Ok(TestLib { lib, dir })
}

impl TestLib {
    /// Calls kernel `name` over tasks `0..tasks`, in `splits` roughly equal ranges (in reverse
    /// order, to catch kernels that depend on running in order).
    ///
    /// # Safety
    /// `bufs` must point to buffers of the sizes the kernel's contract implies for `dims`.
    pub unsafe fn call(&self, name: &str, dims: &[i64], bufs: &[*mut u8], tasks: i64, splits: i64) {
        let f: libloading::Symbol<KernelFnPtr> = self.lib.get(name.as_bytes()).expect("kernel symbol");
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
