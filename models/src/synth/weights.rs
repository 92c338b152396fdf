//! Deterministic random weights: one splitmix64 stream per tensor, seeded from the model seed and
//! the tensor's name, so a tensor's values do not depend on which other tensors exist (adding a
//! layer leaves the others unchanged). Values are generated when the safetensors writer asks for
//! them, one tensor at a time, so memory stays at the size of the largest tensor.
//!
//! Scales keep activations O(1) through the layers and logits spread but not degenerate:
//!
//! | tensor | values |
//! | --- | --- |
//! | projections `[out, in]` (attention, MLP, experts, router) | U(-1,1)·sqrt(3/in): std 1/sqrt(in) |
//! | the head: lm_head, or the embedding table when tied | std 2/sqrt(hidden): logits std ≈ 2 ([`LOGIT_STD`]) |
//! | embeddings, untied, non-gemma | std 1 |
//! | embeddings, untied, gemma (scaled by sqrt(hidden) in the model) | std 1/sqrt(hidden) |
//! | norm weights | 1 + 0.1·noise; gemma (applied as 1 + w): 0.1·noise |
//! | gemma's post-attention / post-feedforward norms | 5 + 0.1·noise (applied as 6 + …, [`SANDWICH_POST_NORM`]) |
//! | biases | 0.05·noise |
//!
//! where noise has mean 0 and std 1 (uniform on [-√3, √3]).

use crate::spec::DecoderSpec;
use safetensors::{Dtype, View};
use std::borrow::Cow;

/// Element type of the written tensors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SynthDtype {
    #[default]
    F32,
    BF16,
    F16,
}

impl SynthDtype {
    pub const ALL: [SynthDtype; 3] = [SynthDtype::F32, SynthDtype::BF16, SynthDtype::F16];

    /// `f32`, `bf16` or `f16` (as the CLI spells them).
    pub fn name(self) -> &'static str {
        match self {
            SynthDtype::F32 => "f32",
            SynthDtype::BF16 => "bf16",
            SynthDtype::F16 => "f16",
        }
    }

    /// From `f32`/`float32`, `bf16`/`bfloat16`, `f16`/`float16`/`half`.
    pub fn from_name(s: &str) -> Option<SynthDtype> {
        match s {
            "f32" | "float32" => Some(SynthDtype::F32),
            "bf16" | "bfloat16" => Some(SynthDtype::BF16),
            "f16" | "float16" | "half" => Some(SynthDtype::F16),
            _ => None,
        }
    }

    /// config.json's `torch_dtype`.
    pub fn torch_name(self) -> &'static str {
        match self {
            SynthDtype::F32 => "float32",
            SynthDtype::BF16 => "bfloat16",
            SynthDtype::F16 => "float16",
        }
    }

    pub fn safetensors(self) -> Dtype {
        match self {
            SynthDtype::F32 => Dtype::F32,
            SynthDtype::BF16 => Dtype::BF16,
            SynthDtype::F16 => Dtype::F16,
        }
    }

    pub fn size(self) -> usize {
        match self {
            SynthDtype::F32 => 4,
            SynthDtype::BF16 | SynthDtype::F16 => 2,
        }
    }
}

/// The IR crate's seeded PRNG (splitmix64), so every generator in Kiln draws from one source.
pub use kiln_ir::interp::testing::SplitMix64;

/// Uniform on [-1, 1).
fn uniform(rng: &mut SplitMix64) -> f32 {
    rng.uniform(-1.0, 1.0)
}

/// FNV-1a of the tensor name, mixed with the seed.
fn tensor_seed(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    SplitMix64::new(seed ^ h.rotate_left(17)).next_u64()
}

const SQRT3: f32 = 1.732_050_8;

/// Target std of the logits: the head (lm_head, or the tied embedding table) sees RMS-normed
/// activations, O(1) per element, so a head std of LOGIT_STD/sqrt(hidden) gives logits of std about
/// LOGIT_STD — peaked enough that greedy decoding has clear winners, spread enough that sampling and
/// top-k see many candidates.
pub const LOGIT_STD: f64 = 2.0;

