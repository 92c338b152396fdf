//! `kiln offload-report --replay`: re-simulates LRU and LFU expert caches of every size over a
//! trace's recorded routing, to cross-check the runtime's online counters and to compare policies
//! on the same routing without rerunning the model.
//!
//! The cache and the two simple policies are implemented here again, independently of the
//! runtime, on purpose: a second, plain implementation is what makes the comparison a check. It
//! follows the runtime's cache (`ExpertCache`) in the details that decide ties and prefill
//! overflow, so that for LRU and LFU without prefetch it reproduces the runtime's decode counters
//! exactly (given the cache is empty when the trace starts). Router-EMA's eviction order comes
//! from the runtime's own policy object (it needs the tuned constant), driven by this simulation;
//! the trace keeps every token's router scores, so its replay is exact too.

use anyhow::{bail, Result};
use kiln_runtime::offload::policy::{self, Policy};
use kiln_runtime::offload::{PolicyKind, Trace};
use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HitCount {
    pub hits: u64,
    pub misses: u64,
}

impl HitCount {
    pub fn hit_rate(&self) -> f64 {
        let uses = self.hits + self.misses;
        if uses == 0 {
            0.0
        } else {
            self.hits as f64 / uses as f64
        }
    }
}

/// The replayed decode hits of one cache size (experts per layer).
#[derive(Debug, Serialize)]
pub struct ReplayRow {
    pub cache_experts: usize,
    pub lru: HitCount,
    pub lfu: HitCount,
    /// None when the trace lacks the router's scores.
    pub router_ema: Option<HitCount>,
}

#[derive(Debug, Serialize)]
pub struct Replay {
    pub decode_tokens: u64,
    pub rows: Vec<ReplayRow>,
}

/// Which expert to evict.
enum Rule {
    Lru,
    Lfu,
    /// A runtime policy object (router-EMA), fed the events' router probabilities.
    Runtime(Box<dyn Policy>),
}

/// One MoE layer's cache, following the runtime's `ExpertCache` step by step: a fixed row of
/// slots (a new expert takes the first free slot, else the victim's), one logical tick per routing
/// event (all experts of an event share it), LFU counting uses over the whole run (an evicted
/// expert keeps its count), and ties going to the earliest slot.
struct LayerCache {
    slots: Vec<Option<usize>>,
    last: Vec<u64>,
    count: Vec<u64>,
    rule: Rule,
}

impl LayerCache {
    fn new(size: usize, experts: usize, rule: Rule) -> LayerCache {
        LayerCache { slots: vec![None; size], last: vec![0; experts], count: vec![0; experts], rule }
    }

    fn cached(&self, e: usize) -> bool {
        self.slots.contains(&Some(e))
    }

    fn used(&mut self, e: usize, tick: u64) {
        self.last[e] = tick;
        self.count[e] += 1;
        if let Rule::Runtime(p) = &mut self.rule {
            p.used(e, tick);
        }
    }

    /// A slot for a new expert: the first free one, else the one holding the least recently (LRU)
    /// or least frequently (LFU; ties: least recently) used expert that `evictable` allows.
    fn free_slot(&self, evictable: impl Fn(usize) -> bool) -> Option<usize> {
        if let Some(i) = self.slots.iter().position(|s| s.is_none()) {
            return Some(i);
        }
        let candidates: Vec<(usize, usize)> =
            self.slots.iter().enumerate().filter_map(|(i, s)| s.filter(|&e| evictable(e)).map(|e| (i, e))).collect();
        // `min_by_key` keeps the first of equal keys: the earliest slot.
        match &self.rule {
            Rule::Lru => candidates.iter().min_by_key(|&&(_, e)| self.last[e]).map(|&(i, _)| i),
            Rule::Lfu => candidates.iter().min_by_key(|&&(_, e)| (self.count[e], self.last[e])).map(|&(i, _)| i),
            Rule::Runtime(p) => {
                let experts: Vec<usize> = candidates.iter().map(|&(_, e)| e).collect();
                (!experts.is_empty()).then(|| {
                    let v = p.victim(&experts);
                    candidates.iter().find(|&&(_, e)| e == v).map_or(candidates[0].0, |&(i, _)| i)
                })
            }
        }
    }
}

