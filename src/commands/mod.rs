pub mod opt;
pub mod targets;
