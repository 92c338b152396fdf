//! kiln-ir: Kiln's typed graph IR.
//!
//! - [`DType`], [`Dim`], [`Shape`], [`TensorType`]: element types, symbolic shapes.
//! - [`OpKind`] and the op table ([`op::TABLE`]): the single source of truth for ops.
//! - [`Graph`] on petgraph's `StableGraph`, [`GraphBuilder`], queued edits with [`Patch`].
//! - [`print()`]/[`parse()`]: the text form; [`verify()`]; [`to_dot`]/[`to_json`] exports.

pub mod attr;
pub mod builder;
pub mod dot;
pub mod dtype;
pub mod error;
pub mod graph;
pub mod interp;
pub mod json;
pub mod op;
pub mod parse;
pub mod patch;
pub mod print;
pub mod shape;
pub mod verify;

pub use attr::{Attr, AttrKind, AttrSpec, Attrs};
pub use builder::GraphBuilder;
pub use dot::to_dot;
pub use dtype::{DType, QuantFormat};
pub use error::{BuildError, ParseError, VerifyError, VerifyErrorKind};
pub use graph::{Graph, Node, NodeId};
pub use interp::{InterpError, Interpreter, KvCache, Tensor, TensorData, WeightSource};
pub use json::to_json;
pub use op::rope::{RopeLayout, RopeScaling, RopeSpec};
pub use op::{OpInfo, OpKind};
pub use parse::parse;
pub use patch::{Patch, PatchValue};
pub use print::print;
pub use shape::{Dim, Shape, TensorType};
pub use verify::{verify, verify_all};
