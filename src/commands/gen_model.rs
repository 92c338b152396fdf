//! `kiln gen-model --arch A --seed S -o DIR`: a small deterministic random-weight Hugging Face folder
//! (config.json, model.safetensors, tokenizer.json, ...) for testing every architecture.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use kiln_models::synth::{write_synthetic_model, SynthDtype, SynthOptions};
use kiln_models::Arch;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ArchArg {
    Llama,
    Mistral,
    Qwen2,
    Mixtral,
    Gemma3,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum WeightDtype {
    F32,
    Bf16,
    F16,
}

#[derive(Args)]
pub struct GenModelArgs {
    #[arg(long, value_enum)]
    pub arch: ArchArg,
    #[arg(long)]
    pub layers: Option<usize>,
    #[arg(long)]
    pub hidden: Option<usize>,
    #[arg(long)]
    pub intermediate: Option<usize>,
    #[arg(long)]
    pub heads: Option<usize>,
    #[arg(long)]
    pub kv_heads: Option<usize>,
    #[arg(long)]
    pub head_dim: Option<usize>,
    #[arg(long)]
    pub vocab: Option<usize>,
    /// Experts per MoE layer (mixtral).
    #[arg(long)]
    pub experts: Option<usize>,
    /// Experts chosen per token (mixtral).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sliding window (0 = none).
    #[arg(long)]
    pub window: Option<usize>,
    #[arg(long, value_enum)]
    pub dtype: Option<WeightDtype>,
    /// Tie the LM head to the embedding table.
    #[arg(long)]
    pub tie: Option<bool>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(short, long)]
    pub output: PathBuf,
    /// Replace the output folder if it exists.
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: GenModelArgs) -> Result<()> {
    let arch = match a.arch {
        ArchArg::Llama => Arch::Llama,
        ArchArg::Mistral => Arch::Mistral,
        ArchArg::Qwen2 => Arch::Qwen2,
        ArchArg::Mixtral => Arch::Mixtral,
        ArchArg::Gemma3 => Arch::Gemma3,
    };
    let opts = SynthOptions {
        arch,
        layers: a.layers,
        hidden: a.hidden,
        intermediate: a.intermediate,
        heads: a.heads,
        kv_heads: a.kv_heads,
        head_dim: a.head_dim,
        vocab: a.vocab,
        experts: a.experts,
        top_k: a.top_k,
        window: a.window,
        dtype: a.dtype.map(|d| match d {
            WeightDtype::F32 => SynthDtype::F32,
            WeightDtype::Bf16 => SynthDtype::BF16,
            WeightDtype::F16 => SynthDtype::F16,
        }),
        tie: a.tie,
        seed: a.seed,
        force: a.force,
    };
    let r = write_synthetic_model(&opts, &a.output).with_context(|| format!("generating {}", a.output.display()))?;
    eprintln!(
        "wrote {} ({}, {} layers, {:.2}M params, seed {}) to {}",
        arch.name(),
        r.dtype.name(),
        r.spec.num_layers(),
        r.params as f64 / 1e6,
        r.seed,
        a.output.display()
    );
    Ok(())
}
