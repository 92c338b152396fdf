//! Which expert sits in which slot of one layer's cache, and every placement decision: the live
//! cache ([`super::ExpertCache`]) and the offline [`super::policy::replay`] both decide through
//! this table, so a replay reproduces a run's counters exactly.

use super::policy::Policy;

/// The experts held by one layer's `k` slots.
#[derive(Clone, Debug)]
pub struct SlotTable {
    slots: Vec<Option<usize>>,
    slot_of: Vec<Option<usize>>,
}

impl SlotTable {
    pub fn new(slots: usize, experts: usize) -> SlotTable {
        SlotTable { slots: vec![None; slots], slot_of: vec![None; experts] }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The slot holding `expert`.
    pub fn slot_of(&self, expert: usize) -> Option<usize> {
        self.slot_of[expert]
    }

    /// The expert in `slot`.
    pub fn expert_in(&self, slot: usize) -> Option<usize> {
        self.slots[slot]
    }

    /// Puts `expert` in `slot`; returns the expert it replaced.
    pub fn assign(&mut self, slot: usize, expert: usize) -> Option<usize> {
        let old = self.clear(slot);
        self.slots[slot] = Some(expert);
        self.slot_of[expert] = Some(slot);
        old
    }

    /// Empties `slot`; returns the expert it held.
    pub fn clear(&mut self, slot: usize) -> Option<usize> {
        let old = self.slots[slot].take();
        if let Some(o) = old {
            self.slot_of[o] = None;
        }
        old
    }

    /// A slot for a new expert: the first free one, else the slot of the policy's victim among
    /// the held experts `evictable` allows; None when it allows none.
    pub fn place(&self, policy: &dyn Policy, evictable: impl Fn(usize) -> bool) -> Option<usize> {
        if let Some(i) = self.slots.iter().position(Option::is_none) {
            return Some(i);
        }
        let candidates: Vec<usize> = self.slots.iter().flatten().copied().filter(|&e| evictable(e)).collect();
        if candidates.is_empty() {
            return None;
        }
        self.slot_of[policy.victim(&candidates)]
    }

    /// A slot for `expert`, whose steps are about to run in a call that chose `chosen`, of which
    /// `done` have finished: an expert not in use, else — a call choosing more experts than the
    /// cache holds, like a long prefill — the chosen expert whose turn is furthest away (experts
    /// run in ascending order), which is loaded again when its turn comes.
    pub fn place_for_use(&self, policy: &dyn Policy, expert: usize, chosen: &[bool], done: &[bool]) -> Option<usize> {
        self.place(policy, |c| c != expert && (!chosen[c] || done[c])).or_else(|| {
            self.slots.iter().flatten().copied().filter(|&c| c != expert).max().and_then(|c| self.slot_of[c])
        })
    }
}
