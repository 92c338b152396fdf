//! The GPU kernels against the CPU kernels, run in the SIMT simulator (`kernels::gpu::sim`): the
//! same random inputs through the CUDA code path (thread/warp/block decomposition, shuffles,
//! barriers, shared memory, the GPU's inline math) and through the CPU kernels, which the other
//! tests check against the interpreter. Every buffer must end up the same (f32 to 2e-6 relative
//! L2, integers exactly).

use kiln_codegen::kernels::gpu::{sim, Arity};
use kiln_codegen::kernels::testing::{build, rel_l2};
use kiln_codegen::kernels::{Broadcast, CastType, KernelSpec, ReduceOp, RopeParams, WeightFormat};
use kiln_codegen::pack::pack;
use kiln_ir::interp::testing::SplitMix64;

#[derive(Clone, Debug)]
enum Buf {
    F32(Vec<f32>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
    Null,
}

impl Buf {
    fn ptr(&mut self) -> *mut u8 {
        match self {
            Buf::F32(v) => v.as_mut_ptr() as *mut u8,
            Buf::I32(v) => v.as_mut_ptr() as *mut u8,
            Buf::I64(v) => v.as_mut_ptr() as *mut u8,
            Buf::U8(v) => v.as_mut_ptr(),
            Buf::Null => std::ptr::null_mut(),
        }
    }
}

struct Case {
    what: String,
    spec: KernelSpec,
    dims: Vec<i64>,
    tasks: i64,
    bufs: Vec<Buf>,
}

/// Runs every case on the CPU kernels and in the simulator and compares all buffers.
fn check(cases: Vec<Case>) {
    let names: Vec<String> = (0..cases.len()).map(|i| format!("k{i}")).collect();
    let cpu_kernels: Vec<(&str, KernelSpec)> =
        cases.iter().zip(&names).map(|(c, n)| (n.as_str(), c.spec.clone())).collect();
    let gpu_kernels: Vec<(&str, KernelSpec, Arity)> = cases
        .iter()
        .zip(&names)
        .map(|(c, n)| (n.as_str(), c.spec.clone(), Arity { dims: c.dims.len(), bufs: c.bufs.len() }))
        .collect();
    let cpu = build(&cpu_kernels).unwrap();
    let gpu = sim::build(&gpu_kernels).unwrap();
    for (c, name) in cases.iter().zip(&names) {
        let mut want = c.bufs.clone();
        let mut got = c.bufs.clone();
        let wp: Vec<*mut u8> = want.iter_mut().map(Buf::ptr).collect();
        let gp: Vec<*mut u8> = got.iter_mut().map(Buf::ptr).collect();
        // SAFETY: each case's buffers are sized for its dims by construction.
        unsafe {
            cpu.call(name, &c.dims, &wp, c.tasks, 1);
            gpu.run(name, c.tasks, &c.dims, &gp);
        }
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            match (g, w) {
                (Buf::F32(g), Buf::F32(w)) => {
                    let e = rel_l2(g, w);
                    assert!(e <= 2e-6, "{}: buffer {i}: relative L2 {e:.2e} (launch {:?})", c.what, gpu.launch(name));
                }
                (Buf::I32(g), Buf::I32(w)) => assert_eq!(g, w, "{}: buffer {i}", c.what),
                (Buf::I64(g), Buf::I64(w)) => assert_eq!(g, w, "{}: buffer {i}", c.what),
                _ => {}
            }
        }
    }
}

fn rope(interleaved: bool, rotary: usize, mscale: f32) -> RopeParams {
    let inv_freq = (0..rotary / 2).map(|i| 10000f32.powf(-2.0 * i as f32 / rotary as f32)).collect();
    RopeParams { interleaved, rotary, inv_freq, mscale }
}

