//! Data-movement and selection kernels against the interpreter, bit for bit: copy (every permutation
//! of a 4-D box, slices, padded lower ranks), take, gather_cols, scatter_rows, fill, top_k (ties,
//! NaN, ±0), nonzero, expert_gate, mod_select (capacity rounding, ties toward the earlier token),
//! and cast (f16/bf16 rounding over random bit patterns and the edge cases, f32 → i32 saturation).
//! Kernels with several tasks run with the tasks split 1, 3 and 7 ways.

use kiln_codegen::kernels::testing::{build, TestLib};
use kiln_codegen::kernels::{CastType, KernelSpec};
use kiln_ir::interp::ops::{index, layout, rows};
use kiln_ir::interp::tensor::cast;
use kiln_ir::interp::testing::SplitMix64;
use kiln_ir::interp::Tensor;
use kiln_ir::DType;

const SPLITS: [i64; 3] = [1, 3, 7];

/// Runs kernel `name` on fresh copies of `bufs` (32-bit words, in the kernel's buffer order) with
/// each task split; every split must leave the same bits. Returns the buffers after the call.
fn run(lib: &TestLib, name: &str, dims: &[i64], bufs: &[Vec<u32>], tasks: i64) -> Vec<Vec<u32>> {
    let mut first: Option<Vec<Vec<u32>>> = None;
    for splits in SPLITS {
        let mut owned = bufs.to_vec();
        let ptrs: Vec<*mut u8> = owned.iter_mut().map(|b| b.as_mut_ptr() as *mut u8).collect();
        // SAFETY: each test sizes the buffers as the kernel's contract requires for `dims`.
        unsafe { lib.call(name, dims, &ptrs, tasks, splits) };
        match &first {
            None => first = Some(owned),
            Some(f) => assert_eq!(f, &owned, "{name}: split {splits} differs"),
        }
    }
    first.unwrap_or_default()
}

fn words(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn floats(v: &[u32]) -> Vec<f32> {
    v.iter().map(|&x| f32::from_bits(x)).collect()
}

fn int_words(v: &[i64]) -> Vec<u32> {
    v.iter().map(|&x| x as i32 as u32).collect()
}

fn ints(v: &[u32]) -> Vec<i64> {
    v.iter().map(|&x| x as i32 as i64).collect()
}

/// A buffer the kernel must overwrite, filled with a recognizable pattern.
fn garbage(n: usize) -> Vec<u32> {
    vec![0x7fc0_dead; n]
}

fn lib(specs: &[(&str, KernelSpec)]) -> TestLib {
    build(specs).unwrap_or_else(|e| panic!("{e}"))
}

/// Values with many ties: a few levels, plus the occasional ±0, ±inf and NaN.
fn tied_values(rng: &mut SplitMix64, n: usize, specials: bool) -> Vec<f32> {
    (0..n)
        .map(|_| match rng.below(20) {
            0 if specials => f32::NAN,
            1 if specials => f32::NEG_INFINITY,
            2 if specials => f32::INFINITY,
            3 => -0.0,
            4 => 0.0,
            _ => (rng.below(9) as f32 - 4.0) * 0.25,
        })
        .collect()
}

fn row_major_strides(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1] as i64;
    }
    s
}

/// The copy kernel's dims for a box of `extents` (rank ≤ 4) with element `strides` into x.
fn copy_dims(extents: &[usize], strides: &[i64], offset: i64) -> Vec<i64> {
    let mut d = vec![1i64; 4];
    let mut s = vec![0i64; 4];
    for i in 0..extents.len() {
        d[i] = extents[i] as i64;
        s[i] = strides[i];
    }
    [d, s, vec![offset]].concat()
}

fn all_perms(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in all_perms(n - 1) {
        for at in 0..=p.len() {
            let mut q = p.clone();
            q.insert(at, n - 1);
            out.push(q);
        }
    }
    out
}

/// A copy to check: a description, the box's extents, strides and offset, and the expected result.
type CopyCase = (String, Vec<usize>, Vec<i64>, i64, Tensor);

