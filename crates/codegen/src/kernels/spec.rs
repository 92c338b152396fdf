//! What each kernel computes and how it is called: the contract between the planner (which turns
//! graph nodes into [`KernelSpec`]s and kernel calls) and the emitters (which generate one LLVM
//! function per distinct spec).
//!
//! # ABI
//! Every kernel is `void @name(const i64* dims, void* const* bufs, i64 begin, i64 end)`:
//! - `dims`: the run-time sizes listed for the kind below (tokens, rows, cache lengths), in order;
//! - `bufs`: pointers to the buffers listed below, in order (a null pointer for an absent optional
//!   operand). Activations are row-major f32 (integers i32); weights are packed by
//!   [`crate::pack`] in the spec's [`WeightFormat`];
//! - `[begin, end)`: the tasks this call must do, out of the step's task count (also listed below).
//!   The runtime splits `0..tasks` over threads; tasks must write disjoint outputs, and a kernel
//!   must give the same result whatever the split.
//!
//! Everything else — model dimensions, attributes, constants — is baked into the spec, so LLVM
//! sees constant trip counts and strides.

use serde::{Deserialize, Serialize};

/// How a weight matrix `[N, K]` is stored (row n = output n, along K).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightFormat {
    F32,
    Bf16,
    F16,
    /// llama.cpp's Q8_0: blocks of 32 along K, each an f16 scale and 32 i8 (34 bytes).
    Q8_0,
    /// llama.cpp's Q4_0: blocks of 32, an f16 scale and 16 bytes of 4-bit values (18 bytes);
    /// value = (nibble − 8) · scale, low nibbles are elements 0..16, high nibbles 16..32.
    Q4_0,
}

impl WeightFormat {
    pub fn parse(s: &str) -> Option<WeightFormat> {
        Some(match s {
            "f32" => WeightFormat::F32,
            "bf16" => WeightFormat::Bf16,
            "f16" => WeightFormat::F16,
            "q8_0" => WeightFormat::Q8_0,
            "q4_0" => WeightFormat::Q4_0,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::Bf16 => "bf16",
            WeightFormat::F16 => "f16",
            WeightFormat::Q8_0 => "q8_0",
            WeightFormat::Q4_0 => "q4_0",
        }
    }

    /// Elements per block along K (1 for unquantized formats).
    pub fn block(self) -> usize {
        match self {
            WeightFormat::Q8_0 | WeightFormat::Q4_0 => 32,
            _ => 1,
        }
    }

    /// Bytes of one row of K elements (K a multiple of [`WeightFormat::block`]).
    pub fn row_bytes(self, k: usize) -> usize {
        match self {
            WeightFormat::F32 => 4 * k,
            WeightFormat::Bf16 | WeightFormat::F16 => 2 * k,
            WeightFormat::Q8_0 => k / 32 * 34,
            WeightFormat::Q4_0 => k / 32 * 18,
        }
    }
}

/// Where each operand of an elementwise kernel comes from, relative to the `[rows, cols]` result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Broadcast {
    /// Same shape as the result.
    Full,
    /// One value for everything.
    Scalar,
    /// A `[cols]` vector repeated for every row.
    Row,
    /// A `[rows]` vector (a `[rows, 1]` tensor) repeated along each row.
    Col,
}

/// RoPE as applied inside `kv_append`/`attention`/`rope`: pairs (i, i + rotary/2) for `neox`, (2i,
/// 2i+1) for `interleaved`, angle `position · inv_freq[i]` for the first `rotary` dims of a head.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RopeParams {
    pub interleaved: bool,
    /// Rotated dims per head (≤ head_dim; partial rotary when smaller).
    pub rotary: usize,
    /// `rotary / 2` inverse frequencies, scaling already applied (kiln_ir::op::rope::RopeSpec).
    pub inv_freq: Vec<f32>,
    /// Multiplies cos and sin (yarn's attention factor; 1 otherwise).
    pub mscale: f32,
}

