//! From an object file to a shared library the runtime can `dlopen`: the system C compiler driver
//! links it (`cc -shared`, with libm for the math calls kernels make).

use crate::error::{CodegenError, Result};
use std::path::Path;
use std::process::Command;

/// The linker driver: `$KILN_CC`, else `cc`.
fn cc() -> String {
    std::env::var("KILN_CC").unwrap_or_else(|_| "cc".to_string())
}

/// Links `object` (bytes of an ELF relocatable) into the shared library `out`.
pub fn link_shared(object: &[u8], out: &Path) -> Result<()> {
    let err = |message: String| CodegenError::Artifact { path: out.display().to_string(), message };
    let obj = out.with_extension("o");
    std::fs::write(&obj, object).map_err(|e| err(format!("writing {}: {e}", obj.display())))?;
    let cc = cc();
    let status = Command::new(&cc)
        .args(["-shared", "-nostartfiles", "-o"])
        .arg(out)
        .arg(&obj)
        .arg("-lm")
        .output()
        .map_err(|e| err(format!("running the linker '{cc}': {e} (install a C toolchain, or set KILN_CC)")))?;
    let _ = std::fs::remove_file(&obj);
    if !status.status.success() {
        return Err(err(format!("'{cc} -shared' failed: {}", String::from_utf8_lossy(&status.stderr).trim())));
    }
    Ok(())
}
