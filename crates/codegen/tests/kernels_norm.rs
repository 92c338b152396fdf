//! rms_norm, layer_norm, softmax and reduce kernels against the interpreter (which accumulates in
//! f64) on random rows of several lengths — under one vector, with tails, longer than the
//! reductions' unrolled main loop — with tasks split 1, 3 and 7 ways; plus the special rows
//! (masked softmax entries, NaN, all −inf) where the result must match exactly in kind.

use kiln_codegen::kernels::testing::{build, ptr, rel_l2, TestLib};
use kiln_codegen::kernels::{KernelSpec, ReduceOp};
use kiln_ir::interp::ops::{norm, reduce};
use kiln_ir::interp::testing::SplitMix64;
use kiln_ir::interp::Tensor;
use kiln_ir::{DType, OpKind};

const COLS: [usize; 8] = [1, 5, 13, 16, 67, 100, 1000, 4099];
const ROWS: usize = 7;
const SPLITS: [i64; 3] = [1, 3, 7];

/// Runs kernel `name` (bufs: `inputs` then one output of `out_len`) with every task split; each
/// split must give the same bits.
fn run(lib: &TestLib, name: &str, inputs: &[Option<&[f32]>], out_len: usize) -> Vec<f32> {
    let mut first: Option<Vec<f32>> = None;
    for splits in SPLITS {
        let mut owned: Vec<Option<Vec<f32>>> = inputs.iter().map(|i| i.map(<[f32]>::to_vec)).collect();
        let mut out = vec![f32::from_bits(0x7fc0_dead); out_len];
        let mut bufs: Vec<*mut u8> =
            owned.iter_mut().map(|o| o.as_mut().map_or(std::ptr::null_mut(), |v| ptr(v))).collect();
        bufs.push(ptr(&mut out));
        // SAFETY: buffers sized for ROWS rows of the kernel's columns; absent operands are null.
        unsafe { lib.call(name, &[ROWS as i64], &bufs, ROWS as i64, splits) };
        match &first {
            None => first = Some(out),
            Some(f) => {
                let same = f.iter().zip(&out).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{name}: split {splits} differs");
            }
        }
    }
    first.unwrap_or_default()
}

fn data(rng: &mut SplitMix64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    rng.vec(n, lo, hi)
}

fn assert_close(what: &str, got: &[f32], want: &Tensor) {
    let err = rel_l2(got, want.as_f32().unwrap());
    eprintln!("{what}: relative L2 {err:e}");
    assert!(err <= 1e-5, "{what}: relative L2 {err:e}");
}

#[test]
fn rms_norm_matches_the_interpreter() {
    let mut specs = Vec::new();
    for &cols in &COLS {
        for weight in [true, false] {
            specs.push((format!("rms_{cols}_{weight}"), KernelSpec::RmsNorm { cols, eps: 1e-5, weight }));
        }
    }
    let lib = build(&specs.iter().map(|(n, s)| (n.as_str(), s.clone())).collect::<Vec<_>>()).unwrap();
    let mut rng = SplitMix64::new(1);
    for (name, spec) in &specs {
        let KernelSpec::RmsNorm { cols, weight, eps } = *spec else { unreachable!() };
        let x = data(&mut rng, ROWS * cols, -3.0, 3.0);
        let w = data(&mut rng, cols, 0.5, 1.5);
        let got = run(&lib, name, &[Some(&x), weight.then_some(&w[..])], ROWS * cols);
        let wt = weight.then(|| Tensor::f32(&[cols], w.clone()));
        let want = norm::rms_norm(&Tensor::f32(&[ROWS, cols], x), wt.as_ref(), eps as f64).unwrap();
        assert_close(name, &got, &want);
    }
}

#[test]
fn layer_norm_matches_the_interpreter() {
    let mut specs = Vec::new();
    for &cols in &COLS {
        for (weight, bias) in [(true, true), (true, false), (false, true), (false, false)] {
            let spec = KernelSpec::LayerNorm { cols, eps: 1e-5, weight, bias };
            specs.push((format!("ln_{cols}_{weight}_{bias}"), spec));
        }
    }
    let lib = build(&specs.iter().map(|(n, s)| (n.as_str(), s.clone())).collect::<Vec<_>>()).unwrap();
    let mut rng = SplitMix64::new(2);
    for (name, spec) in &specs {
        let KernelSpec::LayerNorm { cols, weight, bias, eps } = *spec else { unreachable!() };
        // Rows off-centre, so the mean matters; the single-column rows normalize to bias alone.
        let x = data(&mut rng, ROWS * cols, 2.0, 6.0);
        let w = data(&mut rng, cols, 0.5, 1.5);
        let b = data(&mut rng, cols, -1.0, 1.0);
        let got = run(&lib, name, &[Some(&x), weight.then_some(&w[..]), bias.then_some(&b[..])], ROWS * cols);
        let (wt, bt) = (weight.then(|| Tensor::f32(&[cols], w.clone())), bias.then(|| Tensor::f32(&[cols], b.clone())));
        let want = norm::layer_norm(&Tensor::f32(&[ROWS, cols], x), wt.as_ref(), bt.as_ref(), eps as f64).unwrap();
        assert_close(name, &got, &want);
    }
}