#[test]
fn matmul_and_embedding() {
    let mut r = SplitMix64::new(7);
    let mut cases = Vec::new();
    let formats = [WeightFormat::F32, WeightFormat::Bf16, WeightFormat::F16, WeightFormat::Q8_0, WeightFormat::Q4_0];
    for format in formats {
        for (m, n, k, bias) in [
            (1, 40, 320, true),
            (6, 17, 64, false),
            (3, 33, 96, true),
            (1, 18, 2048, false),
            (5, 3, 1312, true),
            (16, 24, 64, true),
            (150, 20, 96, false),
            (37, 8, 32, true),
            (129, 16, 32, false),
        ] {
            // Many rows take the tensor-core path with bf16 weights; for the other formats it is
            // the same GEMV as a few rows (and slow to simulate).
            if m > 16 && format != WeightFormat::Bf16 {
                continue;
            }
            let w = r.vec(n * k, -1.0, 1.0);
            cases.push(Case {
                what: format!("matmul {} m{m} n{n} k{k}", format.name()),
                spec: KernelSpec::Matmul { format, n, k, bias, cols_per_task: 16, interleave: 0 },
                dims: vec![m as i64],
                tasks: n.div_ceil(16) as i64,
                bufs: vec![
                    Buf::F32(r.vec(m * k, -1.0, 1.0)),
                    Buf::U8(pack(format, n, k, &w).unwrap()),
                    if bias { Buf::F32(r.vec(n, -1.0, 1.0)) } else { Buf::Null },
                    Buf::F32(vec![0.0; m * n]),
                ],
            });
        }
        let (vocab, dim) = (20, 64);
        cases.push(Case {
            what: format!("embedding {}", format.name()),
            spec: KernelSpec::Embedding { format, vocab, dim, interleave: 0 },
            dims: vec![4],
            tasks: 4,
            bufs: vec![
                Buf::U8(pack(format, vocab, dim, &r.vec(vocab * dim, -1.0, 1.0)).unwrap()),
                Buf::I32(vec![3, 0, 19, 3]),
                Buf::F32(vec![0.0; 4 * dim]),
            ],
        });
    }
    // K with a tail that is not a whole group of 8.
    for format in [WeightFormat::F32, WeightFormat::Bf16, WeightFormat::F16] {
        let (m, n, k) = (5, 9, 100);
        cases.push(Case {
            what: format!("matmul {} tail", format.name()),
            spec: KernelSpec::Matmul { format, n, k, bias: true, cols_per_task: 16, interleave: 0 },
            dims: vec![m as i64],
            tasks: 1,
            bufs: vec![
                Buf::F32(r.vec(m * k, -1.0, 1.0)),
                Buf::U8(pack(format, n, k, &r.vec(n * k, -1.0, 1.0)).unwrap()),
                Buf::F32(r.vec(n, -1.0, 1.0)),
                Buf::F32(vec![0.0; m * n]),
            ],
        });
    }
    check(cases);
}

