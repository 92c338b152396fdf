//! `manifest.json`: everything the runtime needs to run a compiled artifact, and nothing that needs
//! LLVM. The compiler (`kiln-codegen`) writes it; [`super::load`] reads and checks it.
//!
//! The program is a straight list of kernel calls ([`Step`]) over numbered buffers. Sizes that are
//! only known at run time — the tokens of this call `T`, data-dependent row counts (`n0e3`, made by
//! `nonzero`), the length of each KV-cache slot — are [`Symbol`]s, and every size in the manifest is a
//! [`DimExpr`] over them.

use serde::{Deserialize, Serialize};

/// Bumped whenever the manifest or the kernel ABI changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format_version: u32,
    /// The `kiln` version that compiled it.
    pub compiler: String,
    pub target: TargetDesc,
    pub model: ModelDesc,
    /// The pass pipeline the graph went through.
    pub pipeline: String,
    /// Storage of matmul/embedding weights: f32, bf16, f16, q8_0 or q4_0.
    pub weights_dtype: String,
    /// The tokens one call may feed at most (prefill chunk); buffers are sized for it.
    pub max_tokens: usize,
    /// KV-cache capacity per slot, in tokens.
    pub max_context: usize,
    pub symbols: Vec<Symbol>,
    pub kernels: Vec<KernelEntry>,
    pub buffers: Vec<BufferSpec>,
    pub kv_slots: Vec<KvSlotSpec>,
    pub steps: Vec<Step>,
    /// Graph inputs (`tokens`, `positions`) and outputs (`logits`) by name → buffer.
    pub inputs: Vec<NamedBuffer>,
    pub outputs: Vec<NamedBuffer>,
    /// The Mixture-of-Experts layers, in program order: which buffers hold each expert's weights
    /// and router decisions, so the runtime can offload experts (`--expert-cache`). Empty for dense
    /// models and for artifacts without an explicit dispatch (`moe-dispatch`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moe_layers: Vec<MoeLayer>,
    /// The other files of the artifact, with sizes and checksums.
    pub files: Vec<FileEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TargetDesc {
    /// `x86_64-unknown-linux-gnu` (CPU artifacts, `kernels.so`) or [`CUDA_TRIPLE`] (`kernels.ptx`).
    pub triple: String,
    /// LLVM's CPU name the kernels were tuned for (`sapphirerapids`, `znver4`); for CUDA the SM
    /// (`sm_80`, `sm_90`).
    pub cpu: String,
    /// CPU features the kernels use (`avx2`, `fma`, `f16c`, `avx512f`, ...): the runtime refuses to
    /// run on a CPU that lacks one.
    pub required_features: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelDesc {
    pub name: String,
    pub arch: String,
    pub vocab_size: usize,
    pub eos_token_ids: Vec<u32>,
    /// The checkpoint's config.json, for reference.
    pub config: serde_json::Value,
}

/// The target triple of CUDA artifacts.
pub const CUDA_TRIPLE: &str = "nvptx64-nvidia-cuda";

impl TargetDesc {
    /// Whether the kernels are PTX for NVIDIA GPUs.
    pub fn is_cuda(&self) -> bool {
        self.triple == CUDA_TRIPLE
    }

    /// The SM number of a CUDA artifact (`90` for `sm_90` and `sm_90a`).
    pub fn sm(&self) -> Option<u32> {
        self.cpu.strip_prefix("sm_")?.trim_end_matches('a').parse().ok()
    }
}

/// A size known at run time.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Symbol {
    /// Tokens in this call (bound from the `tokens` input).
    Tokens { name: String },
    /// A data-dependent count, bound by the step that computes it (`nonzero`).
    Dynamic { name: String },
    /// The number of entries in a KV-cache slot, kept by the runtime.
    CacheLen { slot: usize },
}

/// `constant + Σ coeff · symbols[index]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DimExpr {
    #[serde(default)]
    pub constant: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub terms: Vec<(usize, i64)>,
}

impl DimExpr {
    pub fn c(n: i64) -> DimExpr {
        DimExpr { constant: n, terms: Vec::new() }
    }

    pub fn sym(index: usize) -> DimExpr {
        DimExpr { constant: 0, terms: vec![(index, 1)] }
    }

