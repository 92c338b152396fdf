//! What the pass manager does around each pass, on request (MLIR's and rustc's flags): IR dumps
//! before/after passes, to a writer or a folder; verification after every pass; timing.
//!
//! Dumps start with a header line, as MLIR writes them:
//!
//! ```text
//! // -----// IR Dump After cse //----- //
//! graph @g {
//!   ...
//! }
//! ```
//!
//! Passes print with their options (`eqsat{rules=rope}`); a dump is valid IR (the header is a
//! comment), so it can be fed back to `kiln opt`.

use kiln_ir::Graph;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// How the timing report is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimingFormat {
    /// An aligned table ([`RunReport::table`]).
    Text,
    /// One JSON object ([`RunReport::to_json`]).
    Json,
}

/// Instrumentation options of a [`PassManager`](crate::PassManager) run. The default does nothing
/// but the final verification.
#[derive(Clone, Debug, Default)]
pub struct Instrumentation {
    /// Dump the IR before each pass with one of these names.
    pub print_ir_before: Vec<String>,
    /// Dump the IR after each pass with one of these names.
    pub print_ir_after: Vec<String>,
    /// Dump the IR after every pass.
    pub print_ir_after_all: bool,
    /// Dump the IR after every pass that reports a change.
    pub print_ir_after_change: bool,
    /// Write dumps as files into this folder instead of to the writer: `00-input.kir` (always), then
    /// `NN-<pass>.kir` after pass NN (1-based) and `NN-<pass>.before.kir` before it. With none of the
    /// print options set, every pass is dumped (as if `print_ir_after_all`). Reproducers go here too.
    pub print_ir_dir: Option<PathBuf>,
    /// Verify after every pass (and check that a pass reporting no change left the graph as it was);
    /// a failure names the pass and writes a reproducer.
    pub verify_each: bool,
    /// Write a timing report to the writer at the end of the run.
    pub pass_timing: Option<TimingFormat>,
}

impl Instrumentation {
    pub(crate) fn dump_before(&self, pass: &str) -> bool {
        self.print_ir_before.iter().any(|p| p == pass)
    }

    pub(crate) fn dump_after(&self, pass: &str, changed: bool) -> bool {
        let dir_default = self.print_ir_dir.is_some()
            && self.print_ir_before.is_empty()
            && self.print_ir_after.is_empty()
            && !self.print_ir_after_change;
        self.print_ir_after_all
            || dir_default
            || (self.print_ir_after_change && changed)
            || self.print_ir_after.iter().any(|p| p == pass)
    }
}

/// `// -----// IR Dump After cse //----- //` and the IR.
pub fn dump(when: &str, pass: &str, g: &Graph) -> String {
    format!("// -----// IR Dump {when} {pass} //----- //\n{}", kiln_ir::print(g))
}

/// What one pass did.
#[derive(Clone, Debug)]
pub struct PassRecord {
    /// 1-based position in the pipeline.
    pub index: usize,
    /// The pass as a pipeline prints it (`eqsat{rules=rope}`).
    pub pass: String,
    pub time: Duration,
    pub changed: bool,
    pub nodes_before: usize,
    pub nodes_after: usize,
    /// What the pass recorded in its [`PassCx`](crate::PassCx), merged over the names it used.
    pub stats: BTreeMap<String, Value>,
}

/// What a pipeline run did, pass by pass.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    pub passes: Vec<PassRecord>,
    /// Wall time of the whole run, verification and dumps included.
    pub total: Duration,
    /// Time spent verifying (after each pass with `verify_each`, and at the end).
    pub verify: Duration,
    /// Tensors the passes derived (see [`PassCx`](crate::PassCx)), needed to run the result.
    pub derived: kiln_ir::interp::DerivedWeights,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl RunReport {
    /// Whether any pass changed the graph.
    pub fn changed(&self) -> bool {
        self.passes.iter().any(|p| p.changed)
    }

    /// An aligned text table, one row per pass:
    ///
    /// ```text
    /// pass timing: total 1.234 ms, verification 0.100 ms
    ///    #  pass          time (ms)      %  changed  nodes     stats
    ///    1  canonicalize      0.200  16.2%  yes      36 -> 34  attrs=0 folded=2
    /// ```
    pub fn table(&self) -> String {
        let total = ms(self.total).max(1e-9);
        let width = self.passes.iter().map(|p| p.pass.len()).max().unwrap_or(4).max(4);
        let mut s = format!("pass timing: total {:.3} ms, verification {:.3} ms\n", ms(self.total), ms(self.verify));
        let _ = writeln!(
            s,
            "  {:>3}  {:<width$}  {:>9}  {:>6}  {:<7}  {:<12}  stats",
            "#", "pass", "time (ms)", "%", "changed", "nodes"
        );
        for p in &self.passes {
            let stats: Vec<String> = p.stats.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let nodes = format!("{} -> {}", p.nodes_before, p.nodes_after);
            let _ = writeln!(
                s,
                "  {:>3}  {:<width$}  {:>9.3}  {:>5.1}%  {:<7}  {:<12}  {}",
                p.index,
                p.pass,
                ms(p.time),
                100.0 * ms(p.time) / total,
                if p.changed { "yes" } else { "no" },
                nodes,
                stats.join(" ")
            );
        }
        s
    }

    /// `{"total_ms", "verify_ms", "passes": [{"index", "pass", "time_ms", "changed", "nodes_before",
    /// "nodes_after", "stats"}]}`.
    pub fn to_json(&self) -> Value {
        json!({
            "total_ms": ms(self.total),
            "verify_ms": ms(self.verify),
            "passes": self.passes.iter().map(|p| json!({
                "index": p.index,
                "pass": p.pass,
                "time_ms": ms(p.time),
                "changed": p.changed,
                "nodes_before": p.nodes_before,
                "nodes_after": p.nodes_after,
                "stats": p.stats,
            })).collect::<Vec<_>>(),
        })
    }
}
