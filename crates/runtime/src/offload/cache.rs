//! The fast tier: per MoE layer, `k` RAM slots holding experts, filled from the slow tier by the
//! [`Loader`], with the budget accounting and the counters.
//!
//! The executor tells the cache what happens, in program order:
//! 1. [`ExpertCache::guessed`] — the speculative copy of a layer's router ran on the previous
//!    layer's hidden state: prefetch its top guesses (behind any demand load).
//! 2. [`ExpertCache::routed`] — the layer's router chose: count hits and misses and queue every
//!    missing chosen expert at once, so later experts load while earlier ones compute.
//! 3. [`ExpertCache::acquire`] — an expert's first weight step is next: wait for its slot.
//! 4. [`ExpertCache::release`] — its last step ran: it may be evicted again.

use super::config::{CacheSize, OffloadConfig, PolicyKind};
use super::loader::{io_buffer, plan_reads, Loader, IO_ALIGN};
use super::policy::{as_probabilities, new_policy, Policy};
use super::slots::SlotTable;
use super::trace::{LayerStats, Trace, TraceEvent, TRACE_FORMAT};
use crate::aligned::AlignedBuf;
use crate::artifact::manifest::{BufferSpec, MoeLayer};
use crate::error::{Result, RuntimeError};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// Where one expert's weights land in a slot.
struct ExpertLayout {
    reads: Vec<super::loader::Read>,
    /// Bytes of the expert's weights (what the budget counts).
    bytes: u64,
}

struct Slot {
    buf: AlignedBuf,
    /// A load into this slot not yet waited for.
    ticket: Option<u64>,
    /// Loaded by a prefetch and not used since.
    prefetched: bool,
}

struct LayerCache {
    experts: Vec<ExpertLayout>,
    slots: Vec<Slot>,
    /// Which expert each slot holds (or is loading).
    table: SlotTable,
    policy: Box<dyn Policy>,
    top_k: usize,
    /// The router's choice in this call, and which of those have finished their steps.
    chosen: Vec<bool>,
    done: Vec<bool>,
    /// The guess for this layer's next routing, if one was made since its last routing.
    guess: Option<Vec<usize>>,
}

/// Per-layer expert caches over one slow-tier file.
pub struct ExpertCache {
    layers: Vec<LayerCache>,
    /// Weight buffer → (layer, expert, byte offset in the slot).
    placement: HashMap<usize, (usize, usize, usize)>,
    loader: Loader,
    policy: PolicyKind,
    prefetch: usize,
    per_layer: usize,
    budget: u64,
    /// Bytes of experts held (or being loaded) right now, and the most ever.
    held: u64,
    peak: u64,
    tick: u64,
    call: u64,
    decode_calls: u64,
    tokens: usize,
    decode: Vec<LayerStats>,
    prefill: Vec<LayerStats>,
    record: bool,
    events: Vec<TraceEvent>,
}

