//! The reference interpreter, op by op, against hand-computed values on small tensors.

use kiln_ir::interp::{Interpreter, KvCache, Tensor};
use kiln_ir::{parse, Graph};
use std::collections::HashMap;

fn graph(body: &str) -> Graph {
    parse(&format!("graph @t {{\n{body}\n}}")).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

/// Runs a graph body with no weights and returns output "y".
fn run(body: &str, inputs: &[(&str, Tensor)]) -> Tensor {
    run_w(body, HashMap::new(), inputs)
}

fn run_w(body: &str, weights: HashMap<String, Tensor>, inputs: &[(&str, Tensor)]) -> Tensor {
    let g = graph(body);
    let mut it = Interpreter::new(&g, &weights).unwrap();
    let mut out = it.run(inputs, &mut KvCache::new()).unwrap_or_else(|e| panic!("{e}"));
    out.remove("y").expect("output y")
}

fn run_err(body: &str, inputs: &[(&str, Tensor)]) -> String {
    let g = graph(body);
    let mut it = Interpreter::new(&g, &HashMap::<String, Tensor>::new()).unwrap();
    it.run(inputs, &mut KvCache::new()).unwrap_err().to_string()
}

fn f(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::f32(shape, v.to_vec())
}

fn i(shape: &[usize], v: &[i64]) -> Tensor {
    Tensor::i64(shape, v.to_vec())
}

#[track_caller]
fn close(t: &Tensor, shape: &[usize], want: &[f32], tol: f32) {
    assert_eq!(t.shape, shape, "shape");
    let got = t.as_f32().expect("float tensor");
    assert_eq!(got.len(), want.len());
    for (k, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= tol * (1.0 + b.abs()), "element {k}: got {a}, want {b}\n got {got:?}\nwant {want:?}");
    }
}

fn binary(op: &str, ta: &str, tb: &str, ty: &str, a: Tensor, b: Tensor) -> Tensor {
    let body = format!(
        "%0 = input {{name = \"a\"}} : {ta}\n%1 = input {{name = \"b\"}} : {tb}\n%2 = {op} %0, %1 : {ty}\noutput %2 {{name = \"y\"}}"
    );
    run(&body, &[("a", a), ("b", b)])
}

fn unary(op: &str, attrs: &str, x: &[f32]) -> Vec<f32> {
    let n = x.len();
    let body =
        format!("%0 = input {{name = \"x\"}} : f32[{n}]\n%1 = {op} %0 {attrs} : f32[{n}]\noutput %1 {{name = \"y\"}}");
    run(&body, &[("x", f(&[n], x))]).as_f32().unwrap().to_vec()
}

