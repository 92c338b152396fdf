//! GGUF metadata → Hugging Face `config.json` and `generation_config.json`.
//!
//! llama.cpp keeps hyper-parameters under `{arch}.*` keys (`llama.embedding_length`, ...).
//! Some are not stored at all and are fixed by llama.cpp's graph code (e.g. Gemma 3's local
//! RoPE base); those get the value llama.cpp assumes, with a warning where it may be wrong.
//! Shapes are cross-checked against the tensors so that a file whose metadata lies fails
//! here, with a message, rather than producing a checkpoint that loads and computes garbage.

use serde_json::{json, Value};

use super::arch::Family;
use super::error::{GgufError, Result};
use super::metadata::{MetadataArray, MetadataValue};
use super::reader::GgufFile;

/// Output element type of `model.safetensors`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OutputDType {
    /// 32-bit float: exact for every GGUF type (all dequantize to f32).
    #[default]
    F32,
    /// bfloat16: half the size; rounds to nearest-even.
    BF16,
    /// IEEE half: half the size; values beyond ±65504 become infinite, so a check runs.
    F16,
}

impl OutputDType {
    /// The `torch_dtype` string Hugging Face writes in `config.json`.
    pub fn torch_dtype(self) -> &'static str {
        match self {
            OutputDType::F32 => "float32",
            OutputDType::BF16 => "bfloat16",
            OutputDType::F16 => "float16",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            OutputDType::F32 => 4,
            OutputDType::BF16 | OutputDType::F16 => 2,
        }
    }
}

/// The hyper-parameters the exporter needs, resolved from metadata and tensor shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelParams {
    /// `general.architecture`.
    pub arch: String,
    pub family: Family,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub context_length: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// `true` when the file has no `output.weight`: the LM head reuses the embedding.
    pub tie_word_embeddings: bool,
    pub num_experts: usize,
    pub num_experts_used: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
    /// End-of-turn token (`tokenizer.ggml.eot_token_id`), if distinct from EOS.
    pub eot_token_id: Option<u32>,
}

/// Typed access to `{arch}.*` metadata with errors that name the key.
struct Meta<'a> {
    file: &'a GgufFile,
    arch: &'a str,
}

impl<'a> Meta<'a> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }

    fn bad(&self, key: &str, reason: impl Into<String>) -> GgufError {
        GgufError::InvalidMetadata { path: self.file.path().to_path_buf(), key: key.to_string(), reason: reason.into() }
    }

    fn get(&self, full_key: &str) -> Option<&'a MetadataValue> {
        self.file.metadata().get(full_key)
    }

    /// A non-negative integer; a per-layer array is accepted when all entries are equal.
    fn uint(&self, full_key: &str) -> Result<Option<u64>> {
        match self.get(full_key) {
            None => Ok(None),
            Some(MetadataValue::Array(a)) => {
                let vals = a.to_i64_vec().ok_or_else(|| self.bad(full_key, "expected integers"))?;
                match vals.split_first() {
                    None => Err(self.bad(full_key, "empty array")),
                    Some((first, rest)) if rest.iter().all(|v| v == first) && *first >= 0 => Ok(Some(*first as u64)),
                    Some(_) => Err(self.bad(
                        full_key,
                        "per-layer values differ; Hugging Face configs for this architecture need one value",
                    )),
                }
            }
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.bad(full_key, format!("expected an unsigned integer, found {v:?}"))),
        }
    }

    fn arch_uint(&self, k: &str) -> Result<Option<u64>> {
        self.uint(&self.key(k))
    }

    fn arch_usize_required(&self, k: &str) -> Result<usize> {
        let key = self.key(k);
        let v = self
            .uint(&key)?
            .ok_or_else(|| GgufError::MissingMetadata { path: self.file.path().to_path_buf(), key: key.clone() })?;
        usize::try_from(v).map_err(|_| self.bad(&key, "value too large"))
    }

    fn float(&self, full_key: &str) -> Result<Option<f64>> {
        match self.get(full_key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(f) if f.is_finite() => Ok(Some(f)),
                _ => Err(self.bad(full_key, format!("expected a finite number, found {v:?}"))),
            },
        }
    }

    fn arch_float(&self, k: &str) -> Result<Option<f64>> {
        self.float(&self.key(k))
    }

    fn string(&self, full_key: &str) -> Result<Option<&'a str>> {
        match self.get(full_key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.bad(full_key, "expected a string")),
        }
    }

    fn token_id(&self, full_key: &str, vocab: usize) -> Result<Option<u32>> {
        match self.uint(full_key)? {
            None => Ok(None),
            // Some converters write -1 / u32::MAX for "none".
            Some(v) if v >= vocab as u64 => {
                tracing::warn!(key = full_key, id = v, vocab, "token id out of vocabulary range, ignored");
                Ok(None)
            }
            Some(v) => Ok(Some(v as u32)),
        }
    }
}

