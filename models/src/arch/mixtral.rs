//! Mixtral: Mistral attention with a sparsely-gated MoE FFN (top-k of E SwiGLU experts, the chosen
//! experts' softmax weights renormalized). Reference: `modeling_mixtral.py`, candle's `mixtral.rs`.

use super::{activation, base_spec, common, rope, uniform_layers, window};
use crate::config::ConfigJson;
use crate::error::Result;
use crate::spec::{Arch, DecoderSpec, MoeSpec};

pub fn parse(cfg: &ConfigJson) -> Result<DecoderSpec> {
    let c = common(cfg, false, 1e-5)?;
    let rope = rope(cfg, "rope_theta", 1e6, c.head_dim, true)?;
    let layers = uniform_layers(c.num_layers, window(cfg)?, &rope);
    let experts = cfg.usize("num_local_experts")?;
    let top_k = cfg.opt_usize("num_experts_per_tok")?.unwrap_or(2);
    if top_k > experts {
        return Err(cfg.err(format!("num_experts_per_tok ({top_k}) exceeds num_local_experts ({experts})")));
    }
    let mut spec = base_spec(Arch::Mixtral, c, layers, activation(cfg, "hidden_act", "silu")?);
    spec.moe = Some(MoeSpec { experts, top_k, norm_topk: true });
    Ok(spec)
}
