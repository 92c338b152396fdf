//! The pass manager (rustc's `run_passes`, MLIR's `PassManager`): runs passes in order on a graph,
//! with the [instrumentation](crate::instrument) asked for, and verifies the result.
//!
//! - The input is verified first, the output always at the end.
//! - With `verify_each`, the IR is verified after every pass; when a pass breaks it (or reports no
//!   change but changed the graph), the error names the pass and the verifier's message, and a
//!   *reproducer* is written: the pass's input IR as a `.kir` file whose first line is the command
//!   that reproduces the failure (`// kiln opt --passes 'cse' --verify-each`).
//! - Dumps and the timing report go to the writer given to [`PassManager::run`] (stderr in the
//!   CLI), or into `print_ir_dir`.
//!
//! Passes come from a [`Pipeline`] through the registry, or as any `Vec<Box<dyn Pass>>` (tests
//! inject deliberately broken passes that way).

use crate::instrument::{dump, Instrumentation, PassRecord, RunReport, TimingFormat};
use crate::pass::{Changed, Pass, PassCx, PassError};
use crate::pipeline::{self, PassSpec, Pipeline, PipelineError};
use crate::registry;
use kiln_ir::interp::WeightSource;
use kiln_ir::{Graph, VerifyError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A `print_ir_before`/`print_ir_after` name that is no pass.
    #[error("unknown pass '{name}' in {option} (valid passes: {valid})")]
    UnknownPassName { option: &'static str, name: String, valid: String },
    #[error("the input IR fails verification: {0}")]
    InvalidInput(Box<VerifyError>),
    #[error("pass '{pass}' ({index} of {count}) failed: {}", .source.msg)]
    Pass { pass: String, index: usize, count: usize, source: PassError },
    #[error("pass '{pass}' ({index} of {count}) produced invalid IR: {error}; {}", reproducer_note(.reproducer))]
    Verify { pass: String, index: usize, count: usize, error: Box<VerifyError>, reproducer: Result<PathBuf, String> },
    #[error("pass '{pass}' ({index} of {count}) reported no change but changed the graph; {}", reproducer_note(.reproducer))]
    UnreportedChange { pass: String, index: usize, count: usize, reproducer: Result<PathBuf, String> },
    #[error("the IR after the pipeline fails verification: {0} (rerun with --verify-each to find the pass)")]
    InvalidOutput(Box<VerifyError>),
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

fn reproducer_note(r: &Result<PathBuf, String>) -> String {
    match r {
        Ok(p) => format!("reproducer: {}", p.display()),
        Err(e) => format!("could not write a reproducer: {e}"),
    }
}

impl ManagerError {
    /// The reproducer written for this failure, if any.
    pub fn reproducer(&self) -> Option<&Path> {
        match self {
            ManagerError::Verify { reproducer: Ok(p), .. }
            | ManagerError::UnreportedChange { reproducer: Ok(p), .. } => Some(p),
            _ => None,
        }
    }
}

pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
    inst: Instrumentation,
}

impl std::fmt::Debug for PassManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassManager").field("pipeline", &self.pipeline()).field("inst", &self.inst).finish()
    }
}

impl PassManager {
    /// A manager for any passes. Names in `print_ir_before`/`print_ir_after` must be registered
    /// passes or passes of this list.
    pub fn new(passes: Vec<Box<dyn Pass>>, inst: Instrumentation) -> Result<PassManager, ManagerError> {
        let mut valid: Vec<&str> = registry::names();
        for p in &passes {
            if !valid.contains(&p.name()) {
                valid.push(p.name());
            }
        }
        for (option, names) in [("print-ir-before", &inst.print_ir_before), ("print-ir-after", &inst.print_ir_after)] {
            if let Some(name) = names.iter().find(|n| !valid.contains(&n.as_str())) {
                return Err(ManagerError::UnknownPassName { option, name: name.clone(), valid: valid.join(", ") });
            }
        }
        Ok(PassManager { passes, inst })
    }

    /// A manager for a pipeline, its passes built through the registry.
    pub fn from_pipeline(pipeline: &Pipeline, inst: Instrumentation) -> Result<PassManager, ManagerError> {
        PassManager::new(pipeline.build()?, inst)
    }

    /// Parses and builds a pipeline string (or `-O1`-style level).
    pub fn parse(text: &str, inst: Instrumentation) -> Result<PassManager, ManagerError> {
        PassManager::from_pipeline(&Pipeline::parse(text)?, inst)
    }

    /// The pipeline string of the passes, as their options print.
    pub fn pipeline(&self) -> String {
        pipeline::describe(&self.passes)
    }

    pub fn passes(&self) -> &[Box<dyn Pass>] {
        &self.passes
    }

    /// Runs every pass on `graph`, writing dumps and the timing report to `out`. On an error the
    /// graph is left as the failing pass left it.
    pub fn run(&self, graph: &mut Graph, out: &mut dyn Write) -> Result<RunReport, ManagerError> {
        self.run_with_weights(graph, None, out)
    }

