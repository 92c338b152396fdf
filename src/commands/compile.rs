//! `kiln compile MODEL -o OUT.kiln [-O2 | --passes P] [--weights f32|bf16|f16|q8_0|q4_0]`: optimize a
//! model's graph and compile it to a native artifact for this CPU.

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use kiln_codegen::artifact::{compile, CompileOptions, KernelTarget};
use kiln_codegen::kernels::WeightFormat;
use kiln_ir::interp::Overlay;
use kiln_models::{Logits, LowerOptions};
use kiln_runtime::artifact::manifest::ModelDesc;
use std::path::PathBuf;
use std::time::Instant;

/// `-O2` without `merge-projections`: on the CPU, one wider matmul streams the same weight bytes as
/// the separate ones, and its outputs must then be split apart by copies (measured on SmolLM2:
/// ~10% faster decode and equal or faster prefill without it). `-O2` is still available.
pub const CPU_DEFAULT_PIPELINE: &str =
    "canonicalize,cse,const-fold,eqsat{rules=rope+layout+algebra},fuse-elementwise,cse,dce";

#[derive(Args)]
pub struct CompileArgs {
    /// A Hugging Face model folder or a .gguf file.
    pub model: PathBuf,
    /// The artifact directory to write (replaced if it exists).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Weight storage for matmuls and embeddings: f32, bf16, f16, q8_0 or q4_0 (f32 accumulation).
    #[arg(long, default_value = "f32")]
    pub weights: String,
    /// Tokens per call: prompts are prefilled in chunks of this many.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// KV-cache capacity in tokens.
    #[arg(long, default_value_t = 2048)]
    pub max_context: usize,
    /// The CPU to generate code for: native (this machine), or an x86-64 level (x86-64,
    /// x86-64-v2, x86-64-v3 = AVX2/FMA, x86-64-v4 = AVX-512) so the artifact runs on any machine of
    /// that level.
    #[arg(long, default_value = "native")]
    pub target_cpu: String,
    /// What to compile for: `cpu` (default), or `cuda` / `cuda:sm_80` / `cuda:sm_90` for NVIDIA
    /// GPUs (PTX; `cuda` alone means this machine's GPU, or sm_80 — which runs on every later GPU —
    /// when there is none), or `cuda-sim`: the CUDA kernels for this CPU's SIMT simulator (slow; for
    /// checking the GPU kernels without a GPU).
    #[arg(long, default_value = "cpu")]
    pub target: String,
    /// How prefill multiplies Q8_0/Q4_0 weights: `int8` (default: activations quantized to 8 bits
    /// per block of 32 and multiplied with AVX512-VNNI integer dot products, as llama.cpp does;
    /// used where the target CPU has AVX512-VNNI) or `f32` (exact activations, slower). Decoding
    /// always uses f32 activations.
    #[arg(long, default_value = "int8")]
    pub prefill_activations: String,
    /// The pass pipeline (default: -O2 without merge-projections, see CPU_DEFAULT_PIPELINE;
    /// `moe-dispatch` is appended when the model has MoE layers), and --json for the report.
    #[command(flatten)]
    pub passes: crate::commands::opt::PassArgs,
}

/// The kernels `--target` asks for.
fn kernel_target(target: &str) -> Result<KernelTarget> {
    let supported = kiln_codegen::SUPPORTED_SMS.iter().map(|s| format!("sm_{s}")).collect::<Vec<_>>().join(", ");
    let sm = match target {
        "cpu" => return Ok(KernelTarget::Cpu),
        "cuda-sim" => return Ok(KernelTarget::CudaSim),
        "cuda" => match kiln_runtime::cuda_available() {
            Ok(info) => info.devices.first().map_or(80, |d| d.sm()),
            Err(_) => 80,
        },
        t => t
            .strip_prefix("cuda:sm_")
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| kiln_codegen::SUPPORTED_SMS.contains(n))
            .ok_or_else(|| {
                anyhow!("--target '{t}' is not cpu, cuda, cuda:SM with SM one of {supported}, or cuda-sim")
            })?,
    };
    Ok(KernelTarget::Cuda { sm })
}

