pub mod dump_ir;
pub mod gen_model;
pub mod import;
pub mod ops;
pub mod opt;
pub mod run;
pub mod targets;
