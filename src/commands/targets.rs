//! `kiln targets`: what this build of Kiln can generate code for (host CPU, NVPTX SMs, LLVM version).

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct TargetsArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[cfg(feature = "llvm")]
pub fn run(args: TargetsArgs) -> Result<()> {
    let report = kiln_codegen::describe_targets();
    let text = if args.json { serde_json::to_string_pretty(&report)? + "\n" } else { format!("{report}") };
    crate::io::write_output(None, &text)
}

#[cfg(not(feature = "llvm"))]
pub fn run(_args: TargetsArgs) -> Result<()> {
    anyhow::bail!("this kiln was built without the `llvm` feature: it runs artifacts but generates no code")
}
