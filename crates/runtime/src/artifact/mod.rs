//! Compiled artifacts: a directory with `manifest.json`, `kernels.so` (CPU) or `kernels.ptx`
//! (CUDA), `weights.safetensors` and the tokenizer files. [`Artifact::open`] checks everything
//! before anything runs: the format version, every file's size and checksum, and, for CPU
//! artifacts, that this CPU has the instruction sets the kernels were compiled for (the CUDA
//! executor checks the GPU's SM when it loads the PTX).

pub mod manifest;
pub mod weights;

pub use manifest::Manifest;

use crate::error::{Result, RuntimeError};
use manifest::{checksum, FORMAT_VERSION};
use std::path::{Path, PathBuf};
use weights::WeightFile;

/// A checked, loaded artifact (kernels not yet resolved: see [`crate::cpu`] and `crate::cuda`).
pub struct Artifact {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub weights: WeightFile,
    /// `kernels.so`, loaded (CPU artifacts only).
    pub library: Option<libloading::Library>,
}

fn bad(path: &Path, msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Artifact(format!("{}: {}", path.display(), msg.into()))
}

/// Checks that `tokens` can be fed after `position` tokens: ids inside the vocabulary and room
/// left in the KV cache. Both executors call it before running anything.
pub fn check_feed(m: &Manifest, position: usize, tokens: &[u32]) -> Result<()> {
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= m.model.vocab_size) {
        return Err(RuntimeError::Execution(format!(
            "token id {bad} is outside the vocabulary of {}",
            m.model.vocab_size
        )));
    }
    if position + tokens.len() > m.max_context {
        return Err(RuntimeError::Execution(format!(
            "the context is full: {position} tokens so far + {} would exceed the artifact's {} (compile with a larger --max-context)",
            tokens.len(),
            m.max_context
        )));
    }
    Ok(())
}

/// Whether `dir` looks like a compiled artifact (has a manifest).
pub fn is_artifact(dir: &Path) -> bool {
    dir.join("manifest.json").is_file()
}

/// Whether this CPU has an instruction-set feature, by LLVM's name.
pub fn cpu_has(feature: &str) -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        Some(match feature {
            "sse4.2" => std::arch::is_x86_feature_detected!("sse4.2"),
            "avx" => std::arch::is_x86_feature_detected!("avx"),
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            "f16c" => std::arch::is_x86_feature_detected!("f16c"),
            "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
            "avx512bw" => std::arch::is_x86_feature_detected!("avx512bw"),
            "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
            "avx512dq" => std::arch::is_x86_feature_detected!("avx512dq"),
            "avx512bf16" => std::arch::is_x86_feature_detected!("avx512bf16"),
            "avx512vnni" => std::arch::is_x86_feature_detected!("avx512vnni"),
            "avx512fp16" => std::arch::is_x86_feature_detected!("avx512fp16"),
            "avxvnni" => std::arch::is_x86_feature_detected!("avxvnni"),
            _ => return None,
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = feature;
        None
    }
}

impl Artifact {
    pub fn open(dir: &Path) -> Result<Artifact> {
        let mpath = dir.join("manifest.json");
        let text = std::fs::read_to_string(&mpath).map_err(|e| {
            bad(&mpath, format!("cannot read: {e} (is this a compiled artifact? `kiln compile` makes one)"))
        })?;
        let version: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(&mpath, format!("not valid JSON: {e}")))?;
        let found = version.get("format_version").and_then(|v| v.as_u64());
        if found != Some(FORMAT_VERSION as u64) {
            return Err(bad(
                &mpath,
                format!("artifact format version {found:?}, but this runtime reads version {FORMAT_VERSION}; recompile it with this kiln"),
            ));
        }
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| bad(&mpath, format!("malformed manifest: {e}")))?;
        let host = format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS);
        let cuda = manifest.target.is_cuda();
        if !cuda
            && (!manifest.target.triple.starts_with(std::env::consts::ARCH)
                || !manifest.target.triple.contains(std::env::consts::OS))
        {
            return Err(bad(&mpath, format!("compiled for {}, but this machine is {host}", manifest.target.triple)));
        }
        let missing: Vec<&str> = manifest
            .target
            .required_features
            .iter()
            .map(String::as_str)
            .filter(|f| cpu_has(f) == Some(false))
            .collect();
        if !missing.is_empty() {
            return Err(bad(
                &mpath,
                format!(
                    "compiled for CPU '{}' using {}, which this CPU lacks; recompile on this machine (or with --target-cpu)",
                    manifest.target.cpu,
                    missing.join(", ")
                ),
            ));
        }
        for f in &manifest.files {
            let p = dir.join(&f.path);
            let file = std::fs::File::open(&p).map_err(|e| bad(&p, format!("cannot read: {e}")))?;
            let len = file.metadata().map_err(|e| bad(&p, e.to_string()))?.len();
            if len != f.bytes {
                return Err(bad(&p, format!("is {len} bytes, the manifest says {} (truncated or replaced?)", f.bytes)));
            }
            // SAFETY: read-only map of a file we only read.
            let data = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| bad(&p, e.to_string()))?;
            let sum = checksum(&data);
            if sum != f.checksum {
                return Err(bad(
                    &p,
                    format!("checksum {sum} does not match the manifest's {} (corrupt file)", f.checksum),
                ));
            }
        }
        let weights = WeightFile::open(&dir.join("weights.safetensors"))?;
        let library = if cuda {
            None
        } else {
            let so = dir.join("kernels.so");
            // SAFETY: the library was produced by `kiln compile` (its checksum matched above); it has
            // no initializers and only exports kernels with the documented ABI.
            Some(unsafe { libloading::Library::new(&so) }.map_err(|e| bad(&so, format!("cannot load: {e}")))?)
        };
        Ok(Artifact { dir: dir.to_path_buf(), manifest, weights, library })
    }
}
