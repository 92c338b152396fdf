//! Speculative router steps (arXiv 2312.17238, "speculative expert loading"): MoE layer j's router
//! applied to the hidden state of MoE layer j−1. Because layers are residual, the hidden state
//! changes little from one layer to the next, so the copy guesses layer j's experts well enough to
//! start loading them while layer j−1 still runs.
//!
//! The copy is planned right after the previous layer's residual stream is computed, through the
//! ordinary per-node planning with the router's input pointed at that stream, so it uses the same
//! kernels and packed weights as the real router. Its results go to fresh buffers that nothing
//! else reads, and its steps are marked `speculative` so a runtime that does not prefetch skips
//! them.

use super::moe::Guess;
use super::Planner;
use crate::error::Result;
use kiln_ir::NodeId;
use kiln_runtime::artifact::manifest::Storage;

impl Planner<'_> {
    /// Plans layer `layer`'s speculative router copy; returns its result buffer and last step, or
    /// None when it needs no step (a router of reshapes alone: nothing to compute).
    pub(super) fn guess(&mut self, layer: usize, guess: &Guess) -> Result<Option<(usize, usize)>> {
        let from = self.value(guess.from)?;
        let (first_step, first_buffer) = (self.steps.len(), self.buffers.len());
        // Point the router's input at the earlier stream for the copy, and put back afterwards
        // whatever the real planning of these nodes has recorded (nothing, in program order), so
        // the real router is planned unaffected.
        let touched: Vec<NodeId> = std::iter::once(guess.root).chain(guess.chain.iter().copied()).collect();
        let saved: Vec<(NodeId, Option<usize>)> = touched.iter().map(|&n| (n, self.value_buf.remove(&n))).collect();
        self.value_buf.insert(guess.root, from);
        let planned = guess.chain.iter().try_for_each(|&n| self.node(n));
        let result = guess.chain.last().and_then(|n| self.value_buf.get(n).copied());
        for (n, b) in saved {
            match b {
                Some(b) => self.value_buf.insert(n, b),
                None => self.value_buf.remove(&n),
            };
        }
        planned?;
        for step in &mut self.steps[first_step..] {
            step.speculative = Some(layer);
            step.label = format!("{} [speculative router of moe layer {layer}]", step.label);
        }
        // Weights packed on first use here are the router's own, shared with the real router.
        for b in &mut self.buffers[first_buffer..] {
            if !matches!(b.storage, Storage::Weight { .. }) {
                b.name = format!("{}.guess{layer}", b.name);
            }
        }
        Ok(match (result, self.steps.len()) {
            (Some(b), n) if n > first_step => Some((b, n - 1)),
            _ => None,
        })
    }
}
