//! Qwen2: llama-shaped with biases on the q/k/v projections (never on o_proj) and an optional
//! sliding window on the layers from `max_window_layers` on. Reference: `modeling_qwen2.py`.

use super::{activation, base_spec, common, layer_type_is_sliding, rope, window};
use crate::config::ConfigJson;
use crate::error::Result;
use crate::spec::{Arch, DecoderSpec, LayerSpec};

pub fn parse(cfg: &ConfigJson) -> Result<DecoderSpec> {
    let c = common(cfg, false, 1e-6)?;
    let rope = rope(cfg, "rope_theta", 10000.0, c.head_dim, true)?;
    let use_window = cfg.opt_bool("use_sliding_window")?.unwrap_or(false);
    let win = window(cfg)?;
    let max_window_layers = cfg.opt_usize("max_window_layers")?.unwrap_or(28);
    let layer_types = cfg.opt_strings("layer_types")?;
    let mut layers = Vec::with_capacity(c.num_layers);
    for i in 0..c.num_layers {
        let sliding =
            layer_type_is_sliding(cfg, layer_types.as_deref(), i)?.unwrap_or(use_window && i >= max_window_layers);
        let window =
            if sliding { Some(win.ok_or_else(|| cfg.err("sliding attention needs 'sliding_window'"))?) } else { None };
        layers.push(LayerSpec { window, rope: rope.clone() });
    }
    let mut spec = base_spec(Arch::Qwen2, c, layers, activation(cfg, "hidden_act", "silu")?);
    spec.qkv_bias = true;
    Ok(spec)
}
