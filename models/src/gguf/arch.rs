//! Model families, and the mapping from llama.cpp's tensor names to Hugging Face's.
//!
//! llama.cpp renames every tensor when it converts a Hugging Face checkpoint
//! (`gguf-py/gguf/tensor_mapping.py`), and for some families it also changes the *values*:
//!
//! * **llama / mistral / mixtral** (`general.architecture = "llama"`): `convert_hf_to_gguf.py`
//!   permutes the rows of `q_proj` and `k_proj` with
//!   `w.reshape(n_head, 2, head_dim / 2, in).swapaxes(1, 2)`, because llama.cpp's llama graph
//!   applies RoPE to *adjacent* pairs `(x[2i], x[2i+1])` (the original Meta layout) while
//!   Hugging Face's `rotate_half` pairs `x[i]` with `x[i + head_dim/2]`. The permutation turns
//!   one convention into the other, so the export must undo it or every attention score would
//!   be computed with scrambled rotary frequencies. `k_proj` uses `n_head_kv` heads.
//!   qwen2 and gemma use the "NEOX" rotary style, which *is* `rotate_half`: no permutation.
//! * **gemma, gemma2, gemma3**: Hugging Face's Gemma RMSNorm computes `x * (1 + w)`; llama.cpp
//!   uses a plain `x * w`, so the converter stores `w + 1` for every `*norm.weight`. The export
//!   subtracts 1 again.

use super::reader::GgufFile;

/// Model families the exporter can write as a Hugging Face folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Llama and Mistral (dense), GGUF arch `llama`.
    Llama,
    /// Mixtral: GGUF arch `llama` with `expert_count > 0`.
    Mixtral,
    /// Qwen2 / Qwen2.5.
    Qwen2,
    /// Gemma (1).
    Gemma,
    /// Gemma 2.
    Gemma2,
    /// Gemma 3, text-only (`Gemma3ForCausalLM`).
    Gemma3,
}

impl Family {
    /// Picks the family for a GGUF architecture string. `llama`-arch files with experts
    /// (metadata `llama.expert_count > 0` or stacked `*_exps` tensors) are Mixtral.
    pub fn detect(arch: &str, file: &GgufFile) -> Option<Family> {
        Some(match arch {
            "llama" | "mistral" | "mixtral" => {
                let experts = file.metadata().get_u64(&format!("{arch}.expert_count")).unwrap_or(0);
                let has_moe =
                    file.tensors().iter().any(|t| t.name().contains("_exps.") || t.name().contains(".ffn_gate_inp."));
                if experts > 0 || has_moe {
                    Family::Mixtral
                } else {
                    Family::Llama
                }
            }
            "qwen2" => Family::Qwen2,
            "gemma" => Family::Gemma,
            "gemma2" => Family::Gemma2,
            "gemma3" => Family::Gemma3,
            _ => return None,
        })
    }

    /// `config.json`'s `model_type`. Gemma 3 text-only checkpoints (e.g. gemma-3-1b) use
    /// `gemma3_text`; `gemma3` is the multimodal wrapper config, which a text-only export is not.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mixtral => "mixtral",
            Family::Qwen2 => "qwen2",
            Family::Gemma => "gemma",
            Family::Gemma2 => "gemma2",
            Family::Gemma3 => "gemma3_text",
        }
    }

    /// `config.json`'s `architectures[0]`.
    pub fn hf_architecture(self) -> &'static str {
        match self {
            Family::Llama => "LlamaForCausalLM",
            Family::Mixtral => "MixtralForCausalLM",
            Family::Qwen2 => "Qwen2ForCausalLM",
            Family::Gemma => "GemmaForCausalLM",
            Family::Gemma2 => "Gemma2ForCausalLM",
            Family::Gemma3 => "Gemma3ForCausalLM",
        }
    }

    /// Whether llama.cpp permuted the Q/K projection rows (see the module docs).
    pub fn permutes_qk(self) -> bool {
        matches!(self, Family::Llama | Family::Mixtral)
    }

    /// Whether norm weights are stored as `1 + w` (see the module docs).
    pub fn norms_offset_by_one(self) -> bool {
        matches!(self, Family::Gemma | Family::Gemma2 | Family::Gemma3)
    }

    fn has_sandwich_norms(self) -> bool {
        matches!(self, Family::Gemma2 | Family::Gemma3)
    }
}

