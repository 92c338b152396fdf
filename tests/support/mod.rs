//! Shared helpers of the end-to-end tests.
#![allow(dead_code)]

pub mod cli;

use std::path::{Path, PathBuf};

/// A fresh, empty temporary folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("kiln-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, s: &str) -> PathBuf {
        self.0.join(s)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The SmolLM2 GGUF, when `make model` (scripts/fetch-model.sh) has fetched it.
pub fn smollm2_gguf() -> Option<PathBuf> {
    let p = std::env::var_os("KILN_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    if p.exists() {
        Some(p)
    } else if std::env::var_os("CI").is_some() {
        panic!("CI must fetch the SmolLM2 model first (make model): {} is missing", p.display());
    } else {
        eprintln!("note: {} is missing; run `make model` to enable the SmolLM2 tests", p.display());
        None
    }
}

/// The SmolLM2 GGUF imported once into a folder under Cargo's target tmpdir, shared by every test
/// process (nextest runs each test in its own): the first import is written to a private folder and
/// renamed into place, so concurrent tests never see a half-written model, and nothing is left in
/// the system temp dir.
pub fn smollm2_dir() -> Option<PathBuf> {
    let gguf = smollm2_gguf()?;
    let dst = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("smollm2-imported");
    if !dst.join("config.json").exists() {
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("smollm2-import-{}", std::process::id()));
        let opts = kiln_models::gguf::ImportOptions { overwrite: true, ..Default::default() };
        kiln_models::gguf::import_gguf(&gguf, &tmp, &opts).expect("importing SmolLM2");
        // Another test may have won the race; then keep theirs.
        if std::fs::rename(&tmp, &dst).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
    Some(dst)
}

/// Relative L2 error ‖a − b‖ / ‖b‖.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((*x - *y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// The logits rows of a `kiln logits` JSON report, in order.
pub fn logits_rows(report: &serde_json::Value) -> Vec<Vec<f32>> {
    report["rows"]
        .as_array()
        .expect("a logits report")
        .iter()
        .map(|r| r["logits"].as_array().expect("logits").iter().map(|x| x.as_f64().expect("a number") as f32).collect())
        .collect()
}

pub fn argmax(xs: &[f32]) -> usize {
    kiln_runtime::sampler::argmax(xs)
}

/// Natural text for calibration and evaluation: the GPL (on Debian) or else this repository's
/// documentation, written into `dir`.
pub fn calibration_text(dir: &TempDir) -> PathBuf {
    let gpl = PathBuf::from("/usr/share/common-licenses/GPL-3");
    if gpl.exists() {
        return gpl;
    }
    let docs = workspace_root().join("docs");
    let mut s = String::new();
    for f in ["passes.md", "eqsat.md", "setup.md", "ir.md", "models.md"] {
        s.push_str(&std::fs::read_to_string(docs.join(f)).unwrap());
    }
    let p = dir.join("text.txt");
    std::fs::write(&p, s).unwrap();
    p
}

/// What [`compile_for_test`] compiles for.
pub struct TestArtifact<'a> {
    pub format: kiln_codegen::kernels::WeightFormat,
    pub pipeline: &'a str,
    pub max_tokens: usize,
    pub max_context: usize,
    /// Int8-activation prefill for Q8_0/Q4_0 weights (`CompileOptions::int8_prefill`).
    pub int8_prefill: bool,
}

/// Compiles `graph` (its weights from `weights`) into an artifact at `out` for this CPU.
pub fn compile_for_test(
    graph: &kiln_ir::Graph,
    weights: &dyn kiln_ir::interp::WeightSource,
    vocab_size: usize,
    spec: &TestArtifact<'_>,
    out: &Path,
) {
    let model = kiln_runtime::artifact::manifest::ModelDesc {
        name: "test".into(),
        arch: "test".into(),
        vocab_size,
        eos_token_ids: vec![],
        config: serde_json::Value::Null,
    };
    let opts = kiln_codegen::artifact::CompileOptions {
        weights: spec.format,
        max_tokens: spec.max_tokens,
        max_context: spec.max_context,
        pipeline: spec.pipeline.into(),
        extra_files: vec![],
        target_cpu: "native".into(),
        kernels: kiln_codegen::artifact::KernelTarget::Cpu,
        int8_prefill: spec.int8_prefill,
    };
    kiln_codegen::artifact::compile(graph, weights, model, &opts, out, &mut |_| {}).unwrap();
}