#[test]
fn binary_ops_broadcast() {
    let a = f(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let y = binary("add", "f32[2,3]", "f32[3]", "f32[2,3]", a.clone(), f(&[3], &[10., 20., 30.]));
    close(&y, &[2, 3], &[11., 22., 33., 14., 25., 36.], 0.0);
    // [2,1] - [1,3] → [2,3]
    let y = binary("sub", "f32[2,1]", "f32[1,3]", "f32[2,3]", f(&[2, 1], &[1., 2.]), f(&[1, 3], &[1., 2., 3.]));
    close(&y, &[2, 3], &[0., -1., -2., 1., 0., -1.], 0.0);
    // scalar on either side
    let y = binary("mul", "f32[]", "f32[2,3]", "f32[2,3]", Tensor::scalar_f32(2.0), a.clone());
    close(&y, &[2, 3], &[2., 4., 6., 8., 10., 12.], 0.0);
    let y = binary("div", "f32[2,3]", "f32[2,1]", "f32[2,3]", a.clone(), f(&[2, 1], &[2., 4.]));
    close(&y, &[2, 3], &[0.5, 1., 1.5, 1., 1.25, 1.5], 0.0);
    let y = binary("pow", "f32[3]", "f32[]", "f32[3]", f(&[3], &[2., 3., 4.]), Tensor::scalar_f32(0.5));
    close(&y, &[3], &[2f32.sqrt(), 3f32.sqrt(), 2.], 1e-7);
    let y = binary("maximum", "f32[3]", "f32[3]", "f32[3]", f(&[3], &[1., 5., f32::NAN]), f(&[3], &[2., 4., 0.]));
    let v = y.as_f32().unwrap();
    assert_eq!(&v[..2], &[2., 5.]);
    assert!(v[2].is_nan(), "maximum propagates NaN");
    let y = binary("minimum", "f32[3]", "f32[3]", "f32[3]", f(&[3], &[1., 5., -1.]), f(&[3], &[2., 4., 0.]));
    close(&y, &[3], &[1., 4., -1.], 0.0);
    // rank-3 against rank-1 and a middle broadcast dim
    let y = binary(
        "add",
        "f32[2,1,2]",
        "f32[3,1]",
        "f32[2,3,2]",
        f(&[2, 1, 2], &[0., 1., 10., 11.]),
        f(&[3, 1], &[100., 200., 300.]),
    );
    close(&y, &[2, 3, 2], &[100., 101., 200., 201., 300., 301., 110., 111., 210., 211., 310., 311.], 0.0);
}

#[test]
fn integer_arithmetic() {
    let y = binary("add", "i32[2]", "i32[]", "i32[2]", i(&[2], &[2147483647, 1]), i(&[], &[1]));
    assert_eq!(y.as_i64().unwrap(), &[-2147483648, 2], "i32 wraps");
    let y = binary("div", "i64[3]", "i64[3]", "i64[3]", i(&[3], &[7, -7, 9]), i(&[3], &[2, 2, 3]));
    assert_eq!(y.as_i64().unwrap(), &[3, -3, 3], "truncating division");
    let y = binary("pow", "i64[2]", "i64[2]", "i64[2]", i(&[2], &[3, -2]), i(&[2], &[3, 2]));
    assert_eq!(y.as_i64().unwrap(), &[27, 4]);
    let body = "%0 = input {name = \"a\"} : i32[2]\n%1 = input {name = \"b\"} : i32[2]\n%2 = div %0, %1 : i32[2]\noutput %2 {name = \"y\"}";
    let err = run_err(body, &[("a", i(&[2], &[1, 2])), ("b", i(&[2], &[1, 0]))]);
    assert!(err.contains("%2 = div: integer division by zero"), "{err}");
    let body =
        "%0 = input {name = \"x\"} : i32[3]\n%1 = neg %0 : i32[3]\n%2 = abs %1 : i32[3]\noutput %2 {name = \"y\"}";
    let y = run(body, &[("x", i(&[3], &[-5, 0, 7]))]);
    assert_eq!(y.as_i64().unwrap(), &[5, 0, 7]);
}

#[test]
fn unary_ops() {
    let x = [-2.0f32, -0.5, 0.0, 0.5, 3.0];
    let want = |g: fn(f64) -> f64| -> Vec<f32> { x.iter().map(|&v| g(v as f64) as f32).collect() };
    let check = |op: &str, attrs: &str, g: fn(f64) -> f64| {
        let got = unary(op, attrs, &x);
        for ((a, b), v) in got.iter().zip(want(g)).zip(x) {
            assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{op}({v}) = {a}, want {b}");
        }
    };
    check("neg", "", |v| -v);
    check("abs", "", f64::abs);
    check("exp", "", f64::exp);
    check("tanh", "", f64::tanh);
    check("sigmoid", "", |v| 1.0 / (1.0 + (-v).exp()));
    check("silu", "", |v| v / (1.0 + (-v).exp()));
    check("relu", "", |v| v.max(0.0));
    // GELU at hand-checked points: gelu(x) = x Φ(x) with Φ(-2) = 0.022750131948179, Φ(-0.5) =
    // 0.308537538725987, Φ(0.5) = 0.691462461274013, Φ(3) = 0.998650101968370.
    let phi = [0.022750131948179f64, 0.308537538725987, 0.5, 0.691462461274013, 0.998650101968370];
    let got = unary("gelu", "{approx = erf}", &x);
    for ((a, p), v) in got.iter().zip(phi).zip(x) {
        let b = (v as f64 * p) as f32;
        assert!((a - b).abs() < 1e-6, "gelu({v}) = {a}, want {b}");
    }
    check("gelu", "{approx = tanh}", |v| {
        0.5 * v * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v)).tanh())
    });
    let pos = [0.25f32, 1.0, 4.0];
    assert_eq!(unary("sqrt", "", &pos), vec![0.5, 1.0, 2.0]);
    assert_eq!(unary("rsqrt", "", &pos), vec![2.0, 1.0, 0.5]);
    assert_eq!(unary("recip", "", &pos), vec![4.0, 1.0, 0.25]);
    let l = unary("log", "", &[1.0, std::f32::consts::E]);
    close(&f(&[2], &l), &[2], &[0.0, 1.0], 1e-7);
}

