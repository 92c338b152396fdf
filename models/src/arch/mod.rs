//! Architecture definitions: each file turns one family's `config.json` into a [`DecoderSpec`],
//! with the defaults Hugging Face's config classes use and a clear error for options Kiln does not
//! implement. Names mirror the checkpoints (`model.layers.{i}.self_attn.q_proj`), as candle does.

mod gemma3;
mod llama;
mod mixtral;
mod qwen2;

use crate::config::ConfigJson;
use crate::error::{ModelError, Result};
use crate::spec::{Activation, Arch, DecoderSpec, LayerSpec};
use kiln_ir::{RopeLayout, RopeScaling, RopeSpec};
use serde_json::Value;
use std::path::Path;

/// The `model_type`s Kiln understands, for error messages.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["llama", "mistral", "qwen2", "mixtral", "gemma3", "gemma3_text"];

/// Parses a Hugging Face config.json value into a decoder description.
pub fn parse_config(file: &Path, value: &Value) -> Result<DecoderSpec> {
    let cfg = ConfigJson::new(file, value)?;
    let model_type = cfg.str("model_type")?;
    match model_type {
        "llama" => llama::parse(&cfg, Arch::Llama),
        "mistral" => llama::parse(&cfg, Arch::Mistral),
        "qwen2" => qwen2::parse(&cfg),
        "mixtral" => mixtral::parse(&cfg),
        "gemma3_text" => gemma3::parse(&cfg, "model.", "lm_head.weight"),
        "gemma3" => {
            // The multimodal checkpoint: the text decoder lives under text_config / language_model.
            let text = cfg.opt_object("text_config")?.ok_or_else(|| cfg.err("gemma3 config needs 'text_config'"))?;
            gemma3::parse(&text, "language_model.model.", "language_model.lm_head.weight")
        }
        other => Err(ModelError::UnknownArch {
            file: file.to_path_buf(),
            found: other.to_string(),
            supported: SUPPORTED_MODEL_TYPES.join(", "),
        }),
    }
}

/// Fields every supported family shares, with HF's defaults.
pub(crate) struct Common {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub norm_eps: f64,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

pub(crate) fn common(cfg: &ConfigJson, default_tie: bool, default_eps: f64) -> Result<Common> {
    let hidden_size = cfg.usize("hidden_size")?;
    let num_heads = cfg.usize("num_attention_heads")?;
    let num_kv_heads = cfg.opt_usize("num_key_value_heads")?.unwrap_or(num_heads);
    if num_heads % num_kv_heads != 0 {
        return Err(cfg.err(format!(
            "num_attention_heads ({num_heads}) must be a multiple of num_key_value_heads ({num_kv_heads})"
        )));
    }
    let head_dim = match cfg.opt_usize("head_dim")? {
        Some(d) => d,
        None if hidden_size % num_heads == 0 => hidden_size / num_heads,
        None => {
            return Err(cfg.err(format!(
                "hidden_size ({hidden_size}) is not a multiple of num_attention_heads ({num_heads}); set head_dim"
            )))
        }
    };
    if head_dim % 2 != 0 {
        return Err(cfg.err(format!("head_dim ({head_dim}) must be even for rotary embeddings")));
    }
    Ok(Common {
        vocab_size: cfg.usize("vocab_size")?,
        hidden_size,
        intermediate_size: cfg.usize("intermediate_size")?,
        num_layers: cfg.usize("num_hidden_layers")?,
        num_heads,
        num_kv_heads,
        head_dim,
        norm_eps: cfg.opt_f64("rms_norm_eps")?.unwrap_or(default_eps),
        tie_word_embeddings: cfg.opt_bool("tie_word_embeddings")?.unwrap_or(default_tie),
        max_position_embeddings: cfg.opt_usize("max_position_embeddings")?,
        bos_token_id: cfg.token_ids("bos_token_id")?.first().copied(),
        eos_token_ids: cfg.token_ids("eos_token_id")?,
    })
}

pub(crate) fn activation(cfg: &ConfigJson, key: &str, default: &str) -> Result<Activation> {
    let name = cfg.opt_str(key)?.unwrap_or(default);
    Activation::from_hf(name).ok_or_else(|| {
        cfg.err(format!("unsupported {key} '{name}' (supported: silu, gelu, gelu_pytorch_tanh, gelu_new, gelu_fast)"))
    })
}

/// RoPE from `rope_theta`, `rope_scaling` and `partial_rotary_factor`.
pub(crate) fn rope(
    cfg: &ConfigJson,
    theta_key: &str,
    default_theta: f64,
    head_dim: usize,
    scaled: bool,
) -> Result<RopeSpec> {
    let theta = cfg.opt_f64(theta_key)?.unwrap_or(default_theta);
    let mut spec = RopeSpec::new(RopeLayout::Neox, theta);
    if let Some(f) = cfg.opt_f64("partial_rotary_factor")? {
        let d = (head_dim as f64 * f) as i64;
        if !(f > 0.0 && f <= 1.0) || d % 2 != 0 {
            return Err(
                cfg.err(format!("partial_rotary_factor {f} must give an even rotary dim ≤ head_dim {head_dim}"))
            );
        }
        if (d as usize) < head_dim {
            spec.dim = Some(d);
        }
    }
    if scaled {
        spec.scaling = rope_scaling(cfg)?;
    }
    Ok(spec)
}

fn rope_scaling(cfg: &ConfigJson) -> Result<RopeScaling> {
    let Some(rs) = cfg.opt_object("rope_scaling")? else { return Ok(RopeScaling::None) };
    let kind = match rs.opt_str("rope_type")? {
        Some(k) => k,
        None => rs.opt_str("type")?.ok_or_else(|| rs.err("rope_scaling needs 'rope_type'"))?,
    };
    let original = |rs: &ConfigJson| -> Result<i64> {
        match rs.opt_usize("original_max_position_embeddings")? {
            Some(n) => Ok(n as i64),
            None => cfg
                .opt_usize("max_position_embeddings")?
                .map(|n| n as i64)
                .ok_or_else(|| rs.err("rope_scaling needs 'original_max_position_embeddings'")),
        }
    };
    Ok(match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: rs.f64("factor")? },
        "llama3" => RopeScaling::Llama3 {
            factor: rs.f64("factor")?,
            low_freq_factor: rs.f64("low_freq_factor")?,
            high_freq_factor: rs.f64("high_freq_factor")?,
            original_max_position: original(&rs)?,
        },
        "yarn" => RopeScaling::Yarn {
            factor: rs.f64("factor")?,
            original_max_position: original(&rs)?,
            beta_fast: rs.opt_f64("beta_fast")?.unwrap_or(32.0),
            beta_slow: rs.opt_f64("beta_slow")?.unwrap_or(1.0),
            attention_factor: rs.opt_f64("attention_factor")?,
        },
        other => {
            return Err(
                rs.err(format!("unsupported rope_scaling type '{other}' (supported: default, linear, llama3, yarn)"))
            )
        }
    })
}

