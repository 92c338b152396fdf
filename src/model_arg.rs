//! Resolving the MODEL argument of `run`/`dump-ir`: a Hugging Face folder, or a GGUF file that is
//! imported into a temporary folder first (removed again when the command ends).

use anyhow::{Context, Result};
use kiln_models::Checkpoint;
use std::path::{Path, PathBuf};

pub struct ModelDir {
    pub path: PathBuf,
    /// A temporary import to delete on drop.
    temp: bool,
}

impl Drop for ModelDir {
    fn drop(&mut self) {
        if self.temp {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

pub fn is_gguf(path: &Path) -> bool {
    path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

pub fn resolve(model: &Path) -> Result<ModelDir> {
    if is_gguf(model) {
        let dst = std::env::temp_dir().join(format!("kiln-import-{}", std::process::id()));
        tracing::info!("importing {} into {}", model.display(), dst.display());
        eprintln!("note: importing {} (use `kiln import` once to skip this step)", model.display());
        crate::commands::import::import_with_progress(model, &dst)?;
        return Ok(ModelDir { path: dst, temp: true });
    }
    if !model.exists() {
        anyhow::bail!("{}: no such file or folder", model.display());
    }
    Ok(ModelDir { path: model.to_path_buf(), temp: false })
}

pub fn open(dir: &ModelDir) -> Result<Checkpoint> {
    Checkpoint::open(&dir.path).with_context(|| format!("loading {}", dir.path.display()))
}
