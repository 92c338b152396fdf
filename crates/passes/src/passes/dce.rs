//! `dce`: dead-code elimination. Keeps what the outputs depend on (walking operands backwards from
//! every `output`) and the graph's inputs (its interface, even when unused); removes the rest —
//! unused params, constants and compute nodes. Run it after passes that leave dead nodes behind
//! (canonicalize's folds, cse, const-fold).

use crate::pass::{Changed, Pass, PassCx, PassError, PassOptions};
use kiln_ir::{Graph, NodeId, Patch};
use std::collections::HashSet;

#[derive(Debug, Default)]
pub struct Dce;

pub fn create(opts: &PassOptions) -> Result<Box<dyn Pass>, String> {
    opts.check_known("dce", &[])?;
    Ok(Box::new(Dce))
}

/// The nodes reachable backwards from the roots (outputs and inputs).
pub fn live_nodes(g: &Graph) -> HashSet<NodeId> {
    let mut live: HashSet<NodeId> = HashSet::new();
    let mut stack: Vec<NodeId> = g.node_ids().filter(|&n| g.op(n).is_root()).collect();
    live.extend(stack.iter().copied());
    while let Some(n) = stack.pop() {
        for o in g.operands(n) {
            if live.insert(o) {
                stack.push(o);
            }
        }
    }
    live
}

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let live = live_nodes(g);
        let mut patch = Patch::new();
        let mut removed = 0usize;
        for n in g.node_ids() {
            if !live.contains(&n) {
                patch.remove(n);
                removed += 1;
            }
        }
        g.apply(patch);
        cx.stat("dce", "removed", removed);
        Ok(Changed::from_bool(removed > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::test_util::{canon, run};

    #[test]
    fn removes_what_no_output_needs_and_keeps_inputs() {
        let ir = r#"graph @g {
  %0 = input {name = "x"} : f32[T,4]
  %1 = input {name = "unused"} : f32[4]
  %2 = param {name = "w"} : f32[4]
  %3 = exp %0 : f32[T,4]
  %4 = mul %3, %2 : f32[T,4]
  %5 = neg %4 : f32[T,4]
  %6 = sqrt %5 : f32[T,4]
  output %3 {name = "y"}
}"#;
        let (changed, out, g) = run(&Dce, ir);
        assert!(changed);
        assert_eq!(g.len(), 4);
        assert_eq!(
            out,
            canon(
                r#"graph @g {
  %0 = input {name = "x"} : f32[T,4]
  %1 = input {name = "unused"} : f32[4]
  %2 = exp %0 : f32[T,4]
  output %2 {name = "y"}
}"#
            )
        );
        let (again, _, _) = run(&Dce, &out);
        assert!(!again, "dce is idempotent");
    }

    #[test]
    fn rejects_options() {
        let o = PassOptions([("x".to_string(), "1".to_string())].into());
        assert!(create(&o).err().unwrap().contains("unknown option 'x' for pass 'dce'"));
    }
}
