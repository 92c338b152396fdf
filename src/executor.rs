//! One handle for a compiled artifact on whatever it was compiled for: CPU threads (`kernels.so`)
//! or, in a build with the `cuda` feature, an NVIDIA GPU (`kernels.ptx`). `kiln run`, `bench` and
//! `logits` use it, so every command runs both kinds of artifact.

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_runtime::artifact::Manifest;
use kiln_runtime::cpu::{CpuModel, KernelProfile};
use kiln_runtime::offload::{OffloadConfig, Trace};
use std::path::Path;

/// How `kiln run`, `bench` and `logits` load and run an artifact.
#[derive(Args, Clone, Debug, Default)]
pub struct ExecArgs {
    /// The CUDA device to run on.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub gpu: usize,
    /// Launch every decode step's kernels one by one instead of replaying a captured CUDA graph.
    #[arg(long)]
    pub no_cuda_graph: bool,
    /// CPU artifacts: copy the weights into memory on transparent huge pages instead of reading
    /// them through the file's mapping — slower to load (about 1–2 s per GB), faster to decode
    /// when the file's page cache is on 4 KiB pages, as it always is for an artifact compiled a
    /// moment ago (SmolLM2 f32: 26 instead of 18–22 tok/s). Not with expert offloading.
    #[arg(long)]
    pub huge_pages: bool,
}

pub enum Executor {
    Cpu(Box<CpuModel>),
    #[cfg(feature = "cuda")]
    Cuda(Box<kiln_runtime::cuda::CudaModel>),
}

/// Whether the artifact at `dir` holds PTX (read from its manifest without loading anything).
fn is_cuda_artifact(dir: &Path) -> Result<bool> {
    let p = dir.join("manifest.json");
    let text = std::fs::read_to_string(&p)
        .with_context(|| format!("{}: cannot read (is this a compiled artifact?)", p.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", p.display()))?;
    Ok(v["target"]["triple"].as_str() == Some(kiln_runtime::artifact::manifest::CUDA_TRIPLE))
}

impl Executor {
    /// Loads the artifact at `dir` on its target: `threads` CPU threads, or GPU `exec.gpu`.
    pub fn load(dir: &Path, threads: usize, offload: Option<&OffloadConfig>, exec: &ExecArgs) -> Result<Executor> {
        if exec.huge_pages && offload.is_some() {
            bail!("--huge-pages copies every weight into memory; it cannot be combined with expert offloading");
        }
        if !is_cuda_artifact(dir)? {
            let model = if exec.huge_pages {
                CpuModel::load_on_huge_pages(dir, threads)?
            } else {
                CpuModel::load_with(dir, threads, offload)?
            };
            return Ok(Executor::Cpu(Box::new(model)));
        }
        if offload.is_some() {
            bail!("{}: expert offloading (--expert-cache/--expert-budget) runs on the CPU; this artifact is compiled for CUDA", dir.display());
        }
        #[cfg(feature = "cuda")]
        {
            let mut model = kiln_runtime::cuda::CudaModel::load(dir, exec.gpu)
                .with_context(|| format!("{}: a CUDA artifact", dir.display()))?;
            model.set_graphs(!exec.no_cuda_graph);
            Ok(Executor::Cuda(Box::new(model)))
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = exec;
            bail!("{}: compiled for CUDA, but this kiln was built without the `cuda` feature", dir.display())
        }
    }

    pub fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        Ok(match self {
            Executor::Cpu(m) => m.forward(tokens)?,
            #[cfg(feature = "cuda")]
            Executor::Cuda(m) => m.forward(tokens)?,
        })
    }

    pub fn reset(&mut self) {
        match self {
            Executor::Cpu(m) => m.reset(),
            #[cfg(feature = "cuda")]
            Executor::Cuda(m) => m.reset(),
        }
    }

    pub fn manifest(&self) -> &Manifest {
        match self {
            Executor::Cpu(m) => m.manifest(),
            #[cfg(feature = "cuda")]
            Executor::Cuda(m) => m.manifest(),
        }
    }

    pub fn enable_profile(&mut self) {
        match self {
            Executor::Cpu(m) => m.enable_profile(),
            #[cfg(feature = "cuda")]
            Executor::Cuda(m) => m.enable_profile(),
        }
    }

    pub fn profile(&self) -> Option<Vec<KernelProfile>> {
        match self {
            Executor::Cpu(m) => m.profile().map(<[_]>::to_vec),
            #[cfg(feature = "cuda")]
            Executor::Cuda(m) => m.profile().map(<[_]>::to_vec),
        }
    }

    /// The offloading trace so far (CPU artifacts with offloaded experts only).
    pub fn offload_trace(&self) -> Option<Trace> {
        match self {
            Executor::Cpu(m) => m.offload_trace(),
            #[cfg(feature = "cuda")]
            Executor::Cuda(_) => None,
        }
    }

    pub fn reset_offload_stats(&mut self) {
        match self {
            Executor::Cpu(m) => m.reset_offload_stats(),
            #[cfg(feature = "cuda")]
            Executor::Cuda(_) => {}
        }
    }

    /// What runs it, for reports: `cpu` or the GPU's name.
    pub fn device(&self) -> String {
        match self {
            Executor::Cpu(_) => "cpu".into(),
            #[cfg(feature = "cuda")]
            Executor::Cuda(m) => m.device_name().to_string(),
        }
    }

    /// CPU threads (1 for a GPU: the host thread that launches).
    pub fn threads(&self) -> usize {
        match self {
            Executor::Cpu(m) => m.threads(),
            #[cfg(feature = "cuda")]
            Executor::Cuda(_) => 1,
        }
    }

    /// Measured read bandwidth of the memory the weights are in (bytes/s): the CPU's (`threads`
    /// readers over a 1 GiB buffer) or the GPU's (device-to-device copies).
    pub fn bandwidth(&self) -> Result<f64> {
        Ok(match self {
            Executor::Cpu(m) => kiln_runtime::measure::read_bandwidth(1 << 30, m.threads(), 3),
            #[cfg(feature = "cuda")]
            Executor::Cuda(m) => m.measure_bandwidth(1 << 30, 5)?,
        })
    }
}

impl kiln_runtime::DecodeModel for Executor {
    fn forward(&mut self, tokens: &[u32]) -> std::result::Result<Vec<f32>, String> {
        Executor::forward(self, tokens).map_err(|e| format!("{e:#}"))
    }
}
