//! Running a checkpoint through the reference interpreter: the checkpoint serves as the weight
//! source and the model keeps its KV cache and position between calls, so prompts can be fed in one
//! call (prefill) and then one token at a time (decode).

use crate::checkpoint::Checkpoint;
use crate::error::{ModelError, Result};
use crate::lower::LowerOptions;
use kiln_ir::interp::{DerivedWeights, InterpError, Interpreter, KvCache, Overlay, Tensor, WeightSource, Work};
use kiln_ir::TensorType;
use std::sync::Arc;

impl WeightSource for Checkpoint {
    fn get(&self, name: &str, _ty: &TensorType) -> Result<Arc<Tensor>, InterpError> {
        let (shape, data) = self.tensor_f32(name).map_err(|e| InterpError::weight(name, e.to_string()))?;
        Ok(Arc::new(Tensor::f32(&shape, data)))
    }
}

pub struct InterpModel {
    interp: Interpreter,
    cache: KvCache,
    position: usize,
    pub vocab_size: usize,
}

impl InterpModel {
    /// Lowers the checkpoint, checks its tensors, and loads the weights (as f32).
    pub fn load(ckpt: &Checkpoint, opts: &LowerOptions) -> Result<InterpModel> {
        let graph = ckpt.graph(opts)?;
        InterpModel::with_graph(ckpt, &graph)
    }

    /// Runs `graph` (the checkpoint's graph after passes, say) with the checkpoint's weights.
    pub fn with_graph(ckpt: &Checkpoint, graph: &kiln_ir::Graph) -> Result<InterpModel> {
        InterpModel::with_derived(ckpt, graph, &DerivedWeights::new())
    }

    /// Runs `graph` with the checkpoint's weights and the tensors passes derived for it (routers,
    /// neuron groupings: `RunReport::derived`).
    pub fn with_derived(ckpt: &Checkpoint, graph: &kiln_ir::Graph, derived: &DerivedWeights) -> Result<InterpModel> {
        ckpt.check_graph_with(graph, derived)?;
        let weights = Overlay { derived, base: ckpt };
        let interp = Interpreter::new(graph, &weights).map_err(|e| interp_err(ckpt, e))?;
        Ok(InterpModel { interp, cache: KvCache::new(), position: 0, vocab_size: ckpt.spec.vocab_size })
    }

    /// FLOPs and weight bytes of all forward calls so far (see [`Work`]).
    pub fn work(&self) -> Work {
        self.interp.work()
    }

    pub fn reset_work(&mut self) {
        self.interp.reset_work();
    }

    /// Runs the graph on raw inputs (tokens and positions as given), for callers that read outputs
    /// other than logits (calibration adds some). Does not move the position.
    pub fn run_raw(
        &mut self,
        tokens: &[u32],
        positions: &[usize],
    ) -> Result<std::collections::HashMap<String, Tensor>> {
        let t = tokens.len();
        let ids = Tensor::i64(&[t], tokens.iter().map(|&x| x as i64).collect());
        let pos = Tensor::i64(&[t], positions.iter().map(|&p| p as i64).collect());
        self.interp
            .run(&[("tokens", ids), ("positions", pos)], &mut self.cache)
            .map_err(|e| ModelError::Interp(e.to_string()))
    }

    /// Tokens processed so far (the next token's position).
    pub fn position(&self) -> usize {
        self.position
    }

    pub fn reset(&mut self) {
        self.cache.clear();
        self.position = 0;
    }

    /// Rolls the cache back to `len` tokens (speculative decoding rejects drafts this way).
    pub fn truncate(&mut self, len: usize) {
        self.cache.truncate(len);
        self.position = self.position.min(len);
    }

    /// Feeds tokens at the next positions and returns the logits the graph produces: the last
    /// position's `[vocab]` for `Logits::Last` graphs, `[tokens × vocab]` row-major for `Logits::All`.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let t = tokens.len();
        let ids = Tensor::i64(&[t], tokens.iter().map(|&x| x as i64).collect());
        let pos = Tensor::i64(&[t], (self.position..self.position + t).map(|p| p as i64).collect());
        let mut out = self
            .interp
            .run(&[("tokens", ids), ("positions", pos)], &mut self.cache)
            .map_err(|e| ModelError::Interp(e.to_string()))?;
        self.position += t;
        let logits = out.remove("logits").ok_or_else(|| ModelError::Interp("graph has no 'logits' output".into()))?;
        logits.as_f32().map(<[f32]>::to_vec).ok_or_else(|| ModelError::Interp("logits are not a float tensor".into()))
    }
}

fn interp_err(ckpt: &Checkpoint, e: InterpError) -> ModelError {
    ModelError::Interp(format!("{}: {e}", ckpt.dir.display()))
}
