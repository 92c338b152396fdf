//! GGUF import: read a llama.cpp GGUF file and turn it into a Hugging Face model folder.
//!
//! Kiln compiles Hugging Face checkpoints; GGUF is how many small models are distributed. This
//! module is the bridge:
//!
//! * [`GgufFile`] memory-maps a GGUF (v2/v3) file and validates every offset and size in it.
//!   [`GgufFile::metadata`] gives the key/values, [`GgufFile::tensors`] the tensor infos (with
//!   shapes in row-major order), [`GgufFile::tensor_f32`] a dequantized tensor.
//! * [`quant`] holds the ggml block formats and their dequantizers (F32, F16, BF16, Q4_0, Q4_1,
//!   Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, IQ4_NL, IQ4_XS, and integer types).
//! * [`import_gguf`] writes `config.json`, `generation_config.json`, `model.safetensors`,
//!   `tokenizer.json` and `tokenizer_config.json`, undoing llama.cpp's conventions (Q/K row
//!   permutation for llama-family models, `1 + w` Gemma norms, tied embeddings, tensor names)
//!   so that Hugging Face loaders (transformers, candle) read the result as if it had been
//!   saved by `save_pretrained`.
//!
//! Supported families: llama (and mistral), mixtral (llama arch with experts), qwen2, gemma,
//! gemma2, gemma3 (text). Nothing here panics on user data: corrupt input yields a
//! [`GgufError`] naming the file and, where it applies, the tensor.
//!
//! ```no_run
//! use kiln_models::gguf::{import_gguf, ImportOptions};
//! let report = import_gguf(
//!     "SmolLM2-135M-Instruct.Q4_1.gguf".as_ref(),
//!     "smollm2-hf".as_ref(),
//!     &ImportOptions::default(),
//! )?;
//! println!("{} params, {} bytes", report.params, report.bytes_written);
//! # Ok::<(), kiln_models::gguf::GgufError>(())
//! ```

// `x % n != 0` rather than `is_multiple_of` (Rust 1.87): the workspace's MSRV is 1.80.
#![allow(clippy::manual_is_multiple_of)]

pub mod arch;
pub mod config;
mod error;
mod export;
pub mod metadata;
pub mod quant;
mod reader;
pub mod tokenizer;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

use std::path::Path;

pub use arch::Family;
pub use config::{ModelParams, OutputDType};
pub use error::{GgufError, Result};
pub use export::{ImportOptions, ImportReport};
pub use metadata::{Metadata, MetadataArray, MetadataValue, ValueType};
pub use quant::GgmlType;
pub use reader::{GgufFile, TensorInfo, DEFAULT_ALIGNMENT, GGUF_MAGIC};
pub use tokenizer::TokenizerKind;

/// Converts the GGUF file `src` into a Hugging Face model folder at `dst`.
///
/// `dst` must not exist unless `opts.overwrite` is set; its parent must exist. The files are
/// written into a temporary sibling folder that is renamed to `dst` only when all of them
/// succeeded, so on error nothing is left behind (and an existing `dst` is untouched).
/// `opts.progress`, if set, is called with `(tensors written, total)` while
/// `model.safetensors` is streamed.
pub fn import_gguf(src: &Path, dst: &Path, opts: &ImportOptions<'_>) -> Result<ImportReport, GgufError> {
    export::import(src, dst, opts)
}
