//! `kiln opt FILE.kir`: parse, verify and print IR (text, Graphviz or JSON).

use crate::io::{read_text, write_output};
use anyhow::{anyhow, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum IrFormat {
    Text,
    Dot,
    Json,
}

#[derive(Args)]
pub struct OptArgs {
    /// IR file to read; `-` reads stdin.
    pub input: String,
    /// Write the result here instead of stdout.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: IrFormat,
}

pub fn run(args: OptArgs) -> Result<()> {
    let (src, name) = read_text(&args.input)?;
    let graph = kiln_ir::parse(&src).map_err(|e| anyhow!("{name}:{e}"))?;
    kiln_ir::verify(&graph).map_err(|e| anyhow!("{name}: {e}"))?;
    tracing::info!(nodes = graph.len(), "parsed and verified {name}");
    write_output(args.output.as_deref(), &format_graph(&graph, args.format)?)
}

pub fn format_graph(graph: &kiln_ir::Graph, format: IrFormat) -> Result<String> {
    Ok(match format {
        IrFormat::Text => kiln_ir::print(graph),
        IrFormat::Dot => kiln_ir::to_dot(graph),
        IrFormat::Json => serde_json::to_string_pretty(&kiln_ir::to_json(graph))? + "\n",
    })
}
