//! Writing a compiled artifact: plan the graph, generate and link the kernels, pack the weights,
//! copy the tokenizer, and write the manifest with every file's size and checksum. Everything is
//! written into a temporary sibling folder that is renamed into place at the end, so a failed
//! compile leaves no half-written artifact.

mod safetensors;

use crate::error::{CodegenError, Result};
use crate::kernels::gpu::{compile_ptx, expected_arity, Arity, Launch};
use crate::kernels::{compile_kernels, WeightFormat};
use crate::plan::{plan, Plan, PlanOptions};
use crate::target::{cpu_machine, nvptx_target, TargetInfo};
use kiln_ir::interp::{Interpreter, WeightSource};
use kiln_ir::Graph;
use kiln_runtime::artifact::manifest::{checksum, FileEntry, Manifest, ModelDesc, TargetDesc, FORMAT_VERSION};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Instruction-set features that kernels compiled for the host may use and a runtime must check.
const CHECKED_FEATURES: &[&str] = &[
    "sse4.2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512dq",
    "avx512bf16",
    "avx512vnni",
    "avx512fp16",
    "avxvnni",
];

pub struct CompileOptions {
    pub weights: WeightFormat,
    /// Tokens per call (prefill chunk).
    pub max_tokens: usize,
    /// KV-cache capacity in tokens.
    pub max_context: usize,
    /// The pass pipeline the graph went through (recorded).
    pub pipeline: String,
    /// Files to copy next to the manifest (tokenizer.json, tokenizer_config.json).
    pub extra_files: Vec<PathBuf>,
    /// The CPU to generate code for (CPU and simulated-CUDA kernels): `native` (this machine) or
    /// an x86-64 level (`x86-64-v3`).
    pub target_cpu: String,
    /// What kind of kernels to generate.
    pub kernels: KernelTarget,
    /// Prefill Q8_0/Q4_0 matmuls with int8-quantized activations and VNNI integer dot products
    /// (`matmul_i8`), as llama.cpp does: ~2× faster prefill, at the cost of rounding activations to
    /// 8 bits per block of 32. Applies to CPU targets with AVX512-VNNI; decoding stays exact.
    pub int8_prefill: bool,
}

/// What the kernels of an artifact run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelTarget {
    /// CPU code for `target_cpu` (`kernels.so`).
    Cpu,
    /// PTX for this NVIDIA SM (`80`, `90`), in `kernels.ptx`.
    Cuda { sm: u32 },
    /// The CUDA kernels compiled for the host's SIMT simulator (`kiln_runtime::simt`): a CPU
    /// artifact that runs the GPU kernels' logic, slowly (testing and debugging).
    CudaSim,
}

/// The generated kernels, as the target wants them.
enum Kernels {
    /// An object file, linked into `kernels.so`.
    Object(Vec<u8>),
    /// PTX for `kernels.ptx`, with each kernel's launch geometry.
    Ptx(String, Vec<Launch>),
    /// Simulated CUDA kernels (an object linked into `kernels.so`), with their launch geometry.
    Sim(Vec<u8>, Vec<Launch>),
}

impl Kernels {
    fn file_name(&self) -> &'static str {
        match self {
            Kernels::Object(_) | Kernels::Sim(..) => "kernels.so",
            Kernels::Ptx(..) => "kernels.ptx",
        }
    }
}

/// Each kernel's parameter counts, from the steps that call it (all calls of a kernel pass the
/// same numbers; the GPU emitters check them against the spec's ABI).
fn arities(plan: &Plan) -> Result<Vec<Arity>> {
    let mut out: Vec<Option<Arity>> = vec![None; plan.kernels.len()];
    for s in &plan.steps {
        let a = Arity { dims: s.dims.len(), bufs: s.bufs.len() };
        match out.get_mut(s.kernel) {
            Some(slot @ None) => *slot = Some(a),
            Some(Some(prev)) if *prev != a => {
                return Err(CodegenError::Plan {
                    node: s.label.clone(),
                    message: format!(
                        "kernel {} is called with {a:?} here and {prev:?} elsewhere",
                        plan.kernels[s.kernel].0
                    ),
                })
            }
            _ => {}
        }
    }
    Ok(out.into_iter().zip(&plan.kernels).map(|(a, (_, spec))| a.unwrap_or_else(|| expected_arity(spec))).collect())
}

