//! `kiln logits MODEL --ids 1,2,3 [--decode N] [--out FILE.json]`: the logits of the last id after
//! feeding `--ids`, then of N greedy decode steps, as JSON. MODEL is a compiled artifact (CPU or
//! CUDA) or, with `--interp`, a model folder run through the reference interpreter. Comparing the
//! outputs of two executors — or of Kiln and another implementation fed the same `tokens` — checks
//! them against each other (`bench/gpu/compare_logits.py` does this on a GPU machine).

use crate::executor::{ExecArgs, Executor};
use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_models::{InterpModel, LowerOptions};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Args)]
pub struct LogitsArgs {
    /// A compiled artifact, or with --interp a model folder or .gguf file.
    pub model: PathBuf,
    /// Token ids to feed first, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub ids: Vec<u32>,
    /// Greedy decode steps after the ids (each adds a row).
    #[arg(long, default_value_t = 0)]
    pub decode: usize,
    /// Run a model folder through the reference interpreter instead.
    #[arg(long)]
    pub interp: bool,
    /// Threads for a CPU artifact (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write the JSON here instead of stdout.
    #[arg(long, value_name = "FILE.json")]
    pub out: Option<PathBuf>,
    /// Loading: huge pages (CPU), the GPU and CUDA graphs (CUDA).
    #[command(flatten)]
    pub exec: ExecArgs,
}

#[derive(Serialize)]
struct Row {
    /// The position of the token whose logits these are.
    position: usize,
    logits: Vec<f32>,
}

#[derive(Serialize)]
struct Report {
    model: String,
    /// `interp`, `cpu` or the GPU's name.
    device: String,
    /// Every token fed, in order: the ids, then each greedy choice but the last.
    tokens: Vec<u32>,
    rows: Vec<Row>,
}

pub fn run(args: LogitsArgs) -> Result<()> {
    if args.ids.is_empty() {
        bail!("--ids needs at least one token id");
    }
    let (mut model, device): (Box<dyn kiln_runtime::DecodeModel>, String) = if args.interp {
        let dir = crate::model_arg::resolve(&args.model)?;
        let ckpt = crate::model_arg::open(&dir)?;
        let graph = ckpt.graph(&LowerOptions::default())?;
        let m = InterpModel::with_graph(&ckpt, &graph).context("loading the model")?;
        (Box::new(Interp(m)), "interp".into())
    } else {
        if !kiln_runtime::artifact::is_artifact(&args.model) {
            bail!("{} is not a compiled artifact (pass --interp to run a model folder)", args.model.display());
        }
        let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let m = Executor::load(&args.model, threads, None, &args.exec)?;
        let device = m.device();
        (Box::new(m), device)
    };
    let mut tokens = args.ids.clone();
    let mut rows = Vec::with_capacity(args.decode + 1);
    let mut logits = model.forward(&args.ids).map_err(anyhow::Error::msg)?;
    rows.push(Row { position: args.ids.len() - 1, logits: logits.clone() });
    for _ in 0..args.decode {
        let next = kiln_runtime::sampler::argmax(&logits) as u32;
        tokens.push(next);
        logits = model.forward(&[next]).map_err(anyhow::Error::msg)?;
        rows.push(Row { position: tokens.len() - 1, logits: logits.clone() });
    }
    let report = Report { model: args.model.display().to_string(), device, tokens, rows };
    let text = serde_json::to_string(&report)?;
    match &args.out {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => println!("{text}"),
    }
    Ok(())
}

struct Interp(InterpModel);

impl kiln_runtime::DecodeModel for Interp {
    fn forward(&mut self, tokens: &[u32]) -> std::result::Result<Vec<f32>, String> {
        self.0.forward(tokens).map_err(|e| e.to_string())
    }
}
