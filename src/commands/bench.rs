//! `kiln bench OUT.kiln`: prefill and decode speed of a compiled artifact on this machine, with the
//! memory-bandwidth roofline of decoding (bytes of weights and KV cache read per token ÷ the
//! measured read bandwidth).

use crate::executor::{ExecArgs, Executor};
use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_runtime::artifact::manifest::{BufArg, Storage};
use kiln_runtime::artifact::Manifest;
use kiln_runtime::measure::peak_rss;
use kiln_runtime::offload::Trace;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
pub struct BenchArgs {
    /// A compiled artifact (`kiln compile`).
    pub artifact: PathBuf,
    /// Prompt tokens for the prefill measurement (pp).
    #[arg(long, default_value_t = 128)]
    pub prompt_len: usize,
    /// Tokens generated one at a time for the decode measurement (tg), from an empty context.
    #[arg(long, default_value_t = 64)]
    pub gen: usize,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Measure each phase this many times and keep the best.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Also report time per kernel family.
    #[arg(long)]
    pub profile: bool,
    #[arg(long)]
    pub json: bool,
    /// Decode over the tokens of this text file (teacher-forced, one token per step; each repeat
    /// takes the next --gen tokens) instead of greedy generation: realistic routing for MoE
    /// offloading.
    #[arg(long, value_name = "FILE")]
    pub text: Option<PathBuf>,
    /// Mixture-of-Experts offloading (compiled MoE artifacts).
    #[command(flatten)]
    pub offload: crate::offload_args::OffloadArgs,
    /// Loading: huge pages (CPU), the GPU and CUDA graphs (CUDA).
    #[command(flatten)]
    pub exec: ExecArgs,
}

/// Offloading results in the bench report.
#[derive(Serialize)]
struct OffloadSummary {
    policy: String,
    cache_experts: usize,
    prefetch: usize,
    budget_bytes: u64,
    peak_fast_bytes: u64,
    io: String,
    decode_hit_rate: f64,
    prefetch_precision: f64,
    prefetch_recall: f64,
    decode_bytes_loaded_per_token: f64,
    decode_stall_secs_per_token: f64,
}

fn summarize(trace: &Trace, decode_tokens: u64) -> OffloadSummary {
    let t = trace.decode_total();
    let per = decode_tokens.max(1) as f64;
    OffloadSummary {
        policy: trace.policy.clone(),
        cache_experts: trace.cache_experts,
        prefetch: trace.prefetch,
        budget_bytes: trace.budget_bytes,
        peak_fast_bytes: trace.peak_fast_bytes,
        io: trace.io.clone(),
        decode_hit_rate: t.hit_rate(),
        prefetch_precision: t.prefetch_precision(),
        prefetch_recall: t.prefetch_recall(),
        decode_bytes_loaded_per_token: t.bytes_loaded as f64 / per,
        decode_stall_secs_per_token: t.stall_secs / per,
    }
}

/// Writes an offloaded run's trace (`--trace`) and prints its summary line on stderr.
pub fn report_trace(trace: &Trace, path: Option<&Path>) -> Result<()> {
    if let Some(p) = path {
        let text = serde_json::to_string(trace)?;
        std::fs::write(p, text).with_context(|| format!("writing the trace {}", p.display()))?;
    }
    let t = trace.decode_total();
    let tokens = trace.decode_calls.max(1);
    eprintln!(
        "[kiln] experts: policy {}, {}/{} per layer, prefetch {}; decode hit rate {:.1}%, prefetch recall {:.1}%, {:.1} MB loaded/token, {} reads",
        trace.policy,
        trace.cache_experts,
        trace.experts,
        trace.prefetch,
        100.0 * t.hit_rate(),
        100.0 * t.prefetch_recall(),
        t.bytes_loaded as f64 / 1e6 / tokens as f64,
        trace.io
    );
    Ok(())
}

#[derive(Serialize)]
struct Report {
    artifact: String,
    weights: String,
    /// `cpu`, or the GPU's name.
    device: String,
    threads: usize,
    prompt_len: usize,
    gen: usize,
    prefill_tok_per_s: f64,
    decode_tok_per_s: f64,
    peak_rss_bytes: Option<u64>,
    read_bandwidth_gb_s: f64,
    decode_bytes_per_token: f64,
    roofline_tok_per_s: f64,
    roofline_fraction: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<Vec<kiln_runtime::cpu::KernelProfile>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offload: Option<OffloadSummary>,
}

