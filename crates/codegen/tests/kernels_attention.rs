//! The `rope`, `kv_append` and `attention` kernels against the reference interpreter
//! (`kiln_ir::interp::ops::attention`) on random data, each call split into 1, 3 and 7 task
//! ranges: RoPE layouts and scalings, then attention sessions (a prefill, then decode steps)
//! through the KV cache with GQA/MQA, windows, soft-caps and explicit scales.

use kiln_codegen::kernels::rope_params::rope_params;
use kiln_codegen::kernels::testing::{build, build_with_lanes, ptr, rel_l2, TestLib};
use kiln_codegen::kernels::{KernelSpec, RopeParams};
use kiln_ir::interp::ops::attention::{attend, attention, rope, AttentionAttrs};
use kiln_ir::interp::testing::SplitMix64;
use kiln_ir::interp::{KvCache, Tensor};
use kiln_ir::op::rope::{RopeLayout, RopeScaling, RopeSpec};

const SPLITS: [i64; 3] = [1, 3, 7];
const TOL: f64 = 1e-5;

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    let err = rel_l2(got, want);
    assert!(err <= TOL, "{what}: relative L2 error {err:e} > {TOL:e}");
}

fn to_i32(v: &[i64]) -> Vec<i32> {
    v.iter().map(|&p| p as i32).collect()
}

// ---------------------------------------------------------------------------------------------
// rope

/// The `rope` kernel on `x[T, heads, head_dim]` at `positions`, out of place for every split and
/// in place (out = x) once, against the interpreter's `rope`.
fn check_rope(spec: &RopeSpec, heads: usize, head_dim: usize, positions: &[i64], seed: u64) {
    let kernel = KernelSpec::Rope { heads, head_dim, rope: rope_params(spec, head_dim) };
    let lib = build(&[("rope", kernel)]).expect("rope compiles");
    let t = positions.len();
    let x = SplitMix64::new(seed).vec(t * heads * head_dim, -1.0, 1.0);
    let want = rope(&Tensor::f32(&[t, heads, head_dim], x.clone()), &Tensor::i64(&[t], positions.to_vec()), spec)
        .expect("interpreter rope");
    let want = want.as_f32().expect("f32 output");
    let mut pos = to_i32(positions);
    for splits in SPLITS {
        let (mut xin, mut out) = (x.clone(), vec![f32::NAN; x.len()]);
        // SAFETY: x and out hold [T, heads, head_dim] f32, positions [T] i32.
        unsafe { lib.call("rope", &[t as i64], &[ptr(&mut xin), ptr(&mut pos), ptr(&mut out)], t as i64, splits) };
        assert_close(&format!("rope, {splits} splits"), &out, want);
        assert_eq!(xin, x, "rope wrote its input");
    }
    let mut inplace = x.clone();
    let p = ptr(&mut inplace);
    // SAFETY: as above, with out = x (elementwise per pair, so in place is allowed).
    unsafe { lib.call("rope", &[t as i64], &[p, ptr(&mut pos), p], t as i64, 3) };
    assert_close("rope in place", &inplace, want);
}

const POSITIONS: [i64; 7] = [0, 1, 2, 17, 64, 130, 299];

#[test]
fn rope_neox_matches_interpreter() {
    check_rope(&RopeSpec::new(RopeLayout::Neox, 10000.0), 3, 64, &POSITIONS, 1);
}

#[test]
fn rope_interleaved_matches_interpreter() {
    check_rope(&RopeSpec::new(RopeLayout::Interleaved, 10000.0), 2, 32, &POSITIONS, 2);
}

#[test]
fn rope_partial_rotary_matches_interpreter() {
    // head_dim 24: a tail past the rotary dims that must pass through unchanged.
    for layout in [RopeLayout::Neox, RopeLayout::Interleaved] {
        let spec = RopeSpec { dim: Some(8), ..RopeSpec::new(layout, 10000.0) };
        check_rope(&spec, 4, 24, &POSITIONS, 3);
    }
}

