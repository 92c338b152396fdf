//! How experts are offloaded: the cache size (experts per layer or a byte budget), the eviction
//! policy, and how many guessed experts to prefetch.

use std::fmt;
use std::str::FromStr;

/// Which cached expert to evict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// No reuse: every use loads the expert again (the naive baseline).
    None,
    /// Least recently used (the paper's).
    Lru,
    /// Least frequently used (ties: least recently).
    Lfu,
    /// Kiln's: lowest exponentially averaged router probability, with the experts just guessed
    /// for the next use protected (see `policy.rs`).
    RouterEma,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 4] = [PolicyKind::None, PolicyKind::Lru, PolicyKind::Lfu, PolicyKind::RouterEma];

    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::None => "none",
            PolicyKind::Lru => "lru",
            PolicyKind::Lfu => "lfu",
            PolicyKind::RouterEma => "router-ema",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PolicyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PolicyKind::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| {
            let names: Vec<&str> = PolicyKind::ALL.iter().map(|p| p.name()).collect();
            format!("unknown expert-cache policy '{s}' (expected one of: {})", names.join(", "))
        })
    }
}

/// The fast tier's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheSize {
    /// Experts per MoE layer.
    Experts(usize),
    /// Bytes for all layers together, split evenly.
    Budget(u64),
}

/// Expert offloading settings (`kiln run/bench --expert-cache/--expert-budget/--policy/--prefetch`).
#[derive(Clone, Debug, PartialEq)]
pub struct OffloadConfig {
    pub cache: CacheSize,
    pub policy: PolicyKind,
    /// Guessed experts to prefetch per layer and token (0: no speculative loading).
    pub prefetch: usize,
    /// Record every routing decision for [`crate::offload::Trace`].
    pub record_events: bool,
    /// Read the slow tier with O_DIRECT (bypassing the page cache) when the file system allows.
    pub direct_io: bool,
}

impl OffloadConfig {
    pub fn new(cache: CacheSize, policy: PolicyKind) -> OffloadConfig {
        OffloadConfig { cache, policy, prefetch: 0, record_events: false, direct_io: true }
    }
}
