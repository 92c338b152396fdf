//! Helpers the pass tests share.
#![allow(dead_code)]

use kiln_ir::interp::DerivedWeights;
use kiln_ir::{print, Graph};
use kiln_models::{Checkpoint, InterpModel};
use std::path::PathBuf;

/// A fresh, empty folder under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("kiln-passes-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    /// The `model` subfolder, where tests write a checkpoint: a fixed name keeps the graph's name
    /// (the folder's) the same on every run, for snapshots.
    pub fn model(&self) -> PathBuf {
        self.0.join("model")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Logits of an 8-token prefill and 3 decode steps of `g` (with `derived` weights), feeding
/// `tokens` when given (so two graphs see the same sequence), else each step's argmax. Returns the
/// logits and the fed tokens.
pub fn generate(
    ckpt: &Checkpoint,
    g: &Graph,
    derived: &DerivedWeights,
    tokens: Option<&[u32]>,
) -> (Vec<Vec<f32>>, Vec<u32>) {
    let mut m = InterpModel::with_derived(ckpt, g, derived).unwrap_or_else(|e| panic!("{e}\n{}", print(g)));
    let prompt = [1u32, 17, 42, 99, 5, 260, 73, 8];
    let mut logits = vec![m.forward(&prompt).unwrap()];
    let mut fed = Vec::new();
    for step in 0..3 {
        let next = tokens.map_or_else(|| argmax(logits.last().unwrap()), |t| t[step]);
        fed.push(next);
        logits.push(m.forward(&[next]).unwrap());
    }
    (logits, fed)
}

pub fn argmax(xs: &[f32]) -> u32 {
    xs.iter().enumerate().fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) }).0
        as u32
}

/// Relative L2 distance of `a` from `b`.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
    let norm: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
    (diff / norm.max(1e-30)).sqrt()
}