    pub fn eval(&self, symbols: &[i64]) -> i64 {
        self.terms.iter().fold(self.constant, |acc, &(s, c)| acc + c * symbols[s])
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KernelEntry {
    /// The exported symbol in `kernels.so` (CPU) or the `.entry` in `kernels.ptx` (CUDA).
    pub symbol: String,
    /// The kernel family (`matmul`, `attention`, `fused`, ...).
    pub kind: String,
    /// What the kernel was specialized for (shapes, attributes, weight format), for inspection.
    pub params: serde_json::Value,
    /// How to launch it (CUDA artifacts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<Launch>,
}

/// The launch geometry of a CUDA kernel. A step with `tasks` tasks launches
/// `ceil(tasks / tasks_per_block) · blocks_per_task` blocks of `block` threads with
/// `shared_bytes` of dynamic shared memory. The kernel's parameters are, by value: `i64 tasks`,
/// then the step's dims as `i64`, then its buffers as device pointers (0 for [`BufArg::Null`]),
/// then — when `scratch_per_task` is not 0 — a device pointer to zero-initialized scratch memory
/// of at least `tasks · scratch_per_task` bytes, which the kernel leaves zeroed where it found
/// zeros (split-K partial results and their arrival counters).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Launch {
    pub block: u32,
    pub tasks_per_block: u32,
    #[serde(default)]
    pub shared_bytes: u32,
    /// The kernel synchronizes its whole block (`bar.sync`), so its warps must run together
    /// (a simulator may run the warps of other kernels one at a time).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub block_sync: bool,
    /// Blocks that share one task (split-K: each takes a part of the reduction, the last one to
    /// finish combines them through the scratch memory).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub blocks_per_task: u32,
    /// Bytes of scratch memory per task (0: no scratch parameter).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub scratch_per_task: u32,
}

fn one() -> u32 {
    1
}

fn is_one(v: &u32) -> bool {
    *v == 1
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl Launch {
    /// `tasks_per_block` tasks per block of `block` threads: no shared memory, no block
    /// synchronization, no split-K.
    pub fn new(block: u32, tasks_per_block: u32) -> Launch {
        Launch { block, tasks_per_block, shared_bytes: 0, block_sync: false, blocks_per_task: 1, scratch_per_task: 0 }
    }

    /// Blocks for `tasks` tasks.
    pub fn grid(&self, tasks: i64) -> u32 {
        let groups = (tasks.max(0) as u64).div_ceil(self.tasks_per_block.max(1) as u64);
        (groups * self.blocks_per_task.max(1) as u64) as u32
    }

    /// Scratch bytes a call of `tasks` tasks needs (0 without scratch).
    pub fn scratch_bytes(&self, tasks: i64) -> usize {
        tasks.max(0) as usize * self.scratch_per_task as usize
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ElemType {
    F32,
    I32,
    I64,
    /// Packed weight bytes (any format).
    U8,
}

impl ElemType {
    pub fn size(self) -> usize {
        match self {
            ElemType::F32 | ElemType::I32 => 4,
            ElemType::I64 => 8,
            ElemType::U8 => 1,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BufferSpec {
    pub name: String,
    pub elem: ElemType,
    /// Elements, as a function of the symbols (weights: a constant).
    pub elems: DimExpr,
    pub storage: Storage,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Storage {
    /// Scratch memory for one call, sized for `max_tokens`.
    Activation,
    /// Another buffer's memory from `offset_elems` on (reshape, and slices that need no copy).
    Alias { of: usize, offset_elems: DimExpr },
    /// A tensor of `weights.safetensors`, memory-mapped.
    Weight { tensor: String },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KvSlotSpec {
    pub slot: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// A private slot of an attention without a cache: emptied before every call.
    #[serde(default)]
    pub scratch: bool,
}

/// A kernel argument pointer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BufArg {
    Buffer {
        id: usize,
    },
    /// A KV-cache slot's keys `[capacity, kv_heads, head_dim]` f32, values (same), or positions
    /// `[capacity]` i32.
    CacheKeys {
        slot: usize,
    },
    CacheValues {
        slot: usize,
    },
    CachePositions {
        slot: usize,
    },
    /// An absent optional operand (no bias).
    Null,
}

/// One kernel call: `kernel(dims, bufs, begin, end)` for task ranges covering `0..tasks`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub kernel: usize,
    /// The IR node this step computes (`%12 = matmul ...`), for errors and profiles.
    pub label: String,
    pub dims: Vec<DimExpr>,
    pub bufs: Vec<BufArg>,
    pub tasks: DimExpr,
    /// After the call, the i64 the kernel wrote to its last buffer binds this symbol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binds: Option<usize>,
    /// After the call, this KV-cache slot grows by `dims[0]` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appends_to: Option<usize>,
    /// A speculative step: part of the copy of MoE layer `N`'s router that runs on the previous
    /// MoE layer's hidden state (its result is [`MoeLayer::guess`]). Only needed when experts are
    /// offloaded with prefetch; the runtime skips it otherwise. Its results feed nothing else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speculative: Option<usize>,
}

/// One Mixture-of-Experts layer of the program (after `moe-dispatch`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MoeLayer {
    /// The step writing the router's choice `selected` (`top_k`): after it, the runtime knows
    /// which experts this layer needs.
    pub select_step: usize,
    /// The router's choice: i32 `[T, top_k]` expert indices.
    pub selected: usize,
    /// The router's scores the choice was made from: f32 `[T, experts]` (monotone in the
    /// probabilities: softmax output or logits).
    pub scores: usize,
    pub top_k: usize,
    /// By expert number.
    pub experts: Vec<ExpertSpec>,
    /// The guessed scores `[T, experts]`: this layer's router applied to the previous MoE layer's
    /// hidden state, computed by the steps marked `speculative` with this layer's index, the last
    /// of which is `guess_step`. None for the first MoE layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guess: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guess_step: Option<usize>,
}

/// One expert of a MoE layer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExpertSpec {
    /// The symbol counting the rows routed to this expert (bound by its `nonzero` step).
    pub rows_symbol: usize,
    /// Weight buffers read only by this expert's steps (its FFN matrices).
    pub weights: Vec<usize>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NamedBuffer {
    pub name: String,
    pub buffer: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    /// [`checksum`] of the contents.
    pub checksum: String,
}

/// A corruption check (not a signature): FNV-1a 64 over the little-endian 8-byte words of the
/// data, then its tail bytes, as hex. Word-wise so checking a 500 MB weight file takes a fraction
/// of a second.
pub fn checksum(data: &[u8]) -> String {
    const PRIME: u64 = 0x100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        h ^= u64::from_le_bytes(w.try_into().expect("8 bytes"));
        h = h.wrapping_mul(PRIME);
    }
    for &b in words.remainder() {
        h ^= b as u64;
        h = h.wrapping_mul(PRIME);
    }
    format!("{h:016x}")
}
