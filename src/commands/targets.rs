//! `kiln targets`: what this build of Kiln can generate code for (host CPU, NVPTX SMs, LLVM
//! version) and which GPUs it can run CUDA artifacts on here.

use anyhow::Result;
use clap::Args;
use serde::Serialize;

#[derive(Args)]
pub struct TargetsArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The GPUs this machine offers CUDA artifacts, or why there are none.
#[derive(Serialize)]
struct CudaReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<kiln_runtime::CudaInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unavailable: Option<String>,
}

fn cuda_report() -> CudaReport {
    match kiln_runtime::cuda_available() {
        Ok(info) => CudaReport { info: Some(info), unavailable: None },
        Err(e) => CudaReport { info: None, unavailable: Some(e.to_string()) },
    }
}

fn cuda_text(r: &CudaReport) -> String {
    match (&r.info, &r.unavailable) {
        (Some(info), _) => info
            .devices
            .iter()
            .map(|d| {
                format!(
                    "gpu {}   {} (sm_{}, {:.0} GB), CUDA driver {}.{}\n",
                    d.ordinal,
                    d.name,
                    d.sm(),
                    d.total_memory_bytes as f64 / 1e9,
                    info.driver_version / 1000,
                    info.driver_version % 1000 / 10
                )
            })
            .collect(),
        (None, why) => format!("gpu     none: {}\n", why.as_deref().unwrap_or("unknown")),
    }
}

#[cfg(feature = "llvm")]
pub fn run(args: TargetsArgs) -> Result<()> {
    #[derive(Serialize)]
    struct Full {
        #[serde(flatten)]
        codegen: kiln_codegen::TargetReport,
        cuda: CudaReport,
    }
    let report = Full { codegen: kiln_codegen::describe_targets(), cuda: cuda_report() };
    let text = if args.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        format!("{}{}", report.codegen, cuda_text(&report.cuda))
    };
    crate::io::write_output(None, &text)
}

#[cfg(not(feature = "llvm"))]
pub fn run(args: TargetsArgs) -> Result<()> {
    let cuda = cuda_report();
    let text = if args.json {
        serde_json::to_string_pretty(&serde_json::json!({ "compiler": null, "cuda": cuda }))? + "\n"
    } else {
        format!(
            "compiler: none (built without the `llvm` feature: runs artifacts, generates no code)\n{}",
            cuda_text(&cuda)
        )
    };
    crate::io::write_output(None, &text)
}
