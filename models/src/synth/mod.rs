//! Deterministic synthetic Hugging Face model folders, for tests of every architecture and for
//! `kiln gen-model`: a small random-weight model of a chosen shape that loads like a real one.
//!
//! [`write_synthetic_model`] writes, into a temporary sibling folder renamed into place at the end:
//!
//! * `config.json`: the keys Hugging Face transformers and candle-transformers read for the
//!   architecture's `model_type` (see [`config`]);
//! * `model.safetensors`: every tensor the lowering reads — the param nodes of
//!   [`crate::lower()`]'s graph for the parsed config, so the two always agree — with random values
//!   from the seed, scaled so activations stay O(1) (see [`weights`]);
//! * `tokenizer.json`, `tokenizer_config.json`, `generation_config.json`: a real byte-level BPE
//!   tokenizer with exactly `vocab_size` tokens and SmolLM2's ChatML chat template (see
//!   [`tokenizer`]).
//!
//! The same options and seed give byte-identical files.

pub mod config;
pub mod corpus;
pub mod tokenizer;
pub mod weights;

pub use weights::SynthDtype;

use crate::arch::parse_config;
use crate::error::{ModelError, Result};
use crate::lower::{lower, LowerOptions};
use crate::spec::{Arch, DecoderSpec};
use kiln_ir::OpKind;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use weights::SynthTensor;

/// What to generate. `None` knobs take the architecture's default (see [`SynthOptions::defaults`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SynthOptions {
    pub arch: Arch,
    /// `num_hidden_layers`.
    pub layers: Option<usize>,
    /// `hidden_size`.
    pub hidden: Option<usize>,
    /// `intermediate_size` (per expert for mixtral).
    pub intermediate: Option<usize>,
    /// `num_attention_heads`.
    pub heads: Option<usize>,
    /// `num_key_value_heads`; must divide `heads`.
    pub kv_heads: Option<usize>,
    /// `head_dim`; `None` = hidden / heads (then heads must divide hidden), except gemma3, whose
    /// default is an explicit 32.
    pub head_dim: Option<usize>,
    /// `vocab_size`: the tokenizer has exactly this many tokens (at least 259: 3 special + 256
    /// bytes).
    pub vocab: Option<usize>,
    /// `num_local_experts` (mixtral only).
    pub experts: Option<usize>,
    /// `num_experts_per_tok` (mixtral only); at most `experts`.
    pub top_k: Option<usize>,
    /// `sliding_window`; `Some(0)` = no window. Llama has none; gemma3 needs one.
    pub window: Option<usize>,
    /// Element type of the weights (default f32).
    pub dtype: Option<SynthDtype>,
    /// `tie_word_embeddings`: no `lm_head.weight`, the embedding table is the head.
    pub tie: Option<bool>,
    pub seed: u64,
    /// Replace an existing non-empty destination folder.
    pub force: bool,
}

/// What [`write_synthetic_model`] wrote.
#[derive(Clone, Debug)]
pub struct SynthReport {
    /// The model folder.
    pub dir: PathBuf,
    /// File names written into `dir`, in order.
    pub files: Vec<String>,
    /// The written config.json, parsed back by [`crate::parse_config`].
    pub spec: DecoderSpec,
    pub config: serde_json::Value,
    pub dtype: SynthDtype,
    pub seed: u64,
    /// Tensor count and total elements in model.safetensors.
    pub tensors: usize,
    pub params: usize,
    /// Size of model.safetensors in bytes.
    pub weight_bytes: u64,
    /// BPE merges in tokenizer.json, and how many were learned from the built-in corpus (the rest
    /// fill a vocabulary larger than the corpus supports).
    pub merges: usize,
    pub learned_merges: usize,
}

/// The options with every knob decided.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Resolved {
    pub arch: Arch,
    pub layers: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub experts: Option<usize>,
    pub top_k: Option<usize>,
    /// `None`: no sliding window.
    pub window: Option<usize>,
    pub dtype: SynthDtype,
    pub tie: bool,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_local_base_freq: f64,
    /// llama3 (llama) / linear (gemma3 global layers) RoPE scaling factor.
    pub rope_factor: f64,
    pub max_position_embeddings: usize,
}