#[test]
fn copy_matches_permute_and_slice() {
    let lib = lib(&[("copy_f", KernelSpec::Copy { int: false }), ("copy_i", KernelSpec::Copy { int: true })]);
    let mut rng = SplitMix64::new(1);
    // Random bits: NaN payloads and subnormals must come through unchanged.
    for shape in [vec![3, 4, 5, 37], vec![2, 3, 17, 1], vec![6, 40], vec![5, 1, 19], vec![20]] {
        let n: usize = shape.iter().product();
        let x: Vec<u32> = (0..n).map(|_| rng.next_u64() as u32).collect();
        let xt = Tensor::i64(&shape, ints(&x));
        let strides = row_major_strides(&shape);
        let mut cases: Vec<CopyCase> = Vec::new();
        for perm in all_perms(shape.len()) {
            let extents: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            let st: Vec<i64> = perm.iter().map(|&p| strides[p]).collect();
            cases.push((format!("permute {perm:?}"), extents, st, 0, layout::permute(&xt, &perm).unwrap()));
        }
        for axis in 0..shape.len() {
            let (start, end) = (shape[axis] / 3, shape[axis] - shape[axis] / 4);
            let mut extents = shape.clone();
            extents[axis] = end - start;
            let want = layout::slice_range(&xt, axis, start, end);
            cases.push((format!("slice axis {axis}"), extents, strides.clone(), start as i64 * strides[axis], want));
        }
        for (what, extents, st, offset, want) in cases {
            let dims = copy_dims(&extents, &st, offset);
            for name in ["copy_f", "copy_i"] {
                let out = run(&lib, name, &dims, &[x.clone(), garbage(want.numel())], extents[0] as i64);
                assert_eq!(ints(&out[1]), want.as_i64().unwrap(), "{name} {shape:?} {what}");
            }
        }
    }
}

#[test]
fn take_and_gather_cols_match_the_interpreter() {
    let mut rng = SplitMix64::new(2);
    for row_len in [1usize, 7, 64, 300] {
        let specs = [
            ("take_f", KernelSpec::Take { row_len, int: false }),
            ("take_i", KernelSpec::Take { row_len, int: true }),
            ("gather", KernelSpec::GatherCols { cols: row_len, k: 3 }),
        ];
        let lib = lib(&specs);
        let xv = rng.vec(10 * row_len, -2.0, 2.0);
        let picks: Vec<i64> = (0..6).map(|_| rng.below(10) as i64).collect();
        let want = rows::take(&Tensor::f32(&[10, row_len], xv.clone()), &Tensor::i64(&[6], picks.clone())).unwrap();
        for name in ["take_f", "take_i"] {
            let out = run(&lib, name, &[6], &[words(&xv), int_words(&picks), garbage(6 * row_len)], 6);
            assert_eq!(floats(&out[2]), want.as_f32().unwrap(), "{name} row_len {row_len}");
        }
        // gather_cols over 10 rows of `row_len` columns, 3 picks per row.
        let idx: Vec<i64> = (0..30).map(|_| rng.below(row_len as u64) as i64).collect();
        let want =
            index::gather(&Tensor::f32(&[10, row_len], xv.clone()), &Tensor::i64(&[10, 3], idx.clone()), 1).unwrap();
        let out = run(&lib, "gather", &[10], &[words(&xv), int_words(&idx), garbage(30)], 10);
        assert_eq!(floats(&out[2]), want.as_f32().unwrap(), "gather cols {row_len}");
        // Out-of-range indices read nothing and give 0.
        let mut bad = idx.clone();
        bad[4] = row_len as i64;
        bad[7] = -1;
        let out = run(&lib, "gather", &[10], &[words(&xv), int_words(&bad), garbage(30)], 10);
        assert_eq!((out[2][4], out[2][7]), (0, 0));
        assert_eq!(floats(&out[2])[5], want.as_f32().unwrap()[5]);
    }
}

