//! The reference interpreter's attention: masks, soft-cap, GQA head mapping, the KV cache, and fused
//! RoPE against the `rope` op.

use kiln_ir::interp::testing::SplitMix64;
use kiln_ir::interp::{Interpreter, KvCache, Tensor};
use kiln_ir::{parse, Graph};
use std::collections::HashMap;

/// q[T,hq,d], k[T,hkv,d], v[T,hkv,dv], positions[T] → attention with `attrs` → "y".
fn attn_graph(hq: usize, hkv: usize, d: usize, dv: usize, attrs: &str) -> Graph {
    parse(&format!(
        "graph @a {{
  %0 = input {{name = \"q\"}} : f32[T,{hq},{d}]
  %1 = input {{name = \"k\"}} : f32[T,{hkv},{d}]
  %2 = input {{name = \"v\"}} : f32[T,{hkv},{dv}]
  %3 = input {{name = \"pos\"}} : i32[T]
  %4 = attention %0, %1, %2, %3 {attrs} : f32[T,{hq},{dv}]
  output %4 {{name = \"y\"}}
}}"
    ))
    .unwrap()
}

struct Qkv {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    pos: Tensor,
}

impl Qkv {
    fn inputs(&self) -> Vec<(&'static str, Tensor)> {
        vec![("q", self.q.clone()), ("k", self.k.clone()), ("v", self.v.clone()), ("pos", self.pos.clone())]
    }

    /// Tokens [a, b).
    fn rows(&self, a: usize, b: usize) -> Qkv {
        let cut = |t: &Tensor| {
            let per: usize = t.shape[1..].iter().product();
            let mut shape = t.shape.clone();
            shape[0] = b - a;
            match &t.data {
                kiln_ir::TensorData::F32(v) => Tensor::f32(&shape, v[a * per..b * per].to_vec()),
                kiln_ir::TensorData::I64(v) => Tensor::i64(&shape, v[a * per..b * per].to_vec()),
            }
        };
        Qkv { q: cut(&self.q), k: cut(&self.k), v: cut(&self.v), pos: cut(&self.pos) }
    }
}

fn random_qkv(seed: u64, t: usize, hq: usize, hkv: usize, d: usize, dv: usize, pos0: i64) -> Qkv {
    let mut r = SplitMix64::new(seed);
    Qkv {
        q: Tensor::f32(&[t, hq, d], r.vec(t * hq * d, -1.0, 1.0)),
        k: Tensor::f32(&[t, hkv, d], r.vec(t * hkv * d, -1.0, 1.0)),
        v: Tensor::f32(&[t, hkv, dv], r.vec(t * hkv * dv, -1.0, 1.0)),
        pos: Tensor::i64(&[t], (0..t as i64).map(|p| p + pos0).collect()),
    }
}

fn run(g: &Graph, inputs: &[(&str, Tensor)], cache: &mut KvCache) -> Tensor {
    let mut it = Interpreter::new(g, &HashMap::<String, Tensor>::new()).unwrap();
    it.run(inputs, cache).unwrap_or_else(|e| panic!("{e}")).remove("y").unwrap()
}

fn run1(g: &Graph, inputs: &[(&str, Tensor)]) -> Vec<f32> {
    run(g, inputs, &mut KvCache::new()).as_f32().unwrap().to_vec()
}

#[track_caller]
fn close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len());
    for (k, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= tol, "element {k}: got {a}, want {b}\n got {got:?}\nwant {want:?}");
    }
}

fn f(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::f32(shape, v.to_vec())
}

fn positions(p: &[i64]) -> Tensor {
    Tensor::i64(&[p.len()], p.to_vec())
}

#[test]
fn causal_and_full_attention_by_hand() {
    let ln3 = 3f32.ln();
    let inputs = [
        ("q", f(&[3, 1, 2], &[5., 5., 0., ln3, 0., 0.])),
        ("k", f(&[3, 1, 2], &[1., 0., 0., 1., 1., 1.])),
        ("v", f(&[3, 1, 2], &[1., 0., 0., 1., 2., 2.])),
        ("pos", positions(&[0, 1, 2])),
    ];
    // Causal: query 0 sees key 0; query 1 scores (0, ln 3) → (1/4, 3/4); query 2 all zero → mean.
    let y = run1(&attn_graph(1, 1, 2, 2, "{causal, scale = 1.0}"), &inputs);
    close(&y, &[1., 0., 0.25, 0.75, 1., 1.], 1e-6);
    // No mask: query 0 scores (5, 5, 10); query 1 (0, ln 3, ln 3) → (1/7, 3/7, 3/7).
    let y = run1(&attn_graph(1, 1, 2, 2, "{scale = 1.0}"), &inputs);
    let e = (-5f32).exp();
    let (p_small, p_big) = (e / (2. * e + 1.), 1. / (2. * e + 1.));
    let q0 = [p_small + 2. * p_big, p_small + 2. * p_big];
    close(&y, &[q0[0], q0[1], 1., 9. / 7., 1., 1.], 1e-6);
    // The default scale is 1/√D: with D = 2, query 1 scores (0, ln3/√2).
    let y = run1(&attn_graph(1, 1, 2, 2, "{causal}"), &inputs);
    let w = 3f32.powf(1. / 2f32.sqrt());
    close(&y[2..4], &[1. / (1. + w), w / (1. + w)], 1e-6);
}

#[test]
fn sliding_window() {
    // q = 0 so every visible key weighs the same: the output is the mean of the visible values.
    let inputs = [
        ("q", f(&[4, 1, 1], &[0.; 4])),
        ("k", f(&[4, 1, 1], &[0.3, -0.1, 0.7, 0.2])),
        ("v", f(&[4, 1, 1], &[1., 2., 4., 8.])),
        ("pos", positions(&[0, 1, 2, 3])),
    ];
    let y = run1(&attn_graph(1, 1, 1, 1, "{causal, window = 2}"), &inputs);
    close(&y, &[1., 1.5, 3., 6.], 1e-6);
    let y = run1(&attn_graph(1, 1, 1, 1, "{causal, window = 1}"), &inputs);
    close(&y, &[1., 2., 4., 8.], 1e-6);
    // Without causal the window only cuts keys too far in the past.
    let y = run1(&attn_graph(1, 1, 1, 1, "{window = 2}"), &inputs);
    close(&y, &[3.75, 3.75, 14. / 3., 6.], 1e-6);
    // Positions, not indices, decide: a gap of 5 puts token 1 out of token 0's window.
    let gap = [("pos", positions(&[0, 5, 6, 7])), inputs[0].clone(), inputs[1].clone(), inputs[2].clone()];
    let y = run1(&attn_graph(1, 1, 1, 1, "{causal, window = 3}"), &gap);
    close(&y, &[1., 2., 3., 14. / 3.], 1e-6);
}

#[test]
fn softcap_and_scale() {
    let inputs = [
        ("q", f(&[2, 1, 2], &[1., 0., 0., 0.])),
        ("k", f(&[2, 1, 2], &[0., 0., 10., 0.])),
        ("v", f(&[2, 1, 1], &[0., 1.])),
        ("pos", positions(&[0, 1])),
    ];
    // query 0 scores (0, 10) → capped (0, 5 tanh 2 = 4.8201379) → weight on key 1 = σ(4.8201379).
    let y = run1(&attn_graph(1, 1, 2, 1, "{scale = 1.0, softcap = 5.0}"), &inputs);
    close(&y, &[0.99199886, 0.5], 1e-6);
    let y = run1(&attn_graph(1, 1, 2, 1, "{scale = 1.0}"), &inputs);
    close(&y, &[1. / (1. + (-10f32).exp()), 0.5], 1e-6);
    let y = run1(&attn_graph(1, 1, 2, 1, "{scale = 0.5}"), &inputs);
    close(&y, &[1. / (1. + (-5f32).exp()), 0.5], 1e-6);
    // The cap applies before the mask: causal still hides key 1 from query 0.
    let y = run1(&attn_graph(1, 1, 2, 1, "{causal, scale = 1.0, softcap = 5.0}"), &inputs);
    close(&y, &[0., 0.5], 1e-6);
}

#[test]
fn gqa_maps_query_heads_to_kv_heads_in_groups() {
    // Hq = 4, Hkv = 2: heads 0, 1 read kv head 0 and heads 2, 3 read kv head 1. With q = 0 the output
    // is the mean of the visible values of that kv head.
    let v = [1., 10., 3., 30.]; // v[token][kv head], Dv = 1
    let inputs = [
        ("q", f(&[2, 4, 1], &[0.; 8])),
        ("k", f(&[2, 2, 1], &[0.5, -0.5, 0.25, 1.0])),
        ("v", f(&[2, 2, 1], &v)),
        ("pos", positions(&[0, 1])),
    ];
    let y = run1(&attn_graph(4, 2, 1, 1, "{causal}"), &inputs);
    close(&y, &[1., 1., 10., 10., 2., 2., 20., 20.], 1e-6);
    // MQA: every query head reads the one kv head.
    let inputs = [
        ("q", f(&[1, 3, 1], &[0.; 3])),
        ("k", f(&[1, 1, 1], &[1.])),
        ("v", f(&[1, 1, 1], &[7.])),
        ("pos", positions(&[4])),
    ];
    close(&run1(&attn_graph(3, 1, 1, 1, "{causal}"), &inputs), &[7., 7., 7.], 1e-6);
}

const ATTRS: &str = "{cache = 0, causal, rope = neox{dim = 6, scaling = llama3{factor = 8.0, high_freq_factor = 4.0, low_freq_factor = 1.0, original_max_position = 16}, theta = 10000.0}, softcap = 3.0, window = 3}";

#[test]
fn cache_incremental_equals_one_call() {
    let (hq, hkv, d, dv) = (4, 2, 8, 6);
    let all = random_qkv(7, 6, hq, hkv, d, dv, 10);
    let g = attn_graph(hq, hkv, d, dv, ATTRS);
    let mut cache = KvCache::new();
    let full = run(&g, &all.inputs(), &mut cache);
    assert_eq!(cache.len(0), 6);
    assert_eq!(cache.slot(0).unwrap().positions(), &[10, 11, 12, 13, 14, 15]);
    let full = full.as_f32().unwrap();
    let row = hq * dv;
    // The same without a cache attends over this call's keys: identical for one call.
    let no_cache = attn_graph(hq, hkv, d, dv, &ATTRS.replace("cache = 0, ", ""));
    close(&run1(&no_cache, &all.inputs()), full, 0.0);

    // In chunks of 2, 1, 3 tokens through the cache.
    let mut cache = KvCache::new();
    for (a, b) in [(0, 2), (2, 3), (3, 6)] {
        let part = run(&g, &all.rows(a, b).inputs(), &mut cache);
        close(part.as_f32().unwrap(), &full[a * row..b * row], 1e-6);
        assert_eq!(cache.len(0), b);
    }
    // Speculative rollback: forget positions 14 and 15 (the last 2 entries) and redo them.
    cache.truncate(14);
    assert_eq!(cache.len(0), 4);
    let redo = run(&g, &all.rows(4, 6).inputs(), &mut cache);
    close(redo.as_f32().unwrap(), &full[4 * row..], 1e-6);
    // Without the cache, a lone last token sees only itself.
    let alone = run1(&no_cache, &all.rows(5, 6).inputs());
    let v5: Vec<f32> = all.v.as_f32().unwrap()[5 * hkv * dv..].to_vec();
    let want: Vec<f32> = (0..hq).flat_map(|h| v5[(h / 2) * dv..(h / 2 + 1) * dv].to_vec()).collect();
    close(&alone, &want, 1e-6);
    cache.clear();
    assert!(cache.is_empty() && cache.len(0) == 0);
}

#[test]
fn fused_rope_matches_rope_ops() {
    let (hq, hkv, d, dv) = (4, 2, 8, 8);
    let rope = "dim = 6, scaling = llama3{factor = 8.0, high_freq_factor = 4.0, low_freq_factor = 1.0, original_max_position = 16}, theta = 10000.0";
    let fused = attn_graph(hq, hkv, d, dv, &format!("{{cache = 0, causal, rope = neox{{{rope}}}}}"));
    let separate = parse(&format!(
        "graph @a {{
  %0 = input {{name = \"q\"}} : f32[T,{hq},{d}]
  %1 = input {{name = \"k\"}} : f32[T,{hkv},{d}]
  %2 = input {{name = \"v\"}} : f32[T,{hkv},{dv}]
  %3 = input {{name = \"pos\"}} : i32[T]
  %4 = rope %0, %3 {{layout = neox, {rope}}} : f32[T,{hq},{d}]
  %5 = rope %1, %3 {{layout = neox, {rope}}} : f32[T,{hkv},{d}]
  %6 = attention %4, %5, %2, %3 {{cache = 0, causal}} : f32[T,{hq},{dv}]
  output %6 {{name = \"y\"}}
  output %5 {{name = \"k_roped\"}}
}}"
    ))
    .unwrap();
    let all = random_qkv(11, 5, hq, hkv, d, dv, 3);
    let (mut c1, mut c2) = (KvCache::new(), KvCache::new());
    for (a, b) in [(0, 3), (3, 4), (4, 5)] {
        let x = run(&fused, &all.rows(a, b).inputs(), &mut c1);
        let mut it = Interpreter::new(&separate, &HashMap::<String, Tensor>::new()).unwrap();
        let out = it.run(&all.rows(a, b).inputs(), &mut c2).unwrap();
        close(x.as_f32().unwrap(), out["y"].as_f32().unwrap(), 1e-6);
    }
    // Both caches hold the roped keys.
    close(c1.slot(0).unwrap().keys(), c2.slot(0).unwrap().keys(), 0.0);
    let mut it = Interpreter::new(&separate, &HashMap::<String, Tensor>::new()).unwrap();
    let out = it.run(&all.inputs(), &mut KvCache::new()).unwrap();
    close(c1.slot(0).unwrap().keys(), out["k_roped"].as_f32().unwrap(), 0.0);
    assert_eq!(c1.slot(0).unwrap().positions(), &[3, 4, 5, 6, 7]);
}

#[test]
fn cache_slots_are_separate_and_checked() {
    let g = parse(
        "graph @two {
  %0 = input {name = \"q\"} : f32[T,2,4]
  %1 = input {name = \"pos\"} : i32[T]
  %2 = attention %0, %0, %0, %1 {cache = 3, causal} : f32[T,2,4]
  %3 = attention %2, %2, %2, %1 {cache = 0, causal} : f32[T,2,4]
  output %3 {name = \"y\"}
}",
    )
    .unwrap();
    let mut it = Interpreter::new(&g, &HashMap::<String, Tensor>::new()).unwrap();
    let mut cache = KvCache::new();
    let mut r = SplitMix64::new(3);
    it.run(&[("q", Tensor::f32(&[3, 2, 4], r.vec(24, -1., 1.))), ("pos", positions(&[0, 1, 2]))], &mut cache).unwrap();
    it.run(&[("q", Tensor::f32(&[1, 2, 4], r.vec(8, -1., 1.))), ("pos", positions(&[3]))], &mut cache).unwrap();
    assert_eq!((cache.len(0), cache.len(3), cache.len(1)), (4, 4, 0));
    let slots: Vec<usize> = cache.slots().map(|(s, _)| s).collect();
    assert_eq!(slots, vec![0, 3]);
    let s = cache.slot(3).unwrap();
    assert_eq!((s.kv_heads(), s.head_dim(), s.v_head_dim(), s.keys().len()), (2, 4, 4, 32));

    // A graph whose slot 0 has other head dims cannot continue this cache.
    let other = attn_graph(1, 1, 2, 2, "{cache = 0}");
    let mut it = Interpreter::new(&other, &HashMap::<String, Tensor>::new()).unwrap();
    let err = it
        .run(
            &[
                ("q", f(&[1, 1, 2], &[0., 0.])),
                ("k", f(&[1, 1, 2], &[0., 0.])),
                ("v", f(&[1, 1, 2], &[0., 0.])),
                ("pos", positions(&[4])),
            ],
            &mut cache,
        )
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("%4 = attention: KV-cache slot 0 holds 2 kv heads"), "{err}");
}