#[test]
fn softmax_along_axes() {
    let x = f(&[2, 3], &[1., 2., 3., 1., 1., 1.]);
    let last = "%0 = input {name = \"x\"} : f32[2,3]\n%1 = softmax %0 : f32[2,3]\noutput %1 {name = \"y\"}";
    let (a, b, c) = (0.09003057f32, 0.24472847, 0.66524096);
    close(&run(last, &[("x", x.clone())]), &[2, 3], &[a, b, c, 1. / 3., 1. / 3., 1. / 3.], 1e-7);
    let first = "%0 = input {name = \"x\"} : f32[2,3]\n%1 = softmax %0 {axis = 0} : f32[2,3]\noutput %1 {name = \"y\"}";
    // columns: (1,1) (2,1) (3,1)
    let e1 = 1.0 / (1.0 + (-1f32).exp()); // softmax([2,1])[0]
    let e2 = 1.0 / (1.0 + (-2f32).exp()); // softmax([3,1])[0]
    close(&run(first, &[("x", x)]), &[2, 3], &[0.5, e1, e2, 0.5, 1. - e1, 1. - e2], 1e-7);
    // Large values do not overflow (max-subtracted).
    let big = run(last, &[("x", f(&[2, 3], &[1000., 1001., 1002., -1e30, 0., -1e30]))]);
    close(&big, &[2, 3], &[a, b, c, 0., 1., 0.], 1e-7);
}

#[test]
fn norms() {
    let body = "%0 = input {name = \"x\"} : f32[2,4]\n%1 = param {name = \"w\"} : f32[4]\n%2 = rms_norm %0, %1 {eps = 0.0} : f32[2,4]\noutput %2 {name = \"y\"}";
    let w = HashMap::from([("w".to_string(), f(&[4], &[1., 1., 2., 2.]))]);
    let y = run_w(body, w, &[("x", f(&[2, 4], &[1., 2., 3., 4., 2., 2., 2., 2.]))]);
    // mean(x²) = 7.5 → 1/√7.5 = 0.36514837
    let r = 0.36514837f32;
    close(&y, &[2, 4], &[r, 2. * r, 6. * r, 8. * r, 1., 1., 2., 2.], 1e-6);
    // eps counts: mean(x²) = 1 + eps 3 → 1/2
    let body = "%0 = input {name = \"x\"} : f32[2]\n%1 = rms_norm %0 {eps = 3.0} : f32[2]\noutput %1 {name = \"y\"}";
    close(&run(body, &[("x", f(&[2], &[1., -1.]))]), &[2], &[0.5, -0.5], 1e-7);

    let body = "%0 = input {name = \"x\"} : f32[1,4]\n%1 = param {name = \"w\"} : f32[4]\n%2 = param {name = \"b\"} : f32[4]\n%3 = layer_norm %0, %1, %2 {eps = 0.0} : f32[1,4]\noutput %3 {name = \"y\"}";
    let w =
        HashMap::from([("w".to_string(), f(&[4], &[1., 2., 1., 2.])), ("b".to_string(), f(&[4], &[0., 0., 1., 1.]))]);
    // mean 2.5, biased var 1.25: (x - 2.5)/√1.25 = ±0.4472136, ±1.3416408
    let y = run_w(body, w, &[("x", f(&[1, 4], &[1., 2., 3., 4.]))]);
    close(&y, &[1, 4], &[-1.3416408, -0.8944272, 1.4472136, 3.6832816], 1e-6);
    let body = "%0 = input {name = \"x\"} : f32[4]\n%1 = layer_norm %0 {eps = 0.0} : f32[4]\noutput %1 {name = \"y\"}";
    close(
        &run(body, &[("x", f(&[4], &[1., 2., 3., 4.]))]),
        &[4],
        &[-1.3416408, -0.4472136, 0.4472136, 1.3416408],
        1e-6,
    );
}

