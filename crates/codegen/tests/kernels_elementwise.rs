//! Elementwise kernels against the interpreter's `fused` op on random data: the expressions models
//! use (SwiGLU, GeGLU, softcap, broadcast adds), every function of the expression language, row
//! lengths that are and are not multiples of the vector width, tasks split 1, 3 and 7 ways; plus
//! the accuracy of the vector `exp`/`tanh`/`sigmoid` polynomials over the whole f32 range.

use kiln_codegen::kernels::testing::{build, ptr, rel_l2, TestLib};
use kiln_codegen::kernels::{Broadcast, KernelSpec};
use kiln_ir::interp::ops::fused::fused;
use kiln_ir::interp::testing::SplitMix64;
use kiln_ir::interp::Tensor;
use kiln_ir::op::expr::Func;

/// Row lengths: 1, under one vector, exactly one AVX-512 vector, one AVX2 vector plus a tail, and
/// long rows with tails.
const COLS: [usize; 6] = [1, 5, 16, 13, 67, 1000];
const ROWS: usize = 7;
const SPLITS: [i64; 3] = [1, 3, 7];

fn spec(expr: &str, operands: &[Broadcast], cols: usize) -> KernelSpec {
    KernelSpec::Elementwise { expr: expr.into(), operands: operands.to_vec(), cols }
}

/// The interpreter's tensor for an operand of a `[rows, cols]` result.
fn tensor(b: Broadcast, data: &[f32], rows: usize, cols: usize) -> Tensor {
    match b {
        Broadcast::Full => Tensor::f32(&[rows, cols], data.to_vec()),
        Broadcast::Row => Tensor::f32(&[cols], data.to_vec()),
        Broadcast::Col => Tensor::f32(&[rows, 1], data.to_vec()),
        Broadcast::Scalar => Tensor::f32(&[], data.to_vec()),
    }
}

fn len(b: Broadcast, rows: usize, cols: usize) -> usize {
    match b {
        Broadcast::Full => rows * cols,
        Broadcast::Row => cols,
        Broadcast::Col => rows,
        Broadcast::Scalar => 1,
    }
}

/// Runs kernel `name` on `inputs` with every task split; each result must be identical.
fn run(lib: &TestLib, name: &str, inputs: &[Vec<f32>], rows: usize, cols: usize) -> Vec<f32> {
    let mut first: Option<Vec<f32>> = None;
    for splits in SPLITS {
        let mut xs: Vec<Vec<f32>> = inputs.to_vec();
        let mut out = vec![f32::from_bits(0x7fc0_dead); rows * cols];
        let mut bufs: Vec<*mut u8> = xs.iter_mut().map(|x| ptr(x)).collect();
        bufs.push(ptr(&mut out));
        // SAFETY: every buffer has the length the spec implies for `rows`.
        unsafe { lib.call(name, &[rows as i64], &bufs, rows as i64, splits) };
        match &first {
            None => first = Some(out),
            Some(f) => assert_eq!(bits(f), bits(&out), "{name}: split {splits} differs"),
        }
    }
    first.unwrap_or_default()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Largest per-element relative error, measured against `max(|want|, floor)`.
fn max_rel(got: &[f32], want: &[f32], floor: f64) -> (f64, usize) {
    let mut worst = (0.0, 0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() || w.is_infinite() {
            assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()), "element {i}: got {g}, want {w}");
            continue;
        }
        let e = (g as f64 - w as f64).abs() / (w as f64).abs().max(floor);
        if e > worst.0 {
            worst = (e, i);
        }
    }
    worst
}

