//! Whether a CUDA artifact can run on a given GPU, checked before anything is loaded onto it: the
//! SM the PTX was compiled for against the device's compute capability, and the launch geometry
//! every kernel must carry.

use std::path::Path;

use crate::artifact::manifest::{Launch, Manifest};
use crate::error::{Result, RuntimeError};

/// The GPU a compatibility check is about.
pub(super) struct GpuDesc<'a> {
    pub ordinal: usize,
    pub name: &'a str,
    /// Compute capability as `major * 10 + minor`.
    pub sm: u32,
}

/// Whether PTX compiled for `target` (`sm_80`, `sm_90a`) runs on a GPU of SM `device`: PTX JITs
/// forward to newer GPUs, but the architecture-specific `a` variants (wgmma, setmaxnreg) run only
/// on exactly that SM.
pub(super) fn sm_compatible(target: &str, want: u32, device: u32) -> bool {
    if target.ends_with('a') {
        device == want
    } else {
        device >= want
    }
}

/// Errors unless the artifact's PTX (`ptx`, for the message) runs on `gpu`.
pub(super) fn check_sm(ptx: &Path, manifest: &Manifest, gpu: &GpuDesc) -> Result<()> {
    let target = &manifest.target.cpu;
    let Some(want) = manifest.target.sm() else {
        return Err(RuntimeError::Artifact(format!(
            "{}: the manifest's CUDA target '{target}' is not an SM (`sm_80`, `sm_90a`, ...)",
            ptx.display()
        )));
    };
    if sm_compatible(target, want, gpu.sm) {
        return Ok(());
    }
    let exact =
        if target.ends_with('a') { format!(" ({target} code runs only on that exact SM)") } else { String::new() };
    Err(RuntimeError::Artifact(format!(
        "{}: compiled for {target}, but GPU {} ({}) is sm_{}{exact}; recompile with `kiln compile --target cuda:sm_{}`",
        ptx.display(),
        gpu.ordinal,
        gpu.name,
        gpu.sm,
        gpu.sm
    )))
}

/// Errors unless `manifest` is a CUDA artifact (a CPU one needs the CPU executor).
pub(super) fn check_cuda(dir: &Path, manifest: &Manifest) -> Result<()> {
    if manifest.target.is_cuda() {
        return Ok(());
    }
    Err(RuntimeError::Artifact(format!(
        "{}: a CPU artifact (compiled for {}, CPU '{}'); run it on the CPU, or recompile it with `kiln compile --target cuda:sm_NN`",
        dir.display(),
        manifest.target.triple,
        manifest.target.cpu
    )))
}

/// Every kernel's launch geometry, by kernel index; a kernel without one (or with an empty block)
/// is an artifact error naming it.
pub(super) fn launches(dir: &Path, manifest: &Manifest) -> Result<Vec<Launch>> {
    manifest
        .kernels
        .iter()
        .map(|k| match k.launch {
            Some(l) if l.block > 0 => Ok(l),
            Some(_) => Err(RuntimeError::Artifact(format!(
                "{}: kernel '{}' has a launch block of 0 threads",
                dir.join("manifest.json").display(),
                k.symbol
            ))),
            None => Err(RuntimeError::Artifact(format!(
                "{}: kernel '{}' has no launch geometry (a CUDA artifact needs one per kernel; recompile it with this kiln)",
                dir.join("manifest.json").display(),
                k.symbol
            ))),
        })
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::artifact::manifest::{KernelEntry, ModelDesc, TargetDesc, CUDA_TRIPLE, FORMAT_VERSION};

    pub(crate) fn manifest(cpu: &str, launch: Option<Launch>) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            compiler: "test".into(),
            target: TargetDesc { triple: CUDA_TRIPLE.into(), cpu: cpu.into(), required_features: vec![] },
            model: ModelDesc {
                name: "m".into(),
                arch: "llama".into(),
                vocab_size: 8,
                eos_token_ids: vec![],
                config: serde_json::Value::Null,
            },
            pipeline: String::new(),
            weights_dtype: "f32".into(),
            max_tokens: 4,
            max_context: 16,
            symbols: vec![],
            kernels: vec![KernelEntry {
                symbol: "k_matmul_0".into(),
                kind: "matmul".into(),
                params: serde_json::Value::Null,
                launch,
            }],
            buffers: vec![],
            kv_slots: vec![],
            steps: vec![],
            inputs: vec![],
            outputs: vec![],
            moe_layers: vec![],
            files: vec![],
        }
    }

    #[test]
    fn plain_sm_runs_on_newer_gpus_and_a_variants_only_on_their_own() {
        assert!(sm_compatible("sm_80", 80, 80));
        assert!(sm_compatible("sm_80", 80, 90));
        assert!(!sm_compatible("sm_90", 90, 80));
        assert!(sm_compatible("sm_90a", 90, 90));
        assert!(!sm_compatible("sm_90a", 90, 100));
        assert!(!sm_compatible("sm_90a", 90, 89));
    }

    #[test]
    fn sm_mismatch_names_the_file_gpu_and_fix() {
        let m = manifest("sm_90", None);
        let gpu = GpuDesc { ordinal: 0, name: "NVIDIA A100-SXM4-80GB", sm: 80 };
        let e = check_sm(Path::new("/a/kernels.ptx"), &m, &gpu).unwrap_err().to_string();
        assert_eq!(
            e,
            "/a/kernels.ptx: compiled for sm_90, but GPU 0 (NVIDIA A100-SXM4-80GB) is sm_80; \
             recompile with `kiln compile --target cuda:sm_80`"
        );
        let h100 = GpuDesc { ordinal: 1, name: "H100", sm: 90 };
        assert!(check_sm(Path::new("k.ptx"), &m, &h100).is_ok());
        let b200 = GpuDesc { ordinal: 0, name: "B200", sm: 100 };
        let e = check_sm(Path::new("k.ptx"), &manifest("sm_90a", None), &b200).unwrap_err().to_string();
        assert!(e.contains("compiled for sm_90a") && e.contains("cuda:sm_100"), "{e}");
        let e = check_sm(Path::new("k.ptx"), &manifest("znver4", None), &h100).unwrap_err().to_string();
        assert!(e.contains("not an SM"), "{e}");
    }

    #[test]
    fn cpu_artifacts_are_refused() {
        assert!(check_cuda(Path::new("/a"), &manifest("sm_80", None)).is_ok());
        let mut m = manifest("znver4", None);
        m.target.triple = "x86_64-unknown-linux-gnu".into();
        let e = check_cuda(Path::new("/a"), &m).unwrap_err().to_string();
        assert!(e.starts_with("/a: a CPU artifact") && e.contains("--target cuda:"), "{e}");
    }

    #[test]
    fn every_kernel_needs_a_launch() {
        let l = Launch::new(128, 4);
        assert_eq!(launches(Path::new("/a"), &manifest("sm_80", Some(l))).unwrap(), vec![l]);
        let e = launches(Path::new("/a"), &manifest("sm_80", None)).unwrap_err().to_string();
        assert!(e.contains("k_matmul_0") && e.contains("no launch"), "{e}");
        let zero = Launch { block: 0, ..l };
        assert!(launches(Path::new("/a"), &manifest("sm_80", Some(zero))).is_err());
    }
}
