//! `kiln bench OUT.kiln`: prefill and decode speed of a compiled artifact on this machine, with the
//! memory-bandwidth roofline of decoding (bytes of weights and KV cache read per token ÷ the
//! measured read bandwidth).

use anyhow::{bail, Result};
use clap::Args;
use kiln_runtime::artifact::manifest::{BufArg, Storage};
use kiln_runtime::cpu::CpuModel;
use kiln_runtime::measure::{peak_rss, read_bandwidth};
use serde::Serialize;
use std::path::PathBuf;
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
}

#[derive(Serialize)]
struct Report {
    artifact: String,
    weights: String,
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
}

/// Weight and KV-cache bytes one decode step at context `len` reads.
fn decode_bytes(model: &CpuModel, len: usize) -> f64 {
    let m = model.manifest();
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
                        size
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
    let mut model = CpuModel::load(&args.artifact, threads)?;
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
    model.forward(&prompt[..prompt.len().min(8)])?;
    model.reset();
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
    for _ in 0..args.repeat.max(1) {
        model.reset();
        let mut tok = prompt[0];
        let t = Instant::now();
        for _ in 0..args.gen {
            let logits = model.forward(&[tok])?;
            tok = kiln_runtime::sampler::argmax(&logits) as u32;
        }
        decode = decode.min(t.elapsed().as_secs_f64());
    }
    // Before the bandwidth measurement allocates its 1 GiB buffer.
    let rss = peak_rss();
    let bw = read_bandwidth(1 << 30, threads, 3);
    let bytes = decode_bytes(&model, args.gen / 2);
    let decode_tps = args.gen as f64 / decode;
    let roofline = bw / bytes;
    let report = Report {
        artifact: args.artifact.display().to_string(),
        weights: m.weights_dtype.clone(),
        threads,
        prompt_len: args.prompt_len,
        gen: args.gen,
        prefill_tok_per_s: args.prompt_len as f64 / prefill,
        decode_tok_per_s: decode_tps,
        peak_rss_bytes: rss,
        read_bandwidth_gb_s: bw / 1e9,
        decode_bytes_per_token: bytes,
        roofline_tok_per_s: roofline,
        roofline_fraction: decode_tps / roofline,
        profile: model.profile().map(|p| p.to_vec()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{} ({} weights, {} threads)", report.artifact, report.weights, threads);
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
