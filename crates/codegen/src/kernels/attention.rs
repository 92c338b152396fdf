//! The attention family: `rope`, `kv_append` and `attention` (contracts in [`super::spec`]).
//!
//! - `rotate`: RoPE in f64 like the interpreter, and the `rope` kernel;
//! - `kv_append`: keys (post-RoPE), values and positions into the KV cache;
//! - `attend`: one-pass online-softmax attention over the cache, one query head per task;
//! - `block`: its update over a block of `lanes` cache entries at once;
//! - `helpers`: IR helpers only these kernels need.
//!
//! For `attention`, `dims[1]` is the number of cache entries to attend over: the length after this
//! step's `kv_append`, so a token sees itself.

pub(crate) mod attend;
mod block;
mod helpers;
mod kv_append;
mod rotate;

use super::builder::KernelCx;
use super::spec::KernelSpec;
use crate::error::Result;

/// Emits the kernel `name` for a `Rope`, `KvAppend` or `Attention` spec.
pub fn emit(cx: &KernelCx<'_>, name: &str, spec: &KernelSpec) -> Result<()> {
    match spec {
        KernelSpec::Rope { heads, head_dim, rope } => rotate::emit_rope(cx, name, *heads, *head_dim, rope),
        KernelSpec::KvAppend { kv_heads, head_dim, rope } => {
            kv_append::emit(cx, name, *kv_heads, *head_dim, rope.as_ref())
        }
        KernelSpec::Attention { heads, kv_heads, head_dim, scale, causal, window, softcap, rope } => {
            let spec = attend::AttentionSpec {
                heads: *heads,
                kv_heads: *kv_heads,
                head_dim: *head_dim,
                scale: *scale,
                causal: *causal,
                window: *window,
                softcap: *softcap,
                rope: rope.as_ref(),
            };
            attend::emit(cx, name, &spec)
        }
        other => Err(helpers::spec_err(name, format!("{} is not an attention-family kernel", other.kind()))),
    }
}