/// Every layer alike.
pub(crate) fn uniform_layers(n: usize, window: Option<i64>, rope: &RopeSpec) -> Vec<LayerSpec> {
    (0..n).map(|_| LayerSpec { window, rope: rope.clone() }).collect()
}

/// Whether layer `i` uses sliding-window attention according to `layer_types`, if the config
/// has that list (newer Hugging Face configs do); `None` when it does not.
pub(crate) fn layer_type_is_sliding(cfg: &ConfigJson, types: Option<&[&str]>, i: usize) -> Result<Option<bool>> {
    let Some(types) = types else { return Ok(None) };
    match types.get(i) {
        Some(&"sliding_attention") => Ok(Some(true)),
        Some(&"full_attention") => Ok(Some(false)),
        other => Err(cfg.err(format!("layer_types[{i}] must be sliding_attention or full_attention, found {other:?}"))),
    }
}

/// `sliding_window` as a positive integer, or none.
pub(crate) fn window(cfg: &ConfigJson) -> Result<Option<i64>> {
    Ok(cfg.opt_usize("sliding_window")?.map(|w| w as i64))
}

/// A plain decoder spec from the common fields; families adjust what differs.
pub(crate) fn base_spec(arch: Arch, c: Common, layers: Vec<LayerSpec>, activation: Activation) -> DecoderSpec {
    DecoderSpec {
        arch,
        vocab_size: c.vocab_size,
        hidden_size: c.hidden_size,
        intermediate_size: c.intermediate_size,
        num_heads: c.num_heads,
        num_kv_heads: c.num_kv_heads,
        head_dim: c.head_dim,
        layers,
        norm_eps: c.norm_eps,
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
        activation,
        tie_word_embeddings: c.tie_word_embeddings,
        moe: None,
        norm_weight_offset: 0.0,
        embed_scale: None,
        qk_norm: false,
        sandwich_norms: false,
        attn_scale: None,
        attn_softcap: None,
        final_softcap: None,
        weight_prefix: "model.".to_string(),
        lm_head_name: "lm_head.weight".to_string(),
        max_position_embeddings: c.max_position_embeddings,
        bos_token_id: c.bos_token_id,
        eos_token_ids: c.eos_token_ids,
    }
}
