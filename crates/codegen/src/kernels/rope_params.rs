//! From the IR's RoPE attributes ([`RopeSpec`]) to the [`RopeParams`] baked into `rope`,
//! `kv_append` and `attention` kernels.

use super::spec::RopeParams;
use kiln_ir::op::rope::{RopeLayout, RopeSpec};

/// The kernel parameters of `spec` for heads of `head_dim`: layout, rotary dims, the scaled inverse
/// frequencies and YaRN's cos/sin multiplier, all as the interpreter computes them.
///
/// The frequencies are computed in f64 and rounded to f32 (what `RopeParams` holds); kernels form
/// `position · inv_freq` in f64 from that f32, so an angle departs from the interpreter's by at
/// most `position · inv_freq · 2⁻²⁴` rad (≈ 2e-5 rad at position 300 for the fastest pairs).
/// Rotary dims that do not fit the head are passed through; the kernel emitters reject them.
pub fn rope_params(spec: &RopeSpec, head_dim: usize) -> RopeParams {
    RopeParams {
        interleaved: spec.layout == RopeLayout::Interleaved,
        rotary: spec.rotary_dim(head_dim),
        inv_freq: spec.inv_freqs(head_dim).into_iter().map(|f| f as f32).collect(),
        mscale: spec.attention_factor() as f32,
    }
}
