//! `kiln import FILE.gguf -o DIR`: convert a GGUF checkpoint into a Hugging Face folder
//! (config.json, model.safetensors, tokenizer.json, tokenizer_config.json).

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use kiln_models::gguf::{import_gguf, ImportOptions, ImportReport, OutputDType};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DtypeArg {
    F32,
    Bf16,
    F16,
}

#[derive(Args)]
pub struct ImportArgs {
    /// The .gguf file.
    pub input: PathBuf,
    /// The folder to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Element type of model.safetensors.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DtypeArg,
    /// Replace the output folder if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print the import report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn import(src: &Path, dst: &Path, dtype: OutputDType, overwrite: bool) -> Result<ImportReport> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} importing [{bar:40}] {pos}/{len} tensors ({elapsed})")
            .expect("static template")
            .progress_chars("=> "),
    );
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let opts = ImportOptions { dtype, overwrite, skip_unmapped: false, progress: Some(&progress) };
    let report = import_gguf(src, dst, &opts).with_context(|| format!("importing {}", src.display()));
    bar.finish_and_clear();
    report
}

/// Used by commands that accept a .gguf file where a folder is expected.
pub fn import_with_progress(src: &Path, dst: &Path) -> Result<ImportReport> {
    import(src, dst, OutputDType::F32, true)
}

pub fn run(args: ImportArgs) -> Result<()> {
    let dtype = match args.dtype {
        DtypeArg::F32 => OutputDType::F32,
        DtypeArg::Bf16 => OutputDType::BF16,
        DtypeArg::F16 => OutputDType::F16,
    };
    let r = import(&args.input, &args.output, dtype, args.force)?;
    if args.json {
        let v = serde_json::json!({
            "arch": r.arch,
            "model_type": r.model_type,
            "gguf_version": r.gguf_version,
            "tensors": r.tensor_count,
            "exported_tensors": r.exported_tensors,
            "quant_types": r.quant_types.iter().map(|(k, v)| (format!("{k:?}"), *v)).collect::<std::collections::BTreeMap<_, _>>(),
            "params": r.params,
            "bytes_written": r.bytes_written,
            "vocab_size": r.vocab_size,
            "tie_word_embeddings": r.tie_word_embeddings,
            "files": r.files,
            "skipped_tensors": r.skipped_tensors,
            "warnings": r.warnings,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let quants: Vec<String> = r.quant_types.iter().map(|(k, v)| format!("{k:?}×{v}")).collect();
        eprintln!(
            "imported {} ({}): {} tensors [{}], {:.1}M params, {} written to {}",
            args.input.display(),
            r.model_type,
            r.exported_tensors,
            quants.join(", "),
            r.params as f64 / 1e6,
            human_bytes(r.bytes_written),
            args.output.display()
        );
        for w in &r.warnings {
            eprintln!("warning: {w}");
        }
    }
    Ok(())
}

pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", units[i])
}