/// What a compile produced, for the CLI's report.
#[derive(Debug, serde::Serialize)]
pub struct CompileReport {
    pub kernels: usize,
    pub steps: usize,
    pub weight_bytes: u64,
    pub library_bytes: u64,
    pub fallbacks: Vec<String>,
    pub secs_fold: f64,
    pub secs_plan: f64,
    pub secs_llvm: f64,
    pub secs_write: f64,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> CodegenError {
    CodegenError::Artifact { path: path.display().to_string(), message: e.to_string() }
}

/// The features of `target` a runtime must find on its CPU.
fn required_features(target: &TargetInfo) -> Vec<String> {
    target
        .features
        .split(',')
        .filter_map(|f| f.strip_prefix('+'))
        .filter(|f| CHECKED_FEATURES.contains(f))
        .map(str::to_string)
        .collect()
}

/// Compiles `graph` (with `weights`) into the artifact directory `out`.
pub fn compile(
    graph: &Graph,
    weights: &dyn WeightSource,
    model: ModelDesc,
    opts: &CompileOptions,
    out: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<CompileReport> {
    let t = Instant::now();
    progress("folding weights");
    let interp = Interpreter::new(graph, weights)
        .map_err(|e| CodegenError::Plan { node: graph.name.clone(), message: e.to_string() })?;
    let secs_fold = t.elapsed().as_secs_f64();
    let t = Instant::now();
    progress("planning kernels");
    let target = match opts.kernels {
        KernelTarget::Cuda { sm } => nvptx_target(sm)?,
        KernelTarget::Cpu | KernelTarget::CudaSim => cpu_machine(&opts.target_cpu)?,
    };
    // `matmul_i8` is CPU code for AVX-512 with VNNI.
    let int8_prefill = opts.int8_prefill
        && opts.kernels == KernelTarget::Cpu
        && target.has_feature("avx512f")
        && target.has_feature("avx512vnni");
    let interleave_lanes = match opts.kernels {
        KernelTarget::Cpu => crate::kernels::target_lanes(&target) as usize,
        KernelTarget::Cuda { .. } | KernelTarget::CudaSim => 0,
    };
    let plan = plan(graph, &interp, PlanOptions { weights: opts.weights, int8_prefill, interleave_lanes })?;
    drop(interp);
    let secs_plan = t.elapsed().as_secs_f64();
    let t = Instant::now();
    progress("generating kernels with LLVM");
    let with_arity = || -> Result<Vec<_>> {
        Ok(plan.kernels.iter().zip(arities(&plan)?).map(|((n, s), a)| (n.clone(), s.clone(), a)).collect())
    };
    let kernels = match opts.kernels {
        KernelTarget::CudaSim => {
            let (object, launches) = crate::kernels::gpu::sim::compile_sim(&with_arity()?, &target)?;
            Kernels::Sim(object, launches)
        }
        KernelTarget::Cuda { .. } => {
            let (ptx, launches) = compile_ptx(&with_arity()?, &target)?;
            Kernels::Ptx(ptx, launches)
        }
        KernelTarget::Cpu => Kernels::Object(compile_kernels(&plan.kernels, &target)?),
    };
    let secs_llvm = t.elapsed().as_secs_f64();

    let t = Instant::now();
    progress("writing the artifact");
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "artifact".into());
    let tmp = out.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
    let result = write_files(&tmp, &plan, &kernels, &target, model, opts);
    let (library_bytes, weight_bytes) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| io_err(out, format!("cannot replace the existing artifact: {e}")))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| io_err(out, e))?;
    Ok(CompileReport {
        kernels: plan.kernels.len(),
        steps: plan.steps.len(),
        weight_bytes,
        library_bytes,
        fallbacks: plan.fallbacks.clone(),
        secs_fold,
        secs_plan,
        secs_llvm,
        secs_write: t.elapsed().as_secs_f64(),
    })
}