/// Which Mixtral expert matrix a stacked tensor holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpertProj {
    /// `ffn_gate_exps` → `w1`.
    Gate,
    /// `ffn_down_exps` → `w2`.
    Down,
    /// `ffn_up_exps` → `w3`.
    Up,
}

impl ExpertProj {
    /// The Hugging Face Mixtral name of this projection.
    pub fn hf(self) -> &'static str {
        match self {
            ExpertProj::Gate => "w1",
            ExpertProj::Down => "w2",
            ExpertProj::Up => "w3",
        }
    }
}

/// Where a GGUF tensor goes in the Hugging Face checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One Hugging Face tensor of the same shape.
    Tensor(String),
    /// A stack of experts `[n_expert, rows, cols]`, split into
    /// `model.layers.{layer}.block_sparse_moe.experts.{e}.{w1|w2|w3}.weight`.
    Experts { layer: usize, proj: ExpertProj },
    /// Not a weight in the Hugging Face model (e.g. `rope_freqs`, folded into `rope_scaling`).
    Skip,
}

/// Which rotary permutation applies to a tensor (before head counts are known).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeRole {
    Query,
    Key,
}

/// The mapping of one GGUF tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    pub target: Target,
    pub rope: Option<RopeRole>,
    pub subtract_one: bool,
}

/// Maps a GGUF tensor name to its Hugging Face target, or `None` if the name is unknown for
/// this family.
pub fn map_tensor(family: Family, name: &str) -> Option<Mapped> {
    let simple = |s: &str| Mapped { target: Target::Tensor(s.to_string()), rope: None, subtract_one: false };
    let mut m = match name {
        "token_embd.weight" => simple("model.embed_tokens.weight"),
        "output_norm.weight" => simple("model.norm.weight"),
        "output.weight" => simple("lm_head.weight"),
        "rope_freqs.weight" => Mapped { target: Target::Skip, rope: None, subtract_one: false },
        _ => map_layer_tensor(family, name)?,
    };
    if family.norms_offset_by_one() && name.ends_with("norm.weight") {
        m.subtract_one = true;
    }
    Some(m)
}

