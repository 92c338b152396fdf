//! `DecoderSpec`: one description of a decoder-only transformer that every supported architecture's
//! config is parsed into. The five architectures Kiln imports differ only in the knobs below, so one
//! lowering ([`crate::lower`]) serves them all and each `arch/*.rs` file is just its config rules.

use kiln_ir::RopeSpec;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Mistral,
    Qwen2,
    Mixtral,
    Gemma3,
}

impl Arch {
    pub const ALL: [Arch; 5] = [Arch::Llama, Arch::Mistral, Arch::Qwen2, Arch::Mixtral, Arch::Gemma3];

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
            Arch::Mixtral => "mixtral",
            Arch::Gemma3 => "gemma3",
        }
    }

    pub fn from_name(s: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.name() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// GELU with the tanh approximation (`gelu_pytorch_tanh`).
    GeluTanh,
    /// Exact (erf) GELU.
    Gelu,
}

impl Activation {
    /// From HF's `hidden_act` / `hidden_activation`.
    pub fn from_hf(s: &str) -> Option<Activation> {
        match s {
            "silu" | "swish" => Some(Activation::Silu),
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Some(Activation::GeluTanh),
            "gelu" => Some(Activation::Gelu),
            _ => None,
        }
    }

    pub fn ir_name(self) -> &'static str {
        match self {
            Activation::Silu => "silu",
            Activation::GeluTanh => "gelu_tanh",
            Activation::Gelu => "gelu",
        }
    }
}

/// Per-layer attention variant: gemma3 alternates sliding-window layers (local RoPE base) with
/// global ones; mistral/qwen2 may use one window everywhere.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSpec {
    pub window: Option<i64>,
    pub rope: RopeSpec,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MoeSpec {
    pub experts: usize,
    pub top_k: usize,
    /// Renormalize the chosen experts' probabilities to sum to one (Mixtral does).
    pub norm_topk: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DecoderSpec {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub layers: Vec<LayerSpec>,
    pub norm_eps: f64,
    /// Biases on the q/k/v projections (qwen2; llama with `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (llama with `attention_bias`).
    pub o_bias: bool,
    /// Biases on the MLP projections (llama with `mlp_bias`).
    pub mlp_bias: bool,
    pub activation: Activation,
    pub tie_word_embeddings: bool,
    pub moe: Option<MoeSpec>,
    /// Norm weights are applied as (offset + w): 1 for gemma, 0 elsewhere.
    pub norm_weight_offset: f64,
    /// Embeddings are multiplied by this (gemma: sqrt(hidden_size)).
    pub embed_scale: Option<f64>,
    /// RMS norms on q and k per head (gemma3).
    pub qk_norm: bool,
    /// Norms after attention and around the MLP as well as before (gemma3's sandwich norms).
    pub sandwich_norms: bool,
    /// Attention scale when not 1/sqrt(head_dim) (gemma3: query_pre_attn_scalar^-0.5).
    pub attn_scale: Option<f64>,
    pub attn_softcap: Option<f64>,
    pub final_softcap: Option<f64>,
    /// Prefix of the decoder's tensor names (`model.`, or `language_model.model.` in multimodal
    /// gemma3 checkpoints).
    pub weight_prefix: String,
    pub lm_head_name: String,
    pub max_position_embeddings: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl DecoderSpec {
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn layer_prefix(&self, i: usize) -> String {
        format!("{}layers.{i}.", self.weight_prefix)
    }

    pub fn embed_name(&self) -> String {
        format!("{}embed_tokens.weight", self.weight_prefix)
    }

    pub fn final_norm_name(&self) -> String {
        format!("{}norm.weight", self.weight_prefix)
    }

    /// The lm_head tensor the graph reads (the embedding table when tied).
    pub fn head_weight_name(&self) -> String {
        if self.tie_word_embeddings {
            self.embed_name()
        } else {
            self.lm_head_name.clone()
        }
    }

    /// Parameter count of the checkpoint tensors the graph reads (biases and norms included).
    pub fn param_count(&self) -> usize {
        let (h, d) = (self.hidden_size, self.head_dim);
        let attn = h * self.num_heads * d * 2 + h * self.num_kv_heads * d * 2;
        let mlp = 3 * h * self.intermediate_size;
        let ffn = match self.moe {
            Some(m) => m.experts * mlp + m.experts * h,
            None => mlp,
        };
        let biases = if self.qkv_bias { (self.num_heads + 2 * self.num_kv_heads) * d } else { 0 }
            + if self.o_bias { h } else { 0 }
            + if self.mlp_bias && self.moe.is_none() { 2 * self.intermediate_size + h } else { 0 };
        let qk_norms = if self.qk_norm { 2 * d } else { 0 };
        let per_layer = attn + ffn + biases + qk_norms + h * if self.sandwich_norms { 4 } else { 2 };
        let head = if self.tie_word_embeddings { 0 } else { self.vocab_size * h };
        self.vocab_size * h + head + h + self.num_layers() * per_layer
    }
}