fn write_files(
    dir: &Path,
    plan: &Plan,
    kernels: &Kernels,
    target: &TargetInfo,
    model: ModelDesc,
    opts: &CompileOptions,
) -> Result<(u64, u64)> {
    let kpath = dir.join(kernels.file_name());
    match kernels {
        Kernels::Object(object) | Kernels::Sim(object, _) => crate::link::link_shared(object, &kpath)?,
        Kernels::Ptx(ptx, _) => std::fs::write(&kpath, ptx).map_err(|e| io_err(&kpath, e))?,
    }
    let wpath = dir.join("weights.safetensors");
    {
        let f = std::fs::File::create(&wpath).map_err(|e| io_err(&wpath, e))?;
        let mut w = std::io::BufWriter::new(f);
        let tensors: Vec<(String, Vec<u8>, &str)> =
            plan.weights.iter().map(|(n, b)| (n.clone(), b.clone(), "U8")).collect();
        let meta = vec![("format".to_string(), "kiln-packed-weights".to_string())];
        safetensors::write(&mut w, &tensors, &meta).map_err(|e| io_err(&wpath, e))?;
        use std::io::Write;
        w.flush().map_err(|e| io_err(&wpath, e))?;
    }
    for f in &opts.extra_files {
        if let Some(name) = f.file_name() {
            std::fs::copy(f, dir.join(name)).map_err(|e| io_err(f, e))?;
        }
    }
    let mut files = Vec::new();
    let mut names = vec![kernels.file_name().to_string(), "weights.safetensors".to_string()];
    names.extend(opts.extra_files.iter().filter_map(|f| f.file_name()).map(|n| n.to_string_lossy().into_owned()));
    let (mut library_bytes, mut weight_bytes) = (0, 0);
    for n in names {
        let p = dir.join(&n);
        let file = std::fs::File::open(&p).map_err(|e| io_err(&p, e))?;
        // SAFETY: a read-only map of a file this function just wrote and nobody else touches.
        let data = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io_err(&p, e))?;
        if n == kernels.file_name() {
            library_bytes = data.len() as u64;
        }
        if n == "weights.safetensors" {
            weight_bytes = data.len() as u64;
        }
        files.push(FileEntry { path: n, bytes: data.len() as u64, checksum: checksum(&data) });
    }
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        compiler: format!("kiln {}", env!("CARGO_PKG_VERSION")),
        target: TargetDesc {
            triple: target.triple.clone(),
            cpu: match kernels {
                Kernels::Sim(..) => format!("{} (cuda-sim)", target.cpu),
                _ => target.cpu.clone(),
            },
            required_features: required_features(target),
        },
        model,
        pipeline: opts.pipeline.clone(),
        weights_dtype: opts.weights.name().to_string(),
        max_tokens: opts.max_tokens,
        max_context: opts.max_context,
        symbols: plan.symbols.clone(),
        kernels: plan
            .kernels
            .iter()
            .enumerate()
            .map(|(i, (symbol, spec))| kiln_runtime::artifact::manifest::KernelEntry {
                symbol: symbol.clone(),
                kind: spec.kind().to_string(),
                params: serde_json::to_value(spec).unwrap_or_default(),
                launch: match kernels {
                    Kernels::Ptx(_, launches) | Kernels::Sim(_, launches) => launches.get(i).copied(),
                    Kernels::Object(_) => None,
                },
            })
            .collect(),
        buffers: plan.buffers.clone(),
        kv_slots: plan.kv_slots.clone(),
        steps: plan.steps.clone(),
        inputs: plan.inputs.clone(),
        outputs: plan.outputs.clone(),
        moe_layers: plan.moe_layers.clone(),
        files,
    };
    let mpath = dir.join("manifest.json");
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| io_err(&mpath, e))?;
    std::fs::write(&mpath, text).map_err(|e| io_err(&mpath, e))?;
    Ok((library_bytes, weight_bytes))
}