    /// [`PassManager::run`] for a graph that came from a checkpoint: passes may read `weights`, and
    /// the tensors they derive come back in [`RunReport::derived`].
    pub fn run_with_weights(
        &self,
        graph: &mut Graph,
        weights: Option<&dyn WeightSource>,
        out: &mut dyn Write,
    ) -> Result<RunReport, ManagerError> {
        let start = Instant::now();
        let mut report = RunReport::default();
        let t = Instant::now();
        kiln_ir::verify(graph).map_err(|e| ManagerError::InvalidInput(Box::new(e)))?;
        report.verify += t.elapsed();

        let count = self.passes.len();
        let width = count.to_string().len().max(2);
        let dir = self.inst.print_ir_dir.as_deref();
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(|source| ManagerError::Io { path: dir.to_path_buf(), source })?;
            write_file(&dir.join(format!("{:0width$}-input.kir", 0)), &kiln_ir::print(graph))?;
        }
        for (i, pass) in self.passes.iter().enumerate() {
            let index = i + 1;
            let label = PassSpec::of(pass.as_ref()).to_string();
            let file = |suffix: &str| format!("{index:0width$}-{}{suffix}.kir", pass.name());
            if self.inst.dump_before(pass.name()) {
                self.emit(out, &file(".before"), &dump("Before", &label, graph))?;
            }
            let before = self.inst.verify_each.then(|| graph.clone());
            let nodes_before = graph.len();
            let mut cx = PassCx { weights, derived: std::mem::take(&mut report.derived), ..PassCx::new() };
            let t = Instant::now();
            let changed = pass.run(graph, &mut cx).map_err(|source| ManagerError::Pass {
                pass: label.clone(),
                index,
                count,
                source,
            })?;
            let time = t.elapsed();
            if let Some(before) = &before {
                let t = Instant::now();
                let verified = kiln_ir::verify(graph);
                report.verify += t.elapsed();
                if let Err(error) = verified {
                    let reproducer = self.reproducer(before, index, pass.as_ref(), &error.to_string());
                    return Err(ManagerError::Verify { pass: label, index, count, error: Box::new(error), reproducer });
                }
                if changed == Changed::No && !graph.same_as(before) {
                    let reproducer = self.reproducer(
                        before,
                        index,
                        pass.as_ref(),
                        "the pass reported no change but changed the graph",
                    );
                    return Err(ManagerError::UnreportedChange { pass: label, index, count, reproducer });
                }
            }
            if self.inst.dump_after(pass.name(), changed.changed()) {
                self.emit(out, &file(""), &dump("After", &label, graph))?;
            }
            report.passes.push(PassRecord {
                index,
                pass: label,
                time,
                changed: changed.changed(),
                nodes_before,
                nodes_after: graph.len(),
                stats: cx.stats.into_values().flatten().collect(),
            });
            report.derived = cx.derived;
        }
        let t = Instant::now();
        kiln_ir::verify(graph).map_err(|e| ManagerError::InvalidOutput(Box::new(e)))?;
        report.verify += t.elapsed();
        report.total = start.elapsed();
        let io = |source| ManagerError::Io { path: PathBuf::from("<dump writer>"), source };
        match self.inst.pass_timing {
            Some(TimingFormat::Text) => out.write_all(report.table().as_bytes()).map_err(io)?,
            Some(TimingFormat::Json) => writeln!(out, "{}", report.to_json()).map_err(io)?,
            None => {}
        }
        Ok(report)
    }

    /// Writes a dump to the writer, or as `file` into the dump folder.
    fn emit(&self, out: &mut dyn Write, file: &str, text: &str) -> Result<(), ManagerError> {
        match &self.inst.print_ir_dir {
            Some(dir) => write_file(&dir.join(file), text),
            None => out
                .write_all(text.as_bytes())
                .and_then(|_| out.write_all(b"\n"))
                .map_err(|source| ManagerError::Io { path: PathBuf::from("<dump writer>"), source }),
        }
    }

    /// Writes the input of a failing pass, with the command that reproduces the failure, into the
    /// dump folder (or the temp dir). Returns its path, or why it could not be written.
    fn reproducer(&self, input: &Graph, index: usize, pass: &dyn Pass, why: &str) -> Result<PathBuf, String> {
        let spec = PassSpec::of(pass).to_string();
        let mut text = format!("// kiln opt --passes '{spec}' --verify-each\n");
        text += &format!(
            "// Reproducer: the input of pass {index} of {}, '{spec}', in '{}'.\n",
            self.passes.len(),
            self.pipeline()
        );
        for line in why.lines() {
            text += &format!("// error: {line}\n");
        }
        text += &kiln_ir::print(input);
        let path = match &self.inst.print_ir_dir {
            Some(dir) => dir.join(format!("reproducer-{index:02}-{}.kir", pass.name())),
            None => {
                static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                std::env::temp_dir().join(format!("kiln-reproducer-{}-{n}-{}.kir", std::process::id(), pass.name()))
            }
        };
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), ManagerError> {
    std::fs::write(path, text).map_err(|source| ManagerError::Io { path: path.to_path_buf(), source })
}

/// Runs a pipeline string on a graph without instrumentation.
pub fn run_pipeline(graph: &mut Graph, pipeline: &str) -> Result<RunReport, ManagerError> {
    PassManager::parse(pipeline, Instrumentation::default())?.run(graph, &mut std::io::sink())
}
