//! Mixture-of-Experts offloading, after "Fast Inference of Mixture-of-Experts Language Models with
//! Offloading" (Eliseev & Mazur, arXiv 2312.17238).
//!
//! Expert weights stay in the slow tier — the artifact's weight file on disk, read with `pread`
//! and `O_DIRECT` so the page cache does not quietly act as a third tier — and each MoE layer keeps
//! a cache of a few experts in RAM slots (the fast tier) under a byte budget:
//!
//! - [`policy`]: which cached expert to evict (LRU as in the paper, LFU, and Kiln's router-EMA).
//! - [`loader`]: one I/O thread that fills slots; demand loads jump ahead of prefetches.
//! - [`cache`]: the per-layer slot tables, the budget accounting and the counters.
//! - Speculative loading: the compiler copies each MoE layer's router onto the previous MoE
//!   layer's hidden state (steps marked `speculative`); the runtime prefetches the top guesses while
//!   the current layer runs.

pub mod cache;
pub mod config;
pub mod loader;
pub mod policy;
pub mod slots;
pub mod trace;

pub use cache::ExpertCache;
pub use config::{CacheSize, OffloadConfig, PolicyKind};
pub use trace::{LayerStats, Trace, TraceEvent, TRACE_FORMAT};
