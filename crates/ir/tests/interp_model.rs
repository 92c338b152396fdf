//! The reference interpreter on whole models: incremental decoding through the KV cache equals
//! one-call prefill, and MoE equals its dense computation.

use kiln_ir::interp::testing::{random_weights, SplitMix64};
use kiln_ir::interp::{Interpreter, KvCache, Tensor};
use kiln_ir::{parse, Graph};
use std::collections::HashMap;

fn fixture(name: &str) -> String {
    let path = format!("{}/../../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn ids(v: &[i64]) -> Tensor {
    Tensor::i64(&[v.len()], v.to_vec())
}

#[track_caller]
fn close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len());
    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= tol, "max difference {worst} > {tol}\n got {got:?}\nwant {want:?}");
}

/// Runs `tokens` through a token-in/logits-out model (inputs "tokens", "positions", output
/// "logits") in one call, then one token at a time through a fresh cache, checking after each step
/// that the logits equal a one-call run of that prefix.
fn check_incremental_decoding(g: &Graph, weights: &HashMap<String, Tensor>, tokens: &[i64]) {
    let mut it = Interpreter::new(g, weights).unwrap();
    let n = tokens.len();
    let pos: Vec<i64> = (0..n as i64).collect();
    let mut prefill = KvCache::new();
    let full = it.run(&[("tokens", ids(tokens)), ("positions", ids(&pos))], &mut prefill).unwrap();
    assert_eq!(prefill.len(0), n);
    let full = full["logits"].as_f32().unwrap().to_vec();
    assert!(full.iter().all(|x| x.is_finite()) && full.iter().any(|&x| x != 0.0));

    let mut cache = KvCache::new();
    for t in 0..n {
        let step = it.run(&[("tokens", ids(&tokens[t..=t])), ("positions", ids(&pos[t..=t]))], &mut cache).unwrap();
        assert_eq!(cache.len(0), t + 1);
        let prefix =
            it.run(&[("tokens", ids(&tokens[..=t])), ("positions", ids(&pos[..=t]))], &mut KvCache::new()).unwrap();
        close(step["logits"].as_f32().unwrap(), prefix["logits"].as_f32().unwrap(), 1e-5);
        if t == n - 1 {
            close(step["logits"].as_f32().unwrap(), &full, 1e-5);
        }
    }
    // The two caches hold the same keys and values.
    let (a, b) = (prefill.slot(0).unwrap(), cache.slot(0).unwrap());
    close(a.keys(), b.keys(), 1e-5);
    close(a.values(), b.values(), 1e-5);
}

#[test]
fn llama_tiny_decodes_incrementally() {
    let g = parse(&fixture("llama_tiny_model.kir")).unwrap();
    let w = random_weights(&g, 42).unwrap();
    check_incremental_decoding(&g, &w, &[1, 17, 255, 3, 99, 42, 7]);
}

#[test]
fn llama_tiny_speculative_rollback() {
    let g = parse(&fixture("llama_tiny_model.kir")).unwrap();
    let w = random_weights(&g, 5).unwrap();
    let mut it = Interpreter::new(&g, &w).unwrap();
    let mut cache = KvCache::new();
    it.run(&[("tokens", ids(&[5, 6, 7])), ("positions", ids(&[0, 1, 2]))], &mut cache).unwrap();
    // Draft two wrong tokens, roll them back, then take the right one.
    it.run(&[("tokens", ids(&[100, 101])), ("positions", ids(&[3, 4]))], &mut cache).unwrap();
    cache.truncate(3);
    let after = it.run(&[("tokens", ids(&[8])), ("positions", ids(&[3]))], &mut cache).unwrap();
    let direct =
        it.run(&[("tokens", ids(&[5, 6, 7, 8])), ("positions", ids(&[0, 1, 2, 3]))], &mut KvCache::new()).unwrap();
    close(after["logits"].as_f32().unwrap(), direct["logits"].as_f32().unwrap(), 1e-5);
}

/// The Gemma 3 fixture scaled down (hidden 32, 4 query heads and 1 kv head of dim 8, MLP 64) with
/// a sliding window of 3 so that decoding past it is exercised, plus a logits head.
fn small_gemma() -> Graph {
    let mut src = fixture("gemma3_decoder_layers.kir")
        .replace("640", "32")
        .replace("1024", "32")
        .replace("2048", "64")
        .replace("256", "8")
        .replace("window = 512", "window = 3, softcap = 20.0")
        .replace("scale = 0.0625", "scale = 0.35");
    // Token ids in, logits of the last position out.
    src = src
        .replace(
            "%0 = input {name = \"hidden\"} : f32[T,32]",
            "%900 = input {name = \"tokens\"} : i32[T]\n  %901 = param {name = \"embed\"} : f32[50,32]\n  %0 = embedding %901, %900 : f32[T,32]",
        )
        .replace(
            "output %88 {name = \"hidden\"}",
            "%902 = slice %88 {axis = 0, start = -1} : f32[1,32]\n  %903 = matmul %902, %901 {transpose_b} : f32[1,50]\n  output %903 {name = \"logits\"}",
        );
    parse(&src).unwrap_or_else(|e| panic!("{e}\n{src}"))
}