#[test]
fn elementwise_and_row_reductions() {
    let mut r = SplitMix64::new(11);
    let (rows, cols) = (3usize, 300usize);
    let mut cases = Vec::new();
    let exprs = [
        "add(mul($0, $1), $2)",
        "mul(silu($0), $1)",
        "gelu_tanh($0)",
        "gelu_erf(mul($0, 3))",
        "maximum(relu($0), minimum(tanh($1), sigmoid($2)))",
        "rsqrt(add(exp(neg($0)), recip(sqrt(abs($1)))))",
    ];
    for e in exprs {
        cases.push(Case {
            what: format!("elementwise {e}"),
            spec: KernelSpec::Elementwise {
                expr: e.into(),
                operands: vec![Broadcast::Full, Broadcast::Row, Broadcast::Col],
                cols,
            },
            dims: vec![rows as i64],
            tasks: rows as i64,
            bufs: vec![
                Buf::F32(r.vec(rows * cols, -4.0, 4.0)),
                Buf::F32(r.vec(cols, -2.0, 2.0)),
                Buf::F32(r.vec(rows, -2.0, 2.0)),
                Buf::F32(vec![0.0; rows * cols]),
            ],
        });
    }
    cases.push(Case {
        what: "elementwise scalar".into(),
        spec: KernelSpec::Elementwise {
            expr: "mul(add($0, $1), $0)".into(),
            operands: vec![Broadcast::Full, Broadcast::Scalar],
            cols,
        },
        dims: vec![rows as i64],
        tasks: rows as i64,
        bufs: vec![Buf::F32(r.vec(rows * cols, -4.0, 4.0)), Buf::F32(vec![0.5]), Buf::F32(vec![0.0; rows * cols])],
    });
    let x = || Buf::F32(SplitMix64::new(3).vec(rows * cols, -3.0, 3.0));
    let w = || Buf::F32(SplitMix64::new(4).vec(cols, 0.5, 1.5));
    let out = || Buf::F32(vec![0.0; rows * cols]);
    let row_case =
        |what: &str, spec, bufs| Case { what: what.into(), spec, dims: vec![rows as i64], tasks: rows as i64, bufs };
    cases.push(row_case("rms_norm", KernelSpec::RmsNorm { cols, eps: 1e-6, weight: true }, vec![x(), w(), out()]));
    cases.push(row_case(
        "rms_norm no weight",
        KernelSpec::RmsNorm { cols, eps: 1e-5, weight: false },
        vec![x(), Buf::Null, out()],
    ));
    cases.push(row_case(
        "layer_norm",
        KernelSpec::LayerNorm { cols, eps: 1e-5, weight: true, bias: true },
        vec![x(), w(), w(), out()],
    ));
    cases.push(row_case("softmax", KernelSpec::Softmax { cols }, vec![x(), out()]));
    for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max] {
        cases.push(row_case(
            &format!("reduce {op:?}"),
            KernelSpec::Reduce { op, cols },
            vec![x(), Buf::F32(vec![0.0; rows])],
        ));
    }
    check(cases);
}

/// A KV cache of `len` entries at positions `0..len` (ascending), with room for `cap`.
fn cache(r: &mut SplitMix64, cap: usize, len: usize, kv_heads: usize, head_dim: usize) -> [Buf; 3] {
    let n = cap * kv_heads * head_dim;
    let mut k = r.vec(n, -1.0, 1.0);
    let mut v = r.vec(n, -1.0, 1.0);
    for x in k[len * kv_heads * head_dim..].iter_mut().chain(v[len * kv_heads * head_dim..].iter_mut()) {
        *x = 0.0;
    }
    let pos: Vec<i32> = (0..cap as i32).map(|p| if (p as usize) < len { p } else { 0 }).collect();
    [Buf::F32(k), Buf::F32(v), Buf::I32(pos)]
}

#[test]
fn attention_and_kv_append() {
    let mut r = SplitMix64::new(21);
    let mut cases = Vec::new();
    // heads, kv heads, head dim, causal, window, soft-cap, RoPE
    type Variant = (usize, usize, usize, bool, Option<i64>, Option<f32>, Option<RopeParams>);
    let variants: Vec<Variant> = vec![
        (6, 2, 64, true, None, None, Some(rope(false, 64, 1.0))),
        (4, 1, 80, true, Some(5), Some(30.0), Some(rope(true, 32, 1.1))),
        (2, 2, 128, false, None, None, None),
        (3, 3, 16, true, None, None, Some(rope(false, 8, 1.0))),
        // Enough heads that each gets one block (no split-K across blocks).
        (128, 64, 16, true, None, None, None),
    ];
    for (heads, kv_heads, head_dim, causal, window, softcap, rope) in variants {
        // Decode (one query at the end) and a 3-token chunk at the end, over caches shorter and
        // longer than one pass of the block's warps.
        for (t, len) in [(1usize, 7usize), (3, 40), (1, 300)] {
            if heads > 64 && t > 1 {
                continue; // slow in the simulator, and nothing new
            }
            let cap = len + 2;
            let [ck, cv, cp] = cache(&mut r, cap, len, kv_heads, head_dim);
            let positions: Vec<i32> = ((len - t) as i32..len as i32).collect();
            cases.push(Case {
                what: format!(
                    "attention h{heads}/{kv_heads} d{head_dim} causal {causal} window {window:?} t{t} len{len}"
                ),
                spec: KernelSpec::Attention {
                    heads,
                    kv_heads,
                    head_dim,
                    scale: 0.125,
                    causal,
                    window,
                    softcap,
                    rope: rope.clone(),
                },
                dims: vec![t as i64, len as i64],
                tasks: (t * heads) as i64,
                bufs: vec![
                    Buf::F32(r.vec(t * heads * head_dim, -1.0, 1.0)),
                    Buf::I32(positions),
                    ck,
                    cv,
                    cp,
                    Buf::F32(vec![0.0; t * heads * head_dim]),
                ],
            });
        }
        let (t, len) = (3usize, 5usize);
        let [ck, cv, cp] = cache(&mut r, len + t, len, kv_heads, head_dim);
        cases.push(Case {
            what: format!("kv_append kv{kv_heads} d{head_dim} rope {}", rope.is_some()),
            spec: KernelSpec::KvAppend { kv_heads, head_dim, rope: rope.clone() },
            dims: vec![t as i64, len as i64],
            tasks: t as i64,
            bufs: vec![
                Buf::F32(r.vec(t * kv_heads * head_dim, -1.0, 1.0)),
                Buf::F32(r.vec(t * kv_heads * head_dim, -1.0, 1.0)),
                Buf::I32(vec![1000, 1001, 4093]),
                ck,
                cv,
                cp,
            ],
        });
    }
    check(cases);
}