/// Weight and KV-cache bytes one decode step at context `len` reads. An MoE expert's weights
/// count with the chance a token picks it (top-k / experts): its steps are skipped otherwise.
fn decode_bytes(m: &Manifest, len: usize) -> f64 {
    let expert_share: std::collections::HashMap<usize, f64> = m
        .moe_layers
        .iter()
        .flat_map(|l| {
            let share = l.top_k as f64 / l.experts.len().max(1) as f64;
            l.experts.iter().flat_map(move |e| e.weights.iter().map(move |&b| (b, share)))
        })
        .collect();
    let mut bytes = 0.0;
    for s in &m.steps {
        let kind = &m.kernels[s.kernel].kind;
        for a in &s.bufs {
            if let BufArg::Buffer { id } = a {
                let b = &m.buffers[*id];
                if let Storage::Weight { .. } = b.storage {
                    let size = (b.elems.eval(&[]) as usize * b.elem.size()) as f64;
                    bytes += if kind == "embedding" {
                        let vocab = m.model.vocab_size as f64;
                        size / vocab
                    } else {
                        size * expert_share.get(id).copied().unwrap_or(1.0)
                    };
                }
            }
        }
    }
    for s in &m.kv_slots {
        if !s.scratch {
            bytes += (2 * len * s.kv_heads * s.head_dim * 4) as f64;
        }
    }
    bytes
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.prompt_len == 0 || args.gen == 0 {
        bail!("--prompt-len and --gen must be at least 1");
    }
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let offload = args.offload.config()?;
    let mut model = Executor::load(&args.artifact, threads, offload.as_ref(), &args.exec)?;
    let threads = model.threads();
    let m = model.manifest().clone();
    if args.prompt_len + args.gen > m.max_context {
        bail!(
            "--prompt-len + --gen = {} exceeds the artifact's --max-context {}",
            args.prompt_len + args.gen,
            m.max_context
        );
    }
    // Deterministic pseudo-random prompt (as llama-bench uses random tokens).
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let prompt: Vec<u32> = (0..args.prompt_len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % m.model.vocab_size as u64) as u32
        })
        .collect();
    // Teacher-forced decode tokens: the text's, or none (greedy generation).
    let forced: Option<Vec<u32>> = match &args.text {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading --text {}", path.display()))?;
            let tok = kiln_runtime::TextTokenizer::from_dir(&args.artifact, &m.model.eos_token_ids)?;
            let ids = tok.encode(&text, false)?;
            // Each repeat decodes the next `gen` tokens, so no routing is seen twice.
            let need = args.gen * args.repeat.max(1) + 1;
            if ids.len() < need {
                bail!(
                    "--text {} has {} tokens; --gen {} × --repeat {} needs at least {need}",
                    path.display(),
                    ids.len(),
                    args.gen,
                    args.repeat.max(1)
                );
            }
            Some(ids)
        }
        None => None,
    };
    model.forward(&prompt[..prompt.len().min(8)])?;
    model.reset();
    model.reset_offload_stats();
    if args.profile {
        model.enable_profile();
    }
    let mut prefill = f64::MAX;
    for _ in 0..args.repeat.max(1) {
        model.reset();
        let t = Instant::now();
        model.forward(&prompt)?;
        prefill = prefill.min(t.elapsed().as_secs_f64());
    }
    let mut decode = f64::MAX;
    for r in 0..args.repeat.max(1) {
        model.reset();
        let at = r * args.gen;
        let mut tok = forced.as_ref().map_or(prompt[0], |f| f[at]);
        let t = Instant::now();
        for i in 0..args.gen {
            let logits = model.forward(&[tok])?;
            tok = match &forced {
                Some(f) => f[at + i + 1],
                None => kiln_runtime::sampler::argmax(&logits) as u32,
            };
        }
        decode = decode.min(t.elapsed().as_secs_f64());
    }
    // Before the bandwidth measurement allocates its 1 GiB buffer.
    let rss = peak_rss();
    let bw = model.bandwidth()?;
    let bytes = decode_bytes(&m, args.gen / 2);
    let decode_tps = args.gen as f64 / decode;
    let roofline = bw / bytes;
    let prefill_tps = args.prompt_len as f64 / prefill;
    let trace = model.offload_trace().map(|mut t| {
        t.decode_tok_s = Some(decode_tps);
        t.prefill_tok_s = Some(prefill_tps);
        t
    });
    if let Some(t) = &trace {
        report_trace(t, args.offload.trace.as_deref())?;
    }
    let report = Report {
        artifact: args.artifact.display().to_string(),
        weights: m.weights_dtype.clone(),
        device: model.device(),
        threads,
        prompt_len: args.prompt_len,
        gen: args.gen,
        prefill_tok_per_s: prefill_tps,
        decode_tok_per_s: decode_tps,
        peak_rss_bytes: rss,
        read_bandwidth_gb_s: bw / 1e9,
        decode_bytes_per_token: bytes,
        roofline_tok_per_s: roofline,
        roofline_fraction: decode_tps / roofline,
        profile: model.profile(),
        offload: trace.as_ref().map(|t| summarize(t, t.decode_calls)),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if report.device == "cpu" {
        println!("{} ({} weights, {} threads)", report.artifact, report.weights, threads);
    } else {
        println!("{} ({} weights, {})", report.artifact, report.weights, report.device);
    }
    println!("  prefill pp{}: {:.1} tok/s", args.prompt_len, report.prefill_tok_per_s);
    println!("  decode  tg{}: {:.1} tok/s", args.gen, report.decode_tok_per_s);
    println!(
        "  decode reads {:.1} MB/token; measured read bandwidth {:.1} GB/s → roofline {:.1} tok/s; decode at {:.0}% of it",
        bytes / 1e6,
        report.read_bandwidth_gb_s,
        roofline,
        100.0 * report.roofline_fraction
    );
    if let Some(rss) = report.peak_rss_bytes {
        println!("  peak RSS {:.1} MB", rss as f64 / 1e6);
    }
    if let Some(p) = &report.profile {
        let total: f64 = p.iter().map(|k| k.secs).sum();
        let mut p = p.clone();
        p.sort_by(|a, b| b.secs.total_cmp(&a.secs));
        for k in p {
            println!(
                "    {:<14} {:>8} calls {:>9.2} ms {:>5.1}%",
                k.kind,
                k.calls,
                k.secs * 1e3,
                100.0 * k.secs / total
            );
        }
    }
    Ok(())
}
