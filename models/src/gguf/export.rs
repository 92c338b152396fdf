//! Writes a GGUF model as a Hugging Face folder: `config.json`, `generation_config.json`,
//! `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`.
//!
//! Everything that can fail on the input (metadata, shapes, names, tokenizer, unsupported
//! quant types) is checked *before* the first byte is written. The files are then written
//! into a hidden temporary sibling of the destination, which is renamed into place only
//! after all of them succeeded; on any error the temporary folder is removed, so a failed
//! import never leaves a half-written model where a loader would find it.
//!
//! `model.safetensors` is streamed: the safetensors writer asks each tensor for its bytes one
//! at a time, and each [`LazyTensor`] dequantizes (and un-permutes) only then, so peak memory
//! is about one tensor in f32 plus its converted copy, not the whole model.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::tensor::{Dtype, View};

use super::arch::{map_tensor, unpermute_rope_rows, Family, RopeRole, Target};
use super::config::{build_configs, ModelParams, OutputDType};
use super::error::{GgufError, Result};
use super::quant::GgmlType;
use super::reader::GgufFile;
use super::tokenizer::{self, TokenizerBuild, TokenizerKind};

/// Options for [`import_gguf`](super::import_gguf).
#[derive(Clone, Copy, Default)]
pub struct ImportOptions<'a> {
    /// Element type of `model.safetensors` (default f32, which is exact).
    pub dtype: OutputDType,
    /// Replace `dst` if it exists (atomically, after the new folder is complete).
    pub overwrite: bool,
    /// Drop tensors that have no Hugging Face name instead of failing.
    pub skip_unmapped: bool,
    /// Called with `(tensors done, tensors total)` as `model.safetensors` is written; for a
    /// progress bar.
    pub progress: Option<&'a dyn Fn(usize, usize)>,
}

impl std::fmt::Debug for ImportOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportOptions")
            .field("dtype", &self.dtype)
            .field("overwrite", &self.overwrite)
            .field("skip_unmapped", &self.skip_unmapped)
            .field("progress", &self.progress.map(|_| "<callback>"))
            .finish()
    }
}

/// What an import did.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportReport {
    /// `general.architecture` (e.g. `llama`).
    pub arch: String,
    /// The `model_type` written to `config.json` (e.g. `llama`, `mixtral`, `gemma3_text`).
    pub model_type: String,
    /// GGUF version of the source.
    pub gguf_version: u32,
    /// Tensors in the GGUF file.
    pub tensor_count: usize,
    /// Tensors written to `model.safetensors` (stacked experts count once per expert).
    pub exported_tensors: usize,
    /// How many GGUF tensors had each ggml type.
    pub quant_types: BTreeMap<GgmlType, usize>,
    /// Parameters written.
    pub params: u64,
    /// Bytes of all files written.
    pub bytes_written: u64,
    /// Element type of `model.safetensors`.
    pub dtype: OutputDType,
    /// Vocabulary size in `config.json`.
    pub vocab_size: usize,
    /// Whether the LM head is tied to the embedding (no `lm_head.weight` written).
    pub tie_word_embeddings: bool,
    /// The tokenizer written, if any.
    pub tokenizer: Option<TokenizerKind>,
    /// GGUF tensors not exported (and why).
    pub skipped_tensors: Vec<String>,
    /// Approximations and defaults worth knowing about.
    pub warnings: Vec<String>,
    /// The resolved hyper-parameters.
    pub model: ModelParams,
    /// Files written, relative to the destination folder.
    pub files: Vec<String>,
}

/// How values are changed on the way out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transform {
    None,
    UnpermuteRope { n_head: usize },
    SubtractOne,
}

/// One output tensor: a row range of one GGUF tensor.
#[derive(Clone, Debug)]
struct Planned {
    hf_name: String,
    shape: Vec<usize>,
    tensor: usize,
    row_start: u64,
    row_count: u64,
    transform: Transform,
}