/// Decode hits with `size` experts per layer, each layer's eviction decided by `rule()`. Each
/// event goes as in the runtime: count the hits and misses of the chosen experts (on decode events
/// only: prefill events, the union of a call's choices, just fill the cache), mark them used, load
/// the missing ones over unchosen experts while any is left, and then — only when a prefill chose
/// more experts than the cache holds — run the experts in order, each one still missing evicting
/// an unchosen or already finished one.
fn simulate(trace: &Trace, size: usize, rule: impl Fn() -> Rule) -> HitCount {
    let mut layers: Vec<LayerCache> =
        (0..trace.moe_layers).map(|_| LayerCache::new(size, trace.experts, rule())).collect();
    let mut n = HitCount::default();
    for (i, ev) in trace.events.iter().enumerate() {
        let tick = i as u64 + 1;
        let l = &mut layers[ev.layer];
        if let Rule::Runtime(p) = &mut l.rule {
            for row in ev.scores.chunks_exact(trace.experts) {
                p.scores(&policy::as_probabilities(row));
            }
        }
        let missed: Vec<usize> = ev.chosen.iter().copied().filter(|&e| !l.cached(e)).collect();
        if ev.tokens == 1 {
            n.misses += missed.len() as u64;
            n.hits += (ev.chosen.len() - missed.len()) as u64;
        }
        for &e in &ev.chosen {
            l.used(e, tick);
        }
        for &e in &missed {
            let Some(slot) = l.free_slot(|c| !ev.chosen.contains(&c)) else { break };
            l.slots[slot] = Some(e);
        }
        for (done, &e) in ev.chosen.iter().enumerate() {
            if !l.cached(e) {
                let finished = &ev.chosen[..done];
                // Nothing unchosen or finished to evict: the runtime gives up the chosen expert
                // whose turn is furthest away (the highest number) and reloads it later.
                let slot = l.free_slot(|c| !ev.chosen.contains(&c) || finished.contains(&c)).or_else(|| {
                    let later = l.slots.iter().flatten().copied().filter(|&c| c != e).max()?;
                    l.slots.iter().position(|&s| s == Some(later))
                });
                if let Some(slot) = slot {
                    l.slots[slot] = Some(e);
                }
            }
        }
    }
    n
}

/// Router-EMA, when every event has the router's scores.
fn router_ema(trace: &Trace, size: usize) -> Option<HitCount> {
    if trace.events.iter().any(|e| e.scores.is_empty() || e.scores.len() % trace.experts != 0) {
        return None;
    }
    Some(simulate(trace, size, || Rule::Runtime(policy::new_policy(PolicyKind::RouterEma, trace.experts))))
}

/// Checks that the events can be replayed (indices in range) without panicking on a bad file.
fn validate(trace: &Trace) -> Result<u64> {
    if trace.top_k == 0 || trace.top_k > trace.experts {
        bail!("top_k {} does not fit {} experts", trace.top_k, trace.experts);
    }
    let mut decode_calls = std::collections::BTreeSet::new();
    for (i, ev) in trace.events.iter().enumerate() {
        if ev.layer >= trace.moe_layers {
            bail!("event {i}: layer {} but the trace has {} MoE layers", ev.layer, trace.moe_layers);
        }
        if let Some(&e) = ev.chosen.iter().find(|&&e| e >= trace.experts) {
            bail!("event {i}: expert {e} but layers have {} experts", trace.experts);
        }
        let mut sorted = ev.chosen.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != ev.chosen.len() {
            bail!("event {i}: an expert is chosen twice");
        }
        if ev.tokens == 1 {
            decode_calls.insert(ev.call);
        }
    }
    if decode_calls.is_empty() {
        bail!("no decode events (one-token calls) to replay");
    }
    Ok(decode_calls.len() as u64)
}