impl SynthOptions {
    /// Every knob `None`: the architecture's defaults, derived where they depend on each other
    /// (head_dim = hidden / heads). Use this as the base for command-line overrides.
    pub fn new(arch: Arch) -> SynthOptions {
        SynthOptions {
            arch,
            layers: None,
            hidden: None,
            intermediate: None,
            heads: None,
            kv_heads: None,
            head_dim: None,
            vocab: None,
            experts: None,
            top_k: None,
            window: None,
            dtype: None,
            tie: None,
            seed: 0,
            force: false,
        }
    }

    /// The defaults spelled out: small but real shapes, 2 layers, hidden 64, 4 heads over 2 KV
    /// heads (GQA), intermediate 128, vocab 320, f32, and per architecture:
    ///
    /// * llama: tied embeddings (like SmolLM2), rope_theta 500000 with llama3 rope_scaling
    ///   (factor 8 over an original 256 of max_position_embeddings 2048);
    /// * mistral: sliding_window 16, untied;
    /// * qwen2: q/k/v biases, untied, no window;
    /// * mixtral: 8 experts, top-2, sliding_window 32, untied;
    /// * gemma3: head_dim 32 (explicit: 4·32 ≠ 64, as in real Gemma 3), tied; layers alternate
    ///   sliding (window 8, local RoPE base 10000) and global (rope_theta 1e6, linear
    ///   rope_scaling factor 2).
    ///
    /// `head_dim` stays `None` (= hidden / heads) except for gemma3.
    pub fn defaults(arch: Arch) -> SynthOptions {
        let mut o = SynthOptions::new(arch);
        o.layers = Some(2);
        o.hidden = Some(64);
        o.intermediate = Some(128);
        o.heads = Some(4);
        o.kv_heads = Some(2);
        o.vocab = Some(320);
        o.dtype = Some(SynthDtype::F32);
        o.tie = Some(matches!(arch, Arch::Llama | Arch::Gemma3));
        match arch {
            Arch::Llama | Arch::Qwen2 => o.window = Some(0),
            Arch::Mistral => o.window = Some(16),
            Arch::Mixtral => {
                o.window = Some(32);
                o.experts = Some(8);
                o.top_k = Some(2);
            }
            Arch::Gemma3 => {
                o.window = Some(8);
                o.head_dim = Some(32);
            }
        }
        o
    }

    /// Checks the knobs and fills the defaults; errors name `dst`.
    pub(crate) fn resolve(&self, dst: &Path) -> Result<Resolved> {
        let d = SynthOptions::defaults(self.arch);
        let arch = self.arch;
        let name = arch.name();
        let err = |msg: String| ModelError::config(dst, msg);
        let pos = |v: Option<usize>, default: Option<usize>, what: &str| -> Result<usize> {
            match v.or(default) {
                Some(0) => Err(err(format!("{what} must be at least 1"))),
                Some(n) => Ok(n),
                None => unreachable!("every size knob has a default"),
            }
        };
        let layers = pos(self.layers, d.layers, "layers (num_hidden_layers)")?;
        let hidden = pos(self.hidden, d.hidden, "hidden (hidden_size)")?;
        let intermediate = pos(self.intermediate, d.intermediate, "intermediate (intermediate_size)")?;
        let heads = pos(self.heads, d.heads, "heads (num_attention_heads)")?;
        let kv_heads = pos(self.kv_heads, d.kv_heads, "kv_heads (num_key_value_heads)")?;
        let vocab = pos(self.vocab, d.vocab, "vocab (vocab_size)")?;
        let head_dim = match self.head_dim.or(d.head_dim) {
            Some(0) => return Err(err("head_dim must be at least 1".into())),
            Some(h) => h,
            None if hidden % heads == 0 => hidden / heads,
            None => {
                return Err(err(format!(
                    "heads ({heads}) must divide hidden ({hidden}) to derive head_dim; or set head_dim explicitly"
                )))
            }
        };
        if heads % kv_heads != 0 {
            return Err(err(format!(
                "kv_heads ({kv_heads}) must divide heads ({heads}): each KV head serves a whole group of query heads"
            )));
        }
        if head_dim % 2 != 0 {
            return Err(err(format!("head_dim ({head_dim}) must be even for rotary embeddings")));
        }
        if vocab < tokenizer::MIN_VOCAB {
            return Err(err(format!(
                "vocab ({vocab}) must be at least {}: 3 special tokens + 256 byte tokens",
                tokenizer::MIN_VOCAB
            )));
        }
        let (experts, top_k) = if arch == Arch::Mixtral {
            let experts = pos(self.experts, d.experts, "experts (num_local_experts)")?;
            let top_k = pos(self.top_k, d.top_k, "top_k (num_experts_per_tok)")?;
            if top_k > experts {
                return Err(err(format!("top_k ({top_k}) must not exceed experts ({experts})")));
            }
            (Some(experts), Some(top_k))
        } else {
            if self.experts.is_some() || self.top_k.is_some() {
                return Err(err(format!("experts/top_k apply only to mixtral, not {name}")));
            }
            (None, None)
        };
        let window = match self.window.or(d.window).filter(|&w| w > 0) {
            Some(w) if arch == Arch::Llama => {
                return Err(err(format!("llama has no sliding window (got window {w}); use mistral")))
            }
            Some(_) if arch == Arch::Qwen2 && layers < 2 => return Err(err(
                "a qwen2 window applies from layer max_window_layers (at least 1) on, so it needs at least 2 layers"
                    .into(),
            )),
            None if arch == Arch::Gemma3 => {
                return Err(err("gemma3 needs a sliding window (its local attention layers)".into()))
            }
            w => w,
        };
        let tie = self.tie.or(d.tie).unwrap_or(false);
        let (rms_norm_eps, rope_theta, rope_factor, max_position_embeddings) = match arch {
            Arch::Llama => (1e-5, 500000.0, 8.0, 2048),
            Arch::Mistral => (1e-5, 10000.0, 1.0, 1024),
            Arch::Qwen2 => (1e-6, 1000000.0, 1.0, 1024),
            Arch::Mixtral => (1e-5, 1000000.0, 1.0, 1024),
            Arch::Gemma3 => (1e-6, 1000000.0, 2.0, 1024),
        };
        Ok(Resolved {
            arch,
            layers,
            hidden,
            intermediate,
            heads,
            kv_heads,
            head_dim,
            vocab,
            experts,
            top_k,
            window,
            dtype: self.dtype.unwrap_or_default(),
            tie,
            rms_norm_eps,
            rope_theta,
            rope_local_base_freq: 10000.0,
            rope_factor,
            max_position_embeddings,
        })
    }
}