#[test]
fn rope_with_llama3_and_yarn_scaling_matches_interpreter() {
    let llama3 = RopeSpec {
        scaling: RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position: 64,
        },
        ..RopeSpec::new(RopeLayout::Neox, 500000.0)
    };
    check_rope(&llama3, 2, 64, &POSITIONS, 4);
    // YaRN's attention factor (0.1·ln 4 + 1) multiplies cos and sin.
    let yarn = RopeSpec {
        scaling: RopeScaling::Yarn {
            factor: 4.0,
            original_max_position: 64,
            beta_fast: 32.0,
            beta_slow: 1.0,
            attention_factor: None,
        },
        ..RopeSpec::new(RopeLayout::Neox, 10000.0)
    };
    assert!((rope_params(&yarn, 32).mscale - (0.1 * 4f32.ln() + 1.0)).abs() < 1e-6);
    check_rope(&yarn, 2, 32, &POSITIONS, 5);
}

#[test]
fn rope_params_follow_the_spec() {
    let spec = RopeSpec { dim: Some(16), ..RopeSpec::new(RopeLayout::Interleaved, 10000.0) };
    let p = rope_params(&spec, 64);
    assert!(p.interleaved);
    assert_eq!(p.rotary, 16);
    assert_eq!(p.mscale, 1.0);
    let want: Vec<f32> = spec.inv_freqs(64).iter().map(|&f| f as f32).collect();
    assert_eq!(p.inv_freq, want);
    assert_eq!(p.inv_freq[0], 1.0);
    assert!((p.inv_freq[1] - 10000f32.powf(-2.0 / 16.0)).abs() < 1e-7);
    let neox = rope_params(&RopeSpec::new(RopeLayout::Neox, 10000.0), 64);
    assert!(!neox.interleaved);
    assert_eq!((neox.rotary, neox.inv_freq.len()), (64, 32));
}

// ---------------------------------------------------------------------------------------------
// kv_append + attention sessions

/// One attention layer run for several steps (`steps[i]` tokens each) through the KV cache.
#[derive(Clone)]
struct Session {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    causal: bool,
    window: Option<i64>,
    scale: Option<f32>,
    softcap: Option<f32>,
    rope: Option<RopeSpec>,
    steps: Vec<usize>,
    /// q and k are uniform in ±amplitude (larger spreads the scores, so the softmax is peaked and
    /// the running max moves).
    amplitude: f32,
    seed: u64,
    /// Vector lanes to compile for (the host's when `None`): attention takes the cache this many
    /// entries at a time.
    lanes: Option<u32>,
}

impl Session {
    fn new(heads: usize, kv_heads: usize, head_dim: usize) -> Session {
        Session {
            heads,
            kv_heads,
            head_dim,
            causal: true,
            window: None,
            scale: None,
            softcap: None,
            rope: Some(RopeSpec::new(RopeLayout::Neox, 10000.0)),
            steps: vec![5, 1, 1, 1],
            amplitude: 1.0,
            seed: 7,
            lanes: None,
        }
    }

    fn kernels(&self) -> TestLib {
        let rope: Option<RopeParams> = self.rope.as_ref().map(|r| rope_params(r, self.head_dim));
        let append = KernelSpec::KvAppend { kv_heads: self.kv_heads, head_dim: self.head_dim, rope: rope.clone() };
        let attend = KernelSpec::Attention {
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            scale: self.scale.unwrap_or(1.0 / (self.head_dim as f32).sqrt()),
            causal: self.causal,
            window: self.window,
            softcap: self.softcap,
            rope,
        };
        let kernels = [("kv_append", append), ("attention", attend)];
        match self.lanes {
            None => build(&kernels).expect("kernels compile"),
            Some(lanes) => build_with_lanes(&kernels, lanes).expect("kernels compile"),
        }
    }

