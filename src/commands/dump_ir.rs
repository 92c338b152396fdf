//! `kiln dump-ir MODEL [--passes PIPELINE]`: the IR Kiln builds for a model, optionally after a pass
//! pipeline (with `kiln opt`'s pass flags), as text, Graphviz or JSON.

use crate::commands::opt::{format_graph, IrFormat, PassArgs};
use crate::io::write_output;
use anyhow::Result;
use clap::{Args, ValueEnum};
use kiln_models::{Logits, LowerOptions};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogitsArg {
    Last,
    All,
}

#[derive(Args)]
pub struct DumpIrArgs {
    /// A Hugging Face model folder or a .gguf file.
    pub model: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    pub format: IrFormat,
    /// Lower only the first N decoder layers.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Which positions get logits.
    #[arg(long, value_enum, default_value = "last")]
    pub logits: LogitsArg,
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub passes: PassArgs,
}

pub fn run(args: DumpIrArgs) -> Result<()> {
    let dir = crate::model_arg::resolve(&args.model)?;
    let ckpt = crate::model_arg::open(&dir)?;
    let logits = match args.logits {
        LogitsArg::Last => Logits::Last,
        LogitsArg::All => Logits::All,
    };
    let mut graph = ckpt.graph(&LowerOptions { logits, layers: args.layers })?;
    kiln_ir::verify(&graph)?;
    args.passes.run(&mut graph, Some(&ckpt))?;
    write_output(args.output.as_deref(), &format_graph(&graph, args.format)?)
}