#[test]
fn per_thread_kernels() {
    let mut r = SplitMix64::new(5);
    let mut cases = Vec::new();
    let (t, heads, hd) = (3usize, 2usize, 64usize);
    for rp in [rope(false, 64, 1.0), rope(true, 32, 1.3)] {
        cases.push(Case {
            what: format!("rope interleaved {}", rp.interleaved),
            spec: KernelSpec::Rope { heads, head_dim: hd, rope: rp },
            dims: vec![t as i64],
            tasks: t as i64,
            bufs: vec![
                Buf::F32(r.vec(t * heads * hd, -1.0, 1.0)),
                Buf::I32(vec![0, 517, 31_000]),
                Buf::F32(vec![0.0; t * heads * hd]),
            ],
        });
    }
    let (rows, cols, k) = (5usize, 8usize, 2usize);
    cases.push(Case {
        what: "top_k".into(),
        spec: KernelSpec::TopK { cols, k },
        dims: vec![rows as i64],
        tasks: rows as i64,
        bufs: vec![Buf::F32(r.vec(rows * cols, -1.0, 1.0)), Buf::I32(vec![0; rows * k])],
    });
    // A permute (strides out of order) and a slice with an offset, f32 and i32.
    cases.push(Case {
        what: "copy permute".into(),
        spec: KernelSpec::Copy { int: false },
        dims: vec![3, 4, 2, 5, 1, 30, 15, 3, 0],
        tasks: 3,
        bufs: vec![Buf::F32(r.vec(120, -1.0, 1.0)), Buf::F32(vec![0.0; 120])],
    });
    cases.push(Case {
        what: "copy slice".into(),
        spec: KernelSpec::Copy { int: true },
        dims: vec![3, 4, 2, 1, 1, 6, 3, 1, 2],
        tasks: 3,
        bufs: vec![Buf::I32((0..64).collect()), Buf::I32(vec![0; 24])],
    });
    cases.push(Case {
        what: "nonzero".into(),
        spec: KernelSpec::Nonzero,
        dims: vec![6],
        tasks: 1,
        bufs: vec![Buf::F32(vec![0.0, 1.0, 0.0, 2.0, 3.0, 0.0]), Buf::I32(vec![0; 6]), Buf::I64(vec![0])],
    });
    cases.push(Case {
        what: "cast bf16".into(),
        spec: KernelSpec::Cast { from: CastType::F32, to: CastType::Bf16 },
        dims: vec![50],
        tasks: 1,
        bufs: vec![Buf::F32(r.vec(50, -100.0, 100.0)), Buf::F32(vec![0.0; 50])],
    });
    check(cases);
}