    /// Runs every step through the interpreter and the kernels, comparing the cache after
    /// `kv_append` and the output of `attention` for each task split.
    fn check(&self) {
        let lib = self.kernels();
        let (hq, hkv, d) = (self.heads, self.kv_heads, self.head_dim);
        let capacity: usize = self.steps.iter().sum();
        let attrs = AttentionAttrs {
            causal: self.causal,
            window: self.window,
            scale: self.scale.map(f64::from),
            softcap: self.softcap.map(f64::from),
            cache: Some(0),
            rope: self.rope.clone(),
        };
        let mut cache = KvCache::new();
        let (mut cache_k, mut cache_v) = (vec![0f32; capacity * hkv * d], vec![0f32; capacity * hkv * d]);
        let mut cache_pos = vec![0i32; capacity];
        let mut rng = SplitMix64::new(self.seed);
        // Positions start past 0 so that they differ from cache indices.
        let (mut len, mut next_pos) = (0usize, 3i64);
        for (step, &t) in self.steps.iter().enumerate() {
            let a = self.amplitude;
            let (mut q, mut k, mut v) =
                (rng.vec(t * hq * d, -a, a), rng.vec(t * hkv * d, -a, a), rng.vec(t * hkv * d, -1.0, 1.0));
            let positions: Vec<i64> = (next_pos..next_pos + t as i64).collect();
            next_pos += t as i64;
            let want = attention(
                &Tensor::f32(&[t, hq, d], q.clone()),
                &Tensor::f32(&[t, hkv, d], k.clone()),
                &Tensor::f32(&[t, hkv, d], v.clone()),
                &Tensor::i64(&[t], positions.clone()),
                &attrs,
                &mut cache,
            )
            .expect("interpreter attention");
            let want = want.as_f32().expect("f32 output");
            let slot = cache.slot(0).expect("slot 0 written");
            let filled = (len + t) * hkv * d;
            let mut pos = to_i32(&positions);
            for splits in SPLITS {
                let what = format!("step {step} ({t} tokens), {splits} splits");
                let bufs = [
                    ptr(&mut k),
                    ptr(&mut v),
                    ptr(&mut pos),
                    ptr(&mut cache_k),
                    ptr(&mut cache_v),
                    ptr(&mut cache_pos),
                ];
                // SAFETY: k, v hold [t, kv_heads, head_dim], positions [t]; the cache has room for
                // entries len..len+t.
                unsafe { lib.call("kv_append", &[t as i64, len as i64], &bufs, t as i64, splits) };
                assert_close(&format!("cached keys, {what}"), &cache_k[..filled], slot.keys());
                assert_eq!(&cache_v[..filled], slot.values(), "cached values, {what}");
                assert_eq!(cache_pos[..len + t].iter().map(|&p| p as i64).collect::<Vec<_>>(), slot.positions());
                let mut out = vec![f32::NAN; t * hq * d];
                let bufs = [
                    ptr(&mut q),
                    ptr(&mut pos),
                    ptr(&mut cache_k),
                    ptr(&mut cache_v),
                    ptr(&mut cache_pos),
                    ptr(&mut out),
                ];
                let tasks = (t * hq) as i64;
                // SAFETY: q and out hold [t, heads, head_dim]; the cache holds len + t entries.
                unsafe { lib.call("attention", &[t as i64, (len + t) as i64], &bufs, tasks, splits) };
                assert_close(&format!("attention, {what}"), &out, want);
            }
            len += t;
        }
    }
}

#[test]
fn cache_blocks_of_every_vector_width() {
    // Blocks of 16, 8 and 4 entries, whole and partial (a 37-token prefill, single decode steps, a
    // 20-token chunk), with a sliding window masking inside blocks; the cache is exactly as long
    // as the entries, so a partial block must not read past it.
    for lanes in [None, Some(8), Some(4)] {
        let session = Session { steps: vec![37, 1, 20, 1], window: Some(23), lanes, ..Session::new(9, 3, 64) };
        session.check();
        Session { steps: vec![19, 1, 1], lanes, seed: 11, ..Session::new(4, 1, 24) }.check();
    }
}

#[test]
fn gqa_four_heads_over_two_kv_heads() {
    Session::new(4, 2, 32).check();
}

#[test]
fn smollm2_shape_nine_heads_over_three_head_dim_64() {
    let rope = RopeSpec::new(RopeLayout::Neox, 100000.0);
    Session { rope: Some(rope), amplitude: 2.0, ..Session::new(9, 3, 64) }.check();
}

#[test]
fn mqa_interleaved_partial_rotary_with_a_vector_tail() {
    // head_dim 24 = 16 + 8 (or 8 + 8 + 8): pieces of two widths in the dot and accumulator.
    let rope = RopeSpec { dim: Some(16), ..RopeSpec::new(RopeLayout::Interleaved, 10000.0) };
    Session { rope: Some(rope), ..Session::new(4, 1, 24) }.check();
}

#[test]
fn causal_sliding_window_smaller_than_the_sequence() {
    Session { window: Some(3), steps: vec![7, 1, 1, 1], amplitude: 2.0, ..Session::new(4, 2, 32) }.check();
}

#[test]
fn bidirectional_window_sees_future_keys() {
    Session { causal: false, window: Some(4), steps: vec![6, 2, 1], ..Session::new(4, 2, 32) }.check();
}