#[test]
fn scatter_rows_matches_the_interpreter() {
    let mut rng = SplitMix64::new(3);
    let (t, n) = (9usize, 6usize);
    for row_len in [1usize, 13, 64] {
        for add in [false, true] {
            let specs = [
                ("sc_f", KernelSpec::ScatterRows { row_len, add, int: false }),
                ("sc_i", KernelSpec::ScatterRows { row_len, add, int: true }),
            ];
            let lib = lib(&specs);
            // Repeated rows: later writes win, adds accumulate in order.
            let picks: Vec<i64> = vec![4, 0, 4, 8, 2, 4];
            let x = rng.vec(t * row_len, -2.0, 2.0);
            let y = rng.vec(n * row_len, -2.0, 2.0);
            let xt = Tensor::f32(&[t, row_len], x.clone());
            let want =
                rows::scatter_rows(&xt, &Tensor::i64(&[n], picks.clone()), &Tensor::f32(&[n, row_len], y.clone()), add)
                    .unwrap();
            let dims = [t as i64, n as i64];
            let out = run(&lib, "sc_f", &dims, &[words(&x), int_words(&picks), words(&y), garbage(t * row_len)], 1);
            assert_eq!(floats(&out[3]), want.as_f32().unwrap(), "f32 row_len {row_len} add {add}");
            // Integers, with wrapping adds.
            let xi: Vec<i64> = (0..t * row_len).map(|_| rng.next_u64() as i32 as i64).collect();
            let yi: Vec<i64> = (0..n * row_len).map(|_| rng.next_u64() as i32 as i64).collect();
            let want = rows::scatter_rows(
                &Tensor::i64(&[t, row_len], xi.clone()),
                &Tensor::i64(&[n], picks.clone()),
                &Tensor::i64(&[n, row_len], yi.clone()),
                add,
            )
            .unwrap();
            let want: Vec<i64> = want.as_i64().unwrap().iter().map(|&v| v as i32 as i64).collect();
            let out =
                run(&lib, "sc_i", &dims, &[int_words(&xi), int_words(&picks), int_words(&yi), garbage(t * row_len)], 1);
            assert_eq!(ints(&out[3]), want, "i32 row_len {row_len} add {add}");
            // In place (x is out), and a row out of range is skipped.
            let mut buf = words(&x);
            let mut bad = int_words(&[4, 0, 4, 8, 9, -1]);
            let mut yw = words(&y);
            let p = buf.as_mut_ptr() as *mut u8;
            // SAFETY: x and out are the same buffer of t rows, which the kernel allows.
            unsafe { lib.call("sc_f", &dims, &[p, bad.as_mut_ptr() as *mut u8, yw.as_mut_ptr() as *mut u8, p], 1, 1) };
            let good = rows::scatter_rows(
                &xt,
                &Tensor::i64(&[4], vec![4, 0, 4, 8]),
                &Tensor::f32(&[4, row_len], y[..4 * row_len].to_vec()),
                add,
            )
            .unwrap();
            assert_eq!(floats(&buf), good.as_f32().unwrap(), "in place, row_len {row_len} add {add}");
        }
    }
}

#[test]
fn fill_writes_every_element() {
    let specs = [
        ("fill_f", KernelSpec::Fill { value: -1.5, int: false }),
        ("fill_nan", KernelSpec::Fill { value: f32::NAN, int: false }),
        ("fill_i", KernelSpec::Fill { value: -3.7, int: true }),
    ];
    let lib = lib(&specs);
    for n in [0usize, 1, 37, 1000] {
        let out = run(&lib, "fill_f", &[n as i64], &[garbage(n + 1)], 1);
        assert!(out[0][..n].iter().all(|&w| w == (-1.5f32).to_bits()) && out[0][n] == 0x7fc0_dead, "n {n}");
        let out = run(&lib, "fill_nan", &[n as i64], &[garbage(n)], 1);
        assert!(out[0].iter().all(|&w| w == f32::NAN.to_bits()));
        let out = run(&lib, "fill_i", &[n as i64], &[garbage(n)], 1);
        assert!(ints(&out[0]).iter().all(|&v| v == -3));
    }
}