#[test]
fn matmul_variants() {
    let a = f(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    // b [3,2]
    let body = "%0 = input {name = \"a\"} : f32[2,3]\n%1 = param {name = \"b\"} : f32[3,2]\n%2 = matmul %0, %1 : f32[2,2]\noutput %2 {name = \"y\"}";
    let w = HashMap::from([("b".to_string(), f(&[3, 2], &[1., 0., 0., 1., 1., 1.]))]);
    close(&run_w(body, w, &[("a", a.clone())]), &[2, 2], &[4., 5., 10., 11.], 0.0);
    // transpose_b with bias: b is [N=2, K=3]
    let body = "%0 = input {name = \"a\"} : f32[2,3]\n%1 = param {name = \"b\"} : f32[2,3]\n%2 = param {name = \"bias\"} : f32[2]\n%3 = matmul %0, %1, %2 {transpose_b} : f32[2,2]\noutput %3 {name = \"y\"}";
    let w = HashMap::from([
        ("b".to_string(), f(&[2, 3], &[1., 0., 1., 0., 1., 1.])),
        ("bias".to_string(), f(&[2], &[0.5, -0.5])),
    ]);
    close(&run_w(body, w, &[("a", a.clone())]), &[2, 2], &[4.5, 4.5, 10.5, 10.5], 0.0);
    // rank-3 lhs against a 2-D weight; rank-1 lhs
    let body = "%0 = input {name = \"a\"} : f32[T,1,3]\n%1 = param {name = \"b\"} : f32[1,3]\n%2 = matmul %0, %1 {transpose_b} : f32[T,1,1]\noutput %2 {name = \"y\"}";
    let w = HashMap::from([("b".to_string(), f(&[1, 3], &[1., 1., 1.]))]);
    close(&run_w(body, w, &[("a", f(&[2, 1, 3], &[1., 2., 3., 4., 5., 6.]))]), &[2, 1, 1], &[6., 15.], 0.0);
    let body = "%0 = input {name = \"a\"} : f32[3]\n%1 = param {name = \"b\"} : f32[3,2]\n%2 = matmul %0, %1 : f32[2]\noutput %2 {name = \"y\"}";
    let w = HashMap::from([("b".to_string(), f(&[3, 2], &[1., 0., 0., 1., 1., 1.]))]);
    close(&run_w(body, w, &[("a", f(&[3], &[1., 2., 3.]))]), &[2], &[4., 5.], 0.0);
    // batched with broadcast batch dims: a [2,1,2] · b [1,2,2] → [2,1,2]
    let body = "%0 = input {name = \"a\"} : f32[2,1,2]\n%1 = input {name = \"b\"} : f32[1,2,2]\n%2 = matmul %0, %1 : f32[2,1,2]\noutput %2 {name = \"y\"}";
    let y = run(body, &[("a", f(&[2, 1, 2], &[1., 2., 3., 4.])), ("b", f(&[1, 2, 2], &[1., 2., 3., 4.]))]);
    close(&y, &[2, 1, 2], &[7., 10., 15., 22.], 0.0);
    // batched, transpose_b, both batch dims present: b[k] is [N, K]
    let body = "%0 = input {name = \"a\"} : f32[2,1,2]\n%1 = input {name = \"b\"} : f32[2,3,2]\n%2 = matmul %0, %1 {transpose_b} : f32[2,1,3]\noutput %2 {name = \"y\"}";
    let b = f(&[2, 3, 2], &[1., 0., 0., 1., 1., 1., 2., 0., 0., 2., 1., -1.]);
    let y = run(body, &[("a", f(&[2, 1, 2], &[1., 2., 3., 4.])), ("b", b)]);
    close(&y, &[2, 1, 3], &[1., 2., 3., 6., 8., -1.], 0.0);
}

#[test]
fn embedding_and_its_range_check() {
    let body = "%0 = input {name = \"ids\"} : i32[T]\n%1 = param {name = \"table\"} : f32[4,2]\n%2 = embedding %1, %0 : f32[T,2]\noutput %2 {name = \"y\"}";
    let w = HashMap::from([("table".to_string(), f(&[4, 2], &[0., 1., 10., 11., 20., 21., 30., 31.]))]);
    let y = run_w(body, w.clone(), &[("ids", i(&[3], &[2, 0, 3]))]);
    close(&y, &[3, 2], &[20., 21., 0., 1., 30., 31.], 0.0);
    let g = graph(body);
    let mut it = Interpreter::new(&g, &w).unwrap();
    let err = it.run(&[("ids", i(&[2], &[1, 7]))], &mut KvCache::new()).unwrap_err().to_string();
    assert_eq!(err, "%2 = embedding: token id 7 out of range for vocab 4");
    let err = it.run(&[("ids", i(&[1], &[-1]))], &mut KvCache::new()).unwrap_err().to_string();
    assert!(err.contains("token id -1 out of range for vocab 4"), "{err}");
}

#[test]
fn layout_ops() {
    let x: Vec<f32> = (0..24).map(|v| v as f32).collect();
    let body = "%0 = input {name = \"x\"} : f32[2,3,4]\n%1 = reshape %0 {shape = [6,4]} : f32[6,4]\n%2 = permute %1 {perm = [1, 0]} : f32[4,6]\noutput %2 {name = \"y\"}";
    let y = run(body, &[("x", f(&[2, 3, 4], &x))]);
    let want: Vec<f32> = (0..4).flat_map(|c| (0..6).map(move |r| (r * 4 + c) as f32)).collect();
    close(&y, &[4, 6], &want, 0.0);
    // permute [2, 0, 1]: y[c, a, b] = x[a, b, c]
    let body = "%0 = input {name = \"x\"} : f32[2,3,4]\n%1 = permute %0 {perm = [2, 0, 1]} : f32[4,2,3]\noutput %1 {name = \"y\"}";
    let y = run(body, &[("x", f(&[2, 3, 4], &x))]);
    let yv = y.as_f32().unwrap();
    for c in 0..4 {
        for a in 0..2 {
            for b in 0..3 {
                assert_eq!(yv[(c * 2 + a) * 3 + b], x[(a * 3 + b) * 4 + c]);
            }
        }
    }
    // concat along axis 1
    let body = "%0 = input {name = \"a\"} : f32[2,1]\n%1 = input {name = \"b\"} : f32[2,2]\n%2 = concat %0, %1, %0 {axis = 1} : f32[2,4]\noutput %2 {name = \"y\"}";
    let y = run(body, &[("a", f(&[2, 1], &[1., 2.])), ("b", f(&[2, 2], &[3., 4., 5., 6.]))]);
    close(&y, &[2, 4], &[1., 3., 4., 1., 2., 5., 6., 2.], 0.0);
    // concat along a symbolic axis
    let body = "%0 = input {name = \"a\"} : i32[T]\n%1 = input {name = \"b\"} : i32[P]\n%2 = concat %1, %0 {axis = 0} : i32[P+T]\noutput %2 {name = \"y\"}";
    let y = run(body, &[("a", i(&[2], &[8, 9])), ("b", i(&[1], &[7]))]);
    assert_eq!((&y.shape[..], y.as_i64().unwrap()), (&[3][..], &[7, 8, 9][..]));
    // split: middle chunk of sizes [1, 2, 1] along the last axis
    let body = "%0 = input {name = \"x\"} : f32[2,4]\n%1 = split %0 {axis = -1, index = 1, sizes = [1, 2, 1]} : f32[2,2]\noutput %1 {name = \"y\"}";
    close(&run(body, &[("x", f(&[2, 4], &x[..8]))]), &[2, 2], &[1., 2., 5., 6.], 0.0);
    // slice with negative bounds
    let body = "%0 = input {name = \"x\"} : f32[T,2]\n%1 = slice %0 {axis = 0, end = -1, start = -3} : f32[2,2]\noutput %1 {name = \"y\"}";
    close(&run(body, &[("x", f(&[4, 2], &x[..8]))]), &[2, 2], &[2., 3., 4., 5.], 0.0);
    let body = "%0 = input {name = \"x\"} : f32[T,2]\n%1 = slice %0 {axis = 1, start = 1} : f32[T,1]\noutput %1 {name = \"y\"}";
    close(&run(body, &[("x", f(&[3, 2], &x[..6]))]), &[3, 1], &[1., 3., 5.], 0.0);
    // a slice that the runtime length puts out of range
    let body = "%0 = input {name = \"x\"} : f32[T,2]\n%1 = slice %0 {axis = 0, end = -1, start = -3} : f32[2,2]\noutput %1 {name = \"y\"}";
    let err = run_err(body, &[("x", f(&[2, 2], &x[..4]))]);
    assert!(err.starts_with("%1 = slice: slice [-3:-1] along axis 0 is out of range for shape [2, 2]"), "{err}");
}

#[test]
fn casts() {
    let x = [1.0009766f32, -2.7, 3.9, 0.0, 65520.0];
    let body = |to: &str| {
        format!(
            "%0 = input {{name = \"x\"}} : f32[5]\n%1 = cast %0 {{dtype = {to}}} : {to}[5]\noutput %1 {{name = \"y\"}}"
        )
    };
    let h = run(&body("f16"), &[("x", f(&[5], &x))]);
    let hv = h.as_f32().unwrap();
    assert_eq!(hv[0], 1.0009766, "1 + 2^-10 is an f16");
    assert_eq!(hv[1], -2.6992188, "nearest f16 to -2.7");
    assert_eq!(hv[4], f32::INFINITY, "past f16's max rounds to inf");
    let b = run(&body("bf16"), &[("x", f(&[5], &x))]);
    assert_eq!(&b.as_f32().unwrap()[..2], &[1.0, -2.703125]);
    let n = run(&body("i32"), &[("x", f(&[5], &x))]);
    assert_eq!(n.as_i64().unwrap(), &[1, -2, 3, 0, 65520], "truncates toward zero");
    let z = run(&body("bool"), &[("x", f(&[5], &x))]);
    assert_eq!(z.as_i64().unwrap(), &[1, 1, 1, 0, 1]);
    // int → float and bool → int
    let body = "%0 = input {name = \"x\"} : i64[2]\n%1 = cast %0 {dtype = bf16} : bf16[2]\noutput %1 {name = \"y\"}";
    close(&run(body, &[("x", i(&[2], &[3, 257]))]), &[2], &[3., 256.], 0.0);
    let body = "%0 = input {name = \"x\"} : bool[2]\n%1 = cast %0 {dtype = f32} : f32[2]\noutput %1 {name = \"y\"}";
    close(&run(body, &[("x", i(&[2], &[1, 0]))]), &[2], &[1., 0.], 0.0);
}

#[test]
fn reductions() {
    let x = f(&[2, 3], &[1., 5., 3., 4., 2., 6.]);
    let body = |op: &str, attrs: &str, ty: &str| {
        format!("%0 = input {{name = \"x\"}} : f32[2,3]\n%1 = {op} %0 {attrs} : {ty}\noutput %1 {{name = \"y\"}}")
    };
    close(&run(&body("reduce_sum", "{axes = [0]}", "f32[3]"), &[("x", x.clone())]), &[3], &[5., 7., 9.], 0.0);
    close(
        &run(&body("reduce_sum", "{axes = [0], keepdim}", "f32[1,3]"), &[("x", x.clone())]),
        &[1, 3],
        &[5., 7., 9.],
        0.0,
    );
    close(&run(&body("reduce_mean", "{axes = [-1]}", "f32[2]"), &[("x", x.clone())]), &[2], &[3., 4.], 0.0);
    close(&run(&body("reduce_max", "{axes = [1]}", "f32[2]"), &[("x", x.clone())]), &[2], &[5., 6.], 0.0);
    close(&run(&body("reduce_max", "{axes = [0, 1]}", "f32[]"), &[("x", x.clone())]), &[], &[6.], 0.0);
    close(
        &run(&body("reduce_mean", "{axes = [1, 0], keepdim}", "f32[1,1]"), &[("x", x.clone())]),
        &[1, 1],
        &[3.5],
        0.0,
    );
    let body =
        "%0 = input {name = \"x\"} : i32[2,2]\n%1 = reduce_sum %0 {axes = [1]} : i32[2]\noutput %1 {name = \"y\"}";
    assert_eq!(run(body, &[("x", i(&[2, 2], &[1, 2, 3, 4]))]).as_i64().unwrap(), &[3, 7]);
}

#[test]
fn rope_op_rotates_pairs() {
    let p = 3i64;
    let x: Vec<f32> = vec![1., 2., 3., 4., 5., 6., 7., 8.];
    // neox, D = 4: pairs (0,2) at frequency 1 and (1,3) at 1/√100 = 0.1
    let rot = |a: f32, b: f32, ang: f64| {
        let (s, c) = ang.sin_cos();
        ((a as f64 * c - b as f64 * s) as f32, (b as f64 * c + a as f64 * s) as f32)
    };
    let body = |attrs: &str| {
        format!("%0 = input {{name = \"x\"}} : f32[T,2,4]\n%1 = input {{name = \"pos\"}} : i32[T]\n%2 = rope %0, %1 {attrs} : f32[T,2,4]\noutput %2 {{name = \"y\"}}")
    };
    let y = run(&body("{layout = neox, theta = 100.0}"), &[("x", f(&[1, 2, 4], &x)), ("pos", i(&[1], &[p]))]);
    let mut want = vec![0f32; 8];
    for h in 0..2 {
        let o = h * 4;
        (want[o], want[o + 2]) = rot(x[o], x[o + 2], p as f64);
        (want[o + 1], want[o + 3]) = rot(x[o + 1], x[o + 3], p as f64 * 0.1);
    }
    close(&y, &[1, 2, 4], &want, 1e-6);
    // interleaved: pairs (0,1) and (2,3)
    let y = run(&body("{layout = interleaved, theta = 100.0}"), &[("x", f(&[1, 2, 4], &x)), ("pos", i(&[1], &[p]))]);
    for h in 0..2 {
        let o = h * 4;
        (want[o], want[o + 1]) = rot(x[o], x[o + 1], p as f64);
        (want[o + 2], want[o + 3]) = rot(x[o + 2], x[o + 3], p as f64 * 0.1);
    }
    close(&y, &[1, 2, 4], &want, 1e-6);
    // partial rotary: dim = 2 rotates (0,1) at frequency 1 and leaves dims 2, 3 alone
    let y = run(&body("{dim = 2, layout = neox, theta = 100.0}"), &[("x", f(&[1, 2, 4], &x)), ("pos", i(&[1], &[p]))]);
    for h in 0..2 {
        let o = h * 4;
        (want[o], want[o + 1]) = rot(x[o], x[o + 1], p as f64);
        (want[o + 2], want[o + 3]) = (x[o + 2], x[o + 3]);
    }
    close(&y, &[1, 2, 4], &want, 1e-6);
    // position 0 is the identity
    let y = run(&body("{layout = neox, theta = 100.0}"), &[("x", f(&[1, 2, 4], &x)), ("pos", i(&[1], &[0]))]);
    close(&y, &[1, 2, 4], &x, 0.0);
}

#[test]
fn top_k_and_ties() {
    let body = |k: usize, n: usize| {
        format!("%0 = input {{name = \"x\"}} : f32[2,{n}]\n%1 = top_k %0 {{k = {k}}} : i32[2,{k}]\noutput %1 {{name = \"y\"}}")
    };
    let x = f(&[2, 5], &[3., 1., 3., 2., 3., 0., -1., 5., 5., -2.]);
    let y = run(&body(3, 5), &[("x", x.clone())]);
    assert_eq!(y.shape, [2, 3]);
    assert_eq!(y.as_i64().unwrap(), &[0, 2, 4, 2, 3, 0], "largest first, ties to the lower index");
    let y = run(&body(5, 5), &[("x", x)]);
    assert_eq!(y.as_i64().unwrap(), &[0, 2, 4, 3, 1, 2, 3, 0, 1, 4]);
    // top_k then gather gives the values, sorted
    let body = "%0 = input {name = \"x\"} : f32[1,4]\n%1 = top_k %0 {k = 2} : i32[1,2]\n%2 = gather %0, %1 {axis = 1} : f32[1,2]\noutput %2 {name = \"y\"}";
    close(&run(body, &[("x", f(&[1, 4], &[0.5, -1., 2., 1.]))]), &[1, 2], &[2., 1.], 0.0);
}

#[test]
fn gather_along_axes() {
    let x = f(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let body = "%0 = input {name = \"x\"} : f32[2,3]\n%1 = input {name = \"i\"} : i64[2,2]\n%2 = gather %0, %1 {axis = 1} : f32[2,2]\noutput %2 {name = \"y\"}";
    close(&run(body, &[("x", x.clone()), ("i", i(&[2, 2], &[2, 0, 1, 1]))]), &[2, 2], &[3., 1., 5., 5.], 0.0);
    let body = "%0 = input {name = \"x\"} : f32[2,3]\n%1 = input {name = \"i\"} : i64[1,3]\n%2 = gather %0, %1 {axis = 0} : f32[1,3]\noutput %2 {name = \"y\"}";
    close(&run(body, &[("x", x.clone()), ("i", i(&[1, 3], &[1, 0, 1]))]), &[1, 3], &[4., 2., 6.], 0.0);
    let err = run_err(body, &[("x", x), ("i", i(&[1, 3], &[1, 2, 0]))]);
    assert!(err.contains("%2 = gather: index 2 out of range for dim 0 of size 2"), "{err}");
}

#[test]
fn constants_fill_symbolic_shapes() {
    let body = "%0 = input {name = \"x\"} : f32[T,2]\n%1 = constant {value = 1.5} : f32[T,2]\n%2 = add %0, %1 : f32[T,2]\n%3 = constant {value = 2.0} : f32[]\n%4 = mul %2, %3 : f32[T,2]\noutput %4 {name = \"y\"}";
    close(&run(body, &[("x", f(&[3, 2], &[0., 1., 2., 3., 4., 5.]))]), &[3, 2], &[3., 5., 7., 9., 11., 13.], 0.0);
    let body = "%0 = input {name = \"x\"} : i32[2]\n%1 = constant {value = 3.7} : i32[]\n%2 = add %0, %1 : i32[2]\noutput %2 {name = \"y\"}";
    assert_eq!(run(body, &[("x", i(&[2], &[1, 2]))]).as_i64().unwrap(), &[4, 5]);
}
