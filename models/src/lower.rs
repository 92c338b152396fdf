//! Lowers a [`DecoderSpec`] to one decode-step graph: token ids and positions in, logits out, with
//! each layer's attention reading and appending its KV-cache slot. Parameter names are the
//! checkpoint's tensor names, so the graph can be checked against and fed from the checkpoint.

use crate::spec::{DecoderSpec, MoeSpec};
use kiln_ir::{Attr, Attrs, BuildError, DType, Dim, Graph, GraphBuilder, NodeId, OpKind, Shape, TensorType};

/// Which positions get logits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position (generation): `logits: f32[1,V]`.
    #[default]
    Last,
    /// Every position (evaluation): `logits: f32[T,V]`.
    All,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct LowerOptions {
    pub logits: Logits,
    /// Lower only the first N layers (for IR snapshots and debugging); `None` = all.
    pub layers: Option<usize>,
}

type R<T> = Result<T, BuildError>;

fn t(dims: &[Dim]) -> TensorType {
    TensorType::new(DType::F32, dims.iter().cloned())
}

fn c(n: usize) -> Dim {
    Dim::c(n as i64)
}

struct Lowering<'a> {
    spec: &'a DecoderSpec,
    b: GraphBuilder,
    tokens: Dim,
    one: Option<NodeId>,
}

pub fn lower(spec: &DecoderSpec, name: &str, opts: &LowerOptions) -> R<Graph> {
    let mut l = Lowering { spec, b: GraphBuilder::new(name), tokens: Dim::sym("T"), one: None };
    l.model(opts)?;
    Ok(l.b.finish())
}

