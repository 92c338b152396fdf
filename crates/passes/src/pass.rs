//! The pass interface. A pass has a name and options (printed back in pipeline strings), runs on a
//! whole graph, and says whether it changed it. Passes edit graphs through `kiln_ir::Patch` (queued
//! edits applied once), never while iterating.

use kiln_ir::interp::{DerivedWeights, Tensor, WeightSource};
use kiln_ir::{Graph, TensorType};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Whether a pass changed the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Changed {
    Yes,
    No,
}

impl Changed {
    pub fn from_bool(b: bool) -> Changed {
        if b {
            Changed::Yes
        } else {
            Changed::No
        }
    }

    pub fn changed(self) -> bool {
        self == Changed::Yes
    }
}

/// What a pass sees besides the graph, and reports besides it.
///
/// - `stats`: free-form statistics (counts of rewrites, the e-graph's stop reason, ...) keyed by
///   pass name, shown by `--pass-timing` and `--json`.
/// - `weights`: the model's weights, when the graph came from a checkpoint. Passes that rewrite the
///   model (`moefy` clusters neurons by their weights) read them here.
/// - `derived`: tensors passes create (router weights, neuron groupings); a pass that adds a `param`
///   with a new name puts its value here. They flow to later passes and to whatever runs the graph.
#[derive(Default)]
pub struct PassCx<'w> {
    pub stats: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    pub weights: Option<&'w dyn WeightSource>,
    pub derived: DerivedWeights,
}

impl std::fmt::Debug for PassCx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassCx")
            .field("stats", &self.stats)
            .field("weights", &self.weights.is_some())
            .field("derived", &self.derived.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<'w> PassCx<'w> {
    pub fn new() -> PassCx<'w> {
        PassCx::default()
    }

    pub fn with_weights(weights: &'w dyn WeightSource) -> PassCx<'w> {
        PassCx { weights: Some(weights), ..PassCx::default() }
    }

    /// A weight by name (a derived one first), for pass `pass`; an error says the pass needs the
    /// model's weights when the graph came without them.
    pub fn weight(&self, pass: &str, name: &str, ty: &TensorType) -> Result<Arc<Tensor>, PassError> {
        if let Some(t) = self.derived.get(name) {
            return Ok(t.clone());
        }
        let w = self.weights.ok_or_else(|| {
            PassError::new(pass, "needs the model's weights: run it on a model folder or GGUF file, not bare IR")
        })?;
        w.get(name, ty).map_err(|e| PassError::new(pass, e.to_string()))
    }

    /// Records one statistic for a pass.
    pub fn stat(&mut self, pass: &str, key: &str, value: impl Into<serde_json::Value>) {
        self.stats.entry(pass.to_string()).or_default().insert(key.to_string(), value.into());
    }
}

/// An error inside a pass.
#[derive(Debug, thiserror::Error)]
#[error("pass '{pass}': {msg}")]
pub struct PassError {
    pub pass: String,
    pub msg: String,
}

impl PassError {
    pub fn new(pass: &str, msg: impl Into<String>) -> PassError {
        PassError { pass: pass.to_string(), msg: msg.into() }
    }
}

pub trait Pass {
    /// The registry name (`cse`, `eqsat`, ...).
    fn name(&self) -> &'static str;

    /// Options as `key=value` pairs, in the order they print (only non-default ones need appear,
    /// but printing must round-trip through the registry).
    fn options(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    fn run(&self, graph: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError>;
}

/// The options a pipeline string gives one pass (`eqsat{rules=rope+layout,node-limit=100000}`), as
/// text; each pass's constructor reads and validates the ones it knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassOptions(pub BTreeMap<String, String>);

impl PassOptions {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Fails on any key not in `known`, listing the valid ones.
    pub fn check_known(&self, pass: &str, known: &[&str]) -> Result<(), String> {
        for k in self.0.keys() {
            if !known.contains(&k.as_str()) {
                let valid = if known.is_empty() { "none".to_string() } else { known.join(", ") };
                return Err(format!("unknown option '{k}' for pass '{pass}' (valid options: {valid})"));
            }
        }
        Ok(())
    }

    pub fn usize(&self, key: &str, default: usize) -> Result<usize, String> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("option '{key}' must be a non-negative integer, found '{v}'")),
        }
    }

    pub fn bool(&self, key: &str, default: bool) -> Result<bool, String> {
        match self.get(key) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(format!("option '{key}' must be true or false, found '{v}'")),
        }
    }

    /// Durations like `2s`, `500ms`.
    pub fn duration(&self, key: &str, default: std::time::Duration) -> Result<std::time::Duration, String> {
        let Some(v) = self.get(key) else { return Ok(default) };
        let bad = || format!("option '{key}' must be a duration like 2s or 500ms, found '{v}'");
        let (num, unit) = v.find(|c: char| !c.is_ascii_digit() && c != '.').map(|i| v.split_at(i)).ok_or_else(bad)?;
        let n: f64 = num.parse().map_err(|_| bad())?;
        let secs = match unit {
            "s" => n,
            "ms" => n / 1000.0,
            "m" => n * 60.0,
            _ => return Err(bad()),
        };
        Ok(std::time::Duration::from_secs_f64(secs))
    }

    /// `+`-separated lists (`rules=rope+layout`).
    pub fn list(&self, key: &str) -> Option<Vec<&str>> {
        self.get(key).map(|v| v.split('+').filter(|s| !s.is_empty()).collect())
    }
}