/// Scale of gemma's post-attention and post-feedforward norms (stored as this − 1, since gemma
/// applies norm weights as 1 + w). With tied embeddings scaled by sqrt(hidden), the embedding of
/// the current token would otherwise dominate the residual stream, and its dot product with its
/// own head row, |e|², would make most logits "repeat the input token". Sublayer outputs of RMS 6
/// outweigh it (the residual stays O(10), and every read of it is RMS-normed).
pub const SANDWICH_POST_NORM: f32 = 6.0;

/// How one tensor's values are drawn: `offset + scale·U(-1,1)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Init {
    pub offset: f32,
    /// Half-width of the uniform distribution (std = scale/√3).
    pub scale: f32,
}

impl Init {
    fn std(offset: f32, std: f64) -> Init {
        Init { offset, scale: SQRT3 * std as f32 }
    }
}

/// The distribution of the checkpoint tensor `name` of `shape` (see the module docs).
pub fn init_for(spec: &DecoderSpec, name: &str, shape: &[usize]) -> Init {
    let h = spec.hidden_size as f64;
    let head_std = LOGIT_STD / h.sqrt();
    if name == spec.embed_name() {
        return Init::std(
            0.0,
            if spec.tie_word_embeddings {
                head_std
            } else if spec.embed_scale.is_some() {
                h.powf(-0.5)
            } else {
                1.0
            },
        );
    }
    if name == spec.lm_head_name {
        return Init::std(0.0, head_std);
    }
    if shape.len() == 1 {
        if name.ends_with("norm.weight") {
            let post_sublayer = name.ends_with("post_attention_layernorm.weight")
                || name.ends_with("post_feedforward_layernorm.weight");
            let offset = if spec.sandwich_norms && post_sublayer {
                SANDWICH_POST_NORM - spec.norm_weight_offset as f32
            } else if spec.norm_weight_offset == 0.0 {
                1.0
            } else {
                0.0
            };
            return Init::std(offset, 0.1);
        }
        return Init::std(0.0, 0.05);
    }
    let fan_in = shape.last().copied().unwrap_or(1).max(1) as f64;
    Init::std(0.0, fan_in.powf(-0.5))
}

/// One tensor to write; its bytes are generated on demand.
#[derive(Clone, Debug)]
pub struct SynthTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
    pub dtype: SynthDtype,
    pub seed: u64,
}

impl SynthTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values as f32, before rounding to the file's dtype.
    pub fn values(&self) -> Vec<f32> {
        let mut rng = SplitMix64::new(tensor_seed(self.seed, &self.name));
        (0..self.numel()).map(|_| self.init.offset + self.init.scale * uniform(&mut rng)).collect()
    }

    pub fn bytes(&self) -> Vec<u8> {
        let v = self.values();
        let mut out = Vec::with_capacity(v.len() * self.dtype.size());
        match self.dtype {
            SynthDtype::F32 => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            SynthDtype::BF16 => v.iter().for_each(|x| out.extend_from_slice(&half::bf16::from_f32(*x).to_le_bytes())),
            SynthDtype::F16 => v.iter().for_each(|x| out.extend_from_slice(&half::f16::from_f32(*x).to_le_bytes())),
        }
        out
    }
}

impl View for &SynthTensor {
    fn dtype(&self) -> Dtype {
        self.dtype.safetensors()
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.bytes())
    }

    fn data_len(&self) -> usize {
        self.numel() * self.dtype.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // First outputs of splitmix64 seeded with 0 (the reference implementation's).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn uniform_is_in_range_and_centered() {
        let mut r = SplitMix64::new(42);
        let xs: Vec<f32> = (0..100_000).map(|_| uniform(&mut r)).collect();
        assert!(xs.iter().all(|x| (-1.0..1.0).contains(x)));
        let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((var - 1.0 / 3.0).abs() < 0.01, "{var}");
    }

    #[test]
    fn tensor_streams_differ_by_name_and_seed() {
        let t = |name: &str, seed| SynthTensor {
            name: name.into(),
            shape: vec![8],
            init: Init { offset: 0.0, scale: 1.0 },
            dtype: SynthDtype::F32,
            seed,
        };
        assert_eq!(t("a", 1).values(), t("a", 1).values());
        assert_ne!(t("a", 1).values(), t("b", 1).values());
        assert_ne!(t("a", 1).values(), t("a", 2).values());
    }
}