fn map_layer_tensor(family: Family, name: &str) -> Option<Mapped> {
    let rest = name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (part, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let prefix = format!("model.layers.{layer}");
    let to = |hf: &str| Mapped {
        target: Target::Tensor(format!("{prefix}.{hf}.{suffix}")),
        rope: None,
        subtract_one: false,
    };
    let moe = family == Family::Mixtral;
    let m = match part {
        "attn_q" => Mapped { rope: Some(RopeRole::Query), ..to("self_attn.q_proj") },
        "attn_k" => Mapped { rope: Some(RopeRole::Key), ..to("self_attn.k_proj") },
        "attn_v" => to("self_attn.v_proj"),
        "attn_output" => to("self_attn.o_proj"),
        "attn_norm" => to("input_layernorm"),
        "ffn_norm" if family.has_sandwich_norms() => to("pre_feedforward_layernorm"),
        "ffn_norm" => to("post_attention_layernorm"),
        "post_attention_norm" if family.has_sandwich_norms() => to("post_attention_layernorm"),
        "post_ffw_norm" if family.has_sandwich_norms() => to("post_feedforward_layernorm"),
        "attn_q_norm" if family == Family::Gemma3 => to("self_attn.q_norm"),
        "attn_k_norm" if family == Family::Gemma3 => to("self_attn.k_norm"),
        "ffn_gate" if !moe => to("mlp.gate_proj"),
        "ffn_up" if !moe => to("mlp.up_proj"),
        "ffn_down" if !moe => to("mlp.down_proj"),
        "ffn_gate_inp" if moe => to("block_sparse_moe.gate"),
        "ffn_gate_exps" | "ffn_up_exps" | "ffn_down_exps" if moe && suffix == "weight" => {
            let proj = match part {
                "ffn_gate_exps" => ExpertProj::Gate,
                "ffn_up_exps" => ExpertProj::Up,
                _ => ExpertProj::Down,
            };
            Mapped { target: Target::Experts { layer, proj }, rope: None, subtract_one: false }
        }
        _ if moe => {
            // Older Mixtral GGUFs store one tensor per expert: `blk.N.ffn_gate.E.weight`.
            let (base, expert) = part.rsplit_once('.')?;
            let expert: usize = expert.parse().ok()?;
            let w = match base {
                "ffn_gate" => "w1",
                "ffn_down" => "w2",
                "ffn_up" => "w3",
                _ => return None,
            };
            to(&format!("block_sparse_moe.experts.{expert}.{w}"))
        }
        _ => return None,
    };
    Some(m)
}

/// Undoes llama.cpp's rotary row permutation on a row-major `[rows, cols]` matrix (or a bias,
/// `cols == 1`), with `rows = n_head * head_dim`.
///
/// The converter maps Hugging Face row `h*D + s*(D/2) + i` (head `h`, half `s` in {0, 1},
/// `i < D/2`) to GGUF row `h*D + 2*i + s`; this is the inverse. Returns `None` when the rows do
/// not split into `n_head` heads of even size.
pub fn unpermute_rope_rows(data: &[f32], rows: usize, cols: usize, n_head: usize) -> Option<Vec<f32>> {
    if n_head == 0 || rows % n_head != 0 || data.len() != rows.checked_mul(cols)? {
        return None;
    }
    let d = rows / n_head;
    if d % 2 != 0 {
        return None;
    }
    let half = d / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..n_head {
        for s in 0..2 {
            for i in 0..half {
                let dst = h * d + s * half + i;
                let src = h * d + 2 * i + s;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's `LlamaModel.permute`, written from the numpy expression
    /// `w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols)`.
    fn llama_cpp_permute(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
        let half = rows / n_head / 2;
        let mut out = vec![0f32; w.len()];
        // After swapaxes the index order is (h, i, s, c); output row = (h*half + i)*2 + s.
        for h in 0..n_head {
            for i in 0..half {
                for s in 0..2 {
                    let out_row = (h * half + i) * 2 + s;
                    let in_row = (h * 2 + s) * half + i;
                    out[out_row * cols..(out_row + 1) * cols].copy_from_slice(&w[in_row * cols..(in_row + 1) * cols]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        for (n_head, head_dim, cols) in [(1, 2, 1), (3, 4, 5), (9, 64, 3), (2, 8, 1)] {
            let rows = n_head * head_dim;
            let w: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let p = llama_cpp_permute(&w, rows, cols, n_head);
            if head_dim > 2 {
                assert_ne!(p, w, "the permutation moves rows when head_dim > 2");
            }
            assert_eq!(unpermute_rope_rows(&p, rows, cols, n_head).unwrap(), w);
        }
    }

    #[test]
    fn unpermute_concrete_example() {
        // One head of dim 4: HF rows [r0, r1, r2, r3] become GGUF rows [r0, r2, r1, r3].
        let gguf = [0.0, 2.0, 1.0, 3.0];
        assert_eq!(unpermute_rope_rows(&gguf, 4, 1, 1).unwrap(), vec![0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn unpermute_rejects_bad_shapes() {
        assert!(unpermute_rope_rows(&[0.0; 6], 6, 1, 4).is_none());
        assert!(unpermute_rope_rows(&[0.0; 3], 3, 1, 1).is_none());
        assert!(unpermute_rope_rows(&[0.0; 4], 4, 2, 1).is_none());
        assert!(unpermute_rope_rows(&[0.0; 4], 4, 1, 0).is_none());
    }

    #[test]
    fn names_map_like_hugging_face() {
        let t = |f, n| map_tensor(f, n).map(|m| m.target);
        let s = |x: &str| Some(Target::Tensor(x.to_string()));
        use Family::*;
        assert_eq!(t(Llama, "token_embd.weight"), s("model.embed_tokens.weight"));
        assert_eq!(t(Llama, "output.weight"), s("lm_head.weight"));
        assert_eq!(t(Llama, "output_norm.weight"), s("model.norm.weight"));
        assert_eq!(t(Llama, "blk.12.attn_q.weight"), s("model.layers.12.self_attn.q_proj.weight"));
        assert_eq!(t(Llama, "blk.0.attn_output.weight"), s("model.layers.0.self_attn.o_proj.weight"));
        assert_eq!(t(Llama, "blk.0.attn_norm.weight"), s("model.layers.0.input_layernorm.weight"));
        assert_eq!(t(Llama, "blk.0.ffn_norm.weight"), s("model.layers.0.post_attention_layernorm.weight"));
        assert_eq!(t(Llama, "blk.3.ffn_down.weight"), s("model.layers.3.mlp.down_proj.weight"));
        assert_eq!(t(Qwen2, "blk.1.attn_k.bias"), s("model.layers.1.self_attn.k_proj.bias"));
        assert_eq!(t(Llama, "rope_freqs.weight"), Some(Target::Skip));
        assert_eq!(t(Llama, "blk.x.attn_q.weight"), None);
        assert_eq!(t(Llama, "blk.0.attn_q.scale"), None);
        assert_eq!(t(Llama, "blk.0.ffn_gate_exps.weight"), None);
        assert_eq!(t(Llama, "mm.0.weight"), None);

        assert_eq!(t(Gemma3, "blk.2.ffn_norm.weight"), s("model.layers.2.pre_feedforward_layernorm.weight"));
        assert_eq!(t(Gemma3, "blk.2.post_attention_norm.weight"), s("model.layers.2.post_attention_layernorm.weight"));
        assert_eq!(t(Gemma3, "blk.2.post_ffw_norm.weight"), s("model.layers.2.post_feedforward_layernorm.weight"));
        assert_eq!(t(Gemma3, "blk.2.attn_q_norm.weight"), s("model.layers.2.self_attn.q_norm.weight"));
        assert_eq!(t(Gemma, "blk.2.ffn_norm.weight"), s("model.layers.2.post_attention_layernorm.weight"));

        assert_eq!(t(Mixtral, "blk.4.ffn_gate_inp.weight"), s("model.layers.4.block_sparse_moe.gate.weight"));
        assert_eq!(t(Mixtral, "blk.4.ffn_up_exps.weight"), Some(Target::Experts { layer: 4, proj: ExpertProj::Up }));
        assert_eq!(t(Mixtral, "blk.4.ffn_down.7.weight"), s("model.layers.4.block_sparse_moe.experts.7.w2.weight"));
        assert_eq!(t(Mixtral, "blk.4.ffn_gate.0.weight"), s("model.layers.4.block_sparse_moe.experts.0.w1.weight"));
        assert_eq!(t(Mixtral, "blk.4.ffn_up.1.weight"), s("model.layers.4.block_sparse_moe.experts.1.w3.weight"));
    }

    #[test]
    fn transforms_by_family() {
        let m = map_tensor(Family::Llama, "blk.0.attn_k.weight").unwrap();
        assert_eq!(m.rope, Some(RopeRole::Key));
        let m = map_tensor(Family::Llama, "blk.0.attn_q.bias").unwrap();
        assert_eq!(m.rope, Some(RopeRole::Query));
        assert!(Family::Llama.permutes_qk() && Family::Mixtral.permutes_qk());
        assert!(!Family::Qwen2.permutes_qk() && !Family::Gemma3.permutes_qk());
        assert!(map_tensor(Family::Gemma3, "blk.0.attn_k_norm.weight").unwrap().subtract_one);
        assert!(map_tensor(Family::Gemma3, "output_norm.weight").unwrap().subtract_one);
        assert!(!map_tensor(Family::Gemma3, "blk.0.attn_k.weight").unwrap().subtract_one);
        assert!(!map_tensor(Family::Llama, "output_norm.weight").unwrap().subtract_one);
    }
}
