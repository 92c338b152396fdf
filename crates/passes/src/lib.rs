//! kiln-passes: the pass manager, passes and the egg-based rewriter.

pub mod pass;

pub use pass::{Changed, Pass, PassCx, PassError, PassOptions};