#[test]
fn top_k_matches_the_interpreter() {
    let mut rng = SplitMix64::new(4);
    let rows_n = 7usize;
    for cols in [1usize, 5, 16, 37, 300] {
        let ks: Vec<usize> = [1, 2, 8, cols].into_iter().filter(|&k| k <= cols).collect();
        let names: Vec<String> = ks.iter().map(|k| format!("topk_{k}")).collect();
        let specs: Vec<(&str, KernelSpec)> =
            ks.iter().zip(&names).map(|(&k, n)| (n.as_str(), KernelSpec::TopK { cols, k })).collect();
        let lib = lib(&specs);
        for specials in [false, true] {
            let mut x = tied_values(&mut rng, rows_n * cols, specials);
            if specials {
                // A row of NaN only, and a row of −inf only: pure ties.
                x[..cols].fill(f32::NAN);
                x[cols..2 * cols].fill(f32::NEG_INFINITY);
            }
            for (&k, name) in ks.iter().zip(&names) {
                let want = index::top_k(&Tensor::f32(&[rows_n, cols], x.clone()), k as i64).unwrap();
                let out = run(&lib, name, &[rows_n as i64], &[words(&x), garbage(rows_n * k)], rows_n as i64);
                assert_eq!(ints(&out[1]), want.as_i64().unwrap(), "cols {cols} k {k} specials {specials}");
            }
        }
    }
    assert!(build(&[("bad", KernelSpec::TopK { cols: 4, k: 5 })]).is_err());
    assert!(build(&[("bad", KernelSpec::TopK { cols: 4, k: 0 })]).is_err());
}

#[test]
fn nonzero_matches_the_interpreter() {
    let lib = lib(&[("nz", KernelSpec::Nonzero)]);
    let mut rng = SplitMix64::new(5);
    for n in [0usize, 1, 17, 100, 1000] {
        let mask = tied_values(&mut rng, n, true);
        let want = rows::nonzero(&Tensor::f32(&[n], mask.clone())).unwrap();
        let want = want.as_i64().unwrap();
        let out = run(&lib, "nz", &[n as i64], &[words(&mask), garbage(n), vec![0xdead; 2]], 1);
        let count = out[2][0] as u64 | (out[2][1] as u64) << 32;
        assert_eq!(count, want.len() as u64, "n {n}");
        assert_eq!(ints(&out[1][..want.len()]), want, "n {n}");
    }
}

#[test]
fn expert_gate_matches_the_interpreter() {
    let mut rng = SplitMix64::new(6);
    let t = 9usize;
    for k in [1usize, 2, 4] {
        let experts = [0i64, 1, 3, 7];
        let names: Vec<String> = experts.iter().map(|e| format!("eg_{e}")).collect();
        let specs: Vec<(&str, KernelSpec)> =
            experts.iter().zip(&names).map(|(&expert, n)| (n.as_str(), KernelSpec::ExpertGate { k, expert })).collect();
        let lib = lib(&specs);
        // Repeats within a token's slots add up.
        let idx: Vec<i64> = (0..t * k).map(|_| rng.below(4) as i64).collect();
        let gates = rng.vec(t * k, 0.0, 1.0);
        for (&expert, name) in experts.iter().zip(&names) {
            let want =
                rows::expert_gate(&Tensor::i64(&[t, k], idx.clone()), &Tensor::f32(&[t, k], gates.clone()), expert)
                    .unwrap();
            let out = run(&lib, name, &[t as i64], &[int_words(&idx), words(&gates), garbage(t)], 1);
            // == so that the sign of an empty sum's zero does not matter.
            assert!(floats(&out[2]).iter().zip(want.as_f32().unwrap()).all(|(a, b)| a == b), "k {k} expert {expert}");
        }
    }
}

#[test]
fn mod_select_matches_the_interpreter() {
    let mut rng = SplitMix64::new(7);
    let capacities = [0.01, 0.125, 0.3, 0.5, 0.75, 0.999, 1.0];
    let thresholds = [None, Some(0.3)];
    let mut specs = Vec::new();
    for (ci, &capacity) in capacities.iter().enumerate() {
        for (ti, &threshold) in thresholds.iter().enumerate() {
            specs.push((format!("mod_{ci}_{ti}"), KernelSpec::ModSelect { capacity, threshold }));
        }
    }
    let lib = lib(&specs.iter().map(|(n, s)| (n.as_str(), s.clone())).collect::<Vec<_>>());
    for t in [1usize, 2, 3, 5, 8, 10, 33, 100, 1000] {
        for specials in [false, true] {
            // Ties at the cut, NaN (ranked highest), ±inf and ±0 (equal).
            let mut scores = tied_values(&mut rng, t, specials);
            if t == 1 && specials {
                scores[0] = 0.3; // exactly the threshold as f32, not above it as f64
            }
            for (name, spec) in &specs {
                let KernelSpec::ModSelect { capacity, threshold } = *spec else { unreachable!() };
                let want = rows::mod_select(&Tensor::f32(&[t], scores.clone()), capacity, threshold).unwrap();
                let out = run(&lib, name, &[t as i64], &[words(&scores), garbage(t)], 1);
                assert_eq!(
                    floats(&out[1]),
                    want.as_f32().unwrap(),
                    "T {t} capacity {capacity} threshold {threshold:?}"
                );
            }
        }
    }
    assert!(build(&[("bad", KernelSpec::ModSelect { capacity: 0.0, threshold: None })]).is_err());
    assert!(build(&[("bad", KernelSpec::ModSelect { capacity: 1.5, threshold: None })]).is_err());
}

