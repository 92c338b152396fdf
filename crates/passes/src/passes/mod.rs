//! The passes, one module each. Every module has a `create(&PassOptions)` constructor that the
//! [`registry`](crate::registry) points at.

pub mod canonicalize;
pub mod const_fold;
pub mod cse;
pub mod dce;
// Written alongside the pass manager by the e-graph and fusion work; registered in registry.rs.
pub mod eqsat;
pub mod fuse_elementwise;
pub mod gqa;
pub mod merge_projections;
pub mod mixture_of_depths;
pub mod moe_dispatch;
pub mod moefy;

#[cfg(test)]
pub(crate) mod test_util {
    use crate::{Pass, PassCx};
    use kiln_ir::Graph;

    /// Parses IR, runs a pass, verifies, and returns (changed, printed result).
    pub fn run(pass: &dyn Pass, ir: &str) -> (bool, String, Graph) {
        let mut g = kiln_ir::parse(ir).unwrap_or_else(|e| panic!("{e}\n{ir}"));
        kiln_ir::verify(&g).unwrap();
        let changed = pass.run(&mut g, &mut PassCx::new()).unwrap();
        kiln_ir::verify(&g).unwrap_or_else(|e| panic!("{e}\n{}", kiln_ir::print(&g)));
        (changed.changed(), kiln_ir::print(&g), g)
    }

    /// The printed form of IR text (to compare against).
    pub fn canon(ir: &str) -> String {
        kiln_ir::print(&kiln_ir::parse(ir).unwrap())
    }
}