impl Planned {
    fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

struct Plan {
    tensors: Vec<Planned>,
    skipped: Vec<String>,
    quant_types: BTreeMap<GgmlType, usize>,
}

fn plan_tensors(
    file: &GgufFile,
    p: &ModelParams,
    opts: &ImportOptions<'_>,
    warnings: &mut Vec<String>,
) -> Result<Plan> {
    let path = || file.path().to_path_buf();
    let inconsistent = |reason: String| GgufError::Inconsistent { path: path(), reason };
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let mut quant_types = BTreeMap::new();
    for (i, t) in file.tensors().iter().enumerate() {
        *quant_types.entry(t.ggml_type()).or_insert(0) += 1;
        let Some(m) = map_tensor(p.family, t.name()) else {
            if opts.skip_unmapped {
                let w = format!("{}: no Hugging Face name for {}; skipped", t.name(), p.family.model_type());
                tracing::warn!("{w}");
                warnings.push(w);
                skipped.push(t.name().to_string());
                continue;
            }
            return Err(GgufError::UnmappedTensor { path: path(), tensor: t.name().to_string(), arch: p.arch.clone() });
        };
        if m.target != Target::Skip && !t.ggml_type().can_dequantize() {
            return Err(GgufError::UnsupportedGgmlType {
                path: path(),
                tensor: t.name().to_string(),
                ggml_type: t.ggml_type(),
            });
        }
        let shape = t.shape();
        match m.target {
            Target::Skip => {
                tracing::debug!(tensor = t.name(), "not a Hugging Face weight; skipped");
                skipped.push(t.name().to_string());
            }
            Target::Tensor(hf_name) => {
                let transform = match (m.rope, p.family.permutes_qk(), m.subtract_one) {
                    (Some(role), true, _) => {
                        let n_head = if role == RopeRole::Query { p.num_heads } else { p.num_kv_heads };
                        let rows = shape.first().copied().unwrap_or(0);
                        if rows != n_head * p.head_dim || p.head_dim % 2 != 0 {
                            return Err(inconsistent(format!(
                                "{} has {rows} rows, expected {n_head} heads x {} (even) head_dim",
                                t.name(),
                                p.head_dim
                            )));
                        }
                        Transform::UnpermuteRope { n_head }
                    }
                    (_, _, true) => Transform::SubtractOne,
                    _ => Transform::None,
                };
                out.push(Planned { hf_name, shape, tensor: i, row_start: 0, row_count: t.n_rows(), transform });
            }
            Target::Experts { layer, proj } => {
                if shape.len() != 3 || shape[0] != p.num_experts {
                    return Err(inconsistent(format!(
                        "{} has shape {shape:?}, expected [{} experts, rows, cols]",
                        t.name(),
                        p.num_experts
                    )));
                }
                // Rows here are ggml rows (ne[0] = shape[2] elements); expert e owns shape[1] of them.
                let per = shape[1] as u64;
                for e in 0..shape[0] {
                    out.push(Planned {
                        hf_name: format!("model.layers.{layer}.block_sparse_moe.experts.{e}.{}.weight", proj.hf()),
                        shape: shape[1..].to_vec(),
                        tensor: i,
                        row_start: e as u64 * per,
                        row_count: per,
                        transform: Transform::None,
                    });
                }
            }
        }
    }
    let mut seen = HashSet::new();
    for t in &out {
        if !seen.insert(t.hf_name.as_str()) {
            return Err(inconsistent(format!("two GGUF tensors map to {}", t.hf_name)));
        }
    }
    if !seen.contains("model.embed_tokens.weight") {
        return Err(inconsistent("no token embedding (token_embd.weight)".into()));
    }
    Ok(Plan { tensors: out, skipped, quant_types })
}

/// Shared state of one `model.safetensors` write.
struct Ctx<'a> {
    file: &'a GgufFile,
    dtype: OutputDType,
    error: RefCell<Option<GgufError>>,
    done: Cell<usize>,
    total: usize,
    nonfinite: Cell<u64>,
    progress: Option<&'a dyn Fn(usize, usize)>,
}

#[cfg(test)]
thread_local! {
    /// Test hook: fail when materializing the tensor with this index (in write order), to
    /// exercise the clean-up after an error in the middle of writing `model.safetensors`.
    pub(crate) static FAIL_AT_TENSOR: Cell<Option<usize>> = const { Cell::new(None) };
}

impl Ctx<'_> {
    fn materialize(&self, p: &Planned) -> Result<Vec<u8>> {
        let t = &self.file.tensors()[p.tensor];
        #[cfg(test)]
        if FAIL_AT_TENSOR.with(Cell::get) == Some(self.done.get()) {
            return Err(GgufError::Inconsistent {
                path: self.file.path().to_path_buf(),
                reason: "injected failure".into(),
            });
        }
        let mut v = self.file.rows_f32(t, p.row_start, p.row_count)?;
        match p.transform {
            Transform::None => {}
            Transform::SubtractOne => v.iter_mut().for_each(|x| *x -= 1.0),
            Transform::UnpermuteRope { n_head } => {
                let rows = p.shape.first().copied().unwrap_or(0);
                let cols = v.len().checked_div(rows).unwrap_or(0);
                v = unpermute_rope_rows(&v, rows, cols, n_head).ok_or_else(|| GgufError::Inconsistent {
                    path: self.file.path().to_path_buf(),
                    reason: format!("cannot un-permute {} as {n_head} heads", t.name()),
                })?;
            }
        }
        let mut out = Vec::with_capacity(v.len() * self.dtype.size());
        let mut bad = 0u64;
        match self.dtype {
            OutputDType::F32 => {
                for x in &v {
                    bad += u64::from(!x.is_finite());
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
            OutputDType::BF16 => {
                for &x in &v {
                    let h = bf16::from_f32(x);
                    bad += u64::from(!h.is_finite());
                    out.extend_from_slice(&h.to_bits().to_le_bytes());
                }
            }
            OutputDType::F16 => {
                for &x in &v {
                    let h = f16::from_f32(x);
                    bad += u64::from(!h.is_finite());
                    out.extend_from_slice(&h.to_bits().to_le_bytes());
                }
            }
        }
        if bad > 0 {
            tracing::warn!(tensor = t.name(), count = bad, dtype = self.dtype.torch_dtype(), "non-finite values");
            self.nonfinite.set(self.nonfinite.get() + bad);
        }
        Ok(out)
    }
}

/// A tensor whose bytes are produced when the safetensors writer asks for them.
struct LazyTensor<'a> {
    ctx: &'a Ctx<'a>,
    plan: &'a Planned,
}

