//! Llama (Llama 2/3, SmolLM2, …) and Mistral: RMS-normed GQA attention with RoPE (optionally
//! llama3/linear/yarn-scaled), SwiGLU MLP. Mistral adds a sliding window. Reference:
//! transformers' `modeling_llama.py` / `modeling_mistral.py`, candle's `llama.rs` / `mistral.rs`.

use super::{activation, base_spec, common, rope, uniform_layers, window};
use crate::config::ConfigJson;
use crate::error::Result;
use crate::spec::{Arch, DecoderSpec};

pub fn parse(cfg: &ConfigJson, arch: Arch) -> Result<DecoderSpec> {
    let c = common(cfg, false, 1e-6)?;
    let rope = rope(cfg, "rope_theta", 10000.0, c.head_dim, true)?;
    let win = if arch == Arch::Mistral { window(cfg)? } else { None };
    let layers = uniform_layers(c.num_layers, win, &rope);
    let mut spec = base_spec(arch, c, layers, activation(cfg, "hidden_act", "silu")?);
    let attention_bias = cfg.opt_bool("attention_bias")?.unwrap_or(false);
    spec.qkv_bias = attention_bias;
    spec.o_bias = attention_bias;
    spec.mlp_bias = cfg.opt_bool("mlp_bias")?.unwrap_or(false);
    Ok(spec)
}