fn bad(msg: String) -> RuntimeError {
    RuntimeError::Execution(msg)
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

impl ExpertCache {
    /// Sets up the caches of `layers` whose expert weights are tensors of `file`.
    /// `tensor_range(buffer)` gives a weight buffer's byte range in the file.
    pub fn new(
        file: &Path,
        layers: &[MoeLayer],
        buffers: &[BufferSpec],
        tensor_range: impl Fn(usize) -> Option<(u64, u64)>,
        cfg: &OffloadConfig,
    ) -> Result<ExpertCache> {
        if layers.is_empty() {
            return Err(bad(
                "expert offloading needs a Mixture-of-Experts artifact compiled with an explicit dispatch (`moe-dispatch`); this artifact has no MoE layers".into(),
            ));
        }
        if cfg.policy == PolicyKind::None && cfg.prefetch > 0 {
            return Err(bad("--prefetch needs a caching policy (not `none`)".into()));
        }
        let mut placement = HashMap::new();
        let mut layouts = Vec::with_capacity(layers.len());
        let mut slot_bytes = Vec::with_capacity(layers.len());
        for (li, l) in layers.iter().enumerate() {
            let mut experts = Vec::with_capacity(l.experts.len());
            for (ei, e) in l.experts.iter().enumerate() {
                let ranges: Vec<(u64, u64)> = e
                    .weights
                    .iter()
                    .map(|&b| {
                        tensor_range(b).ok_or_else(|| {
                            RuntimeError::Artifact(format!(
                                "MoE layer {li} expert {ei}: weight buffer {b} ('{}') is not a tensor of the weight file",
                                buffers.get(b).map(|s| s.name.as_str()).unwrap_or("?")
                            ))
                        })
                    })
                    .collect::<Result<_>>()?;
                let (reads, places, total) = plan_reads(&ranges, 64 * 1024);
                for (&b, &at) in e.weights.iter().zip(&places) {
                    placement.insert(b, (li, ei, at));
                }
                let bytes = ranges.iter().map(|(s, e)| e - s).sum();
                experts.push((ExpertLayout { reads, bytes }, total));
            }
            slot_bytes.push(experts.iter().map(|(_, t)| *t).max().unwrap_or(IO_ALIGN).next_multiple_of(IO_ALIGN));
            layouts.push(experts.into_iter().map(|(l, _)| l).collect::<Vec<_>>());
        }
        let n = layers.len() as u64;
        let slot_total: u64 = slot_bytes.iter().map(|&b| b as u64).sum();
        let min_k = layers.iter().map(|l| l.top_k).max().unwrap_or(1);
        let max_e = layers.iter().map(|l| l.experts.len()).min().unwrap_or(0);
        let minimum: u64 = layers.iter().zip(&slot_bytes).map(|(l, &b)| l.top_k as u64 * b as u64).sum();
        let per_layer = match cfg.cache {
            CacheSize::Experts(k) => {
                if k < min_k {
                    return Err(bad(format!(
                        "--expert-cache {k} is below the router's top-k: every MoE layer needs room for its {min_k} chosen experts (--expert-cache {min_k}, or --expert-budget {minimum} bytes = {})",
                        mb(minimum)
                    )));
                }
                if k > max_e {
                    return Err(bad(format!("--expert-cache {k} exceeds the {max_e} experts of a layer")));
                }
                k
            }
            CacheSize::Budget(b) => {
                if b < minimum {
                    return Err(bad(format!(
                        "--expert-budget {b} bytes ({}) is below the minimum of {minimum} bytes ({}): each of the {n} MoE layers needs room for its top-{min_k} experts ({} per expert)",
                        mb(b),
                        mb(minimum),
                        mb(slot_bytes[0] as u64)
                    )));
                }
                ((b / slot_total) as usize).min(max_e)
            }
        };
        let budget = match cfg.cache {
            CacheSize::Experts(k) => k as u64 * slot_total,
            CacheSize::Budget(b) => b,
        };
        let loader = Loader::new(file, cfg.direct_io).map_err(|e| bad(format!("{}: {e}", file.display())))?;
        let mut cache_layers = Vec::with_capacity(layers.len());
        for ((l, experts), &sb) in layers.iter().zip(layouts).zip(&slot_bytes) {
            let e = l.experts.len();
            cache_layers.push(LayerCache {
                experts,
                slots: (0..per_layer).map(|_| Slot { buf: io_buffer(sb), ticket: None, prefetched: false }).collect(),
                table: SlotTable::new(per_layer, e),
                policy: new_policy(cfg.policy, e),
                top_k: l.top_k,
                chosen: vec![false; e],
                done: vec![false; e],
                guess: None,
            });
        }
        let allocated: u64 = cache_layers.iter().flat_map(|l| &l.slots).map(|s| s.buf.len() as u64).sum();
        assert!(allocated <= budget, "expert slots ({allocated} bytes) exceed the budget ({budget})");
        tracing::info!(
            "expert cache: {per_layer} experts per layer × {n} layers, {} of {} budget, policy {}, prefetch {}, {} reads",
            mb(allocated),
            mb(budget),
            cfg.policy,
            cfg.prefetch,
            if loader.direct() { "O_DIRECT" } else { "buffered" }
        );
        Ok(ExpertCache {
            placement,
            loader,
            policy: cfg.policy,
            prefetch: cfg.prefetch,
            per_layer,
            budget,
            held: 0,
            peak: 0,
            tick: 0,
            call: 0,
            decode_calls: 0,
            tokens: 0,
            decode: vec![LayerStats::default(); layers.len()],
            prefill: vec![LayerStats::default(); layers.len()],
            record: cfg.record_events,
            events: Vec::new(),
            layers: cache_layers,
        })
    }

    /// Where a weight buffer lives, if it is an offloaded expert's: (layer, expert, offset).
    pub fn placement(&self, buffer: usize) -> Option<(usize, usize, usize)> {
        self.placement.get(&buffer).copied()
    }

    pub fn prefetch(&self) -> usize {
        self.prefetch
    }

    /// Experts cached per layer.
    pub fn per_layer(&self) -> usize {
        self.per_layer
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// The most bytes of experts the fast tier has held.
    pub fn peak_bytes(&self) -> u64 {
        self.peak
    }

    /// A forward call of `tokens` tokens begins.
    pub fn begin_call(&mut self, tokens: usize) {
        self.tokens = tokens;
    }

    pub fn end_call(&mut self) {
        self.call += 1;
        if self.tokens == 1 {
            self.decode_calls += 1;
        }
    }

    fn stats(&mut self, layer: usize) -> &mut LayerStats {
        if self.tokens == 1 {
            &mut self.decode[layer]
        } else {
            &mut self.prefill[layer]
        }
    }

    /// Points `slot` of `layer` at `expert` (evicting what it held) and queues the load.
    fn load_into(&mut self, layer: usize, slot: usize, expert: usize, urgent: bool) {
        self.evict(layer, slot);
        let l = &mut self.layers[layer];
        l.table.assign(slot, expert);
        let s = &mut l.slots[slot];
        let layout = &l.experts[expert];
        s.ticket = Some(self.loader.submit(s.buf.as_ptr(), layout.reads.clone(), urgent));
        s.prefetched = !urgent;
        self.held += layout.bytes;
        assert!(
            self.held <= self.budget,
            "the fast tier holds {} bytes, over its budget of {}",
            self.held,
            self.budget
        );
        self.peak = self.peak.max(self.held);
        let bytes: u64 = layout.reads.iter().map(|r| r.len as u64).sum();
        let st = self.stats(layer);
        st.loads += 1;
        st.bytes_loaded += bytes;
    }

    /// The speculative router of `layer` produced `scores` (`[tokens, experts]`): prefetch the top
    /// `prefetch` experts of each token.
    pub fn guessed(&mut self, layer: usize, scores: &[f32]) {
        if self.prefetch == 0 {
            return;
        }
        let e = self.layers[layer].experts.len();
        // Each token's top `prefetch` experts, with their guessed probabilities (the highest over
        // the tokens of a prefill).
        let mut best: Vec<(f32, usize)> = Vec::new();
        for row in scores.chunks_exact(e) {
            let p = as_probabilities(row);
            let mut order: Vec<usize> = (0..e).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
            for &x in order.iter().take(self.prefetch) {
                match best.iter_mut().find(|(_, y)| *y == x) {
                    Some(b) => b.0 = b.0.max(p[x]),
                    None => best.push((p[x], x)),
                }
            }
        }
        best.sort_by(|a, b| b.0.total_cmp(&a.0));
        best.truncate(self.per_layer);
        let guess: Vec<usize> = best.iter().map(|&(_, x)| x).collect();
        for &(prob, x) in &best {
            let l = &self.layers[layer];
            if l.table.slot_of(x).is_some() {
                continue;
            }
            let Some(slot) = l.table.place(l.policy.as_ref(), |c| !guess.contains(&c)) else { break };
            // A wrong guess costs a load and evicts an expert: the policy may judge the victim
            // worth more than the guess.
            if let Some(victim) = l.table.expert_in(slot) {
                if !l.policy.worth_prefetching(x, prob, victim) {
                    continue;
                }
            }
            self.load_into(layer, slot, x, false);
        }
        self.layers[layer].guess = Some(guess);
    }

    /// `layer`'s router chose `selected` (`[tokens, top_k]` expert ids) from `scores`
    /// (`[tokens, experts]`).
    pub fn routed(&mut self, layer: usize, selected: &[i32], scores: &[f32]) -> Result<()> {
        self.tick += 1;
        let tick = self.tick;
        let e = self.layers[layer].experts.len();
        let mut chosen = vec![false; e];
        for &x in selected {
            let x = usize::try_from(x)
                .ok()
                .filter(|&x| x < e)
                .ok_or_else(|| bad(format!("MoE layer {layer}: the router chose expert {x}, outside 0..{e}")))?;
            chosen[x] = true;
        }
        let chosen_list: Vec<usize> = (0..e).filter(|&x| chosen[x]).collect();
        if self.policy == PolicyKind::None {
            for s in 0..self.layers[layer].slots.len() {
                self.evict(layer, s);
            }
        }
        for row in scores.chunks_exact(e) {
            let p = as_probabilities(row);
            self.layers[layer].policy.scores(&p);
        }
        let guess = self.layers[layer].guess.take();
        let mut missed = Vec::new();
        let mut st = LayerStats::default();
        if let Some(g) = &guess {
            let right = g.iter().filter(|&&x| chosen[x]).count();
            st.guessed += g.len() as u64;
            st.guessed_right += right as u64;
            st.chosen_with_guess += chosen_list.len() as u64;
            self.layers[layer].policy.guess_outcome(g.len(), right);
        }
        for &x in &chosen_list {
            let l = &mut self.layers[layer];
            match l.table.slot_of(x) {
                Some(s) => {
                    st.hits += 1;
                    if std::mem::take(&mut l.slots[s].prefetched) {
                        st.prefetch_hits += 1;
                    }
                    if let Some(t) = l.slots[s].ticket {
                        self.loader.expedite(t);
                    }
                }
                None => {
                    st.misses += 1;
                    missed.push(x);
                }
            }
            l.policy.used(x, tick);
        }
        self.stats(layer).add(&st);
        {
            let l = &mut self.layers[layer];
            l.chosen = chosen.clone();
            l.done = vec![false; e];
        }
        if self.policy != PolicyKind::None {
            // Queue every missing expert now; acquire() handles what did not fit (a prefill
            // choosing more experts than the cache holds).
            for &x in &missed {
                let l = &self.layers[layer];
                let Some(slot) = l.table.place(l.policy.as_ref(), |c| !chosen[c]) else { break };
                self.load_into(layer, slot, x, true);
            }
        }
        if self.record {
            self.events.push(TraceEvent {
                call: self.call,
                tokens: self.tokens,
                layer,
                chosen: chosen_list,
                missed,
                guessed: guess.unwrap_or_default(),
                scores: scores.to_vec(),
            });
        }
        Ok(())
    }

    fn evict(&mut self, layer: usize, slot: usize) {
        let l = &mut self.layers[layer];
        let s = &mut l.slots[slot];
        if let Some(t) = s.ticket.take() {
            // A running load stops after its current chunk, before any later job for the slot
            // starts (one I/O thread); nobody reads the slot until that job has filled it.
            self.loader.cancel(t);
        }
        s.prefetched = false;
        if let Some(old) = l.table.clear(slot) {
            self.held -= l.experts[old].bytes;
        }
    }

    /// The slot memory of `expert` of `layer`, loading it (or waiting for its load) first.
    pub fn acquire(&mut self, layer: usize, expert: usize) -> Result<*mut u8> {
        if self.layers[layer].table.slot_of(expert).is_none() {
            let l = &self.layers[layer];
            let slot = l
                .table
                .place_for_use(l.policy.as_ref(), expert, &l.chosen, &l.done)
                .ok_or_else(|| bad(format!("MoE layer {layer}: the expert cache has no slot for expert {expert}")))?;
            self.load_into(layer, slot, expert, true);
        }
        let slot = self.layers[layer].table.slot_of(expert).expect("just placed");
        if let Some(t) = self.layers[layer].slots[slot].ticket.take() {
            let start = Instant::now();
            self.loader.expedite(t);
            self.loader.wait(t).map_err(bad)?;
            self.stats(layer).stall_secs += start.elapsed().as_secs_f64();
        }
        Ok(self.layers[layer].slots[slot].buf.as_ptr())
    }

    /// The slot memory of a resident expert (after [`ExpertCache::acquire`]).
    pub fn resident(&self, layer: usize, expert: usize) -> Option<*mut u8> {
        let l = &self.layers[layer];
        let s = &l.slots[l.table.slot_of(expert)?];
        s.ticket.is_none().then(|| s.buf.as_ptr())
    }

    /// `expert`'s steps in this call are over.
    pub fn release(&mut self, layer: usize, expert: usize) {
        self.layers[layer].done[expert] = true;
    }

    /// Forgets the counters (e.g. after a warm-up). The recorded events stay: they are the
    /// routing history that put the cache in its state, which a replay needs.
    pub fn reset_stats(&mut self) {
        for s in self.decode.iter_mut().chain(self.prefill.iter_mut()) {
            *s = LayerStats::default();
        }
        self.decode_calls = 0;
    }

    /// Everything measured so far, as `--trace` writes it.
    pub fn trace(&self, artifact: &str) -> Trace {
        let first = &self.layers[0];
        Trace {
            format: TRACE_FORMAT.into(),
            artifact: artifact.into(),
            policy: self.policy.name().into(),
            cache_experts: self.per_layer,
            prefetch: self.prefetch,
            budget_bytes: self.budget,
            io: if self.loader.direct() { "o_direct" } else { "buffered" }.into(),
            experts: first.experts.len(),
            top_k: first.top_k,
            moe_layers: self.layers.len(),
            expert_bytes: first.experts.iter().map(|x| x.bytes).max().unwrap_or(0),
            peak_fast_bytes: self.peak,
            decode_calls: self.decode_calls,
            decode_tok_s: None,
            prefill_tok_s: None,
            decode: self.decode.clone(),
            prefill: self.prefill.clone(),
            events: self.events.clone(),
        }
    }
}
