//! PLACEHOLDER — being written.
use super::builder::KernelCx;
use super::spec::KernelSpec;
use crate::error::Result;

pub fn emit(_cx: &KernelCx<'_>, name: &str, spec: &KernelSpec) -> Result<()> {
    Err(super::builder::llvm_err(format!("{name}: {} kernels are not written yet", spec.kind())))
}
