//! Gemma 3 (text): GQA attention with RMS norms on q and k, sandwich norms (before and after both
//! attention and MLP), norm weights applied as (1 + w), GELU-tanh gated MLP, embeddings scaled by
//! sqrt(hidden_size), attention scaled by query_pre_attn_scalar^-0.5, and sliding-window layers
//! (local RoPE base, no scaling) interleaved with global ones (rope_theta, rope_scaling).
//! Reference: transformers' `modeling_gemma3.py`.

use super::{activation, base_spec, common, layer_type_is_sliding, rope};
use crate::config::ConfigJson;
use crate::error::Result;
use crate::spec::{Arch, DecoderSpec, LayerSpec};

pub fn parse(cfg: &ConfigJson, prefix: &str, lm_head: &str) -> Result<DecoderSpec> {
    let c = common(cfg, true, 1e-6)?;
    let head_dim = c.head_dim;
    let global = rope(cfg, "rope_theta", 1e6, head_dim, true)?;
    let local = rope(cfg, "rope_local_base_freq", 10000.0, head_dim, false)?;
    let window = cfg.opt_usize("sliding_window")?.unwrap_or(4096) as i64;
    let layer_types = cfg.opt_strings("layer_types")?;
    let pattern = cfg.opt_usize("sliding_window_pattern")?.unwrap_or(6);
    let mut layers = Vec::with_capacity(c.num_layers);
    for i in 0..c.num_layers {
        let sliding = layer_type_is_sliding(cfg, layer_types.as_deref(), i)?.unwrap_or((i + 1) % pattern != 0);
        layers.push(if sliding {
            LayerSpec { window: Some(window), rope: local.clone() }
        } else {
            LayerSpec { window: None, rope: global.clone() }
        });
    }
    let hidden = c.hidden_size as f64;
    let query_pre_attn_scalar = cfg.opt_f64("query_pre_attn_scalar")?.unwrap_or(head_dim as f64);
    let act = activation(cfg, "hidden_activation", "gelu_pytorch_tanh")?;
    let mut spec = base_spec(Arch::Gemma3, c, layers, act);
    spec.qkv_bias = cfg.opt_bool("attention_bias")?.unwrap_or(false);
    spec.o_bias = spec.qkv_bias;
    spec.norm_weight_offset = 1.0;
    spec.embed_scale = Some(hidden.sqrt());
    spec.qk_norm = true;
    spec.sandwich_norms = true;
    spec.attn_scale = Some(query_pre_attn_scalar.powf(-0.5));
    spec.attn_softcap = cfg.opt_f64("attn_logit_softcapping")?;
    spec.final_softcap = cfg.opt_f64("final_logit_softcapping")?;
    spec.weight_prefix = prefix.to_string();
    spec.lm_head_name = lm_head.to_string();
    Ok(spec)
}