/// Checks that the parsed config says what was asked for (a mismatch is a bug here).
fn check_spec(r: &Resolved, spec: &DecoderSpec, file: &Path) -> Result<()> {
    let window_layers: Vec<Option<i64>> = spec.layers.iter().map(|l| l.window).collect();
    let want_windows: Vec<Option<i64>> = (0..r.layers)
        .map(|i| {
            let w = r.window.map(|w| w as i64);
            match r.arch {
                Arch::Gemma3 => w.filter(|_| (i + 1) % config::GEMMA3_SLIDING_WINDOW_PATTERN != 0),
                Arch::Qwen2 => w.filter(|_| i >= (r.layers / 2).max(1)),
                _ => w,
            }
        })
        .collect();
    let got = (
        spec.arch,
        spec.num_layers(),
        spec.hidden_size,
        spec.intermediate_size,
        spec.num_heads,
        spec.num_kv_heads,
        spec.head_dim,
        spec.vocab_size,
        spec.tie_word_embeddings,
        spec.moe.map(|m| (m.experts, m.top_k)),
        window_layers,
    );
    let want = (
        r.arch,
        r.layers,
        r.hidden,
        r.intermediate,
        r.heads,
        r.kv_heads,
        r.head_dim,
        r.vocab,
        r.tie,
        r.experts.zip(r.top_k),
        want_windows,
    );
    if got != want {
        return Err(ModelError::config(
            file,
            format!("internal error: the synthetic config parses to {got:?}, not the requested {want:?}"),
        ));
    }
    Ok(())
}

/// The checkpoint tensors the lowered graph reads, by name, with their shapes.
pub fn graph_params(spec: &DecoderSpec) -> Result<BTreeMap<String, Vec<usize>>> {
    let graph = lower(spec, "synth", &LowerOptions::default())?;
    let mut params = BTreeMap::new();
    for n in graph.node_ids() {
        let node = graph.node(n);
        if node.op != OpKind::Param {
            continue;
        }
        let name = node.attrs.str("name").unwrap_or_default().to_string();
        let shape = node.ty.shape.eval(&|_| None).map_err(|e| ModelError::Tensor {
            file: PathBuf::from("model.safetensors"),
            tensor: name.clone(),
            msg: e,
        })?;
        params.insert(name, shape);
    }
    Ok(params)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |e| ModelError::io(path, e)
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).expect("JSON serializes") + "\n";
    std::fs::write(path, text).map_err(io_err(path))
}