#[test]
fn gemma_like_sliding_window_decodes_incrementally() {
    let g = small_gemma();
    let w = random_weights(&g, 9).unwrap();
    check_incremental_decoding(&g, &w, &[3, 1, 4, 1, 5, 9, 2, 6]);
}

#[test]
fn mixtral_layer_decodes_incrementally() {
    let g = parse(&fixture("mixtral_decoder_layer.kir")).unwrap();
    let w = random_weights(&g, 1).unwrap();
    let mut it = Interpreter::new(&g, &w).unwrap();
    let mut r = SplitMix64::new(2);
    let n = 4;
    let x = r.vec(n * 256, -1.0, 1.0);
    let pos: Vec<i64> = (0..n as i64).collect();
    let full = it.run(&[("hidden", Tensor::f32(&[n, 256], x.clone())), ("positions", ids(&pos))], &mut KvCache::new());
    let full = full.unwrap()["hidden"].as_f32().unwrap().to_vec();
    let mut cache = KvCache::new();
    for t in 0..n {
        let h = Tensor::f32(&[1, 256], x[t * 256..(t + 1) * 256].to_vec());
        let out = it.run(&[("hidden", h), ("positions", ids(&pos[t..=t]))], &mut cache).unwrap();
        close(out["hidden"].as_f32().unwrap(), &full[t * 256..(t + 1) * 256], 1e-5);
    }
}

const T: usize = 5;
const D: usize = 8;
const E: usize = 4;
const F: usize = 6;

fn moe_graph(top_k: usize, norm: bool, act: &str) -> Graph {
    let mut s = format!("graph @moe {{\n  %0 = input {{name = \"x\"}} : f32[T,{D}]\n  %1 = param {{name = \"router\"}} : f32[{E},{D}]\n");
    let mut operands = vec!["%0".to_string(), "%1".to_string()];
    for e in 0..E {
        for (j, (role, shape)) in [("gate", [F, D]), ("up", [F, D]), ("down", [D, F])].iter().enumerate() {
            let k = 2 + 3 * e + j;
            s += &format!("  %{k} = param {{name = \"e{e}.{role}\"}} : f32[{},{}]\n", shape[0], shape[1]);
            operands.push(format!("%{k}"));
        }
    }
    let norm = if norm { ", norm_topk" } else { "" };
    s += &format!(
        "  %99 = moe {} {{activation = {act}, experts = {E}{norm}, top_k = {top_k}}} : f32[T,{D}]\n  output %99 {{name = \"y\"}}\n}}",
        operands.join(", ")
    );
    parse(&s).unwrap()
}

fn mat_vec(w: &[f32], rows: usize, x: &[f32]) -> Vec<f64> {
    let cols = x.len();
    (0..rows).map(|r| (0..cols).map(|c| w[r * cols + c] as f64 * x[c] as f64).sum()).collect()
}

/// Every expert on every token, then the weighted sum with zero weight for experts not chosen.
fn dense_moe(w: &HashMap<String, Tensor>, x: &[f32], top_k: usize, norm: bool, act: fn(f64) -> f64) -> Vec<f32> {
    let g = |n: &str| w[n].as_f32().unwrap();
    let mut out = Vec::new();
    for t in 0..T {
        let xt = &x[t * D..(t + 1) * D];
        let logits = mat_vec(g("router"), E, xt);
        let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
        let probs: Vec<f64> = logits.iter().map(|l| (l - m).exp() / z).collect();
        let mut order: Vec<usize> = (0..E).collect();
        order.sort_by(|&a, &b| probs[b].partial_cmp(&probs[a]).unwrap());
        let mut weight = [0f64; E];
        for &e in &order[..top_k] {
            weight[e] = probs[e];
        }
        if norm {
            let s: f64 = weight.iter().sum();
            weight.iter_mut().for_each(|v| *v /= s);
        }
        let mut y = [0f64; D];
        for (e, &we) in weight.iter().enumerate() {
            let gate = mat_vec(g(&format!("e{e}.gate")), F, xt);
            let up = mat_vec(g(&format!("e{e}.up")), F, xt);
            let h: Vec<f32> = gate.iter().zip(&up).map(|(&a, &b)| (act(a) * b) as f32).collect();
            let down = mat_vec(g(&format!("e{e}.down")), D, &h);
            for (yi, di) in y.iter_mut().zip(down) {
                *yi += we * di;
            }
        }
        out.extend(y.iter().map(|&v| v as f32));
    }
    out
}

