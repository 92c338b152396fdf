//! Kiln runtime: loads a compiled artifact (manifest, kernels, weights) and runs
//! decode steps on CPU threads or, with the `cuda` feature, on NVIDIA GPUs.
//!
//! This crate never depends on LLVM: compiled artifacts run without a compiler.
//!
//! ```
//! match kiln_runtime::cuda_available() {
//!     Ok(info) => println!("{} CUDA device(s)", info.devices.len()),
//!     Err(why) => println!("CPU only: {why}"),
//! }
//! ```

pub mod aligned;
pub mod artifact;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub mod error;
pub mod generate;
pub mod measure;
pub mod offload;
pub mod pages;
pub mod sampler;
pub mod simt;
pub mod tokenizer;

pub use device::{cuda_available, cuda_driver_present, CudaDevice, CudaInfo};
pub use error::{Result, RuntimeError};
pub use generate::{generate, DecodeModel, GenerateError, GenerationStats};
pub use sampler::{Sampler, SamplerConfig};
pub use tokenizer::{ChatMessage, StreamDecoder, TextTokenizer};
