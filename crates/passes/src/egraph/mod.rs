//! Equality saturation with [egg](https://egraphs-good.github.io/): Kiln graphs in e-graphs, rules
//! by family, bounded runners, extraction by a cost model. See `docs/eqsat.md`.
//!
//! - [`lang`]: [`KilnNode`], the e-graph language (ops with their attributes as a child class).
//! - [`analysis`]: [`TensorAnalysis`], each class's tensor type; merging asserts types agree.
//! - [`apply`]: shape-checked appliers and conditions.
//! - [`rules`]: the families `rope`, `layout`, `algebra`, one file each.
//! - [`cost`]: [`CostModel`], bytes moved + flops at nominal dims.
//! - [`convert`]: graph region ⇄ e-graph ([`RegionEGraph`]).
//! - [`saturate`](mod@saturate): the per-layer driver, [`saturate()`] and its [`EqsatReport`].
//!
//! ```
//! use kiln_passes::egraph::{rules, saturate, EqsatConfig};
//! let mut g = kiln_ir::parse(r#"graph @g {
//!   %0 = input {name = "x"} : f32[T,4]
//!   %1 = neg %0 : f32[T,4]
//!   %2 = neg %1 : f32[T,4]
//!   output %2 {name = "y"}
//! }"#).unwrap();
//! let report = saturate(&mut g, &rules::all_rules(), &EqsatConfig::default()).unwrap();
//! assert_eq!(report.applied["algebra-neg-neg"], 1);
//! assert_eq!(g.len(), 2);
//! ```

pub mod analysis;
pub mod apply;
pub mod convert;
pub mod cost;
pub mod lang;
pub mod rules;
pub mod saturate;

/// The egg this module is built on, for writing rules outside it (`egg::rewrite!`).
pub use egg;

pub use analysis::{Fact, KilnEGraph, KilnRewrite, TensorAnalysis};
pub use convert::{Extraction, RegionEGraph};
pub use cost::{CostModel, KilnCost};
pub use lang::{AttrSet, KilnNode};
pub use rules::Family;
pub use saturate::{partition, saturate, EqsatConfig, EqsatReport, Limits, Partition};
