//! `config.json` for each `model_type`, with the keys Hugging Face transformers' config classes and
//! candle-transformers' config structs read. candle's structs require some keys HF treats as
//! optional (qwen2: `sliding_window`, `max_window_layers`, `use_sliding_window`,
//! `tie_word_embeddings`; mixtral: `sliding_window` as an integer and `use_flash_attn`; gemma3:
//! `attention_bias`, `query_pre_attn_scalar` as an integer, `sliding_window`,
//! `sliding_window_pattern`), so those are always written. `bos_token_id`/`eos_token_id` are always
//! written too: HF's Gemma3 defaults (2 and 1) would otherwise point at the wrong tokens.

use super::tokenizer::ENDOFTEXT_ID;
use super::Resolved;
use crate::spec::Arch;
use serde_json::{json, Map, Value};

/// Layer `i`'s attention kind for gemma3: `sliding_window_pattern` 2, so layers alternate
/// sliding, global, sliding, … as candle's `(i + 1) % pattern > 0` rule and HF's `layer_types`
/// both say.
pub const GEMMA3_SLIDING_WINDOW_PATTERN: usize = 2;

fn layer_type(sliding: bool) -> &'static str {
    if sliding {
        "sliding_attention"
    } else {
        "full_attention"
    }
}

pub(crate) fn config_json(r: &Resolved) -> Value {
    let mut c = Map::new();
    let mut set = |k: &str, v: Value| {
        c.insert(k.to_string(), v);
    };
    let (architecture, model_type) = match r.arch {
        Arch::Llama => ("LlamaForCausalLM", "llama"),
        Arch::Mistral => ("MistralForCausalLM", "mistral"),
        Arch::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        Arch::Mixtral => ("MixtralForCausalLM", "mixtral"),
        Arch::Gemma3 => ("Gemma3ForCausalLM", "gemma3_text"),
    };
    set("architectures", json!([architecture]));
    set("model_type", json!(model_type));
    set("vocab_size", json!(r.vocab));
    set("hidden_size", json!(r.hidden));
    set("intermediate_size", json!(r.intermediate));
    set("num_hidden_layers", json!(r.layers));
    set("num_attention_heads", json!(r.heads));
    set("num_key_value_heads", json!(r.kv_heads));
    set("head_dim", json!(r.head_dim));
    set("rms_norm_eps", json!(r.rms_norm_eps));
    set("rope_theta", json!(r.rope_theta));
    set("max_position_embeddings", json!(r.max_position_embeddings));
    set("tie_word_embeddings", json!(r.tie));
    set("bos_token_id", json!(ENDOFTEXT_ID));
    set("eos_token_id", json!(ENDOFTEXT_ID));
    set("torch_dtype", json!(r.dtype.torch_name()));
    set("initializer_range", json!(0.02));
    set("attention_dropout", json!(0.0));
    set("use_cache", json!(true));
    match r.arch {
        Arch::Llama => {
            set("hidden_act", json!("silu"));
            set("attention_bias", json!(false));
            set("mlp_bias", json!(false));
            set("pretraining_tp", json!(1));
            set(
                "rope_scaling",
                json!({
                    "rope_type": "llama3",
                    "factor": r.rope_factor,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": r.max_position_embeddings / r.rope_factor as usize,
                }),
            );
        }
        Arch::Mistral => {
            set("hidden_act", json!("silu"));
            set("sliding_window", json!(r.window));
        }
        Arch::Qwen2 => {
            set("hidden_act", json!("silu"));
            set("rope_scaling", Value::Null);
            // Real Qwen2 configs without a window keep `sliding_window` = the context length and
            // `max_window_layers` = the layer count (candle needs both as integers).
            let (use_window, window, max_window_layers) = match r.window {
                Some(w) => (true, w, (r.layers / 2).max(1)),
                None => (false, r.max_position_embeddings, r.layers),
            };
            set("use_sliding_window", json!(use_window));
            set("sliding_window", json!(window));
            set("max_window_layers", json!(max_window_layers));
            let types: Vec<&str> = (0..r.layers).map(|i| layer_type(use_window && i >= max_window_layers)).collect();
            set("layer_types", json!(types));
        }
        Arch::Mixtral => {
            set("hidden_act", json!("silu"));
            set("sliding_window", json!(r.window));
            set("num_local_experts", json!(r.experts));
            set("num_experts_per_tok", json!(r.top_k));
            set("output_router_logits", json!(false));
            set("router_aux_loss_coef", json!(0.02));
            set("router_jitter_noise", json!(0.0));
            // candle's mixtral Config has no serde default for it.
            set("use_flash_attn", json!(false));
        }
        Arch::Gemma3 => {
            set("hidden_activation", json!("gelu_pytorch_tanh"));
            set("attention_bias", json!(false));
            set("query_pre_attn_scalar", json!(r.head_dim));
            set("rope_local_base_freq", json!(r.rope_local_base_freq));
            set("rope_scaling", json!({"rope_type": "linear", "factor": r.rope_factor}));
            set("sliding_window", json!(r.window));
            set("sliding_window_pattern", json!(GEMMA3_SLIDING_WINDOW_PATTERN));
            let types: Vec<&str> =
                (0..r.layers).map(|i| layer_type((i + 1) % GEMMA3_SLIDING_WINDOW_PATTERN != 0)).collect();
            set("layer_types", json!(types));
            set("attn_logit_softcapping", Value::Null);
            set("final_logit_softcapping", Value::Null);
        }
    }
    Value::Object(c)
}
