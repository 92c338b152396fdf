//! PLACEHOLDER — being written: `kiln calibrate`.
use clap::Args;
#[derive(Args)]
pub struct CalibrateArgs {}
pub fn run(_args: CalibrateArgs) -> anyhow::Result<()> {
    anyhow::bail!("kiln calibrate: in progress")
}