/// Compiles `expr` over `operands` for every row length, runs it on data from `gen` and returns
/// the worst relative L2 error against the interpreter.
fn check(expr: &str, operands: &[Broadcast], seed: u64, gen: impl Fn(&mut SplitMix64, usize) -> f32) -> f64 {
    let names: Vec<String> = COLS.iter().map(|c| format!("k_{c}")).collect();
    let kernels: Vec<(&str, KernelSpec)> =
        COLS.iter().zip(&names).map(|(&c, n)| (n.as_str(), spec(expr, operands, c))).collect();
    let lib = build(&kernels).unwrap_or_else(|e| panic!("{expr}: {e}"));
    let mut rng = SplitMix64::new(seed);
    let mut worst: f64 = 0.0;
    for (&cols, name) in COLS.iter().zip(&names) {
        let inputs: Vec<Vec<f32>> = operands
            .iter()
            .enumerate()
            .map(|(i, &b)| (0..len(b, ROWS, cols)).map(|_| gen(&mut rng, i)).collect())
            .collect();
        let got = run(&lib, name, &inputs, ROWS, cols);
        let ts: Vec<Tensor> = operands.iter().zip(&inputs).map(|(&b, d)| tensor(b, d, ROWS, cols)).collect();
        let want = fused(expr, &ts.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(want.shape, vec![ROWS, cols], "{expr}");
        let err = rel_l2(&got, want.as_f32().unwrap());
        assert!(err <= 1e-5, "{expr} cols {cols}: relative L2 {err:e}");
        worst = worst.max(err);
    }
    worst
}

fn normal(rng: &mut SplitMix64, scale: f32) -> f32 {
    // Sum of uniforms: roughly normal, with some larger values.
    (0..4).map(|_| rng.uniform(-1.0, 1.0)).sum::<f32>() * scale
}

#[test]
fn model_expressions_match_the_interpreter() {
    use Broadcast::*;
    let cases: &[(&str, &[Broadcast])] = &[
        ("mul(silu($0), $1)", &[Full, Full]),
        ("mul(gelu_tanh($0), $1)", &[Full, Full]),
        ("mul(gelu_erf($0), $1)", &[Full, Full]),
        ("mul(tanh(div($0, 30)), 30)", &[Full]),
        ("add($0, 1)", &[Full]),
        ("add($0, $1)", &[Full, Full]),
        ("add($0, $1)", &[Full, Row]),
        ("add($0, $1)", &[Col, Full]),
        ("add($0, $1)", &[Full, Scalar]),
        ("mul(add($0, $1), sub($2, $3))", &[Full, Row, Col, Scalar]),
        ("mul($0, sigmoid($1))", &[Full, Col]),
    ];
    for (i, (expr, operands)) in cases.iter().enumerate() {
        let err = check(expr, operands, 100 + i as u64, |rng, _| normal(rng, 3.0));
        eprintln!("{expr} {operands:?}: relative L2 {err:e}");
    }
}

#[test]
fn broadcast_arithmetic_is_exact() {
    use Broadcast::*;
    for operands in [[Full, Row], [Row, Full], [Col, Full], [Full, Scalar], [Scalar, Full], [Full, Full]] {
        for expr in ["add($0, $1)", "sub($0, $1)", "mul($0, $1)", "div($0, $1)"] {
            assert_eq!(check(expr, &operands, 7, |rng, _| normal(rng, 2.0)), 0.0, "{expr} {operands:?}");
        }
    }
}

/// Inputs inside each function's domain (positive bases for pow, positive arguments for log).
fn domain(f: Func) -> impl Fn(&mut SplitMix64, usize) -> f32 {
    move |rng, operand| match (f, operand) {
        (Func::Log | Func::Sqrt | Func::Rsqrt, _) | (Func::Pow, 0) => rng.uniform(1e-3, 20.0),
        (Func::Pow, _) => rng.uniform(-3.0, 3.0),
        (Func::Exp, _) => rng.uniform(-80.0, 80.0),
        _ => normal(rng, 4.0),
    }
}

#[test]
fn every_function_matches_the_interpreter() {
    for f in Func::all() {
        let (expr, operands) = if f.arity() == 2 {
            (format!("{f}($0, $1)"), vec![Broadcast::Full, Broadcast::Full])
        } else {
            (format!("{f}($0)"), vec![Broadcast::Full])
        };
        let err = check(&expr, &operands, f as u64, domain(f));
        eprintln!("{expr}: relative L2 {err:e}");
    }
}

/// Out-of-domain and special inputs give what the interpreter gives: NaN where it has NaN, the same
/// infinities, signed zeros through relu.
#[test]
fn special_values_match_the_interpreter() {
    let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, -1.0, 1e-40, -1e-40, 1e30, -1e30];
    let cols = specials.len();
    let funcs: Vec<Func> = Func::all().collect();
    let names: Vec<String> = funcs.iter().map(|f| format!("s_{f}")).collect();
    let kernels: Vec<(&str, KernelSpec)> = funcs
        .iter()
        .zip(&names)
        .map(|(f, n)| {
            let (expr, operands) = if f.arity() == 2 {
                (format!("{f}($0, $1)"), vec![Broadcast::Full, Broadcast::Full])
            } else {
                (format!("{f}($0)"), vec![Broadcast::Full])
            };
            (n.as_str(), spec(&expr, &operands, cols))
        })
        .collect();
    let lib = build(&kernels).unwrap();
    // Row i pairs the specials with themselves rotated by i, so binary functions see every pair.
    let rows = cols;
    let a: Vec<f32> = (0..rows).flat_map(|_| specials).collect();
    let b: Vec<f32> = (0..rows).flat_map(|r| (0..cols).map(move |c| specials[(c + r) % cols])).collect();
    for ((f, name), (_, spec)) in funcs.iter().zip(&names).zip(&kernels) {
        let KernelSpec::Elementwise { expr, .. } = spec else { unreachable!() };
        let inputs = if f.arity() == 2 { vec![a.clone(), b.clone()] } else { vec![a.clone()] };
        let got = run(&lib, name, &inputs, rows, cols);
        let ts: Vec<Tensor> = inputs.iter().map(|d| Tensor::f32(&[rows, cols], d.clone())).collect();
        let want = fused(expr, &ts.iter().collect::<Vec<_>>()).unwrap();
        let want = want.as_f32().unwrap();
        for i in 0..got.len() {
            let (g, w) = (got[i], want[i]);
            let args = if f.arity() == 2 { format!("({}, {})", a[i], b[i]) } else { format!("({})", a[i]) };
            if w.is_nan() || g.is_nan() {
                assert!(w.is_nan() && g.is_nan(), "{f}{args}: got {g}, want {w}");
            } else if w == 0.0 || w.is_infinite() || w.abs() < 1e-30 {
                // Exact for zeros and infinities; values the interpreter makes subnormal may
                // underflow a little differently.
                assert!(g == w || (w.abs() < 1e-30 && g.abs() < 1e-30), "{f}{args}: got {g:e}, want {w:e}");
            } else {
                assert!(((g - w) / w).abs() < 1e-6, "{f}{args}: got {g:e}, want {w:e}");
            }
        }
    }
}

