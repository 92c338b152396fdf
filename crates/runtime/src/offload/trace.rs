//! What an offloaded run reports: per-layer counters ([`LayerStats`]) and, with `--trace`, every
//! routing decision ([`TraceEvent`]), written as one JSON file ([`Trace`]) that
//! `kiln offload-report` reads.

use serde::{Deserialize, Serialize};

/// Marks a trace file (`"format": "kiln-offload-trace"`).
pub const TRACE_FORMAT: &str = "kiln-offload-trace";

/// Counters of one MoE layer's expert cache.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LayerStats {
    /// Expert uses found in the fast tier (loaded before they were needed, by any means).
    pub hits: u64,
    /// Expert uses that had to be loaded on demand (or waited on a load that was still running).
    pub misses: u64,
    /// Uses served by an expert that was prefetched and not yet used since.
    pub prefetch_hits: u64,
    /// Experts loaded into the fast tier (demand and prefetch).
    pub loads: u64,
    /// Bytes read from the slow tier.
    pub bytes_loaded: u64,
    /// Seconds the computation waited for this layer's experts.
    pub stall_secs: f64,
    /// Speculative guesses made (experts guessed, summed over tokens), guesses that the router then
    /// chose, and experts the router chose while a guess was available.
    pub guessed: u64,
    pub guessed_right: u64,
    pub chosen_with_guess: u64,
}

impl LayerStats {
    pub fn uses(&self) -> u64 {
        self.hits + self.misses
    }

    /// Hits over uses (0 when unused).
    pub fn hit_rate(&self) -> f64 {
        ratio(self.hits, self.uses())
    }

    /// Of the experts guessed, the fraction the router chose.
    pub fn prefetch_precision(&self) -> f64 {
        ratio(self.guessed_right, self.guessed)
    }

    /// Of the experts the router chose (where a guess existed), the fraction guessed.
    pub fn prefetch_recall(&self) -> f64 {
        ratio(self.guessed_right, self.chosen_with_guess)
    }

    pub fn add(&mut self, o: &LayerStats) {
        self.hits += o.hits;
        self.misses += o.misses;
        self.prefetch_hits += o.prefetch_hits;
        self.loads += o.loads;
        self.bytes_loaded += o.bytes_loaded;
        self.stall_secs += o.stall_secs;
        self.guessed += o.guessed;
        self.guessed_right += o.guessed_right;
        self.chosen_with_guess += o.chosen_with_guess;
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// One token's routing at one MoE layer (decode) or one call's (prefill: the union over its
/// tokens).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TraceEvent {
    /// Index of the forward call (0 = the first prefill chunk).
    pub call: u64,
    /// Tokens in the call.
    pub tokens: usize,
    /// MoE layer index (program order).
    pub layer: usize,
    /// Experts the router chose, ascending.
    pub chosen: Vec<usize>,
    /// Experts that were not in the fast tier when needed.
    pub missed: Vec<usize>,
    /// Experts guessed (and prefetched) for this layer, if prefetch is on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guessed: Vec<usize>,
    /// The router's scores of every token of the call, `[tokens, experts]` (for replaying
    /// policies offline).
    pub scores: Vec<f32>,
}

/// A whole offloaded run, as `--trace FILE.json` writes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Trace {
    /// [`TRACE_FORMAT`].
    pub format: String,
    pub artifact: String,
    /// The settings: policy name, experts per layer in the cache, prefetch count, budget.
    pub policy: String,
    pub cache_experts: usize,
    pub prefetch: usize,
    pub budget_bytes: u64,
    /// `o_direct` or `buffered` (the file system refused O_DIRECT).
    pub io: String,
    pub experts: usize,
    pub top_k: usize,
    pub moe_layers: usize,
    /// Bytes of one expert (all its weights) as loaded.
    pub expert_bytes: u64,
    /// Most bytes the fast tier held at once (never above `budget_bytes`).
    pub peak_fast_bytes: u64,
    /// One-token forward calls counted in `decode`.
    #[serde(default)]
    pub decode_calls: u64,
    /// Measured speeds, when the run was a benchmark (tokens per second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_tok_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill_tok_s: Option<f64>,
    /// Counters per MoE layer, for decode calls (one token) only, and for prefill calls.
    pub decode: Vec<LayerStats>,
    pub prefill: Vec<LayerStats>,
    pub events: Vec<TraceEvent>,
}

impl Trace {
    /// The decode counters summed over layers.
    pub fn decode_total(&self) -> LayerStats {
        let mut t = LayerStats::default();
        for l in &self.decode {
            t.add(l);
        }
        t
    }
}
