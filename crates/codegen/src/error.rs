//! Errors raised by Kiln's code generators.

use thiserror::Error;

/// Everything that can go wrong between a kernel plan and machine code.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CodegenError {
    /// A kernel emitter misused LLVM's builder (a bug in Kiln), or a spec it cannot generate.
    #[error("kernel generation failed: {message}")]
    Kernel {
        /// What went wrong.
        message: String,
    },

    /// A graph the planner cannot turn into kernels.
    #[error("{node}: {message}")]
    Plan {
        /// The IR node (`%12 = matmul ...`).
        node: String,
        /// Why.
        message: String,
    },

    /// Writing or linking the artifact failed.
    #[error("{path}: {message}")]
    Artifact {
        /// The file involved.
        path: String,
        /// What failed.
        message: String,
    },

    /// LLVM could not register one of its targets (it was not built in).
    #[error("failed to initialize the LLVM {target} target: {message}")]
    TargetInit {
        /// Which target: `native`, `nvptx`, ...
        target: &'static str,
        /// LLVM's explanation.
        message: String,
    },

    /// LLVM has no registered target for a triple.
    #[error("LLVM has no target for triple `{triple}`: {message}")]
    UnknownTriple {
        /// The triple that was looked up.
        triple: String,
        /// LLVM's explanation.
        message: String,
    },

    /// `LLVMCreateTargetMachine` returned null.
    #[error("LLVM could not create a target machine for `{triple}` (cpu `{cpu}`, features `{features}`)")]
    TargetMachine {
        /// Target triple.
        triple: String,
        /// CPU name.
        cpu: String,
        /// Feature string.
        features: String,
    },

    /// An NVPTX architecture that Kiln does not generate code for.
    #[error("unsupported NVPTX architecture sm_{sm}; supported: {}", supported_list(supported))]
    UnsupportedSm {
        /// The requested compute capability, e.g. `75` for sm_75.
        sm: u32,
        /// The compute capabilities Kiln supports.
        supported: Vec<u32>,
    },

    /// Building LLVM IR failed.
    #[error("building LLVM IR failed: {0}")]
    Builder(#[from] inkwell::builder::BuilderError),

    /// The LLVM verifier rejected a module.
    #[error("LLVM module `{module}` failed verification: {message}")]
    Verify {
        /// Module name.
        module: String,
        /// Verifier output.
        message: String,
    },

    /// A new-pass-manager pipeline failed to parse or run.
    #[error("LLVM pass pipeline `{pipeline}` failed: {message}")]
    Passes {
        /// The pipeline string, e.g. `default<O3>`.
        pipeline: String,
        /// LLVM's explanation.
        message: String,
    },

    /// Emitting an object file or assembly failed.
    #[error("LLVM code emission for `{triple}` failed: {message}")]
    Emit {
        /// Target triple.
        triple: String,
        /// LLVM's explanation.
        message: String,
    },
}

fn supported_list(sms: &[u32]) -> String {
    sms.iter().map(|sm| format!("sm_{sm}")).collect::<Vec<_>>().join(", ")
}

/// Result alias for this crate.
pub type Result<T, E = CodegenError> = std::result::Result<T, E>;