impl Lowering<'_> {
    fn param(&mut self, name: &str, dims: &[Dim]) -> R<NodeId> {
        self.b.param(name, t(dims))
    }

    /// A norm weight, with gemma's (1 + w) applied as a graph op so the checkpoint stays as-is.
    fn norm_weight(&mut self, name: &str, dim: usize) -> R<NodeId> {
        let w = self.param(name, &[c(dim)])?;
        if self.spec.norm_weight_offset == 0.0 {
            return Ok(w);
        }
        let one = match self.one {
            Some(n) => n,
            None => {
                let n = self.b.scalar(self.spec.norm_weight_offset, DType::F32)?;
                self.one = Some(n);
                n
            }
        };
        self.b.add(w, one)
    }

    fn rms_norm(&mut self, x: NodeId, name: &str, dim: usize) -> R<NodeId> {
        let w = self.norm_weight(name, dim)?;
        self.b.rms_norm(x, Some(w), self.spec.norm_eps)
    }

    fn linear(&mut self, x: NodeId, prefix: &str, out: usize, inp: usize, bias: bool) -> R<NodeId> {
        let w = self.param(&format!("{prefix}.weight"), &[c(out), c(inp)])?;
        let b = if bias { Some(self.param(&format!("{prefix}.bias"), &[c(out)])?) } else { None };
        self.b.linear(x, w, b)
    }

    fn heads(&mut self, x: NodeId, heads: usize) -> R<NodeId> {
        let shape = Shape::new([self.tokens.clone(), c(heads), c(self.spec.head_dim)]);
        self.b.reshape(x, shape)
    }

    fn model(&mut self, opts: &LowerOptions) -> R<()> {
        let s = self.spec;
        let (h, v) = (s.hidden_size, s.vocab_size);
        let tokens = self.b.input("tokens", TensorType::new(DType::I32, [self.tokens.clone()]))?;
        let positions = self.b.input("positions", TensorType::new(DType::I32, [self.tokens.clone()]))?;
        let table = self.param(&s.embed_name(), &[c(v), c(h)])?;
        let mut x = self.b.op(OpKind::Embedding, &[table, tokens], Attrs::new())?;
        if let Some(scale) = s.embed_scale {
            let k = self.b.scalar(scale, DType::F32)?;
            x = self.b.mul(x, k)?;
        }
        let n = opts.layers.unwrap_or(s.num_layers()).min(s.num_layers());
        for i in 0..n {
            x = self.layer(i, x, positions)?;
        }
        let x = self.rms_norm(x, &s.final_norm_name(), h)?;
        let x = match opts.logits {
            Logits::Last => self.b.slice(x, 0, -1, None)?,
            Logits::All => x,
        };
        let head = if s.tie_word_embeddings { table } else { self.param(&s.lm_head_name, &[c(v), c(h)])? };
        let mut logits = self.b.linear(x, head, None)?;
        if let Some(cap) = s.final_softcap {
            logits = self.softcap(logits, cap)?;
        }
        self.b.output("logits", logits)?;
        Ok(())
    }

    /// cap · tanh(x / cap)
    fn softcap(&mut self, x: NodeId, cap: f64) -> R<NodeId> {
        let k = self.b.scalar(cap, DType::F32)?;
        let y = self.b.binary(OpKind::Div, x, k)?;
        let y = self.b.unary(OpKind::Tanh, y)?;
        self.b.mul(y, k)
    }

    fn layer(&mut self, i: usize, x: NodeId, positions: NodeId) -> R<NodeId> {
        let s = self.spec;
        let p = s.layer_prefix(i);
        let h = s.hidden_size;
        let normed = self.rms_norm(x, &format!("{p}input_layernorm.weight"), h)?;
        let mut attn = self.attention(i, &format!("{p}self_attn"), normed, positions)?;
        let (post_attn, pre_ffn, post_ffn) = if s.sandwich_norms {
            (
                Some(format!("{p}post_attention_layernorm.weight")),
                format!("{p}pre_feedforward_layernorm.weight"),
                Some(format!("{p}post_feedforward_layernorm.weight")),
            )
        } else {
            (None, format!("{p}post_attention_layernorm.weight"), None)
        };
        if let Some(name) = post_attn {
            attn = self.rms_norm(attn, &name, h)?;
        }
        let x = self.b.add(x, attn)?;
        let normed = self.rms_norm(x, &pre_ffn, h)?;
        let mut ffn = match s.moe {
            Some(moe) => self.moe(&p, normed, moe)?,
            None => self.mlp(&format!("{p}mlp"), normed)?,
        };
        if let Some(name) = post_ffn {
            ffn = self.rms_norm(ffn, &name, h)?;
        }
        self.b.add(x, ffn)
    }

    fn attention(&mut self, layer: usize, p: &str, x: NodeId, positions: NodeId) -> R<NodeId> {
        let s = self.spec;
        let (h, d, nq, nkv) = (s.hidden_size, s.head_dim, s.num_heads, s.num_kv_heads);
        let q = self.linear(x, &format!("{p}.q_proj"), nq * d, h, s.qkv_bias)?;
        let k = self.linear(x, &format!("{p}.k_proj"), nkv * d, h, s.qkv_bias)?;
        let v = self.linear(x, &format!("{p}.v_proj"), nkv * d, h, s.qkv_bias)?;
        let mut q = self.heads(q, nq)?;
        let mut k = self.heads(k, nkv)?;
        let v = self.heads(v, nkv)?;
        if s.qk_norm {
            q = self.rms_norm(q, &format!("{p}.q_norm.weight"), d)?;
            k = self.rms_norm(k, &format!("{p}.k_norm.weight"), d)?;
        }
        let spec = &s.layers[layer];
        let rope = spec.rope.to_rope_attrs();
        let q = self.b.op(OpKind::Rope, &[q, positions], rope.clone())?;
        let k = self.b.op(OpKind::Rope, &[k, positions], rope)?;
        let mut attrs = Attrs::new().with("causal", Attr::Bool(true)).with("cache", Attr::Int(layer as i64));
        if let Some(w) = spec.window {
            attrs.set("window", Attr::Int(w));
        }
        if let Some(scale) = s.attn_scale {
            attrs.set("scale", Attr::Float(scale));
        }
        if let Some(cap) = s.attn_softcap {
            attrs.set("softcap", Attr::Float(cap));
        }
        let a = self.b.op(OpKind::Attention, &[q, k, v, positions], attrs)?;
        let a = self.b.reshape(a, Shape::new([self.tokens.clone(), c(nq * d)]))?;
        self.linear(a, &format!("{p}.o_proj"), h, nq * d, s.o_bias)
    }

    fn activation(&mut self, x: NodeId) -> R<NodeId> {
        use crate::spec::Activation::*;
        match self.spec.activation {
            Silu => self.b.unary(OpKind::Silu, x),
            GeluTanh => self.b.gelu(x, "tanh"),
            Gelu => self.b.gelu(x, "erf"),
        }
    }

    /// Gated MLP: down(act(gate(x)) ⊙ up(x)).
    fn mlp(&mut self, p: &str, x: NodeId) -> R<NodeId> {
        let s = self.spec;
        let (h, f) = (s.hidden_size, s.intermediate_size);
        let gate = self.linear(x, &format!("{p}.gate_proj"), f, h, s.mlp_bias)?;
        let gate = self.activation(gate)?;
        let up = self.linear(x, &format!("{p}.up_proj"), f, h, s.mlp_bias)?;
        let y = self.b.mul(gate, up)?;
        self.linear(y, &format!("{p}.down_proj"), h, f, s.mlp_bias)
    }

    /// Mixtral's sparse MoE block as one `moe` op; `moe-dispatch` lowers it later.
    fn moe(&mut self, p: &str, x: NodeId, moe: MoeSpec) -> R<NodeId> {
        let s = self.spec;
        let (h, f) = (s.hidden_size, s.intermediate_size);
        let m = format!("{p}block_sparse_moe");
        let mut operands = vec![x, self.param(&format!("{m}.gate.weight"), &[c(moe.experts), c(h)])?];
        for e in 0..moe.experts {
            operands.push(self.param(&format!("{m}.experts.{e}.w1.weight"), &[c(f), c(h)])?);
            operands.push(self.param(&format!("{m}.experts.{e}.w3.weight"), &[c(f), c(h)])?);
            operands.push(self.param(&format!("{m}.experts.{e}.w2.weight"), &[c(h), c(f)])?);
        }
        let attrs = Attrs::new()
            .with("experts", Attr::Int(moe.experts as i64))
            .with("top_k", Attr::Int(moe.top_k as i64))
            .with("norm_topk", Attr::Bool(moe.norm_topk))
            .with("activation", Attr::Ident(s.activation.ir_name().to_string()));
        self.b.op(OpKind::Moe, &operands, attrs)
    }
}
