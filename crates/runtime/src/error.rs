//! Errors raised by the Kiln runtime.

use thiserror::Error;

/// Everything that can go wrong while loading or running an artifact.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A compiled artifact that is missing, corrupt, of another format version, or for a CPU this
    /// machine is not; the message names the file and what is wrong.
    #[error("{0}")]
    Artifact(String),

    /// A kernel call or a model input that cannot run (bad token id, context full).
    #[error("{0}")]
    Execution(String),

    /// This build of Kiln has no CUDA support.
    #[error("Kiln was built without CUDA support (rebuild with `--features kiln-runtime/cuda`)")]
    NotCompiledWithCuda,

    /// The CUDA driver library (`libcuda.so`) could not be loaded.
    #[error("no CUDA driver: libcuda.so could not be loaded (install the NVIDIA driver, or use the CPU target)")]
    NoCudaDriver,

    /// The driver loaded but reports no usable GPU.
    #[error("the CUDA driver is present but reports no GPU")]
    NoCudaDevice,

    /// A CUDA driver call failed.
    #[error("CUDA driver call `{call}` failed: {message}")]
    Cuda {
        /// The driver API function.
        call: &'static str,
        /// The driver's error code and text.
        message: String,
    },

    /// A tokenizer file or chat template could not be loaded or used.
    #[error("{file}: {msg}")]
    Tokenizer {
        /// The file involved (tokenizer.json, tokenizer_config.json).
        file: String,
        /// What went wrong.
        msg: String,
    },

    /// Bad sampling settings.
    #[error("{0}")]
    Sampling(String),
}

/// Result alias for this crate.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