/// Accuracy of the polynomial functions, per element, over dense sweeps: documented in
/// `kernels::elementwise::vmath`.
#[test]
fn vector_math_accuracy() {
    let sweep = |lo: f32, hi: f32, n: usize| -> Vec<f32> {
        (0..n).map(|i| lo + (hi - lo) * i as f32 / (n - 1) as f32).collect()
    };
    // exp over its whole range, subnormal results included.
    let mut exp_x = sweep(-103.0, 88.7, 40_000);
    exp_x.extend(sweep(-1.0, 1.0, 4_001));
    exp_x.extend(sweep(-1e-6, 1e-6, 101));
    let cases: Vec<(&str, Vec<f32>, f64, f64)> = vec![
        // (function, inputs, bound on the error relative to max(|want|, floor), floor)
        ("exp", exp_x, 1.5e-7, f32::MIN_POSITIVE as f64),
        ("tanh", [sweep(-12.0, 12.0, 40_001), sweep(-0.7, 0.7, 10_001)].concat(), 1.5e-7, 1e-30),
        ("sigmoid", sweep(-87.0, 40.0, 40_001), 2.5e-7, f32::MIN_POSITIVE as f64),
        ("silu", sweep(-80.0, 40.0, 40_001), 3e-7, f32::MIN_POSITIVE as f64),
        ("gelu_tanh", sweep(-4.0, 6.0, 40_001), 1.2e-6, 1e-30),
        ("gelu_tanh", sweep(0.0, 6.0, 20_001), 2.5e-7, 1e-30),
        ("gelu_erf", sweep(-4.0, 6.0, 40_001), 1e-6, 1e-30),
    ];
    let names: Vec<String> = cases.iter().enumerate().map(|(i, c)| format!("acc_{i}_{}", c.0)).collect();
    let kernels: Vec<(&str, KernelSpec)> = cases
        .iter()
        .zip(&names)
        .map(|(c, n)| (n.as_str(), spec(&format!("{}($0)", c.0), &[Broadcast::Full], c.1.len())))
        .collect();
    let lib = build(&kernels).unwrap();
    for ((f, x, bound, floor), name) in cases.iter().zip(&names) {
        let got = run(&lib, name, std::slice::from_ref(x), 1, x.len());
        let want: Vec<f32> = x.iter().map(|&v| Func::from_name(f).unwrap().apply(v, 0.0)).collect();
        let (err, at) = max_rel(&got, &want, *floor);
        eprintln!("{f}: max relative error {err:e} at x = {}", x[at]);
        assert!(err <= *bound, "{f}: relative error {err:e} at x = {} (got {}, want {})", x[at], got[at], want[at]);
    }
}

#[test]
fn bad_expressions_are_errors() {
    for (expr, n) in [("foo($0)", 1), ("add($0, $1)", 1), ("add($0", 1)] {
        let spec = spec(expr, &vec![Broadcast::Full; n], 8);
        let err = build(&[("bad", spec)]).err().unwrap_or_else(|| panic!("{expr} compiled"));
        assert!(err.to_string().contains(expr), "{expr}: {err}");
    }
}
