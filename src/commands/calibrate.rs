//! `kiln calibrate MODEL --text FILE -o ROUTERS`: fit Mixture-of-Depths routers for the `mod` pass.
//!
//! The text is tokenized and its first `--tokens` tokens are run through the reference interpreter
//! in chunks of `--chunk` (positions restart at 0 and the KV cache is cleared for every chunk, so
//! each chunk is a sequence of its own). The residual stream entering and leaving every decoder
//! block is recorded, and per layer a ridge probe is fitted that predicts from the direction of the
//! stream how much the block changes it (`kiln_passes::mod_calibration` has the math). With
//! `--random` the routers are seeded Gaussian vectors instead: the baseline a probe must beat. The
//! routers file is written atomically; a per-layer table of held-out quality goes to stdout.

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_models::{InterpModel, Logits, LowerOptions};
use kiln_passes::mod_calibration::{
    add_residual_outputs, fit_routers, held_out_tokens, push_run, LayerSamples, MIN_TOKENS,
};
use kiln_passes::routers::{Method, Routers};
use kiln_runtime::TextTokenizer;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct CalibrateArgs {
    /// A Hugging Face model folder or a .gguf file.
    pub model: PathBuf,
    /// Calibration text: a plain text file, or - for stdin.
    #[arg(long)]
    pub text: String,
    /// The routers file to write (safetensors), for `--passes 'mod{routers=FILE}'`.
    #[arg(short, long)]
    pub output: PathBuf,
    /// How many tokens of the text to calibrate on (from its start).
    #[arg(long, default_value_t = 2048)]
    pub tokens: usize,
    /// Tokens per forward run; each chunk starts at position 0 with an empty KV cache.
    #[arg(long, default_value_t = 256)]
    pub chunk: usize,
    /// Draw random Gaussian routers instead of fitting probes (the baseline to compare against).
    #[arg(long)]
    pub random: bool,
    /// Seed of the random routers.
    #[arg(long, requires = "random")]
    pub seed: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn check_sizes(args: &CalibrateArgs) -> Result<()> {
    if args.chunk == 0 {
        bail!("--chunk must be at least 1");
    }
    if args.tokens < args.chunk {
        bail!("--tokens {} is less than --chunk {}: calibrate on at least one whole chunk", args.tokens, args.chunk);
    }
    if args.tokens < MIN_TOKENS {
        bail!("--tokens {} is too few to fit and evaluate routers (at least {MIN_TOKENS})", args.tokens);
    }
    Ok(())
}

/// The first `n` tokens of the calibration text.
fn calibration_tokens(tok: &TextTokenizer, args: &CalibrateArgs, vocab: usize) -> Result<Vec<u32>> {
    let (text, name) = crate::io::read_text(&args.text)?;
    if text.trim().is_empty() {
        bail!("{name}: the calibration text is empty");
    }
    let mut ids = tok.encode(&text, true).with_context(|| format!("{name}: tokenizing"))?;
    if ids.len() < args.tokens {
        bail!(
            "{name}: the text has {} tokens, fewer than --tokens {}: give more text or lower --tokens",
            ids.len(),
            args.tokens
        );
    }
    ids.truncate(args.tokens);
    if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
        bail!("the tokenizer produced id {bad}, outside the model's vocab of {vocab}");
    }
    Ok(ids)
}

/// Runs the chunks and records every block's input and output rows.
fn collect(model: &mut InterpModel, tokens: &[u32], chunk: usize, samples: &mut [LayerSamples]) -> Result<()> {
    let bar = ProgressBar::new(tokens.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} calibrating [{bar:40}] {pos}/{len} tokens ({elapsed}, eta {eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    for part in tokens.chunks(chunk) {
        model.reset();
        let positions: Vec<usize> = (0..part.len()).collect();
        let out = model.run_raw(part, &positions).context("running the calibration text")?;
        push_run(samples, &out).map_err(|e| anyhow!(e))?;
        bar.inc(part.len() as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

fn report_json(r: &Routers, output: &Path) -> serde_json::Value {
    let layers: Vec<_> = r
        .layers
        .iter()
        .map(|(l, lr)| {
            let q = lr.quality;
            serde_json::json!({
                "layer": l,
                "r2": q.and_then(|q| q.r2),
                "spearman": q.map(|q| q.spearman),
                "top_half_overlap": q.map(|q| q.top_half_overlap),
                "threshold_at_half": lr.threshold(0.5),
            })
        })
        .collect();
    serde_json::json!({
        "output": output.display().to_string(),
        "method": r.method.as_str(),
        "hidden_size": r.hidden_size,
        "tokens": r.calibration_tokens,
        "held_out_tokens": held_out_tokens(r.calibration_tokens),
        "target": r.target,
        "layers": layers,
    })
}

fn report_table(r: &Routers, output: &Path) -> String {
    let held = held_out_tokens(r.calibration_tokens);
    let mut s = format!(
        "wrote {} {} routers to {} ({} tokens, the last {held} held out)\n",
        r.layers.len(),
        r.method.as_str(),
        output.display(),
        r.calibration_tokens
    );
    s.push_str("layer  held-out R²  Spearman  top-half overlap  θ(0.5)\n");
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    for (l, lr) in &r.layers {
        let q = lr.quality;
        s.push_str(&format!(
            "{l:>5}  {:>11}  {:>8}  {:>16}  {:>6}\n",
            opt(q.and_then(|q| q.r2)),
            opt(q.map(|q| q.spearman)),
            opt(q.map(|q| q.top_half_overlap)),
            opt(lr.threshold(0.5)),
        ));
    }
    s
}

pub fn run(args: CalibrateArgs) -> Result<()> {
    check_sizes(&args)?;
    let dir = crate::model_arg::resolve(&args.model)?;
    let ckpt = crate::model_arg::open(&dir)?;
    let tok = TextTokenizer::from_dir(&dir.path, &ckpt.spec.eos_token_ids)?;
    let tokens = calibration_tokens(&tok, &args, ckpt.spec.vocab_size)?;

    // The logits are not needed, only the residual streams: the last position's are the cheapest.
    let mut graph = ckpt.graph(&LowerOptions { logits: Logits::Last, layers: None })?;
    let streams = add_residual_outputs(&mut graph).map_err(|e| anyhow!("{}: {e}", dir.path.display()))?;
    let mut model = InterpModel::with_graph(&ckpt, &graph).context("loading the model")?;
    let mut samples = vec![LayerSamples::new(streams.hidden); streams.layers];
    tracing::info!(tokens = tokens.len(), chunk = args.chunk, layers = streams.layers, "calibrating");
    collect(&mut model, &tokens, args.chunk, &mut samples)?;

    let method = if args.random { Method::Random } else { Method::Probe };
    let routers = fit_routers(&samples, method, args.seed.unwrap_or(0)).map_err(|e| anyhow!("fitting routers: {e}"))?;
    let bytes = routers.to_bytes().map_err(|e| anyhow!("{}: {e}", args.output.display()))?;
    crate::io::write_atomic(&args.output, &bytes)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report_json(&routers, &args.output))?);
    } else {
        print!("{}", report_table(&routers, &args.output));
    }
    Ok(())
}