pub fn run(args: CompileArgs) -> Result<()> {
    let format = WeightFormat::parse(&args.weights)
        .ok_or_else(|| anyhow!("--weights '{}' is not one of f32, bf16, f16, q8_0, q4_0", args.weights))?;
    if args.max_tokens == 0 || args.max_context < args.max_tokens {
        bail!("--max-tokens must be at least 1 and at most --max-context");
    }
    if args.output.join("manifest.json").exists() || !args.output.exists() || args.output.is_dir() {
    } else {
        bail!("{}: exists and is not an artifact directory", args.output.display());
    }
    let t0 = Instant::now();
    let dir = crate::model_arg::resolve(&args.model)?;
    let ckpt = crate::model_arg::open(&dir)?;
    let mut graph = ckpt.graph(&LowerOptions { logits: Logits::Last, layers: None })?;
    let mut passes = args.passes.clone();
    if passes.passes.is_none() && passes.level.is_none() {
        passes.passes = Some(CPU_DEFAULT_PIPELINE.into());
    }
    let mut pipeline = passes.pipeline_text();
    if let Some(level) = kiln_passes::Pipeline::level(pipeline.trim()) {
        pipeline = level.to_string();
    }
    if graph.node_ids().any(|n| graph.op(n) == kiln_ir::OpKind::Moe) && !pipeline.contains("moe-dispatch") {
        pipeline = if pipeline.trim().is_empty() { "moe-dispatch".into() } else { format!("{pipeline},moe-dispatch") };
    }
    passes.level = None;
    passes.passes = (!pipeline.trim().is_empty()).then(|| pipeline.clone());
    let derived = passes.run(&mut graph, Some(&ckpt))?;
    let weights = Overlay { derived: &derived, base: &ckpt };
    let mut extra = Vec::new();
    for f in ["tokenizer.json", "tokenizer_config.json", "config.json"] {
        let p = dir.path.join(f);
        if p.is_file() {
            extra.push(p);
        }
    }
    let config: serde_json::Value = std::fs::read_to_string(dir.path.join("config.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let model = ModelDesc {
        name: args.model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        arch: config.get("model_type").and_then(|v| v.as_str()).unwrap_or("unknown").to_string(),
        vocab_size: ckpt.spec.vocab_size,
        eos_token_ids: ckpt.spec.eos_token_ids.clone(),
        config,
    };
    let opts = CompileOptions {
        weights: format,
        max_tokens: args.max_tokens,
        max_context: args.max_context,
        pipeline: pipeline.clone(),
        extra_files: extra,
        target_cpu: args.target_cpu.clone(),
        kernels: kernel_target(&args.target)?,
        int8_prefill: match args.prefill_activations.as_str() {
            "int8" => true,
            "f32" => false,
            other => bail!("--prefill-activations '{other}' is not int8 or f32"),
        },
    };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    let report = compile(&graph, &weights, model, &opts, &args.output, &mut |stage| bar.set_message(stage.to_string()))
        .with_context(|| format!("compiling {}", args.model.display()))?;
    bar.finish_and_clear();
    for f in &report.fallbacks {
        eprintln!("warning: {f}");
    }
    if args.passes.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        eprintln!(
            "[kiln] compiled {} → {} in {:.1}s: {} kernels, {} steps, weights {:.1} MB ({}), library {:.0} KB; pipeline {}",
            args.model.display(),
            args.output.display(),
            t0.elapsed().as_secs_f64(),
            report.kernels,
            report.steps,
            report.weight_bytes as f64 / 1e6,
            format.name(),
            report.library_bytes as f64 / 1e3,
            pipeline
        );
    }
    Ok(())
}
