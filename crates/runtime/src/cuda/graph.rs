//! CUDA-graph replay of the decode step: a one-token forward call of a dense model launches the
//! same kernels in the same order every time, and launching them one by one costs more CPU time
//! than the kernels take on a large GPU. The graph is built explicitly (one kernel node per launch,
//! each depending on the one before, so the order is the program's) and instantiated once; later
//! calls only patch the nodes whose parameters changed (cache lengths grow every token) with
//! `cuGraphExecKernelNodeSetParams` and replay it with one `cuGraphLaunch`.
//!
//! The driver copies kernel node parameters when a node is added or set, so the parameter storage
//! only has to live for those calls.

use cudarc::driver::result;
use cudarc::driver::sys::{self, CUstream};

use super::driver::{cuda_err, Check};
use super::launch::KernelCall;
use super::params::pointers;
use crate::error::Result;

pub(super) struct DecodeGraph {
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
    nodes: Vec<sys::CUgraphNode>,
    /// What each node was last set to.
    calls: Vec<KernelCall>,
}

impl DecodeGraph {
    /// Builds and instantiates a graph of `calls`, in order.
    pub fn build(calls: &[KernelCall]) -> Result<DecodeGraph> {
        let mut graph: sys::CUgraph = std::ptr::null_mut();
        // SAFETY: the out-pointer is valid; flags must be 0.
        unsafe { sys::cuGraphCreate(&mut graph, 0) }.check("cuGraphCreate", "building the decode graph")?;
        // From here on Drop destroys what exists if a later call fails.
        let mut g = DecodeGraph { graph, exec: std::ptr::null_mut(), nodes: Vec::new(), calls: calls.to_vec() };
        for call in calls {
            let mut values = call.params.clone();
            let mut ptrs = pointers(&mut values);
            let params = call.node_params(&mut ptrs);
            let (deps, ndeps) = match g.nodes.last() {
                Some(prev) => (prev as *const sys::CUgraphNode, 1),
                None => (std::ptr::null(), 0),
            };
            let mut node: sys::CUgraphNode = std::ptr::null_mut();
            // SAFETY: `params` points at `ptrs`, which points at `values`, all alive for the call
            // (the driver copies them); `deps` is one node of this graph or null with 0.
            unsafe { sys::cuGraphAddKernelNode_v2(&mut node, g.graph, deps, ndeps, &params) }
                .check("cuGraphAddKernelNode", format!("adding step {} to the decode graph", call.step))?;
            g.nodes.push(node);
        }
        // SAFETY: a complete graph.
        g.exec = unsafe { result::graph::instantiate(g.graph, sys::CUgraphInstantiate_flags(0)) }
            .map_err(|e| cuda_err("cuGraphInstantiate", "instantiating the decode graph", e))?;
        Ok(g)
    }

    /// Whether `calls` launch the same kernels, in the same order and shape, as the graph (only
    /// grid sizes and parameter values can be patched in place).
    pub fn fits(&self, calls: &[KernelCall]) -> bool {
        self.calls.len() == calls.len()
            && self.calls.iter().zip(calls).all(|(a, b)| {
                a.step == b.step
                    && a.func == b.func
                    && a.block == b.block
                    && a.shared_bytes == b.shared_bytes
                    && a.params.len() == b.params.len()
            })
    }

    /// Patches the nodes whose grid or parameters differ from `calls` (which must [`fit`]);
    /// returns how many it patched.
    ///
    /// [`fit`]: DecodeGraph::fits
    pub fn update(&mut self, calls: &[KernelCall]) -> Result<usize> {
        let mut patched = 0;
        for ((node, old), new) in self.nodes.iter().zip(self.calls.iter_mut()).zip(calls) {
            if old.grid == new.grid && old.params == new.params {
                continue;
            }
            let mut values = new.params.clone();
            let mut ptrs = pointers(&mut values);
            let params = new.node_params(&mut ptrs);
            // SAFETY: `node` belongs to the graph `exec` was instantiated from and keeps its
            // function; the parameter storage lives for the call (the driver copies it).
            unsafe { sys::cuGraphExecKernelNodeSetParams_v2(self.exec, *node, &params) }
                .check("cuGraphExecKernelNodeSetParams", format!("updating step {} of the decode graph", new.step))?;
            old.grid = new.grid;
            old.params.clone_from(&new.params);
            patched += 1;
        }
        Ok(patched)
    }

    /// Queues the whole graph on `stream`.
    pub fn launch(&self, stream: CUstream) -> Result<()> {
        // SAFETY: an instantiated graph and a valid stream.
        unsafe { result::graph::launch(self.exec, stream) }
            .map_err(|e| cuda_err("cuGraphLaunch", "launching the decode graph", e))
    }
}

impl Drop for DecodeGraph {
    fn drop(&mut self) {
        // SAFETY: each handle was created once by this graph and is destroyed once; the owner keeps
        // the context current.
        unsafe {
            if !self.exec.is_null() {
                if let Err(e) = result::graph::exec_destroy(self.exec) {
                    tracing::warn!("cuGraphExecDestroy failed: {e}");
                }
            }
            if let Err(e) = result::graph::destroy(self.graph) {
                tracing::warn!("cuGraphDestroy failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(step: usize, grid: u32, params: Vec<u64>) -> KernelCall {
        KernelCall { step, func: std::ptr::null_mut(), grid, block: 128, shared_bytes: 0, params }
    }

    /// `fits` is pure bookkeeping: a graph with no driver handles is enough (never launched or
    /// dropped through the driver).
    #[test]
    fn a_graph_fits_calls_of_the_same_kernels_with_other_values() {
        let g = DecodeGraph {
            graph: std::ptr::null_mut(),
            exec: std::ptr::null_mut(),
            nodes: vec![],
            calls: vec![call(0, 1, vec![1, 2]), call(2, 4, vec![1, 3, 5])],
        };
        assert!(g.fits(&[call(0, 1, vec![1, 2]), call(2, 8, vec![9, 9, 9])]));
        assert!(!g.fits(&[call(0, 1, vec![1, 2])]));
        assert!(!g.fits(&[call(0, 1, vec![1, 2]), call(3, 4, vec![1, 3, 5])]));
        let mut other = call(2, 4, vec![1, 3, 5]);
        other.block = 256;
        assert!(!g.fits(&[call(0, 1, vec![1, 2]), other]));
        // Not dropped: Drop would call the (absent) driver.
        std::mem::forget(g);
    }
}
