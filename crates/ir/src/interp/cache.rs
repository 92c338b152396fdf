//! The KV cache: for each slot (the `cache = slot` attribute of `attention`), the keys, values and
//! positions of every token attended so far.

use std::collections::BTreeMap;

/// One slot: `len()` entries of keys `[n, kv_heads, head_dim]`, values `[n, kv_heads, v_head_dim]`
/// (row-major, f32; keys stored after fused RoPE) and their positions.
#[derive(Clone, Debug, PartialEq)]
pub struct KvSlot {
    kv_heads: usize,
    head_dim: usize,
    v_head_dim: usize,
    keys: Vec<f32>,
    values: Vec<f32>,
    positions: Vec<i64>,
}

impl KvSlot {
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    pub fn kv_heads(&self) -> usize {
        self.kv_heads
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    pub fn v_head_dim(&self) -> usize {
        self.v_head_dim
    }

    /// `[len, kv_heads, head_dim]`, row-major.
    pub fn keys(&self) -> &[f32] {
        &self.keys
    }

    /// `[len, kv_heads, v_head_dim]`, row-major.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    pub fn positions(&self) -> &[i64] {
        &self.positions
    }

    fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.positions.truncate(len);
            self.keys.truncate(len * self.kv_heads * self.head_dim);
            self.values.truncate(len * self.kv_heads * self.v_head_dim);
        }
    }
}

/// All slots; a slot exists once an attention has written to it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KvCache {
    slots: BTreeMap<usize, KvSlot>,
}

impl KvCache {
    pub fn new() -> KvCache {
        KvCache::default()
    }

    /// Entries in a slot (0 for a slot never written).
    pub fn len(&self, slot: usize) -> usize {
        self.slots.get(&slot).map_or(0, KvSlot::len)
    }

    /// True when no slot holds any entry.
    pub fn is_empty(&self) -> bool {
        self.slots.values().all(KvSlot::is_empty)
    }

    pub fn slot(&self, slot: usize) -> Option<&KvSlot> {
        self.slots.get(&slot)
    }

    /// The slots written so far, in slot order.
    pub fn slots(&self) -> impl Iterator<Item = (usize, &KvSlot)> {
        self.slots.iter().map(|(&s, k)| (s, k))
    }

    /// Forgets every entry at position `len` or later (rolls back rejected speculative tokens).
    /// Entries are appended in position order, so this keeps a prefix of each slot — which is
    /// shorter than `len` in a Mixture-of-Depths block that only some tokens entered.
    pub fn truncate(&mut self, len: usize) {
        for s in self.slots.values_mut() {
            let keep = s.positions().iter().take_while(|&&p| p < len as i64).count();
            s.truncate(keep);
        }
    }

    /// Drops every entry of every slot.
    pub fn clear(&mut self) {
        self.slots.clear();
    }

    /// Appends `n` entries to `slot` (keys `[n, kv_heads, head_dim]`, values `[n, kv_heads,
    /// v_head_dim]`), creating it if needed; the head counts and dims must match what the slot
    /// already holds.
    pub(crate) fn append(
        &mut self,
        slot: usize,
        (kv_heads, head_dim, v_head_dim): (usize, usize, usize),
        keys: &[f32],
        values: &[f32],
        positions: &[i64],
    ) -> Result<&KvSlot, String> {
        let s = self.slots.entry(slot).or_insert_with(|| KvSlot {
            kv_heads,
            head_dim,
            v_head_dim,
            keys: Vec::new(),
            values: Vec::new(),
            positions: Vec::new(),
        });
        if s.is_empty() {
            (s.kv_heads, s.head_dim, s.v_head_dim) = (kv_heads, head_dim, v_head_dim);
        } else if (s.kv_heads, s.head_dim, s.v_head_dim) != (kv_heads, head_dim, v_head_dim) {
            return Err(format!(
                "KV-cache slot {slot} holds {} kv heads of key dim {} / value dim {}, but this call has {kv_heads} of {head_dim} / {v_head_dim}",
                s.kv_heads, s.head_dim, s.v_head_dim
            ));
        }
        s.keys.extend_from_slice(keys);
        s.values.extend_from_slice(values);
        s.positions.extend_from_slice(positions);
        Ok(s)
    }
}
