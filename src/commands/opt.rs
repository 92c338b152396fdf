//! `kiln opt FILE.kir [--passes PIPELINE]`: parse, verify, optionally run a pass pipeline, and
//! print IR (text, Graphviz or JSON) — Kiln's `mlir-opt`. The pass flags ([`PassArgs`]) are shared
//! with `kiln dump-ir`.

use crate::io::{read_text, write_output};
use anyhow::{anyhow, Result};
use clap::{Args, ValueEnum};
use kiln_passes::{Instrumentation, ManagerError, PassManager, Pipeline, TimingFormat};
use std::io::Write;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum IrFormat {
    Text,
    Dot,
    Json,
}

#[derive(Args)]
pub struct OptArgs {
    /// IR file to read (`-` reads stdin), or a model (a Hugging Face folder or a .gguf file),
    /// whose whole decode-step graph is used.
    pub input: String,
    /// Write the result here instead of stdout.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: IrFormat,
    #[command(flatten)]
    pub passes: PassArgs,
}

/// Which passes to run and how to watch them (MLIR's and rustc's flags). Dumps and timing go to
/// stderr (or `--print-ir-dir`); the result goes where the command writes its IR.
#[derive(Args, Clone, Debug, Default)]
pub struct PassArgs {
    /// Pass pipeline to run: `canonicalize,cse,eqsat{rules=rope+layout},dce`, or a level
    /// (`-O0`, `-O1`, `-O2`).
    #[arg(long, value_name = "PIPELINE", allow_hyphen_values = true)]
    pub passes: Option<String>,
    /// Optimization level: `-O2` is `--passes -O2`.
    #[arg(short = 'O', value_name = "LEVEL", value_parser = ["0", "1", "2"], conflicts_with = "passes")]
    pub level: Option<String>,
    /// Print the IR before each run of this pass (repeatable, or comma-separated).
    #[arg(long, value_name = "PASS", value_delimiter = ',')]
    pub print_ir_before: Vec<String>,
    /// Print the IR after each run of this pass (repeatable, or comma-separated).
    #[arg(long, value_name = "PASS", value_delimiter = ',')]
    pub print_ir_after: Vec<String>,
    /// Print the IR after every pass.
    #[arg(long)]
    pub print_ir_after_all: bool,
    /// Print the IR after every pass that changed it.
    #[arg(long)]
    pub print_ir_after_change: bool,
    /// Write IR dumps as files into DIR (00-input.kir, 01-canonicalize.kir, ...); without a
    /// --print-ir-* flag, after every pass.
    #[arg(long, value_name = "DIR")]
    pub print_ir_dir: Option<PathBuf>,
    /// Verify the IR after every pass; a pass that breaks it is named, and a reproducer is written.
    #[arg(long)]
    pub verify_each: bool,
    /// Report each pass's time, whether it changed the graph, node counts and statistics (stderr).
    #[arg(long)]
    pub pass_timing: bool,
    /// Write reports as JSON: the --pass-timing report, and `kiln run`'s statistics.
    #[arg(long)]
    pub json: bool,
}

impl PassArgs {
    /// The pipeline text and the flag it came from, if passes were asked for.
    fn pipeline(&self) -> Option<(String, &'static str)> {
        match (&self.passes, &self.level) {
            (Some(p), _) => Some((p.clone(), "--passes")),
            (None, Some(l)) => Some((format!("-O{l}"), "-O")),
            (None, None) => None,
        }
    }

    /// The pipeline text asked for (`-O2` for a level), or empty.
    #[cfg_attr(not(feature = "llvm"), allow(dead_code))] // used by `kiln compile`
    pub fn pipeline_text(&self) -> String {
        self.pipeline().map(|(p, _)| p).unwrap_or_default()
    }

    fn instrumented(&self) -> bool {
        !self.print_ir_before.is_empty()
            || !self.print_ir_after.is_empty()
            || self.print_ir_after_all
            || self.print_ir_after_change
            || self.print_ir_dir.is_some()
            || self.verify_each
            || self.pass_timing
    }

    fn instrumentation(&self) -> Instrumentation {
        Instrumentation {
            print_ir_before: self.print_ir_before.clone(),
            print_ir_after: self.print_ir_after.clone(),
            print_ir_after_all: self.print_ir_after_all,
            print_ir_after_change: self.print_ir_after_change,
            print_ir_dir: self.print_ir_dir.clone(),
            verify_each: self.verify_each,
            pass_timing: self.pass_timing.then_some(if self.json { TimingFormat::Json } else { TimingFormat::Text }),
        }
    }

    /// Runs the pipeline (if any was asked for) on a verified graph, writing dumps and timing to
    /// stderr. Errors read `--passes:1:COL: ...` for a bad pipeline, and name the failing pass.
    /// Runs the pipeline asked for on `graph`; `weights` are the model's when the graph came from
    /// one. Returns the tensors passes derived (routers, neuron groupings), needed to run the graph.
    pub fn run(
        &self,
        graph: &mut kiln_ir::Graph,
        weights: Option<&dyn kiln_ir::interp::WeightSource>,
    ) -> Result<kiln_ir::interp::DerivedWeights> {
        let (text, origin) = match self.pipeline() {
            Some(p) => p,
            None if self.instrumented() => (String::new(), "--passes"),
            None => return Ok(Default::default()),
        };
        let located = |e: ManagerError| match e {
            ManagerError::Pipeline(p) => anyhow!("{}", p.render(origin)),
            e => anyhow!(e),
        };
        let pipeline = Pipeline::parse(&text).map_err(|e| anyhow!("{}", e.render(origin)))?;
        let pm = PassManager::from_pipeline(&pipeline, self.instrumentation()).map_err(located)?;
        let mut stderr = std::io::stderr().lock();
        let report = pm.run_with_weights(graph, weights, &mut stderr).map_err(located)?;
        let _ = stderr.flush();
        tracing::info!(pipeline = %pm.pipeline(), changed = report.changed(), nodes = graph.len(), "ran passes");
        Ok(report.derived)
    }
}

fn is_model(input: &str) -> bool {
    let p = std::path::Path::new(input);
    input != "-" && (p.is_dir() || crate::model_arg::is_gguf(p))
}

pub fn run(args: OptArgs) -> Result<()> {
    let (mut graph, ckpt) = if is_model(&args.input) {
        let dir = crate::model_arg::resolve(std::path::Path::new(&args.input))?;
        let ckpt = crate::model_arg::open(&dir)?;
        (ckpt.graph(&kiln_models::LowerOptions::default())?, Some(ckpt))
    } else {
        let (src, name) = read_text(&args.input)?;
        let g = kiln_ir::parse(&src).map_err(|e| anyhow!("{name}:{e}"))?;
        tracing::info!(nodes = g.len(), "parsed {name}");
        (g, None)
    };
    kiln_ir::verify(&graph).map_err(|e| anyhow!("{}: {e}", args.input))?;
    args.passes.run(&mut graph, ckpt.as_ref().map(|c| c as &dyn kiln_ir::interp::WeightSource))?;
    write_output(args.output.as_deref(), &format_graph(&graph, args.format)?)
}

pub fn format_graph(graph: &kiln_ir::Graph, format: IrFormat) -> Result<String> {
    Ok(match format {
        IrFormat::Text => kiln_ir::print(graph),
        IrFormat::Dot => kiln_ir::to_dot(graph),
        IrFormat::Json => serde_json::to_string_pretty(&kiln_ir::to_json(graph))? + "\n",
    })
}
