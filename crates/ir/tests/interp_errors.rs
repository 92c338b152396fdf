//! The reference interpreter reports bad inputs, bad weights and bad graphs as errors that name
//! what is wrong, and never panics on them.

use kiln_ir::interp::testing::random_weights;
use kiln_ir::interp::{InterpError, Interpreter, KvCache, Tensor, TensorData, WeightSource};
use kiln_ir::{parse, DType, Dim, Graph, OpKind, TensorType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

fn llama() -> Graph {
    let path = format!("{}/../../tests/fixtures/llama_tiny_model.kir", env!("CARGO_MANIFEST_DIR"));
    parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &[i64]) -> Tensor {
    Tensor::i64(&[v.len()], v.to_vec())
}

fn run_err(inputs: &[(&str, Tensor)]) -> String {
    let g = llama();
    let w = random_weights(&g, 1).unwrap();
    let mut it = Interpreter::new(&g, &w).unwrap();
    it.run(inputs, &mut KvCache::new()).unwrap_err().to_string()
}

#[test]
fn input_errors_name_the_input() {
    let ok = || vec![("tokens", ids(&[1, 2])), ("positions", ids(&[0, 1]))];
    let mut bad = ok();
    bad[1].0 = "position";
    assert_eq!(run_err(&bad), "input 'position': no such graph input (inputs: 'tokens', 'positions')");
    assert_eq!(run_err(&ok()[..1]), "input 'positions': missing (declared i32[T])");
    let mut twice = ok();
    twice.push(("tokens", ids(&[3, 4])));
    assert_eq!(run_err(&twice), "input 'tokens': given twice");
    let mut wrong_rank = ok();
    wrong_rank[0].1 = Tensor::i64(&[1, 2], vec![1, 2]);
    assert_eq!(run_err(&wrong_rank), "input 'tokens': declared shape [T] but got a tensor of shape [1, 2]");
    let mut inconsistent = ok();
    inconsistent[1].1 = ids(&[0, 1, 2]);
    assert_eq!(
        run_err(&inconsistent),
        "input 'positions': dim 0 is declared T = 2 (T = 2 from input 'tokens' dim 0), but the tensor has 3"
    );
    let mut floats = ok();
    floats[0].1 = Tensor::f32(&[2], vec![1.0, 2.0]);
    assert_eq!(run_err(&floats), "input 'tokens': declared i32[T] but the tensor holds float data");
    let mut too_big = ok();
    too_big[0].1 = ids(&[1, 1 << 40]);
    assert_eq!(run_err(&too_big), "input 'tokens': value 1099511627776 does not fit i32");
    let mut ragged = ok();
    ragged[0].1 = Tensor { shape: vec![2], data: TensorData::I64(vec![1, 2, 3]) };
    assert_eq!(run_err(&ragged), "input 'tokens': bad tensor: shape [2] holds 2 elements but the data has 3");
    let mut out_of_vocab = ok();
    out_of_vocab[0].1 = ids(&[1, 300]);
    assert_eq!(run_err(&out_of_vocab), "%3 = embedding: token id 300 out of range for vocab 256");
}

#[test]
fn weight_errors_name_the_weight() {
    let g = llama();
    let mut w = random_weights(&g, 1).unwrap();
    w.remove("model.norm.weight");
    let err = Interpreter::new(&g, &w).unwrap_err();
    assert_eq!(err.to_string(), "weight 'model.norm.weight': not found in the weight source");

    let mut w = random_weights(&g, 1).unwrap();
    w.insert("model.norm.weight".into(), Tensor::f32(&[63], vec![1.0; 63]));
    let err = Interpreter::new(&g, &w).unwrap_err().to_string();
    assert_eq!(err, "weight 'model.norm.weight': declared f32[64] = [64] but the source gave shape [63]");

    let mut w = random_weights(&g, 1).unwrap();
    w.insert("model.norm.weight".into(), Tensor::i64(&[64], vec![1; 64]));
    let err = Interpreter::new(&g, &w).unwrap_err().to_string();
    assert_eq!(err, "weight 'model.norm.weight': declared f32[64] but the source gave integer data");
}

#[test]
fn graphs_must_verify() {
    let mut g = Graph::new("bad");
    let t = TensorType::new(DType::F32, [Dim::c(2)]);
    let x = g.add_node(OpKind::Input, kiln_ir::Attrs::new().with("name", kiln_ir::Attr::Str("x".into())), &[], t);
    let wrong = TensorType::new(DType::F32, [Dim::c(3)]);
    let y = g.add_node(OpKind::Exp, kiln_ir::Attrs::new(), &[x], wrong);
    g.add_node(
        OpKind::Output,
        kiln_ir::Attrs::new().with("name", kiln_ir::Attr::Str("y".into())),
        &[y],
        g.ty(y).clone(),
    );
    let err = Interpreter::new(&g, &HashMap::<String, Tensor>::new()).unwrap_err();
    assert!(matches!(err, InterpError::Verify(_)));
    assert!(err.to_string().starts_with("graph does not verify: %1 = exp: declared type f32[3]"), "{err}");
}

/// Counts calls, to check that weights are loaded once.
struct Counting {
    inner: HashMap<String, Tensor>,
    calls: RefCell<Vec<String>>,
}

impl WeightSource for Counting {
    fn get(&self, name: &str, ty: &TensorType) -> Result<Arc<Tensor>, InterpError> {
        self.calls.borrow_mut().push(name.to_string());
        WeightSource::get(&self.inner, name, ty)
    }
}

#[test]
fn weights_load_once_per_name() {
    let g = llama();
    let src = Counting { inner: random_weights(&g, 1).unwrap(), calls: RefCell::new(Vec::new()) };
    let mut it = Interpreter::new(&g, &src).unwrap();
    let mut cache = KvCache::new();
    it.run(&[("tokens", ids(&[1])), ("positions", ids(&[0]))], &mut cache).unwrap();
    it.run(&[("tokens", ids(&[2])), ("positions", ids(&[1]))], &mut cache).unwrap();
    let mut calls = src.calls.borrow().clone();
    let n = calls.len();
    calls.sort();
    calls.dedup();
    assert_eq!(n, calls.len(), "one load per weight name (the tied embedding is used twice)");
    assert_eq!(n, 11);
    assert!(it.param("model.embed_tokens.weight").is_some());
}

#[test]
fn quantized_params_read_dequantized_values() {
    let g = parse(
        "graph @q {
  %0 = input {name = \"x\"} : f32[T,32]
  %1 = param {name = \"w\"} : q4_0[2,32]
  %2 = matmul %0, %1 {transpose_b} : f32[T,2]
  output %2 {name = \"y\"}
}",
    )
    .unwrap();
    let w: HashMap<String, Tensor> = HashMap::from([("w".to_string(), Tensor::f32(&[2, 32], vec![0.5; 64]))]);
    let mut it = Interpreter::new(&g, &w).unwrap();
    let y = it.run(&[("x", Tensor::f32(&[1, 32], vec![1.0; 32]))], &mut KvCache::new()).unwrap();
    assert_eq!(y["y"].as_f32().unwrap(), &[16.0, 16.0]);
}

#[test]
fn half_precision_inputs_are_rounded() {
    let g = parse(
        "graph @h {
  %0 = input {name = \"x\"} : bf16[2]
  %1 = cast %0 {dtype = f32} : f32[2]
  output %1 {name = \"y\"}
}",
    )
    .unwrap();
    let mut it = Interpreter::new(&g, &HashMap::<String, Tensor>::new()).unwrap();
    let y = it.run(&[("x", Tensor::f32(&[2], vec![1.0, 1.001]))], &mut KvCache::new()).unwrap();
    assert_eq!(y["y"].as_f32().unwrap(), &[1.0, 1.0]);
}

#[test]
fn symbolic_dims_bind_through_linear_expressions() {
    // The mask input is [T, P+T]: P is solved from it once T is known from the other input.
    let g = parse(
        "graph @m {
  %0 = input {name = \"mask\"} : f32[T,P+T]
  %1 = input {name = \"x\"} : f32[T]
  %2 = reduce_sum %0 {axes = [1]} : f32[T]
  %3 = add %2, %1 : f32[T]
  %4 = constant {value = 1.0} : f32[P]
  output %3 {name = \"y\"}
  output %4 {name = \"ones\"}
}",
    )
    .unwrap();
    let mut it = Interpreter::new(&g, &HashMap::<String, Tensor>::new()).unwrap();
    let out = it
        .run(
            &[("mask", Tensor::f32(&[2, 5], vec![1.0; 10])), ("x", Tensor::f32(&[2], vec![0.5, 1.5]))],
            &mut KvCache::new(),
        )
        .unwrap();
    assert_eq!(out["y"].as_f32().unwrap(), &[5.5, 6.5]);
    assert_eq!(out["ones"].shape, vec![3], "P = 5 - T = 3");
    let err = it
        .run(
            &[("mask", Tensor::f32(&[2, 1], vec![1.0; 2])), ("x", Tensor::f32(&[2], vec![0.5, 1.5]))],
            &mut KvCache::new(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("input 'mask': dim 1 is declared P+T, which cannot be 1 with T = 2"), "{err}");
}
