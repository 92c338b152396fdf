//! `kiln run MODEL --interp --prompt "..."`: generate text, streaming it to stdout; logs and
//! statistics go to stderr.

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_models::{InterpModel, LowerOptions};
use kiln_runtime::{generate, ChatMessage, DecodeModel, Sampler, SamplerConfig, TextTokenizer};
use std::io::Write;
use std::path::PathBuf;

#[derive(Args)]
pub struct RunArgs {
    /// A compiled artifact (`kiln compile`), or with --interp a Hugging Face model folder or .gguf file.
    pub model: PathBuf,
    /// Run a model folder through the reference interpreter (plain f32, slow, exact) instead of a
    /// compiled artifact.
    #[arg(long)]
    pub interp: bool,
    /// Threads for a compiled artifact (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Stop after this many generated tokens (or at an end-of-sequence token).
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample only among the K most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Nucleus sampling: only the most likely tokens whose probabilities add up to P.
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Seed of the sampler (runs with the same seed generate the same text).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Wrap the prompt in the model's chat template as a user message.
    #[arg(long)]
    pub chat: bool,
    /// A system message for --chat.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Optimize the model's graph with a pass pipeline first (the same flags as `kiln opt`).
    #[command(flatten)]
    pub passes: crate::commands::opt::PassArgs,
    /// Mixture-of-Experts offloading (compiled MoE artifacts).
    #[command(flatten)]
    pub offload: crate::offload_args::OffloadArgs,
    /// Loading: huge pages (CPU), the GPU and CUDA graphs (CUDA).
    #[command(flatten)]
    pub exec: crate::executor::ExecArgs,
}

struct Interp(InterpModel);

impl DecodeModel for Interp {
    fn forward(&mut self, tokens: &[u32]) -> std::result::Result<Vec<f32>, String> {
        self.0.forward(tokens).map_err(|e| e.to_string())
    }
}

pub fn run(args: RunArgs) -> Result<()> {
    let sampler_cfg =
        SamplerConfig { temperature: args.temperature, top_k: args.top_k, top_p: args.top_p, seed: args.seed };
    let mut sampler = Sampler::new(sampler_cfg)?;
    if kiln_runtime::artifact::is_artifact(&args.model) {
        if args.interp {
            bail!("{} is a compiled artifact; --interp runs model folders (drop --interp)", args.model.display());
        }
        if args.passes.passes.is_some() || args.passes.level.is_some() {
            bail!("{} is already compiled; passes are chosen at `kiln compile` time", args.model.display());
        }
        let t0 = std::time::Instant::now();
        let offload = args.offload.config()?;
        let threads = args.threads.unwrap_or_else(default_threads);
        let mut model = crate::executor::Executor::load(&args.model, threads, offload.as_ref(), &args.exec)?;
        tracing::info!(secs = t0.elapsed().as_secs_f64(), "artifact loaded");
        let eos = model.manifest().model.eos_token_ids.clone();
        let tok = TextTokenizer::from_dir(&args.model, &eos)?;
        let vocab = model.manifest().model.vocab_size;
        generate_text(&args, &mut model, &tok, vocab, &mut sampler)?;
        if let Some(trace) = model.offload_trace() {
            crate::commands::bench::report_trace(&trace, args.offload.trace.as_deref())?;
        }
        return Ok(());
    }
    if args.offload.config()?.is_some() {
        bail!("--expert-cache/--expert-budget offload a compiled artifact's experts; compile the model first (`kiln compile`)");
    }
    if !args.interp {
        bail!("{} is a model, not a compiled artifact: compile it with `kiln compile`, or pass --interp to run it through the reference interpreter", args.model.display());
    }
    let dir = crate::model_arg::resolve(&args.model)?;
    let ckpt = crate::model_arg::open(&dir)?;
    let tok = TextTokenizer::from_dir(&dir.path, &ckpt.spec.eos_token_ids)?;
    let t0 = std::time::Instant::now();
    let mut graph = ckpt.graph(&LowerOptions::default())?;
    let derived = args.passes.run(&mut graph, Some(&ckpt))?;
    let model = InterpModel::with_derived(&ckpt, &graph, &derived).context("loading the model")?;
    tracing::info!(secs = t0.elapsed().as_secs_f64(), "weights loaded");
    generate_text(&args, &mut Interp(model), &tok, ckpt.spec.vocab_size, &mut sampler)
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn generate_text(
    args: &RunArgs,
    model: &mut impl DecodeModel,
    tok: &TextTokenizer,
    vocab_size: usize,
    sampler: &mut Sampler,
) -> Result<()> {
    let (text, add_special) = if args.chat {
        let mut msgs = Vec::new();
        if let Some(sys) = &args.system {
            msgs.push(ChatMessage { role: "system".into(), content: sys.clone() });
        }
        msgs.push(ChatMessage { role: "user".into(), content: args.prompt.clone() });
        (tok.apply_chat_template(&msgs)?, false)
    } else {
        (args.prompt.clone(), true)
    };
    let prompt = tok.encode(&text, add_special)?;
    if prompt.is_empty() {
        bail!("--prompt encodes to no tokens");
    }
    if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab_size) {
        bail!("the tokenizer produced id {bad}, outside the model's vocab of {vocab_size}");
    }
    tracing::info!(tokens = prompt.len(), "prompt");
    let mut stream = tok.stream();
    let mut stdout = std::io::stdout().lock();
    let mut write = |piece: &str| -> Result<()> {
        match stdout.write_all(piece.as_bytes()).and_then(|_| stdout.flush()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            r => r.context("writing stdout"),
        }
    };
    let mut failure: Option<anyhow::Error> = None;
    let result = generate(model, &prompt, sampler, &tok.eos_ids, args.max_tokens, &mut |id| {
        let piece = stream.push(id)?;
        if let Err(e) = write(&piece) {
            failure = Some(e);
        }
        Ok(())
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let (_, stats) = result?;
    write(&stream.finish()?)?;
    write("\n")?;
    if args.passes.json {
        eprintln!("{}", serde_json::to_string(&stats)?);
    } else {
        eprintln!(
            "[kiln] prompt {} tokens in {:.2}s ({:.1} tok/s); generated {} tokens ({:.1} tok/s); stop: {}",
            stats.prompt_tokens,
            stats.prefill_secs,
            stats.prefill_tok_per_s(),
            stats.generated_tokens,
            stats.decode_tok_per_s(),
            stats.stop
        );
    }
    Ok(())
}