/// One kernel to generate. Task counts and `dims` per kind:
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KernelSpec {
    /// `out[M,N] = a[M,K] · wᵀ (+ bias[N])`, w packed `[N,K]`.
    /// dims `[M]`; bufs `[a, w, bias|null, out]`; tasks `ceil(N / cols_per_task)`, each task all M
    /// rows of its column block (weights are read once per call: decoding is memory-bound).
    /// `interleave` > 0: w's rows are [`crate::pack::interleave`]d in chunks of that many elements
    /// (CPU kernels only, equal to the vector lanes).
    Matmul {
        format: WeightFormat,
        n: usize,
        k: usize,
        bias: bool,
        cols_per_task: usize,
        #[serde(default, skip_serializing_if = "is_zero")]
        interleave: usize,
    },
    /// `matmul` over Q8_0/Q4_0 weights whose prefill (M ≥ 4) multiplies int8-quantized activations
    /// (`a_q`, written by `quantize_rows` from `a`) with VNNI integer dot products, as llama.cpp
    /// does; decoding (M < 4) runs the exact f32 `matmul` path on `a`. Needs AVX512-VNNI and
    /// 16-lane vectors; `cols_per_task` must be 16 (one vector of output columns per task).
    /// dims `[M]`; bufs `[a, w, bias|null, out, a_q]`; tasks `ceil(N / cols_per_task)`.
    MatmulI8 { format: WeightFormat, n: usize, k: usize, bias: bool, cols_per_task: usize },
    /// Quantizes rows of `k` f32 (k a multiple of 32) to int8 for `matmul_i8`, per block of 32:
    /// `d = max|x| / 127`, `q = round_half_even(x / d)`. Each output row is
    /// [`crate::kernels::matmul::q8_row_bytes`] long: the k quants (i8), then the blocks' scales
    /// `d` (f32), then the blocks' quant sums (i32). Only done when there are at least
    /// [`crate::kernels::matmul::INT8_MIN_ROWS`] rows (`matmul_i8` reads them only then).
    /// dims `[rows]`; bufs `[x, out]`; tasks `rows`.
    QuantizeRows { k: usize },
    /// `out[R,D] = table[ids[r]]` dequantized to f32, table packed `[V,D]`.
    /// dims `[R]`; bufs `[table, ids i32, out]`; tasks `R`. `interleave` as for `Matmul` (a table
    /// tied to the output projection is stored as that matmul reads it).
    Embedding {
        format: WeightFormat,
        vocab: usize,
        dim: usize,
        #[serde(default, skip_serializing_if = "is_zero")]
        interleave: usize,
    },
    /// An elementwise expression (`kiln_ir::op::expr` syntax, `$i` = operand i) over operands
    /// broadcast to a `[rows, cols]` f32 result. dims `[rows]`; bufs `[x0, x1, ..., out]`; tasks
    /// `rows`.
    Elementwise { expr: String, operands: Vec<Broadcast>, cols: usize },
    /// RMS norm over rows of `cols`: `x / sqrt(mean(x²) + eps) · w`. dims `[rows]`; bufs `[x, w|null,
    /// out]`; tasks `rows`.
    RmsNorm { cols: usize, eps: f32, weight: bool },
    /// `(x − mean) / sqrt(var + eps) · w + b`. dims `[rows]`; bufs `[x, w|null, b|null, out]`; tasks
    /// `rows`.
    LayerNorm { cols: usize, eps: f32, weight: bool, bias: bool },
    /// Softmax along rows of `cols`. dims `[rows]`; bufs `[x, out]`; tasks `rows`.
    Softmax { cols: usize },
    /// Sum / mean / max along rows of `cols` → `[rows]`. dims `[rows]`; bufs `[x, out]`; tasks `rows`.
    Reduce { op: ReduceOp, cols: usize },
    /// RoPE on `x[T, heads, head_dim]` at `positions[T]` (i32). dims `[T]`; bufs `[x, positions,
    /// out]`; tasks `T`.
    Rope { heads: usize, head_dim: usize, rope: RopeParams },
    /// Appends `k, v [T, kv_heads, head_dim]` (RoPE applied to k when given) with their positions
    /// to a KV-cache slot at entries `len..len+T`. dims `[T, len]`; bufs `[k, v, positions,
    /// cache_k, cache_v, cache_pos]`; tasks `T`.
    KvAppend { kv_heads: usize, head_dim: usize, rope: Option<RopeParams> },
    /// Attention of `q[T, heads, head_dim]` (RoPE applied when given) over the `len` cache entries:
    /// key j is visible to query i when `pos[j] ≤ pos_q[i]` (if causal) and `pos_q[i] − pos[j] <
    /// window`; scores `q·k · scale`, soft-capped `cap · tanh(s / cap)` when given; online softmax,
    /// one pass over the cache; query head h reads kv head `h / (heads / kv_heads)`. Cache positions
    /// ascend (the runtime appends in position order and rolls back by position), which lets a
    /// causal query stop at its own position.
    /// dims `[T, len]`; bufs `[q, positions, cache_k, cache_v, cache_pos, out]`; tasks `T · heads`.
    Attention {
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        scale: f32,
        causal: bool,
        window: Option<i64>,
        softcap: Option<f32>,
        rope: Option<RopeParams>,
    },
    /// Copies a strided box of up to rank 4 (rank padded with trailing extents of 1):
    /// `out[i0,i1,i2,i3] = x[offset + Σ i_d · stride_d]`, `out` contiguous row-major. Covers permute,
    /// slice, split and concat pieces. All of it is run-time so symbolic sizes may sit on any axis:
    /// dims `[e0, e1, e2, e3, stride0, stride1, stride2, stride3, offset]` (extents and element
    /// strides/offset into x); bufs `[x, out]`; tasks `e0`. `int` copies i32 data.
    Copy { int: bool },
    /// The k largest values of each row of `cols`, largest first, ties → lower index, as i32
    /// indices. dims `[rows]`; bufs `[x, out]`; tasks `rows`.
    TopK { cols: usize, k: usize },
    /// `out[r, j] = x[r, idx[r, j]]` (take_along_axis on the last axis). dims `[rows]`; bufs `[x,
    /// idx, out]`; tasks `rows`.
    GatherCols { cols: usize, k: usize },
    /// `out[i] = x[rows[i]]` for rows of `row_len` (f32 or i32). dims `[n]`; bufs `[x, rows, out]`;
    /// tasks `n`.
    Take { row_len: usize, int: bool },
    /// `out = x` then `out[rows[i]] = y[i]` (or `+=` with `add`), i in order. dims `[T, n]`; bufs
    /// `[x, rows, y, out]`; tasks 1.
    ScatterRows { row_len: usize, add: bool, int: bool },
    /// Ascending indices (i32) of the nonzero entries of `mask[n]`, and their count as an i64 in the
    /// last buffer. dims `[n]`; bufs `[mask, out, count]`; tasks 1.
    Nonzero,
    /// `out[t] = Σ_j gates[t,j] · [idx[t,j] = expert]`. dims `[T]`; bufs `[idx, gates, out]`; tasks 1.
    ExpertGate { k: usize, expert: i64 },
    /// Mixture-of-Depths choice as a 0/1 mask (`kiln_ir` `mod_select`). dims `[T]`; bufs `[scores,
    /// out]`; tasks 1.
    ModSelect { capacity: f64, threshold: Option<f64> },
    /// Fills `out[n]` with a value. dims `[n]`; bufs `[out]`; tasks 1.
    Fill { value: f32, int: bool },
    /// Element type conversion, f32 ↔ i32 (rounding toward zero) or f32 → f32 rounded through
    /// f16/bf16. dims `[n]`; bufs `[x, out]`; tasks 1.
    Cast { from: CastType, to: CastType },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReduceOp {
    Sum,
    Mean,
    Max,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CastType {
    F32,
    F16,
    Bf16,
    I32,
}

impl KernelSpec {
    /// The family name (`matmul`, `attention`, ...), as serialized.
    pub fn kind(&self) -> &'static str {
        match self {
            KernelSpec::Matmul { .. } => "matmul",
            KernelSpec::MatmulI8 { .. } => "matmul_i8",
            KernelSpec::QuantizeRows { .. } => "quantize_rows",
            KernelSpec::Embedding { .. } => "embedding",
            KernelSpec::Elementwise { .. } => "elementwise",
            KernelSpec::RmsNorm { .. } => "rms_norm",
            KernelSpec::LayerNorm { .. } => "layer_norm",
            KernelSpec::Softmax { .. } => "softmax",
            KernelSpec::Reduce { .. } => "reduce",
            KernelSpec::Rope { .. } => "rope",
            KernelSpec::KvAppend { .. } => "kv_append",
            KernelSpec::Attention { .. } => "attention",
            KernelSpec::Copy { .. } => "copy",
            KernelSpec::TopK { .. } => "top_k",
            KernelSpec::GatherCols { .. } => "gather_cols",
            KernelSpec::Take { .. } => "take",
            KernelSpec::ScatterRows { .. } => "scatter_rows",
            KernelSpec::Nonzero => "nonzero",
            KernelSpec::ExpertGate { .. } => "expert_gate",
            KernelSpec::ModSelect { .. } => "mod_select",
            KernelSpec::Fill { .. } => "fill",
            KernelSpec::Cast { .. } => "cast",
        }
    }
}

/// Serde's skip test for the default-zero fields (`interleave`), which keeps specs without them
/// as they were.
fn is_zero(x: &usize) -> bool {
    *x == 0
}