impl View for LazyTensor<'_> {
    fn dtype(&self) -> Dtype {
        match self.ctx.dtype {
            OutputDType::F32 => Dtype::F32,
            OutputDType::BF16 => Dtype::BF16,
            OutputDType::F16 => Dtype::F16,
        }
    }

    fn shape(&self) -> &[usize] {
        &self.plan.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        // `View::data` cannot fail, so an error is parked in the context and zeros of the right
        // length keep the writer consistent; the caller checks the context afterwards and
        // discards the whole output. After the first error nothing more is dequantized.
        let bytes = if self.ctx.error.borrow().is_some() {
            vec![0u8; self.data_len()]
        } else {
            match self.ctx.materialize(self.plan) {
                Ok(b) if b.len() == self.data_len() => b,
                Ok(b) => {
                    *self.ctx.error.borrow_mut() = Some(GgufError::Inconsistent {
                        path: self.ctx.file.path().to_path_buf(),
                        reason: format!(
                            "{}: produced {} bytes, expected {}",
                            self.plan.hf_name,
                            b.len(),
                            self.data_len()
                        ),
                    });
                    vec![0u8; self.data_len()]
                }
                Err(e) => {
                    *self.ctx.error.borrow_mut() = Some(e);
                    vec![0u8; self.data_len()]
                }
            }
        };
        let done = self.ctx.done.get() + 1;
        self.ctx.done.set(done);
        if let Some(cb) = self.ctx.progress {
            cb(done, self.ctx.total);
        }
        Cow::Owned(bytes)
    }

    fn data_len(&self) -> usize {
        self.plan.n_elements() * self.ctx.dtype.size()
    }
}

/// Removes the temporary output folder unless disarmed.
struct TempDirGuard(Option<PathBuf>);

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            if let Err(e) = std::fs::remove_dir_all(&p) {
                tracing::warn!(path = %p.display(), "could not remove temporary folder: {e}");
            }
        }
    }
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

fn write_json(dir: &Path, name: &str, v: &impl serde::Serialize, files: &mut Vec<String>) -> Result<()> {
    let p = dir.join(name);
    let mut bytes = serde_json::to_vec_pretty(v).map_err(|e| GgufError::Json { path: p.clone(), source: e })?;
    bytes.push(b'\n');
    std::fs::write(&p, bytes).map_err(|e| GgufError::io(&p, "write", e))?;
    files.push(name.to_string());
    Ok(())
}

