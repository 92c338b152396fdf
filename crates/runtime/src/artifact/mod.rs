//! Compiled artifacts: a directory with `manifest.json`, `kernels.so`, `weights.safetensors` and the
//! tokenizer files.

pub mod manifest;

pub use manifest::Manifest;
