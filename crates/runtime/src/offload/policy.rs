//! Eviction policies of one MoE layer's expert cache.
//!
//! A policy keeps its own per-expert state (for every expert of the layer, cached or not) and, when
//! the cache must make room, picks the victim among the candidates the cache offers (cached experts
//! that are not in use and not just guessed). [`replay`] runs a policy over a recorded routing
//! sequence, so policies can be compared offline on the same trace (`kiln offload-report --replay`)
//! and unit-tested.

use super::config::PolicyKind;
use super::slots::SlotTable;

/// What a policy sees and decides.
pub trait Policy: Send {
    /// The router chose `expert` at logical time `tick` (one tick per token and layer).
    fn used(&mut self, expert: usize, tick: u64);
    /// The router's probabilities of one token, by expert (only router-aware policies care).
    fn scores(&mut self, _probs: &[f32]) {}
    /// The cache must evict one of `candidates` (non-empty).
    fn victim(&self, candidates: &[usize]) -> usize;
    /// Whether prefetching `expert`, guessed with probability `prob`, is worth evicting `victim`.
    /// The paper's speculative loading always prefetches.
    fn worth_prefetching(&self, _expert: usize, _prob: f32, _victim: usize) -> bool {
        true
    }
    /// Of `guessed` experts guessed for a routing, `right` were chosen.
    fn guess_outcome(&mut self, _guessed: usize, _right: usize) {}
}

/// A fresh policy of `kind` for a layer of `experts` experts.
pub fn new_policy(kind: PolicyKind, experts: usize) -> Box<dyn Policy> {
    match kind {
        // With no reuse the cache never keeps anything; eviction order does not matter.
        PolicyKind::None | PolicyKind::Lru => Box::new(Lru { last: vec![0; experts] }),
        PolicyKind::Lfu => Box::new(Lfu { count: vec![0; experts], last: vec![0; experts] }),
        PolicyKind::RouterEma => Box::new(RouterEma::new(experts)),
    }
}

fn argmin_by_key<K: PartialOrd>(candidates: &[usize], key: impl Fn(usize) -> K) -> usize {
    let mut best = candidates[0];
    for &c in &candidates[1..] {
        if key(c) < key(best) {
            best = c;
        }
    }
    best
}

/// Least recently used: the paper's policy.
struct Lru {
    last: Vec<u64>,
}

impl Policy for Lru {
    fn used(&mut self, expert: usize, tick: u64) {
        self.last[expert] = tick;
    }
    fn victim(&self, candidates: &[usize]) -> usize {
        argmin_by_key(candidates, |e| self.last[e])
    }
}

/// Least frequently used over the whole run (ties: least recently used).
struct Lfu {
    count: Vec<u64>,
    last: Vec<u64>,
}

impl Policy for Lfu {
    fn used(&mut self, expert: usize, tick: u64) {
        self.count[expert] += 1;
        self.last[expert] = tick;
    }
    fn victim(&self, candidates: &[usize]) -> usize {
        argmin_by_key(candidates, |e| (self.count[e], self.last[e]))
    }
}

/// Kiln's policy: evict the expert with the lowest exponentially averaged router probability.
///
/// LRU only sees which experts won; the router's probabilities also say which experts nearly
/// won, and a token's near-misses are the next tokens' likely choices (routing is smooth along the
/// text). The average `m_e ← (1-α)·m_e + α·p_e`, updated with every token's probabilities, is a
/// soft, router-weighted blend of recency and frequency: an expert chosen once with p = 0.9 and
/// one that came second five times running both stay.
struct RouterEma {
    mean: Vec<f32>,
    /// Recent fraction of this layer's guesses that were right (starts optimistic).
    precision: f32,
}

impl RouterEma {
    /// Chosen by replaying SmolLM2-moefy traces (`kiln offload-report --replay`) over α ∈
    /// {0.1, 0.25, 0.5} with and without a bonus for being chosen: 0.25 without one was best at
    /// every cache size (docs/offload.md).
    const ALPHA: f32 = 0.25;
    /// Guesses keep being made and scored, but a layer whose recent guesses were right less than
    /// half the time stops evicting for them: in early layers the hidden state still changes a
    /// lot from one layer to the next (SmolLM2-moefy: 21% precision at layer 1, over 90% past
    /// layer 12), and a wrong prefetch costs a load and a useful expert.
    const MIN_PRECISION: f32 = 0.5;
    const PRECISION_ALPHA: f32 = 0.1;

    fn new(experts: usize) -> RouterEma {
        RouterEma { mean: vec![0.0; experts], precision: 1.0 }
    }
}