/// Replays every cache size from `top_k` (the least that can hold one token's experts) to
/// `experts` (all resident).
pub fn replay(trace: &Trace) -> Result<Replay> {
    let decode_tokens = validate(trace)?;
    let rows = (trace.top_k..=trace.experts)
        .map(|size| ReplayRow {
            cache_experts: size,
            lru: simulate(trace, size, || Rule::Lru),
            lfu: simulate(trace, size, || Rule::Lfu),
            router_ema: router_ema(trace, size),
        })
        .collect();
    Ok(Replay { decode_tokens, rows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_runtime::offload::policy::Routed;
    use kiln_runtime::offload::{TraceEvent, TRACE_FORMAT};

    fn trace(experts: usize, top_k: usize, events: Vec<(usize, usize, Vec<usize>)>) -> Trace {
        let events = events
            .into_iter()
            .enumerate()
            .map(|(call, (tokens, layer, chosen))| TraceEvent {
                call: call as u64,
                tokens,
                layer,
                chosen,
                missed: vec![],
                guessed: vec![],
                scores: vec![1.0 / experts as f32; experts],
            })
            .collect();
        Trace {
            format: TRACE_FORMAT.into(),
            artifact: "a".into(),
            policy: "lru".into(),
            cache_experts: top_k,
            prefetch: 0,
            budget_bytes: 0,
            io: "buffered".into(),
            experts,
            top_k,
            moe_layers: 2,
            expert_bytes: 1,
            peak_fast_bytes: 0,
            decode_calls: 0,
            decode_tok_s: None,
            prefill_tok_s: None,
            decode: vec![],
            prefill: vec![],
            events,
        }
    }

    fn hits(t: &Trace, rule: fn() -> Rule, size: usize) -> (u64, u64) {
        let n = simulate(t, size, rule);
        (n.hits, n.misses)
    }

    /// The runtime's `policy::replay` is a different implementation of the same policies: where
    /// no ties and no prefill overflow can occur (one expert per token), the two must agree at
    /// every size.
    #[test]
    fn agrees_with_the_runtime_replay_without_ties() {
        let experts = 8;
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % experts as u64) as usize
        };
        let mut events = Vec::new();
        for _ in 0..400 {
            for layer in 0..2 {
                // Skewed routing, so that LRU and LFU differ.
                events.push((1, layer, vec![next().min(next())]));
            }
        }
        let t = trace(experts, 1, events);
        let routed =
            || t.events.iter().map(|e| Routed { layer: e.layer, chosen: &e.chosen, scores: &e.scores, counted: true });
        let r = replay(&t).unwrap();
        assert_eq!((r.decode_tokens, r.rows.len()), (800, 8));
        let mut differ = false;
        for row in &r.rows {
            let k = row.cache_experts;
            let (h, m) = policy::replay(PolicyKind::Lru, experts, 2, k, routed());
            assert_eq!(row.lru, HitCount { hits: h, misses: m }, "lru at {k}");
            let (h, m) = policy::replay(PolicyKind::Lfu, experts, 2, k, routed());
            assert_eq!(row.lfu, HitCount { hits: h, misses: m }, "lfu at {k}");
            assert!(row.router_ema.is_some());
            differ |= row.lru != row.lfu;
        }
        assert!(differ, "the sequence should tell LRU from LFU");
        // All resident: only the first use of each expert in each layer misses.
        assert!(r.rows[7].lru.misses <= 16 && r.rows[7].lfu == r.rows[7].lru);
    }

    /// Equal ticks go to the earliest slot, and a prefill choosing more experts than the cache
    /// holds keeps its last ones (each evicts an expert already run), as the runtime's cache does.
    #[test]
    fn ties_and_prefill_overflow_follow_the_runtime_cache() {
        // Cache 2. Prefill {0,1,2}: 0 and 1 load, 2 evicts 0 (tie at tick 1: earliest slot) →
        // slots [2, 1]. Then 1 hits; 0 misses and evicts 2 (older than 1); 2 misses and evicts 1.
        let t = trace(4, 1, vec![(3, 0, vec![0, 1, 2]), (1, 0, vec![1]), (1, 0, vec![0]), (1, 0, vec![2])]);
        assert_eq!(hits(&t, || Rule::Lru, 2), (1, 2));
        assert_eq!(hits(&t, || Rule::Lfu, 2), (1, 2));
        // Decode ties, top-2: [0,1] m m; [2,3] m m, 2 evicting 0 (same tick as 1: earliest slot)
        // and 3 evicting 1 → [2, 3]; [1,2]: 2 hits, 1 misses and evicts 3 → [2, 1]; [0,1]: 1 hits,
        // 0 misses.
        let t = trace(4, 2, vec![(1, 0, vec![0, 1]), (1, 0, vec![2, 3]), (1, 0, vec![1, 2]), (1, 0, vec![0, 1])]);
        assert_eq!(hits(&t, || Rule::Lru, 2), (2, 6));
        let t = trace(4, 1, vec![(1, 0, vec![0]), (1, 0, vec![1]), (1, 1, vec![2]), (1, 0, vec![2]), (1, 0, vec![1])]);
        // Layer 0 with cache 2: 0 m, 1 m, 2 m (evicts 0), 1 h; layer 1: 2 m.
        assert_eq!(hits(&t, || Rule::Lru, 2), (1, 4));
    }

    #[test]
    fn bad_events_are_errors() {
        let t = trace(4, 2, vec![(1, 0, vec![0, 9])]);
        assert!(replay(&t).unwrap_err().to_string().contains("expert 9"));
        let t = trace(4, 2, vec![(1, 5, vec![0, 1])]);
        assert!(replay(&t).unwrap_err().to_string().contains("layer 5"));
        let t = trace(4, 2, vec![(3, 0, vec![0, 1])]);
        assert!(replay(&t).unwrap_err().to_string().contains("no decode events"));
    }
}