#[test]
fn no_rope_no_mask() {
    Session { causal: false, rope: None, ..Session::new(2, 2, 16) }.check();
}

#[test]
fn softcap_bounds_large_scores() {
    // Scores up to ~±30 before the cap of 5.
    Session { softcap: Some(5.0), amplitude: 3.0, ..Session::new(4, 2, 32) }.check();
}

#[test]
fn explicit_scale() {
    Session { scale: Some(0.37), amplitude: 2.0, ..Session::new(4, 2, 32) }.check();
}

#[test]
fn long_context_of_300_entries() {
    // A 296-token prefill then decode steps: the online softmax folds hundreds of keys and its
    // running max moves many times with peaked scores.
    Session { steps: vec![296, 1, 1, 1, 1], amplitude: 2.0, ..Session::new(4, 2, 64) }.check();
    Session { steps: vec![296, 1, 1, 1, 1], window: Some(100), ..Session::new(4, 1, 32) }.check();
}

/// Attention over a cache filled by hand, against `attend`: the window masks keys in the middle
/// of the cache (not a prefix), and a query that sees no key gets zeros. (Cache positions ascend,
/// as the runtime keeps them; causal queries stop at their own position.)
#[test]
fn windowed_cache_and_a_query_that_sees_nothing() {
    let (hq, hkv, d) = (4, 2, 32);
    let key_pos: Vec<i64> = vec![2, 3, 5, 7, 9, 11];
    // Query 0 at position 1 precedes every key; 8 sees 5 and 7 in the window; 12 sees 9 and 11.
    let q_pos: Vec<i64> = vec![1, 8, 12];
    let (n, t) = (key_pos.len(), q_pos.len());
    let mut rng = SplitMix64::new(11);
    let (mut q, mut keys, mut values) =
        (rng.vec(t * hq * d, -2.0, 2.0), rng.vec(n * hkv * d, -2.0, 2.0), rng.vec(n * hkv * d, -1.0, 1.0));
    let attrs = AttentionAttrs { causal: true, window: Some(4), ..Default::default() };
    let want = attend((&q, &q_pos), (&keys, &values, &key_pos), (hq, hkv, d, d), &attrs);
    let spec = KernelSpec::Attention {
        heads: hq,
        kv_heads: hkv,
        head_dim: d,
        scale: 1.0 / (d as f32).sqrt(),
        causal: true,
        window: Some(4),
        softcap: None,
        rope: None,
    };
    let lib = build(&[("attention", spec)]).expect("attention compiles");
    let (mut qp, mut kp) = (to_i32(&q_pos), to_i32(&key_pos));
    for splits in SPLITS {
        let mut out = vec![f32::NAN; t * hq * d];
        let bufs = [ptr(&mut q), ptr(&mut qp), ptr(&mut keys), ptr(&mut values), ptr(&mut kp), ptr(&mut out)];
        // SAFETY: q, out [t, heads, head_dim]; the cache holds n entries.
        unsafe { lib.call("attention", &[t as i64, n as i64], &bufs, (t * hq) as i64, splits) };
        assert!(out[..hq * d].iter().all(|&x| x == 0.0), "a query with no visible key must give zeros");
        assert_close(&format!("attention over a windowed cache, {splits} splits"), &out, &want);
    }
}

#[test]
fn invalid_specs_are_errors() {
    let rope = |rotary: usize, pairs: usize| RopeParams {
        interleaved: false,
        rotary,
        inv_freq: vec![1.0; pairs],
        mscale: 1.0,
    };
    let attention = |heads: usize, kv_heads: usize, rope: Option<RopeParams>| KernelSpec::Attention {
        heads,
        kv_heads,
        head_dim: 32,
        scale: 1.0,
        causal: true,
        window: None,
        softcap: None,
        rope,
    };
    let bad = [
        attention(3, 2, None),
        attention(4, 0, None),
        attention(4, 2, Some(rope(7, 3))),
        attention(4, 2, Some(rope(64, 32))),
        KernelSpec::KvAppend { kv_heads: 2, head_dim: 32, rope: Some(rope(16, 4)) },
        KernelSpec::Rope { heads: 2, head_dim: 32, rope: rope(0, 0) },
    ];
    for spec in bad {
        assert!(build(&[("bad", spec.clone())]).is_err(), "{spec:?} should be rejected");
    }
}
