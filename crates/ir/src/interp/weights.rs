//! Where the interpreter gets `param` values from.

use super::error::InterpError;
use super::tensor::Tensor;
use crate::shape::TensorType;
use std::collections::HashMap;
use std::sync::Arc;

/// A source of weights, by checkpoint name.
///
/// `ty` is the `param`'s declared type. Implementations return the values as a float tensor
/// ([`TensorData::F32`](super::TensorData::F32)) of that shape, whatever the stored dtype:
/// f16/bf16 weights are widened to f32 and **block-quantized weights (`q4_0`, `q6_k`, ...) are
/// returned already dequantized to f32**; integer params come back as `TensorData::I64`. The
/// interpreter checks the shape and data kind against `ty` and names the weight when they differ.
pub trait WeightSource {
    fn get(&self, name: &str, ty: &TensorType) -> Result<Arc<Tensor>, InterpError>;
}

fn missing(name: &str) -> InterpError {
    InterpError::weight(name, "not found in the weight source")
}

impl WeightSource for HashMap<String, Arc<Tensor>> {
    fn get(&self, name: &str, _ty: &TensorType) -> Result<Arc<Tensor>, InterpError> {
        HashMap::get(self, name).cloned().ok_or_else(|| missing(name))
    }
}

impl WeightSource for HashMap<String, Tensor> {
    fn get(&self, name: &str, _ty: &TensorType) -> Result<Arc<Tensor>, InterpError> {
        HashMap::get(self, name).map(|t| Arc::new(t.clone())).ok_or_else(|| missing(name))
    }
}

impl<W: WeightSource + ?Sized> WeightSource for &W {
    fn get(&self, name: &str, ty: &TensorType) -> Result<Arc<Tensor>, InterpError> {
        (**self).get(name, ty)
    }
}

/// Weights derived by passes (routers, neuron groupings, ...) by name, shared cheaply.
pub type DerivedWeights = std::collections::BTreeMap<String, Arc<Tensor>>;

/// `derived` first, then `base`: a checkpoint together with the tensors passes derived from it.
pub struct Overlay<'a> {
    pub derived: &'a DerivedWeights,
    pub base: &'a dyn WeightSource,
}

impl WeightSource for Overlay<'_> {
    fn get(&self, name: &str, ty: &TensorType) -> Result<Arc<Tensor>, InterpError> {
        match self.derived.get(name) {
            Some(t) => Ok(t.clone()),
            None => self.base.get(name, ty),
        }
    }
}