impl Policy for RouterEma {
    fn used(&mut self, _expert: usize, _tick: u64) {
        // Being chosen is already in the probabilities.
    }
    fn scores(&mut self, probs: &[f32]) {
        for (m, &p) in self.mean.iter_mut().zip(probs) {
            *m = (1.0 - Self::ALPHA) * *m + Self::ALPHA * p;
        }
    }
    fn victim(&self, candidates: &[usize]) -> usize {
        argmin_by_key(candidates, |e| self.mean[e])
    }
    /// Only when the guess's expected average after the next token, `(1-α)·m_x + α·p`, beats the
    /// victim's (`m_v`, its expected probability being its average): a prefetch never evicts an
    /// expert the policy itself would rather keep.
    fn worth_prefetching(&self, expert: usize, prob: f32, victim: usize) -> bool {
        self.precision >= Self::MIN_PRECISION
            && (1.0 - Self::ALPHA) * self.mean[expert] + Self::ALPHA * prob > self.mean[victim]
    }
    fn guess_outcome(&mut self, guessed: usize, right: usize) {
        if guessed > 0 {
            let p = right as f32 / guessed as f32;
            self.precision = (1.0 - Self::PRECISION_ALPHA) * self.precision + Self::PRECISION_ALPHA * p;
        }
    }
}

/// Router scores as probabilities: kept if they already are (non-negative, summing to ~1, as a
/// softmax output), otherwise softmaxed (raw logits).
pub fn as_probabilities(scores: &[f32]) -> Vec<f32> {
    let sum: f32 = scores.iter().sum();
    if scores.iter().all(|&s| (0.0..=1.0 + 1e-4).contains(&s)) && (sum - 1.0).abs() < 1e-3 {
        return scores.to_vec();
    }
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = scores.iter().map(|&s| (s - max).exp()).collect();
    let total: f32 = exps.iter().sum();
    exps.iter().map(|e| e / total).collect()
}

/// One routing decision of a recorded run, as [`replay`] consumes it.
#[derive(Clone, Debug)]
pub struct Routed<'a> {
    pub layer: usize,
    /// The experts chosen, ascending (a prefill call: the union over its tokens).
    pub chosen: &'a [usize],
    /// The router's scores of every token of the call, `[tokens, experts]`.
    pub scores: &'a [f32],
    /// Whether hits and misses of this decision count (decode) or it only warms the cache
    /// (prefill).
    pub counted: bool,
}

