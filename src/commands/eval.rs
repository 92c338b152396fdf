//! PLACEHOLDER — being written: `kiln eval`.
use clap::Args;
#[derive(Args)]
pub struct EvalArgs {}
pub fn run(_args: EvalArgs) -> anyhow::Result<()> {
    anyhow::bail!("kiln eval: in progress")
}
