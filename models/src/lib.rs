//! kiln-models: importers (GGUF → Hugging Face folder) and architecture definitions that lower a
//! Hugging Face checkpoint to Kiln's graph IR.

pub mod arch;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod eval;
pub mod gguf;
pub mod interp_model;
pub mod lower;
pub mod spec;
pub mod synth;

pub use arch::{parse_config, SUPPORTED_MODEL_TYPES};
pub use checkpoint::Checkpoint;
pub use error::ModelError;
pub use interp_model::InterpModel;
pub use lower::{lower, Logits, LowerOptions};
pub use spec::{Activation, Arch, DecoderSpec, LayerSpec, MoeSpec};
pub use synth::{write_synthetic_model, SynthDtype, SynthOptions, SynthReport};