/// Hits and misses of `kind` with `cache` experts per layer over a routing sequence, deciding
/// exactly as the runtime's cache does without prefetch (through the same [`SlotTable`]): count,
/// mark the chosen experts used, queue the missing ones over unchosen experts, then run the chosen
/// experts in order, placing any still missing.
pub fn replay<'a>(
    kind: PolicyKind,
    experts: usize,
    layers: usize,
    cache: usize,
    seq: impl IntoIterator<Item = Routed<'a>>,
) -> (u64, u64) {
    let mut policies: Vec<Box<dyn Policy>> = (0..layers).map(|_| new_policy(kind, experts)).collect();
    let mut tables = vec![SlotTable::new(cache, experts); layers];
    let (mut hits, mut misses) = (0, 0);
    for (tick, r) in seq.into_iter().enumerate() {
        let tick = tick as u64 + 1;
        let (policy, table) = (&mut policies[r.layer], &mut tables[r.layer]);
        if kind == PolicyKind::None {
            for s in 0..table.len() {
                table.clear(s);
            }
        }
        for row in r.scores.chunks_exact(experts) {
            policy.scores(&as_probabilities(row));
        }
        let mut chosen = vec![false; experts];
        r.chosen.iter().for_each(|&e| chosen[e] = true);
        let missed: Vec<usize> = r.chosen.iter().copied().filter(|&e| table.slot_of(e).is_none()).collect();
        if r.counted {
            misses += missed.len() as u64;
            hits += (r.chosen.len() - missed.len()) as u64;
        }
        for &e in r.chosen {
            policy.used(e, tick);
        }
        if kind != PolicyKind::None {
            for &e in &missed {
                let Some(slot) = table.place(policy.as_ref(), |c| !chosen[c]) else { break };
                table.assign(slot, e);
            }
        }
        let mut done = vec![false; experts];
        for &e in r.chosen {
            if table.slot_of(e).is_none() {
                if let Some(slot) = table.place_for_use(policy.as_ref(), e, &chosen, &done) {
                    table.assign(slot, e);
                }
            }
            done[e] = true;
        }
    }
    (hits, misses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kind: PolicyKind, cache: usize, seq: &[&[usize]], probs: &[Vec<f32>]) -> (u64, u64) {
        let routed = seq.iter().zip(probs).map(|(c, p)| Routed { layer: 0, chosen: c, scores: p, counted: true });
        replay(kind, 4, 1, cache, routed)
    }

    fn flat(n: usize) -> Vec<Vec<f32>> {
        vec![vec![0.25; 4]; n]
    }

    #[test]
    fn lru_evicts_the_least_recent() {
        // Cache 2, one expert per token: 0 1 0 2 1 → 0 m, 1 m, 0 h, 2 m (evicts 1), 1 m.
        let seq: &[&[usize]] = &[&[0], &[1], &[0], &[2], &[1]];
        assert_eq!(run(PolicyKind::Lru, 2, seq, &flat(5)), (1, 4));
    }

    #[test]
    fn lfu_keeps_the_frequent() {
        // 0 0 0 1 2 0: LFU evicts 1 for 2 (count 1 < 3) and hits 0 at the end; so does LRU here,
        // but 0 0 0 1 2 1 0 separates them: LRU evicts 0 for 2 then misses 0.
        let seq: &[&[usize]] = &[&[0], &[0], &[0], &[1], &[2], &[1], &[0]];
        let lfu = run(PolicyKind::Lfu, 2, seq, &flat(7));
        let lru = run(PolicyKind::Lru, 2, seq, &flat(7));
        // LFU: 0m 0h 0h 1m 2m(evict 1) 1m(evict 2: count 1, older) 0h → 3 hits.
        assert_eq!(lfu, (3, 4));
        // LRU: 0m 0h 0h 1m 2m(evict 0) 1h 0m → 3 hits.
        assert_eq!(lru, (3, 4));
        let seq2: &[&[usize]] = &[&[0], &[0], &[0], &[1], &[2], &[0]];
        assert_eq!(run(PolicyKind::Lfu, 2, seq2, &flat(6)), (3, 3));
        assert_eq!(run(PolicyKind::Lru, 2, seq2, &flat(6)), (2, 4));
    }

    #[test]
    fn router_ema_keeps_the_near_miss() {
        // Cache 2. Token 1 chooses 0 with 3 a close second; token 2 chooses 1; token 3 chooses 2
        // (evicting 0 or 1 for LRU, but router-ema evicts whichever has less mass), then 3 never
        // cached... The near-miss signal matters when choosing the victim: after 0,1 cached and
        // 2 needed, probabilities say 1 is cold and 0 is still warm.
        let probs = vec![
            vec![0.6, 0.0, 0.0, 0.4],
            vec![0.3, 0.5, 0.0, 0.2],
            vec![0.4, 0.0, 0.6, 0.0],
            vec![0.7, 0.1, 0.1, 0.1],
        ];
        let seq: &[&[usize]] = &[&[0], &[1], &[2], &[0]];
        assert_eq!(run(PolicyKind::Lru, 2, seq, &probs), (0, 4));
        assert_eq!(run(PolicyKind::RouterEma, 2, seq, &probs), (1, 3));
    }

    #[test]
    fn router_ema_prefetches_only_what_it_would_keep_and_only_while_guesses_are_right() {
        let mut p = new_policy(PolicyKind::RouterEma, 4);
        p.scores(&[0.7, 0.1, 0.1, 0.1]);
        // Expert 0 carries mass; a lukewarm guess of 1 must not evict it, a confident one may
        // evict the cold expert 2.
        assert!(!p.worth_prefetching(1, 0.3, 0));
        assert!(p.worth_prefetching(1, 0.6, 2));
        // A run of wrong guesses switches prefetching off; right ones switch it back on.
        for _ in 0..20 {
            p.guess_outcome(2, 0);
        }
        assert!(!p.worth_prefetching(1, 0.9, 2));
        for _ in 0..20 {
            p.guess_outcome(2, 2);
        }
        assert!(p.worth_prefetching(1, 0.9, 2));
        // The paper's LRU prefetches every guess.
        assert!(new_policy(PolicyKind::Lru, 4).worth_prefetching(1, 0.0, 0));
    }

    #[test]
    fn none_never_hits() {
        let seq: &[&[usize]] = &[&[0, 1], &[0, 1], &[0, 1]];
        assert_eq!(run(PolicyKind::None, 4, seq, &flat(3)), (0, 6));
    }

    #[test]
    fn chosen_experts_are_not_evicted_for_each_other() {
        // Cache 2, top-2: the second expert of a token never evicts the first.
        let seq: &[&[usize]] = &[&[0, 1], &[2, 3], &[2, 3]];
        for kind in [PolicyKind::Lru, PolicyKind::Lfu, PolicyKind::RouterEma] {
            assert_eq!(run(kind, 2, seq, &flat(3)), (2, 4), "{kind}");
        }
    }

    #[test]
    fn probabilities_pass_through_or_softmax() {
        assert_eq!(as_probabilities(&[0.25, 0.75]), vec![0.25, 0.75]);
        let p = as_probabilities(&[2.0, 0.0]);
        assert!((p[0] - 0.8808).abs() < 1e-3 && (p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