/// Everything derived from metadata, ready to serialize.
#[derive(Debug)]
pub(crate) struct Configs {
    pub params: ModelParams,
    pub config: Value,
    pub generation_config: Value,
    pub warnings: Vec<String>,
}

/// Resolves [`ModelParams`] and builds `config.json` / `generation_config.json`.
pub(crate) fn build_configs(file: &GgufFile, arch: &str, family: Family, dtype: OutputDType) -> Result<Configs> {
    let m = Meta { file, arch };
    let mut warnings = Vec::new();
    let mut warn = |w: String| {
        tracing::warn!("{w}");
        warnings.push(w);
    };
    let inconsistent = |reason: String| GgufError::Inconsistent { path: file.path().to_path_buf(), reason };

    let hidden = m.arch_usize_required("embedding_length")?;
    let num_layers = m.arch_usize_required("block_count")?;
    let num_heads = m.arch_usize_required("attention.head_count")?;
    if hidden == 0 || num_heads == 0 || num_layers == 0 {
        return Err(inconsistent(format!(
            "embedding_length {hidden}, block_count {num_layers}, head_count {num_heads} must all be positive"
        )));
    }
    let num_kv_heads = match m.arch_uint("attention.head_count_kv")? {
        Some(v) => v as usize,
        None => num_heads,
    };
    if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
        return Err(inconsistent(format!("head_count {num_heads} is not a multiple of head_count_kv {num_kv_heads}")));
    }
    let head_dim = match m.arch_uint("attention.key_length")? {
        Some(v) => v as usize,
        None if hidden % num_heads == 0 => hidden / num_heads,
        None => {
            return Err(inconsistent(format!("embedding_length {hidden} is not divisible by head_count {num_heads}")))
        }
    };
    if let Some(vl) = m.arch_uint("attention.value_length")? {
        if vl as usize != head_dim {
            return Err(inconsistent(format!("value_length {vl} differs from key_length {head_dim}")));
        }
    }
    // Rotary embeddings on only the first `rope.dimension_count` dims of each head are HF's
    // `partial_rotary_factor`.
    let mut partial_rotary_factor = None;
    if let Some(rd) = m.arch_uint("rope.dimension_count")? {
        let rd = rd as usize;
        if rd == 0 || rd > head_dim || rd % 2 != 0 {
            return Err(m.bad(&m.key("rope.dimension_count"), format!("{rd} is not an even number in 1..={head_dim}")));
        }
        if rd < head_dim {
            partial_rotary_factor = Some(rd as f64 / head_dim as f64);
        }
    }

    // Cross-check shapes: these are exactly the numbers the Q/K un-permutation relies on.
    let shape = |name: &str| file.tensor(name).map(|t| t.shape());
    let embd = shape("token_embd.weight").ok_or_else(|| inconsistent("no token_embd.weight tensor".into()))?;
    if embd.len() != 2 || embd[1] != hidden {
        return Err(inconsistent(format!("token_embd.weight has shape {embd:?}, expected [vocab, {hidden}]")));
    }
    for (name, heads) in [("blk.0.attn_q.weight", num_heads), ("blk.0.attn_k.weight", num_kv_heads)] {
        if let Some(s) = shape(name) {
            if s.len() != 2 || s[0] != heads * head_dim {
                return Err(inconsistent(format!(
                    "{name} has shape {s:?}, expected [{heads} heads x {head_dim}, ...] = [{}, ...]",
                    heads * head_dim
                )));
            }
        }
    }

    let num_experts = m.arch_uint("expert_count")?.unwrap_or(0) as usize;
    let num_experts_used = m.arch_uint("expert_used_count")?.unwrap_or(0) as usize;
    if family == Family::Mixtral && (num_experts == 0 || num_experts_used == 0) {
        return Err(GgufError::MissingMetadata {
            path: file.path().to_path_buf(),
            key: m.key("expert_count / expert_used_count"),
        });
    }

    let intermediate_size = match m.arch_uint("feed_forward_length")? {
        Some(v) => v as usize,
        None => {
            // Fall back to the tensors: ffn_up is [ff, hidden], ffn_up_exps is [E, ff, hidden].
            let s = shape("blk.0.ffn_up.weight").or_else(|| shape("blk.0.ffn_up_exps.weight"));
            let ff = s.and_then(|s| s.len().checked_sub(2).map(|i| s[i]));
            let ff = ff.ok_or_else(|| GgufError::MissingMetadata {
                path: file.path().to_path_buf(),
                key: m.key("feed_forward_length"),
            })?;
            warn(format!("{arch}.feed_forward_length missing; using {ff} from blk.0.ffn_up"));
            ff
        }
    };

    let context_length = match m.arch_uint("context_length")? {
        Some(v) => v as usize,
        None => {
            warn(format!("{arch}.context_length missing; assuming 2048"));
            2048
        }
    };

    let default_eps = if matches!(family, Family::Llama | Family::Mixtral) { 1e-5 } else { 1e-6 };
    let rms_norm_eps = m.arch_float("attention.layer_norm_rms_epsilon")?.unwrap_or(default_eps);
    let rope_theta = match m.arch_float("rope.freq_base")? {
        Some(v) => v,
        None => {
            let d = if family == Family::Gemma3 { 1_000_000.0 } else { 10_000.0 };
            warn(format!("{arch}.rope.freq_base missing; assuming {d}"));
            d
        }
    };

    // Vocabulary: the embedding's row count is authoritative for the checkpoint.
    let vocab_size = embd[0];
    let n_tokens = file.metadata().get_array("tokenizer.ggml.tokens").map(MetadataArray::len);
    if let Some(n) = n_tokens {
        if n != vocab_size {
            warn(format!(
                "tokenizer has {n} tokens but token_embd.weight has {vocab_size} rows; config uses {vocab_size}"
            ));
        }
    }
    let tok_vocab = n_tokens.unwrap_or(vocab_size).max(vocab_size);
    let bos_token_id = m.token_id("tokenizer.ggml.bos_token_id", tok_vocab)?;
    let eos_token_id = m.token_id("tokenizer.ggml.eos_token_id", tok_vocab)?;
    let pad_token_id = m.token_id("tokenizer.ggml.padding_token_id", tok_vocab)?;
    let eot_token_id = m.token_id("tokenizer.ggml.eot_token_id", tok_vocab)?.filter(|&e| Some(e) != eos_token_id);

    let tie_word_embeddings = file.tensor("output.weight").is_none();

    let params = ModelParams {
        arch: arch.to_string(),
        family,
        hidden_size: hidden,
        num_layers,
        num_heads,
        num_kv_heads,
        head_dim,
        intermediate_size,
        context_length,
        vocab_size,
        rms_norm_eps,
        rope_theta,
        tie_word_embeddings,
        num_experts,
        num_experts_used,
        bos_token_id,
        eos_token_id,
        pad_token_id,
        eot_token_id,
    };

    let rope_scaling = rope_scaling(&m, &params, &mut warn)?;
    let has_attn_bias = file.tensor("blk.0.attn_q.bias").is_some();
    let has_mlp_bias = file.tensor("blk.0.ffn_up.bias").is_some();

    let mut c = json!({
        "architectures": [family.hf_architecture()],
        "model_type": family.model_type(),
        "hidden_size": hidden,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "head_dim": head_dim,
        "max_position_embeddings": context_length,
        "rms_norm_eps": rms_norm_eps,
        "rope_theta": rope_theta,
        "rope_scaling": rope_scaling,
        "vocab_size": vocab_size,
        "tie_word_embeddings": tie_word_embeddings,
        "torch_dtype": dtype.torch_dtype(),
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": true,
    });
    let obj = c.as_object_mut().expect("json! object");
    if let Some(p) = pad_token_id {
        obj.insert("pad_token_id".into(), json!(p));
    }
    if let Some(f) = partial_rotary_factor {
        obj.insert("partial_rotary_factor".into(), json!(f));
    }
    match family {
        Family::Llama => {
            obj.insert("hidden_act".into(), json!("silu"));
            obj.insert("attention_bias".into(), json!(has_attn_bias));
            obj.insert("mlp_bias".into(), json!(has_mlp_bias));
            obj.insert("pretraining_tp".into(), json!(1));
        }
        Family::Mixtral => {
            obj.insert("hidden_act".into(), json!("silu"));
            obj.insert("num_local_experts".into(), json!(num_experts));
            obj.insert("num_experts_per_tok".into(), json!(num_experts_used));
            obj.insert("output_router_logits".into(), json!(false));
            obj.insert("router_aux_loss_coef".into(), json!(0.02));
            obj.insert("sliding_window".into(), Value::Null);
        }
        Family::Qwen2 => {
            obj.insert("hidden_act".into(), json!("silu"));
            obj.insert("use_sliding_window".into(), json!(false));
            obj.insert("sliding_window".into(), json!(context_length));
            obj.insert("max_window_layers".into(), json!(num_layers));
        }
        Family::Gemma | Family::Gemma2 | Family::Gemma3 => {
            obj.insert("hidden_activation".into(), json!("gelu_pytorch_tanh"));
            obj.insert("hidden_act".into(), json!("gelu_pytorch_tanh"));
            obj.insert("attention_bias".into(), json!(false));
        }
    }
    if matches!(family, Family::Gemma2 | Family::Gemma3) {
        let window = m.arch_uint("attention.sliding_window")?.map(|v| v as usize).unwrap_or(4096);
        obj.insert("sliding_window".into(), json!(window));
        // Not stored in GGUF; llama.cpp scales queries by 1/sqrt(head_dim), which is what
        // query_pre_attn_scalar = head_dim means (true for Gemma 2/3 except the 27B models).
        obj.insert("query_pre_attn_scalar".into(), json!(head_dim));
        warn(format!("query_pre_attn_scalar is not stored in GGUF; assuming head_dim = {head_dim}"));
        let softcap = |k: &str| m.arch_float(k).map(|v| v.map_or(Value::Null, |f| json!(f)));
        obj.insert("attn_logit_softcapping".into(), softcap("attn_logit_softcapping")?);
        obj.insert("final_logit_softcapping".into(), softcap("final_logit_softcapping")?);
    }
    if family == Family::Gemma3 {
        // llama.cpp hard-codes these for Gemma 3 (every 6th layer global, local base 10k).
        obj.insert("rope_local_base_freq".into(), json!(10_000.0));
        obj.insert("sliding_window_pattern".into(), json!(6));
    }

    let mut gen = json!({ "_from_model_config": true });
    let g = gen.as_object_mut().expect("json! object");
    if let Some(b) = bos_token_id {
        g.insert("bos_token_id".into(), json!(b));
    }
    match (eos_token_id, eot_token_id) {
        (Some(e), Some(t)) => {
            g.insert("eos_token_id".into(), json!([e, t]));
        }
        (Some(e), None) | (None, Some(e)) => {
            g.insert("eos_token_id".into(), json!(e));
        }
        (None, None) => {}
    }
    if let Some(p) = pad_token_id {
        g.insert("pad_token_id".into(), json!(p));
    }

    Ok(Configs { params, config: c, generation_config: gen, warnings })
}

