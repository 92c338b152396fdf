//! Errors returned by the GGUF reader, dequantizer and exporter.
//!
//! Every variant that concerns a file carries its path, and every variant that concerns one
//! tensor carries the tensor's GGUF name, so that a message printed by the CLI is enough to find
//! the problem without a debugger. Nothing in this module panics on user data: corrupt input is
//! always reported through one of these variants.

use std::path::PathBuf;

use super::quant::GgmlType;

/// Result alias used throughout [`crate::gguf`].
pub type Result<T, E = GgufError> = std::result::Result<T, E>;

/// Everything that can go wrong while reading a GGUF file or exporting it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// An operating-system I/O error on `path`.
    #[error("{}: {op}: {source}", .path.display())]
    Io {
        path: PathBuf,
        /// What was being done (e.g. "open", "create directory").
        op: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// The first four bytes are not `GGUF`.
    #[error("{}: not a GGUF file (magic bytes {found:02x?}, expected \"GGUF\")", .path.display())]
    BadMagic { path: PathBuf, found: [u8; 4] },

    /// The header's version is not one Kiln reads.
    #[error("{}: GGUF version {version} is not supported (Kiln reads versions 2 and 3)", .path.display())]
    UnsupportedVersion { path: PathBuf, version: u32 },

    /// The version field reads as a byte-swapped 2 or 3: a big-endian GGUF file.
    #[error("{}: big-endian GGUF files are not supported", .path.display())]
    BigEndian { path: PathBuf },

    /// A read ran past the end of the file: the file is truncated or a length field is corrupt.
    #[error(
        "{}: truncated or corrupt file: {what} needs {needed} bytes at offset {offset}, \
         but the file is only {file_len} bytes long",
        .path.display()
    )]
    Truncated { path: PathBuf, what: String, offset: u64, needed: u64, file_len: u64 },

    /// A metadata value (or array element) type id outside the GGUF spec.
    #[error("{}: metadata key `{key}` has unknown value type {value_type}", .path.display())]
    UnknownValueType { path: PathBuf, key: String, value_type: u32 },

    /// A tensor's ggml type id that this reader does not know at all.
    #[error("{}: tensor `{tensor}` has unknown ggml type id {ggml_type}", .path.display())]
    UnknownGgmlType { path: PathBuf, tensor: String, ggml_type: u32 },

    /// A known ggml type that Kiln has no dequantizer for (e.g. the IQ grid formats).
    #[error(
        "{}: tensor `{tensor}` uses ggml type {ggml_type}, which Kiln cannot dequantize",
        .path.display()
    )]
    UnsupportedGgmlType { path: PathBuf, tensor: String, ggml_type: GgmlType },

    /// A size computed from the file overflows 64 bits (or the address space).
    #[error("{}: size overflow: {what}", .path.display())]
    Overflow { path: PathBuf, what: String },

    /// A tensor header that is structurally invalid (bad rank, misaligned offset, ...).
    #[error("{}: tensor `{tensor}`: {reason}", .path.display())]
    InvalidTensor { path: PathBuf, tensor: String, reason: String },

    /// A tensor whose data range does not lie inside the file.
    #[error(
        "{}: tensor `{tensor}` data range [{start}, {end}) lies outside the file ({file_len} bytes)",
        .path.display()
    )]
    TensorOutOfBounds { path: PathBuf, tensor: String, start: u64, end: u64, file_len: u64 },

    /// The same metadata key appears twice.
    #[error("{}: duplicate metadata key `{key}`", .path.display())]
    DuplicateKey { path: PathBuf, key: String },

    /// The same tensor name appears twice.
    #[error("{}: duplicate tensor name `{tensor}`", .path.display())]
    DuplicateTensor { path: PathBuf, tensor: String },

    /// A metadata value has the wrong type or an impossible value.
    #[error("{}: metadata key `{key}`: {reason}", .path.display())]
    InvalidMetadata { path: PathBuf, key: String, reason: String },

    /// A metadata key needed for the export is absent.
    #[error("{}: required metadata key `{key}` is missing", .path.display())]
    MissingMetadata { path: PathBuf, key: String },

    /// A tensor looked up by name does not exist.
    #[error("{}: no tensor named `{tensor}`", .path.display())]
    TensorNotFound { path: PathBuf, tensor: String },

    /// `general.architecture` names a model family the exporter does not handle.
    #[error(
        "{}: architecture `{arch}` is not supported for export (supported: llama, mistral, \
         mixtral, qwen2, gemma, gemma2, gemma3)",
        .path.display()
    )]
    UnsupportedArchitecture { path: PathBuf, arch: String },

    /// A tensor whose GGUF name has no Hugging Face counterpart for this architecture.
    #[error(
        "{}: tensor `{tensor}` has no Hugging Face name for architecture `{arch}` \
         (set ImportOptions::skip_unmapped to drop it)",
        .path.display()
    )]
    UnmappedTensor { path: PathBuf, tensor: String, arch: String },

    /// The model's shapes disagree with its metadata (e.g. q rows not divisible by head count).
    #[error("{}: inconsistent model: {reason}", .path.display())]
    Inconsistent { path: PathBuf, reason: String },

    /// The tokenizer metadata cannot be turned into a `tokenizer.json`.
    #[error("{}: tokenizer: {reason}", .path.display())]
    Tokenizer { path: PathBuf, reason: String },

    /// The destination cannot be written as asked (exists, has no parent, ...).
    #[error("{}: {reason}", .path.display())]
    Output { path: PathBuf, reason: String },

    /// JSON serialization of an output file failed.
    #[error("{}: JSON: {source}", .path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// The safetensors writer failed.
    #[error("{}: safetensors: {source}", .path.display())]
    Safetensors {
        path: PathBuf,
        #[source]
        source: safetensors::SafeTensorError,
    },
}

impl GgufError {
    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: std::io::Error) -> Self {
        GgufError::Io { path: path.into(), op, source }
    }
}