/// A unique sibling path of `dst`: `.{name}.{tag}-{pid}-{n}`.
fn sibling(dst: &Path, tag: &str) -> Result<PathBuf> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = dst
        .file_name()
        .ok_or_else(|| ModelError::config(dst, "destination must name a folder (not '.', '..' or '/')"))?;
    let parent = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    Ok(parent.join(format!(".{}.{tag}-{}-{n}-{nanos}", name.to_string_lossy(), std::process::id())))
}

/// Writes a synthetic model folder at `dst` (see the module docs). `dst` must not exist, or be an
/// empty folder, or `opts.force` must be set. Bad options fail before anything is created; a
/// failure while writing removes the temporary folder.
pub fn write_synthetic_model(opts: &SynthOptions, dst: &Path) -> Result<SynthReport> {
    let r = opts.resolve(dst)?;
    if dst.exists() || dst.is_symlink() {
        if !dst.is_dir() {
            return Err(ModelError::config(dst, "exists and is not a folder"));
        }
        let non_empty = std::fs::read_dir(dst).map_err(io_err(dst))?.next().is_some();
        if non_empty && !opts.force {
            return Err(ModelError::config(dst, "folder exists and is not empty (force to overwrite it)"));
        }
    }
    // Everything that can fail for a reason other than I/O is computed before touching the disk.
    let config = config::config_json(&r);
    let spec = parse_config(&dst.join("config.json"), &config)?;
    check_spec(&r, &spec, &dst.join("config.json"))?;
    let params = graph_params(&spec)?;
    let tensors: Vec<SynthTensor> = params
        .iter()
        .map(|(name, shape)| SynthTensor {
            name: name.clone(),
            shape: shape.clone(),
            init: weights::init_for(&spec, name, shape),
            dtype: r.dtype,
            seed: opts.seed,
        })
        .collect();
    let bpe = tokenizer::train(r.vocab);
    debug_assert_eq!(bpe.tokens.len(), r.vocab);

    let tmp = sibling(dst, "synth-tmp")?;
    if let Some(parent) = tmp.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    std::fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    let written = (|| -> Result<(Vec<String>, u64)> {
        let mut files = Vec::new();
        let mut add = |name: &str| {
            files.push(name.to_string());
            tmp.join(name)
        };
        write_json(&add("config.json"), &config)?;
        write_json(&add("generation_config.json"), &tokenizer::generation_config())?;
        let st = add("model.safetensors");
        let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
        safetensors::serialize_to_file(tensors.iter().map(|t| (t.name.as_str(), t)), &Some(metadata), &st)
            .map_err(|e| ModelError::config(&st, format!("writing safetensors: {e}")))?;
        let weight_bytes = std::fs::metadata(&st).map_err(io_err(&st))?.len();
        let tj = add("tokenizer.json");
        std::fs::write(&tj, tokenizer::tokenizer_json(&bpe)).map_err(io_err(&tj))?;
        write_json(&add("tokenizer_config.json"), &tokenizer::tokenizer_config(r.max_position_embeddings, r.vocab))?;
        Ok((files, weight_bytes))
    })();
    let (files, weight_bytes) = match written.and_then(|w| install(&tmp, dst).map(|()| w)) {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    tracing::info!(dir = %dst.display(), arch = r.arch.name(), seed = opts.seed, "wrote synthetic model");
    Ok(SynthReport {
        dir: dst.to_path_buf(),
        files,
        params: tensors.iter().map(|t| t.numel()).sum(),
        tensors: tensors.len(),
        spec,
        config,
        dtype: r.dtype,
        seed: opts.seed,
        weight_bytes,
        merges: bpe.merges.len(),
        learned_merges: bpe.learned,
    })
}

/// Renames the finished `tmp` folder to `dst`, replacing an empty `dst` folder, or (when the
/// caller allowed it) a non-empty one, which is moved aside first and deleted once `tmp` is in
/// place (restored if the rename fails).
fn install(tmp: &Path, dst: &Path) -> Result<()> {
    if !dst.exists() {
        return std::fs::rename(tmp, dst).map_err(io_err(dst));
    }
    let old = sibling(dst, "synth-old")?;
    std::fs::rename(dst, &old).map_err(io_err(dst))?;
    if let Err(e) = std::fs::rename(tmp, dst) {
        let _ = std::fs::rename(&old, dst);
        return Err(ModelError::io(dst, e));
    }
    std::fs::remove_dir_all(&old).map_err(io_err(&old))
}