#[test]
fn softmax_matches_the_interpreter() {
    let specs: Vec<(String, KernelSpec)> =
        COLS.iter().map(|&cols| (format!("sm_{cols}"), KernelSpec::Softmax { cols })).collect();
    let lib = build(&specs.iter().map(|(n, s)| (n.as_str(), s.clone())).collect::<Vec<_>>()).unwrap();
    let mut rng = SplitMix64::new(3);
    for (name, spec) in &specs {
        let KernelSpec::Softmax { cols } = *spec else { unreachable!() };
        // Logit-like spreads; some entries masked to −inf as attention masks do.
        let mut x = data(&mut rng, ROWS * cols, -20.0, 20.0);
        for (i, v) in x.iter_mut().enumerate() {
            if i % 7 == 3 && i % cols != 0 {
                *v = f32::NEG_INFINITY;
            }
        }
        let got = run(&lib, name, &[Some(&x)], ROWS * cols);
        let want = norm::softmax(&Tensor::f32(&[ROWS, cols], x), 1).unwrap();
        assert_close(name, &got, &want);
        for row in got.chunks(cols) {
            let s: f64 = row.iter().map(|&v| v as f64).sum();
            assert!((s - 1.0).abs() < 1e-5, "{name}: row sums to {s}");
        }
    }
}

#[test]
fn softmax_special_rows() {
    let cols = 21;
    let lib = build(&[("sm", KernelSpec::Softmax { cols })]).unwrap();
    let mut x = vec![0.5f32; ROWS * cols];
    x[..cols].fill(f32::NEG_INFINITY); // row 0: all −inf → NaN
    x[cols + 4] = f32::NAN; // row 1: a NaN → NaN
    x[2 * cols + 17] = f32::INFINITY; // row 2: +inf → NaN (inf − inf)
    x[3 * cols..4 * cols].fill(-1e30); // row 3: huge but finite → uniform
    x[4 * cols + 20] = 1e30; // row 4: one dominant value → one-hot
    let got = run(&lib, "sm", &[Some(&x)], ROWS * cols);
    let want = norm::softmax(&Tensor::f32(&[ROWS, cols], x), 1).unwrap();
    let want = want.as_f32().unwrap();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(g == w || (g.is_nan() && w.is_nan()) || (g - w).abs() < 1e-6, "element {i}: got {g}, want {w}");
    }
    assert!(got[..3 * cols].iter().all(|v| v.is_nan()));
    assert_eq!(got[4 * cols + 20], 1.0);
}

#[test]
fn reductions_match_the_interpreter() {
    let ops =
        [(ReduceOp::Sum, OpKind::ReduceSum), (ReduceOp::Mean, OpKind::ReduceMean), (ReduceOp::Max, OpKind::ReduceMax)];
    let mut specs = Vec::new();
    for &cols in &COLS {
        for (op, kind) in ops {
            specs.push((format!("red_{cols}_{kind}"), KernelSpec::Reduce { op, cols }, kind));
        }
    }
    let lib = build(&specs.iter().map(|(n, s, _)| (n.as_str(), s.clone())).collect::<Vec<_>>()).unwrap();
    let mut rng = SplitMix64::new(4);
    for (name, spec, kind) in &specs {
        let KernelSpec::Reduce { cols, op } = *spec else { unreachable!() };
        // Positive rows keep the sum away from cancellation, which would make the relative
        // error meaningless; the max test needs the sign spread.
        let (lo, hi) = if op == ReduceOp::Max { (-5.0, 5.0) } else { (0.0, 2.0) };
        let mut x = data(&mut rng, ROWS * cols, lo, hi);
        if op == ReduceOp::Max {
            // Row 1 all negative (the identity −inf must not leak), row 2 holds a NaN.
            x[cols..2 * cols].iter_mut().for_each(|v| *v = -v.abs() - 1.0);
            x[2 * cols + cols / 2] = f32::NAN;
        }
        let got = run(&lib, name, &[Some(&x)], ROWS);
        let want = reduce::reduce(*kind, &Tensor::f32(&[ROWS, cols], x), &[1], false, DType::F32).unwrap();
        if op == ReduceOp::Max {
            let same = got.iter().zip(want.as_f32().unwrap()).all(|(g, w)| g == w || (g.is_nan() && w.is_nan()));
            assert!(same, "{name}: got {got:?}, want {:?}", want.as_f32().unwrap());
        } else {
            assert_close(name, &got, &want);
        }
    }
}

#[test]
fn reduce_max_of_no_columns_is_an_error() {
    assert!(build(&[("m0", KernelSpec::Reduce { op: ReduceOp::Max, cols: 0 })]).is_err());
}
