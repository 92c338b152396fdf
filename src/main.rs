//! `kiln`: the command-line driver. Library crates return typed errors; this binary reports them as
//! one line (`error: file:line:col: message`) with exit code 1.

mod commands;
mod executor;
mod io;
mod model_arg;
mod offload_args;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "kiln", version, about = "Kiln: an optimizing compiler for LLM inference")]
struct Cli {
    /// More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse, verify and print Kiln IR (like mlir-opt).
    Opt(commands::opt::OptArgs),
    /// List the IR's ops with their operands and attributes.
    Ops(commands::ops::OpsArgs),
    /// Show the code-generation targets this build supports.
    Targets(commands::targets::TargetsArgs),
    /// Convert a GGUF file into a Hugging Face model folder.
    Import(commands::import::ImportArgs),
    /// Write a small random-weight model folder of any supported architecture.
    GenModel(commands::gen_model::GenModelArgs),
    /// Print the IR Kiln builds for a model.
    DumpIr(commands::dump_ir::DumpIrArgs),
    /// Generate text with a model.
    Run(commands::run::RunArgs),
    /// Compile a model to an artifact for this CPU (kernels.so) or an NVIDIA GPU (PTX).
    #[cfg(feature = "llvm")]
    Compile(commands::compile::CompileArgs),
    /// Measure a compiled artifact's prefill and decode speed against the memory roofline.
    Bench(commands::bench::BenchArgs),
    /// Fit Mixture-of-Depths routers for a model on calibration text (for the `mod` pass).
    Calibrate(commands::calibrate::CalibrateArgs),
    /// Perplexity, and agreement and KL divergence against the unmodified model, per pass pipeline.
    Eval(commands::eval::EvalArgs),
    /// Summarize, plot and replay MoE expert-offloading traces (`--trace` of run/bench).
    OffloadReport(commands::offload_report::OffloadReportArgs),
    /// Print the logits a compiled artifact (CPU or GPU) or the interpreter gives for token ids,
    /// and for greedy decode steps after them (to compare executors and implementations).
    Logits(commands::logits::LogitsArgs),
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).without_time().try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Opt(args) => commands::opt::run(args),
        Command::Targets(args) => commands::targets::run(args),
        Command::Ops(args) => commands::ops::run(args),
        Command::Import(args) => commands::import::run(args),
        Command::GenModel(args) => commands::gen_model::run(args),
        Command::DumpIr(args) => commands::dump_ir::run(args),
        Command::Run(args) => commands::run::run(args),
        Command::Calibrate(args) => commands::calibrate::run(args),
        #[cfg(feature = "llvm")]
        Command::Compile(args) => commands::compile::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::OffloadReport(args) => commands::offload_report::run(args),
        Command::Logits(args) => commands::logits::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
