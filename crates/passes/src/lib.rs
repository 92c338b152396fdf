//! kiln-passes: the pass manager, passes and the egg-based rewriter.

pub mod blocks;
pub mod pass;

pub use pass::{Changed, Pass, PassCx, PassError, PassOptions};
pub mod instrument;
pub mod manager;
pub mod mod_calibration;
pub mod passes;
pub mod pipeline;
pub mod registry;
pub mod routers;

pub use instrument::{Instrumentation, PassRecord, RunReport, TimingFormat};
pub use manager::{ManagerError, PassManager};
pub use pipeline::{PassSpec, Pipeline, PipelineError};
pub use registry::{PassEntry, REGISTRY};
pub mod egraph;