#[test]
fn moe_equals_dense_computation() {
    let silu = |v: f64| v / (1.0 + (-v).exp());
    let gelu_tanh =
        |v: f64| 0.5 * v * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v)).tanh());
    let x = SplitMix64::new(77).vec(T * D, -2.0, 2.0);
    for (top_k, norm, act, f) in [
        (2, true, "silu", silu as fn(f64) -> f64),
        (2, false, "silu", silu),
        (1, false, "gelu_tanh", gelu_tanh),
        (E, false, "silu", silu),
    ] {
        let g = moe_graph(top_k, norm, act);
        let w = random_weights(&g, 13).unwrap();
        let mut it = Interpreter::new(&g, &w).unwrap();
        let y = it.run(&[("x", Tensor::f32(&[T, D], x.clone()))], &mut KvCache::new()).unwrap();
        close(y["y"].as_f32().unwrap(), &dense_moe(&w, &x, top_k, norm, f), 2e-6);
    }
}

#[test]
fn moe_with_all_experts_equals_the_ir_dense_graph() {
    // With top_k = E and no renormalization, moe is Σ_e softmax(x·routerᵀ)_e · FFN_e(x), which the
    // other ops can spell out.
    let mut s = format!("graph @dense {{\n  %0 = input {{name = \"x\"}} : f32[T,{D}]\n  %1 = param {{name = \"router\"}} : f32[{E},{D}]\n  %2 = matmul %0, %1 {{transpose_b}} : f32[T,{E}]\n  %3 = softmax %2 : f32[T,{E}]\n");
    let mut acc = String::new();
    for e in 0..E {
        let b = 10 + 10 * e;
        s += &format!(
            "  %{g} = param {{name = \"e{e}.gate\"}} : f32[{F},{D}]
  %{u} = param {{name = \"e{e}.up\"}} : f32[{F},{D}]
  %{dn} = param {{name = \"e{e}.down\"}} : f32[{D},{F}]
  %{gx} = matmul %0, %{g} {{transpose_b}} : f32[T,{F}]
  %{ax} = gelu %{gx} {{approx = erf}} : f32[T,{F}]
  %{ux} = matmul %0, %{u} {{transpose_b}} : f32[T,{F}]
  %{h} = mul %{ax}, %{ux} : f32[T,{F}]
  %{y} = matmul %{h}, %{dn} {{transpose_b}} : f32[T,{D}]
  %{p} = slice %3 {{axis = 1, end = {e1}, start = {e}}} : f32[T,1]
  %{wy} = mul %{y}, %{p} : f32[T,{D}]
",
            g = b,
            u = b + 1,
            dn = b + 2,
            gx = b + 3,
            ax = b + 4,
            ux = b + 5,
            h = b + 6,
            y = b + 7,
            p = b + 8,
            wy = b + 9,
            e1 = e + 1
        );
        if e == 0 {
            acc = format!("%{}", b + 9);
        } else {
            s += &format!("  %{} = add {acc}, %{} : f32[T,{D}]\n", 100 + e, b + 9);
            acc = format!("%{}", 100 + e);
        }
    }
    s += &format!("  output {acc} {{name = \"y\"}}\n}}");
    let dense = parse(&s).unwrap_or_else(|e| panic!("{e}\n{s}"));
    let sparse = moe_graph(E, false, "gelu");
    let w = random_weights(&sparse, 21).unwrap();
    let x = Tensor::f32(&[T, D], SplitMix64::new(8).vec(T * D, -2.0, 2.0));
    let a = Interpreter::new(&sparse, &w).unwrap().run(&[("x", x.clone())], &mut KvCache::new()).unwrap();
    let b = Interpreter::new(&dense, &w).unwrap().run(&[("x", x)], &mut KvCache::new()).unwrap();
    close(a["y"].as_f32().unwrap(), b["y"].as_f32().unwrap(), 2e-6);
}

/// A SmolLM2-135M-shaped model (30 layers, hidden 576, 9 query / 3 kv heads of 64, MLP 1536,
/// vocab 49152, tied embeddings) built with the graph builder.
fn smollm_shaped() -> Graph {
    use kiln_ir::{Attr, Attrs, DType, Dim, GraphBuilder, OpKind, RopeLayout, RopeSpec, Shape, TensorType};
    let (layers, hidden, heads, kv, hd, ffn, vocab) = (30, 576, 9, 3, 64, 1536, 49152);
    let t = || Dim::sym("T");
    let ty = |dims: Vec<Dim>| TensorType::new(DType::F32, dims);
    let c = |n: usize| Dim::c(n as i64);
    let mut b = GraphBuilder::new("smollm");
    let tokens = b.input("tokens", TensorType::new(DType::I32, [t()])).unwrap();
    let pos = b.input("positions", TensorType::new(DType::I32, [t()])).unwrap();
    let embed = b.param("embed", ty(vec![c(vocab), c(hidden)])).unwrap();
    let mut x = b.op(OpKind::Embedding, &[embed, tokens], Attrs::new()).unwrap();
    let rope = RopeSpec::new(RopeLayout::Neox, 100000.0).to_attention_attr();
    for l in 0..layers {
        let p = |b: &mut GraphBuilder, n: &str, dims: Vec<Dim>| b.param(&format!("l{l}.{n}"), ty(dims)).unwrap();
        let w = p(&mut b, "in_norm", vec![c(hidden)]);
        let h = b.rms_norm(x, Some(w), 1e-5).unwrap();
        let wq = p(&mut b, "q", vec![c(heads * hd), c(hidden)]);
        let wk = p(&mut b, "k", vec![c(kv * hd), c(hidden)]);
        let wv = p(&mut b, "v", vec![c(kv * hd), c(hidden)]);
        let q = b.linear(h, wq, None).unwrap();
        let q = b.reshape(q, Shape::new([t(), c(heads), c(hd)])).unwrap();
        let k = b.linear(h, wk, None).unwrap();
        let k = b.reshape(k, Shape::new([t(), c(kv), c(hd)])).unwrap();
        let v = b.linear(h, wv, None).unwrap();
        let v = b.reshape(v, Shape::new([t(), c(kv), c(hd)])).unwrap();
        let attrs =
            Attrs::new().with("causal", Attr::Bool(true)).with("cache", Attr::Int(l as i64)).with("rope", rope.clone());
        let a = b.op(OpKind::Attention, &[q, k, v, pos], attrs).unwrap();
        let a = b.reshape(a, Shape::new([t(), c(heads * hd)])).unwrap();
        let wo = p(&mut b, "o", vec![c(hidden), c(heads * hd)]);
        let a = b.linear(a, wo, None).unwrap();
        x = b.add(x, a).unwrap();
        let w = p(&mut b, "post_norm", vec![c(hidden)]);
        let h = b.rms_norm(x, Some(w), 1e-5).unwrap();
        let (wg, wu, wd) = (
            p(&mut b, "gate", vec![c(ffn), c(hidden)]),
            p(&mut b, "up", vec![c(ffn), c(hidden)]),
            p(&mut b, "down", vec![c(hidden), c(ffn)]),
        );
        let g = b.linear(h, wg, None).unwrap();
        let g = b.unary(OpKind::Silu, g).unwrap();
        let u = b.linear(h, wu, None).unwrap();
        let m = b.mul(g, u).unwrap();
        let d = b.linear(m, wd, None).unwrap();
        x = b.add(x, d).unwrap();
    }
    let w = b.param("norm", ty(vec![c(hidden)])).unwrap();
    let h = b.rms_norm(x, Some(w), 1e-5).unwrap();
    let last = b.slice(h, 0, -1, None).unwrap();
    let logits = b.linear(last, embed, None).unwrap();
    b.output("logits", logits).unwrap();
    b.finish()
}

/// Timing check for the reference interpreter at real size; run it with
/// `cargo test -p kiln-ir --release --test interp_model -- --ignored --nocapture`.
#[test]
#[ignore = "builds 135M random weights; a timing check for release builds"]
fn smollm_sized_decode_step_is_fast() {
    use std::sync::Arc;
    use std::time::Instant;
    let g = smollm_shaped();
    let w: HashMap<String, Arc<Tensor>> =
        random_weights(&g, 0).unwrap().into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
    let mut it = Interpreter::new(&g, &w).unwrap();
    let mut cache = KvCache::new();
    let prompt: Vec<i64> = (0..16).map(|i| i * 1000 + 7).collect();
    let pos: Vec<i64> = (0..16).collect();
    let t0 = Instant::now();
    it.run(&[("tokens", ids(&prompt)), ("positions", ids(&pos))], &mut cache).unwrap();
    let prefill = t0.elapsed();
    let mut decode = std::time::Duration::MAX;
    let mut out = HashMap::new();
    for step in 0..3 {
        let t1 = Instant::now();
        out = it.run(&[("tokens", ids(&[42 + step])), ("positions", ids(&[16 + step]))], &mut cache).unwrap();
        decode = decode.min(t1.elapsed());
        println!("decode step {step}: {:?}", t1.elapsed());
    }
    println!("prefill of 16 tokens: {prefill:?}; one decode step: {decode:?}");
    assert_eq!(out["logits"].shape, vec![1, 49152]);
    if !cfg!(debug_assertions) {
        assert!(decode.as_secs_f64() < 1.0, "decode step took {decode:?}");
    }
}