/// See [`import_gguf`](super::import_gguf).
pub(crate) fn import(src: &Path, dst: &Path, opts: &ImportOptions<'_>) -> Result<ImportReport> {
    // Destination checks first: cheap, and nothing else should run if they fail.
    let out_err = |reason: String| GgufError::Output { path: dst.to_path_buf(), reason };
    let dst_name =
        dst.file_name().ok_or_else(|| out_err("destination has no folder name".into()))?.to_string_lossy().into_owned();
    let parent = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(out_err(format!("parent folder {} does not exist", parent.display())));
    }
    let dst_exists = dst.symlink_metadata().is_ok();
    if dst_exists && !opts.overwrite {
        return Err(out_err("destination already exists (set overwrite to replace it)".into()));
    }

    let file = GgufFile::open(src)?;
    let arch = file
        .architecture()
        .ok_or_else(|| GgufError::MissingMetadata { path: src.to_path_buf(), key: "general.architecture".into() })?
        .to_string();
    let family = Family::detect(&arch, &file)
        .ok_or_else(|| GgufError::UnsupportedArchitecture { path: src.to_path_buf(), arch: arch.clone() })?;
    tracing::info!(src = %src.display(), arch, model_type = family.model_type(), tensors = file.tensors().len(), "importing GGUF");

    let configs = build_configs(&file, &arch, family, opts.dtype)?;
    let mut warnings = configs.warnings;
    let params = configs.params;
    let plan = plan_tensors(&file, &params, opts, &mut warnings)?;
    let tok = tokenizer::build(&file, Some(params.context_length))?;
    let (tok_files, tok_kind) = match tok {
        TokenizerBuild::Built(f, k) => (Some(f), Some(k)),
        TokenizerBuild::Skipped(why) => {
            let w = format!("tokenizer.json not written: {why}");
            tracing::warn!("{w}");
            warnings.push(w);
            (None, None)
        }
    };
    if let Some(t) = &tok_files {
        warnings.extend(t.warnings.iter().cloned());
    }
    if file.lossy_strings() > 0 {
        warnings
            .push(format!("{} metadata strings were not valid UTF-8 and were decoded lossily", file.lossy_strings()));
    }

    // Write everything into a temporary sibling, then rename.
    let tmp = parent.join(format!(".{dst_name}.kiln-tmp-{}", unique_suffix()));
    std::fs::create_dir(&tmp).map_err(|e| GgufError::io(&tmp, "create directory", e))?;
    let mut guard = TempDirGuard(Some(tmp.clone()));
    let mut files = Vec::new();

    write_json(&tmp, "config.json", &configs.config, &mut files)?;
    write_json(&tmp, "generation_config.json", &configs.generation_config, &mut files)?;
    if let Some(t) = &tok_files {
        let p = tmp.join("tokenizer.json");
        std::fs::write(&p, &t.tokenizer_json).map_err(|e| GgufError::io(&p, "write", e))?;
        files.push("tokenizer.json".into());
        write_json(&tmp, "tokenizer_config.json", &t.tokenizer_config, &mut files)?;
    }
    drop(tok_files);

    let ctx = Ctx {
        file: &file,
        dtype: opts.dtype,
        error: RefCell::new(None),
        done: Cell::new(0),
        total: plan.tensors.len(),
        nonfinite: Cell::new(0),
        progress: opts.progress,
    };
    if let Some(cb) = opts.progress {
        cb(0, ctx.total);
    }
    let views: Vec<(String, LazyTensor<'_>)> =
        plan.tensors.iter().map(|p| (p.hf_name.clone(), LazyTensor { ctx: &ctx, plan: p })).collect();
    let st_path = tmp.join("model.safetensors");
    let meta: HashMap<String, String> = [
        ("format".to_string(), "pt".to_string()),
        ("kiln.source".to_string(), "gguf".to_string()),
        ("kiln.gguf_arch".to_string(), arch.clone()),
    ]
    .into_iter()
    .collect();
    safetensors::tensor::serialize_to_file(views, &Some(meta), &st_path)
        .map_err(|e| GgufError::Safetensors { path: st_path.clone(), source: e })?;
    if let Some(e) = ctx.error.take() {
        return Err(e);
    }
    files.push("model.safetensors".into());
    if ctx.nonfinite.get() > 0 {
        warnings.push(format!(
            "{} weights are not finite in {} (NaN/inf in the source, or out of range for the output dtype)",
            ctx.nonfinite.get(),
            opts.dtype.torch_dtype()
        ));
    }

    let mut bytes_written = 0u64;
    for f in &files {
        let p = tmp.join(f);
        bytes_written += std::fs::metadata(&p).map_err(|e| GgufError::io(&p, "stat", e))?.len();
    }

    // Swap into place.
    if dst_exists {
        let old = parent.join(format!(".{dst_name}.kiln-old-{}", unique_suffix()));
        std::fs::rename(dst, &old).map_err(|e| GgufError::io(dst, "move aside existing destination", e))?;
        if let Err(e) = std::fs::rename(&tmp, dst) {
            let _ = std::fs::rename(&old, dst);
            return Err(GgufError::io(dst, "rename into place", e));
        }
        let removed = if old.is_dir() { std::fs::remove_dir_all(&old) } else { std::fs::remove_file(&old) };
        if let Err(e) = removed {
            warnings.push(format!("could not remove the replaced folder {}: {e}", old.display()));
        }
    } else {
        std::fs::rename(&tmp, dst).map_err(|e| GgufError::io(dst, "rename into place", e))?;
    }
    guard.0 = None;

    let params_count: u64 = plan.tensors.iter().map(|t| t.n_elements() as u64).sum();
    tracing::info!(dst = %dst.display(), params = params_count, bytes = bytes_written, "import finished");
    Ok(ImportReport {
        arch,
        model_type: family.model_type().to_string(),
        gguf_version: file.version(),
        tensor_count: file.tensors().len(),
        exported_tensors: plan.tensors.len(),
        quant_types: plan.quant_types,
        params: params_count,
        bytes_written,
        dtype: opts.dtype,
        vocab_size: params.vocab_size,
        tie_word_embeddings: params.tie_word_embeddings,
        tokenizer: tok_kind,
        skipped_tensors: plan.skipped,
        warnings,
        model: params,
        files,
    })
}