/// `rope_scaling` from `{arch}.rope.scaling.*`, the legacy `{arch}.rope.scale_linear`, or —
/// for Llama 3.1+ — the `rope_freqs.weight` tensor in which llama.cpp stores the per-frequency
/// factors it computed from HF's `rope_scaling`; those are matched back to the parameters.
fn rope_scaling(m: &Meta<'_>, p: &ModelParams, warn: &mut dyn FnMut(String)) -> Result<Value> {
    let kind = m.string(&m.key("rope.scaling.type"))?;
    let factor = m.arch_float("rope.scaling.factor")?;
    let orig_ctx = m.arch_uint("rope.scaling.original_context_length")?;
    match kind {
        Some("linear") => {
            let f = match factor {
                Some(f) => f,
                None => m.arch_float("rope.scale_linear")?.unwrap_or(1.0),
            };
            if f == 1.0 {
                return Ok(Value::Null);
            }
            Ok(json!({ "type": "linear", "rope_type": "linear", "factor": f }))
        }
        Some("yarn") => {
            let f = factor.ok_or_else(|| GgufError::MissingMetadata {
                path: m.file.path().to_path_buf(),
                key: m.key("rope.scaling.factor"),
            })?;
            let mut v = json!({ "type": "yarn", "rope_type": "yarn", "factor": f });
            if let Some(o) = orig_ctx {
                v["original_max_position_embeddings"] = json!(o);
            }
            if let Some(a) = m.arch_float("rope.scaling.attn_factor")? {
                v["attention_factor"] = json!(a);
            }
            Ok(v)
        }
        Some("none") | None => {
            if let Some(f) = m.arch_float("rope.scale_linear")?.filter(|&f| f != 1.0) {
                return Ok(json!({ "type": "linear", "rope_type": "linear", "factor": f }));
            }
            if p.family.permutes_qk() && m.file.tensor("rope_freqs.weight").is_some() {
                let freqs = m.file.tensor_f32("rope_freqs.weight")?;
                return Ok(match infer_llama3_rope(&freqs, p.rope_theta, p.head_dim) {
                    Some(v) => v,
                    None => {
                        warn("rope_freqs.weight does not match Llama 3 rope scaling; rope_scaling left null".into());
                        Value::Null
                    }
                });
            }
            Ok(Value::Null)
        }
        Some(other) => {
            warn(format!("rope scaling type `{other}` is not exported; rope_scaling left null"));
            Ok(Value::Null)
        }
    }
}

