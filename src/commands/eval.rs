//! `kiln eval MODEL --text FILE [--passes P]...`: how much each pass pipeline changes the model.
//!
//! The reference is the unmodified model. Every configuration is loaded at once and fed the same
//! chunks of text in lockstep, so each position's reference distribution is compared the moment it
//! is computed (storing [tokens × vocab] distributions would take gigabytes). Per configuration it
//! reports perplexity, top-1 agreement and KL(P_ref ‖ P) over the scored positions, FLOPs per
//! token over the evaluation (prefill), and FLOPs and weight bytes read per token while decoding
//! one token at a time (where Mixture-of-Depths uses its causal threshold and an MoE reads only
//! the experts it picked).

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_models::eval::{log_softmax, Quality, Tally};
use kiln_models::{Checkpoint, InterpModel, Logits, LowerOptions};
use kiln_passes::{Instrumentation, PassManager, Pipeline};
use kiln_runtime::TextTokenizer;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Args)]
pub struct EvalArgs {
    /// A Hugging Face model folder or a .gguf file.
    pub model: PathBuf,
    /// Evaluation text (e.g. /usr/share/common-licenses/GPL-3).
    #[arg(long)]
    pub text: PathBuf,
    /// A pass pipeline to evaluate against the unmodified model (repeatable; `-O2` works too).
    #[arg(long = "passes", value_name = "PIPELINE", allow_hyphen_values = true)]
    pub configs: Vec<String>,
    /// Score the first N tokens of the text.
    #[arg(long, default_value_t = 1024)]
    pub tokens: usize,
    /// Context length: the text is cut into chunks of this many tokens, each run from an empty
    /// KV cache.
    #[arg(long, default_value_t = 256)]
    pub chunk: usize,
    /// Tokens decoded one at a time (after a 16-token prefill) to measure decode FLOPs and weight
    /// bytes per token; 0 skips it.
    #[arg(long, default_value_t = 8)]
    pub decode_tokens: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct ConfigReport {
    pipeline: String,
    #[serde(flatten)]
    quality: Quality,
    /// FLOPs per token over the evaluation chunks.
    flops_per_token: f64,
    /// Per decoded token (see --decode-tokens).
    decode_flops_per_token: f64,
    decode_weight_bytes_per_token: f64,
}

#[derive(Serialize)]
struct Report {
    model: String,
    text: String,
    tokens: usize,
    chunk: usize,
    configs: Vec<ConfigReport>,
}

struct Config {
    pipeline: String,
    model: InterpModel,
    tally: Tally,
}

fn load(ckpt: &Checkpoint, pipeline: Option<&str>) -> Result<InterpModel> {
    let mut graph = ckpt.graph(&LowerOptions { logits: Logits::All, layers: None })?;
    let Some(text) = pipeline else { return Ok(InterpModel::with_graph(ckpt, &graph)?) };
    let parsed = Pipeline::parse(text).map_err(|e| anyhow::anyhow!("{}", e.render("--passes")))?;
    let pm = PassManager::from_pipeline(&parsed, Instrumentation::default())?;
    let report = pm.run_with_weights(&mut graph, Some(ckpt), &mut std::io::stderr())?;
    Ok(InterpModel::with_derived(ckpt, &graph, &report.derived)?)
}

pub fn run(args: EvalArgs) -> Result<()> {
    if args.chunk < 2 {
        bail!("--chunk must be at least 2 (a chunk scores its tokens after the first)");
    }
    if args.tokens < args.chunk {
        bail!("--tokens ({}) must be at least --chunk ({})", args.tokens, args.chunk);
    }
    let text = std::fs::read_to_string(&args.text).with_context(|| format!("reading {}", args.text.display()))?;
    let dir = crate::model_arg::resolve(&args.model)?;
    let ckpt = crate::model_arg::open(&dir)?;
    let tok = TextTokenizer::from_dir(&dir.path, &ckpt.spec.eos_token_ids)?;
    let ids = tok.encode(&text, false)?;
    if ids.len() < args.chunk {
        bail!("{}: only {} tokens, fewer than one --chunk of {}", args.text.display(), ids.len(), args.chunk);
    }
    let n = args.tokens.min(ids.len()) / args.chunk * args.chunk;
    let ids = &ids[..n];

    // Validate and build every configuration before the long part.
    let mut configs = Vec::new();
    let reference = load(&ckpt, None).context("loading the unmodified model")?;
    configs.push(Config { pipeline: "(none)".into(), model: reference, tally: Tally::default() });
    for p in &args.configs {
        let model = load(&ckpt, Some(p)).with_context(|| format!("--passes '{p}'"))?;
        configs.push(Config { pipeline: p.clone(), model, tally: Tally::default() });
    }

    let chunks = n / args.chunk;
    let bar = indicatif::ProgressBar::new((chunks * configs.len()) as u64).with_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} chunk runs, {elapsed} (eta {eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message("eval");
    if args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let vocab = ckpt.spec.vocab_size;
    let mut flops = vec![0u64; configs.len()];
    for chunk in ids.chunks_exact(args.chunk) {
        let mut logps: Vec<Vec<f32>> = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter_mut().enumerate() {
            c.model.reset();
            c.model.reset_work();
            logps.push(c.model.forward(chunk)?);
            flops[i] += c.model.work().flops;
            bar.inc(1);
        }
        for pos in 0..chunk.len() - 1 {
            let next = chunk[pos + 1] as usize;
            let row = |l: &Vec<f32>| log_softmax(&l[pos * vocab..(pos + 1) * vocab]);
            let r = row(&logps[0]);
            for (c, l) in configs.iter_mut().zip(&logps) {
                let m = row(l);
                c.tally.add(&m, &r, next);
            }
        }
    }
    bar.finish_and_clear();

    let mut reports = Vec::new();
    for (i, c) in configs.iter_mut().enumerate() {
        let (dflops, dbytes) = decode_work(&mut c.model, ids, args.decode_tokens)?;
        reports.push(ConfigReport {
            pipeline: c.pipeline.clone(),
            quality: c.tally.summary(),
            flops_per_token: flops[i] as f64 / n as f64,
            decode_flops_per_token: dflops,
            decode_weight_bytes_per_token: dbytes,
        });
    }
    let report = Report {
        model: args.model.display().to_string(),
        text: args.text.display().to_string(),
        tokens: n,
        chunk: args.chunk,
        configs: reports,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// Mean FLOPs and weight bytes per token over `count` single-token steps after a 16-token prefill.
fn decode_work(model: &mut InterpModel, ids: &[u32], count: usize) -> Result<(f64, f64)> {
    if count == 0 {
        return Ok((0.0, 0.0));
    }
    let prefill = 16.min(ids.len().saturating_sub(count)).max(1);
    model.reset();
    model.forward(&ids[..prefill])?;
    model.reset_work();
    let steps = count.min(ids.len() - prefill);
    for &t in &ids[prefill..prefill + steps] {
        model.forward(&[t])?;
    }
    let w = model.work();
    Ok((w.flops as f64 / steps as f64, w.weight_bytes as f64 / steps as f64))
}

fn print_table(r: &Report) {
    println!("{} on {} ({} tokens in chunks of {})", r.model, r.text, r.tokens, r.chunk);
    println!(
        "{:<44} {:>9} {:>7} {:>8} {:>11} {:>11} {:>12}",
        "pipeline", "ppl", "top-1", "KL", "GFLOP/tok", "dec GFLOP", "dec MB/tok"
    );
    let base = &r.configs[0];
    for c in &r.configs {
        let saved = if c.flops_per_token < base.flops_per_token {
            format!(" (-{:.0}%)", 100.0 * (1.0 - c.flops_per_token / base.flops_per_token))
        } else {
            String::new()
        };
        println!(
            "{:<44} {:>9.3} {:>6.1}% {:>8.4} {:>11.4} {:>11.4} {:>12.1}{saved}",
            c.pipeline,
            c.quality.perplexity,
            100.0 * c.quality.top1_agreement,
            c.quality.kl,
            c.flops_per_token / 1e9,
            c.decode_flops_per_token / 1e9,
            c.decode_weight_bytes_per_token / 1e6,
        );
    }
}
