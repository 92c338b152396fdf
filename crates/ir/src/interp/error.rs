//! The interpreter's error type. Every message names what it is about: the node as the printer
//! numbers it (`%12 = embedding: ...`), the graph input, or the weight.

use crate::error::VerifyError;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum InterpError {
    /// The graph does not verify; the interpreter only runs verified graphs.
    #[error("graph does not verify: {0}")]
    Verify(#[from] VerifyError),
    /// A weight is missing or does not fit its `param` declaration.
    #[error("weight '{name}': {msg}")]
    Weight { name: String, msg: String },
    /// A graph input is missing, unknown, given twice, or does not fit its declared type.
    #[error("input '{name}': {msg}")]
    Input { name: String, msg: String },
    /// Evaluating a node failed (`node` as printed: `%12 = embedding`).
    #[error("{node}: {msg}")]
    Node { node: String, msg: String },
    /// A tensor was built with data that does not fit its shape.
    #[error("bad tensor: {0}")]
    Tensor(String),
}

impl InterpError {
    /// Convenience for [`WeightSource`](super::WeightSource) implementations.
    pub fn weight(name: impl Into<String>, msg: impl Into<String>) -> InterpError {
        InterpError::Weight { name: name.into(), msg: msg.into() }
    }

    pub fn input(name: impl Into<String>, msg: impl Into<String>) -> InterpError {
        InterpError::Input { name: name.into(), msg: msg.into() }
    }
}