/// The factors llama.cpp's converter computes for HF `rope_type: "llama3"`.
pub(crate) fn llama3_rope_factors(
    theta: f64,
    head_dim: usize,
    factor: f64,
    low: f64,
    high: f64,
    orig_ctx: f64,
) -> Vec<f64> {
    let low_wavelen = orig_ctx / low;
    let high_wavelen = orig_ctx / high;
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (orig_ctx / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

fn infer_llama3_rope(freqs: &[f32], theta: f64, head_dim: usize) -> Option<Value> {
    if freqs.len() != head_dim / 2 || freqs.is_empty() {
        return None;
    }
    // The long-wavelength factors equal `factor` itself.
    let factor = f64::from(freqs.iter().copied().fold(f32::MIN, f32::max));
    for (low, high, orig) in [(1.0, 4.0, 8192.0), (1.0, 4.0, 4096.0), (1.0, 2.0, 8192.0)] {
        let want = llama3_rope_factors(theta, head_dim, factor, low, high, orig);
        if want.iter().zip(freqs).all(|(w, &g)| (w - f64::from(g)).abs() <= 1e-3 * w.abs().max(1.0)) {
            return Some(json!({
                "rope_type": "llama3",
                "factor": super::metadata::f32_to_f64_shortest(factor as f32),
                "low_freq_factor": low,
                "high_freq_factor": high,
                "original_max_position_embeddings": orig as u64,
            }));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_factors_round_trip() {
        let freqs: Vec<f32> =
            llama3_rope_factors(500_000.0, 128, 8.0, 1.0, 4.0, 8192.0).iter().map(|&v| v as f32).collect();
        assert_eq!(freqs[0], 1.0);
        assert_eq!(*freqs.last().unwrap(), 8.0);
        let v = infer_llama3_rope(&freqs, 500_000.0, 128).unwrap();
        assert_eq!(v["rope_type"], "llama3");
        assert_eq!(v["factor"], 8.0);
        assert_eq!(v["original_max_position_embeddings"], 8192);
        assert!(infer_llama3_rope(&[1.0; 3], 10_000.0, 128).is_none());
    }

    #[test]
    fn dtype_strings() {
        assert_eq!(OutputDType::default(), OutputDType::F32);
        assert_eq!(OutputDType::BF16.torch_dtype(), "bfloat16");
        assert_eq!(OutputDType::F16.size(), 2);
    }
}
