//! Error types of the IR crate, one per area.

use thiserror::Error;

/// A text-form syntax or semantic error at a position (1-based line and column).
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{line}:{col}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

/// What the verifier found wrong with a node.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum VerifyErrorKind {
    #[error("expects {expected}, found {found} operand(s)")]
    Arity { expected: String, found: usize },
    #[error("{0}")]
    Attr(String),
    #[error("{0}")]
    Type(String),
    #[error("declared type {declared} but the operands give {inferred}")]
    TypeMismatch { declared: String, inferred: String },
    #[error("is part of a cycle")]
    Cycle,
    #[error("duplicate {what} name '{name}'")]
    DuplicateName { what: &'static str, name: String },
    #[error("param '{name}' is used with two types: {a} and {b}")]
    ParamConflict { name: String, a: String, b: String },
    #[error("graph has no outputs")]
    NoOutputs,
}

/// A verifier error, naming the node as it prints (`%12 = matmul`).
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{node}: {kind}")]
pub struct VerifyError {
    pub node: String,
    pub kind: VerifyErrorKind,
}

/// An op could not be added by the builder.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("cannot build '{op}': {msg}")]
pub struct BuildError {
    pub op: &'static str,
    pub msg: String,
}