fn dtype(c: CastType) -> DType {
    match c {
        CastType::F32 => DType::F32,
        CastType::F16 => DType::F16,
        CastType::Bf16 => DType::BF16,
        CastType::I32 => DType::I32,
    }
}

/// f32 inputs where rounding to f16/bf16 is delicate: ties at both formats' precision, the f16
/// overflow and subnormal boundaries, NaN payloads, subnormal f32s, integer saturation bounds.
fn cast_edges() -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        65504.0,
        65519.99,
        65520.0,
        -65520.0,
        65536.0,
        1e10,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-45,
        f32::INFINITY,
        f32::NEG_INFINITY,
        2f32.powi(-14),
        2f32.powi(-24),
        2f32.powi(-25),
        1.5 * 2f32.powi(-25),
        3.0 * 2f32.powi(-25),
        2f32.powi(-26),
        2147483520.0,
        2147483648.0,
        -2147483648.0,
        -2147483904.0,
        0.5,
        -0.5,
        1.5,
        -2.5,
        0.999_999_94,
    ];
    v.extend([0x7fc0_0000u32, 0x7f80_0001, 0xffc1_2345, 0x7fbf_ffff, 0x7f80_2000].map(f32::from_bits));
    // Exact ties and neighbours for f16 (13 dropped bits) and bf16 (16 dropped bits).
    for base in [0x3f80_0000u32, 0x3f80_2000, 0x4770_0000, 0x3880_0000, 0x3f81_0000, 0x0080_0000] {
        for delta in [0x0fff, 0x1000, 0x1001, 0x7fff, 0x8000, 0x8001, 0x3000, 0x18000] {
            v.push(f32::from_bits(base + delta));
            v.push(-f32::from_bits(base + delta));
        }
    }
    v
}

#[test]
fn cast_matches_the_interpreter_bit_for_bit() {
    use CastType::*;
    let types = [F32, F16, Bf16, I32];
    let mut specs = Vec::new();
    for from in types {
        for to in types {
            specs.push((format!("cast_{from:?}_{to:?}"), KernelSpec::Cast { from, to }));
        }
    }
    let lib = lib(&specs.iter().map(|(n, s)| (n.as_str(), s.clone())).collect::<Vec<_>>());
    let mut rng = SplitMix64::new(8);
    let mut fx = cast_edges();
    // Random bit patterns cover every class (normal, subnormal, NaN) in both formats' ranges.
    fx.extend((0..200_000).map(|_| f32::from_bits(rng.next_u64() as u32)));
    fx.extend(rng.vec(50_000, -70_000.0, 70_000.0));
    let mut ix: Vec<i64> = vec![0, 1, -1, i32::MAX as i64, i32::MIN as i64, 16_777_217, 2049, 65_520, -65_536];
    ix.extend((0..50_000).map(|_| rng.next_u64() as i32 as i64));
    for (name, spec) in &specs {
        let KernelSpec::Cast { from, to } = *spec else { unreachable!() };
        let (input, x) = match from {
            I32 => (int_words(&ix), Tensor::i64(&[ix.len()], ix.clone())),
            _ => (words(&fx), Tensor::f32(&[fx.len()], fx.clone())),
        };
        let n = input.len();
        let out = run(&lib, name, &[n as i64], &[input.clone(), garbage(n)], 1);
        let want = cast(&x, dtype(to)).unwrap();
        let want = match to {
            I32 => int_words(want.as_i64().unwrap()),
            _ => words(want.as_f32().unwrap()),
        };
        for i in 0..n {
            assert_eq!(
                out[1][i], want[i],
                "{name}: input {:#010x} gives {:#010x}, want {:#010x}",
                input[i], out[1][i], want[i]
            );
        }
    }
}
