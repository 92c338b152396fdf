//! Errors of model loading and lowering. Each names the file, key or tensor involved.

use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("{file}: {msg}")]
    Config { file: PathBuf, msg: String },
    #[error("{file}: unknown model_type '{found}' (supported: {supported})")]
    UnknownArch { file: PathBuf, found: String, supported: String },
    #[error("{file}: {tensor}: {msg}")]
    Tensor { file: PathBuf, tensor: String, msg: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("interpreter: {0}")]
    Interp(String),
    #[error("lowering to IR: {0}")]
    Build(#[from] kiln_ir::BuildError),
}

impl ModelError {
    pub fn config(file: impl Into<PathBuf>, msg: impl Into<String>) -> ModelError {
        ModelError::Config { file: file.into(), msg: msg.into() }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> ModelError {
        ModelError::Io { path: path.into(), source }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
