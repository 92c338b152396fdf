//! The `fused` op: its expression language, type rule, verifier errors, text form, and that the
//! interpreter computes exactly what the chain of ops it stands for computes.

use kiln_ir::interp::testing::SplitMix64;
use kiln_ir::interp::{Interpreter, KvCache, Tensor};
use kiln_ir::op::expr::{Expr, Func};
use kiln_ir::{parse, print, verify, Attr, Attrs, DType, Dim, Graph, GraphBuilder, NodeId, OpKind, Shape, TensorType};
use proptest::prelude::*;
use std::collections::HashMap;

fn run(g: &Graph, inputs: &[(&str, Tensor)]) -> Tensor {
    let mut it = Interpreter::new(g, &HashMap::<String, Tensor>::new()).unwrap_or_else(|e| panic!("{e}\n{}", print(g)));
    let mut out = it.run(inputs, &mut KvCache::new()).unwrap_or_else(|e| panic!("{e}\n{}", print(g)));
    out.remove("y").expect("output y")
}

/// Bit-equal, except that any NaN equals any NaN.
#[track_caller]
fn same_values(a: &Tensor, b: &Tensor, what: &str) {
    assert_eq!(a.shape, b.shape, "{what}: shapes");
    let (x, y) = (a.as_f32().unwrap(), b.as_f32().unwrap());
    for (k, (p, q)) in x.iter().zip(y).enumerate() {
        assert!(p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()), "{what}: element {k}: {p} vs {q}");
    }
}

fn ty(dtype: DType, dims: &[Dim]) -> TensorType {
    TensorType::new(dtype, dims.iter().cloned())
}

fn fused_attrs(expr: &str) -> Attrs {
    Attrs::new().with("expr", Attr::Str(expr.into()))
}

/// The unfused chain of ops for an expression over the given nodes.
fn chain(b: &mut GraphBuilder, e: &Expr, xs: &[NodeId], dtype: DType) -> NodeId {
    match e {
        Expr::Operand(i) => xs[*i],
        Expr::Num(v) => b.scalar(*v, dtype).unwrap(),
        Expr::Call(f, args) => {
            let ops: Vec<NodeId> = args.iter().map(|a| chain(b, a, xs, dtype)).collect();
            let (op, attrs) = f.op();
            b.op(op, &ops, attrs).unwrap()
        }
    }
}

/// Two graphs over the same inputs: `fused` with the expression, and the chain of ops.
fn both(expr: &str, inputs: &[TensorType]) -> (Graph, Graph) {
    let e = Expr::parse(expr).unwrap();
    let build = |fuse: bool| {
        let mut b = GraphBuilder::new("t");
        let xs: Vec<NodeId> =
            inputs.iter().enumerate().map(|(i, t)| b.input(&format!("x{i}"), t.clone()).unwrap()).collect();
        let y = if fuse {
            b.op(OpKind::Fused, &xs, fused_attrs(expr)).unwrap_or_else(|e| panic!("{expr}: {e}"))
        } else {
            chain(&mut b, &e, &xs, inputs[0].dtype)
        };
        b.output("y", y).unwrap();
        let g = b.finish();
        verify(&g).unwrap();
        g
    };
    (build(true), build(false))
}

fn random_inputs(rng: &mut SplitMix64, shapes: &[Vec<usize>]) -> Vec<(String, Tensor)> {
    shapes
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("x{i}"), Tensor::f32(s, rng.vec(s.iter().product(), -3.0, 3.0))))
        .collect()
}

fn check_equal(expr: &str, types: &[TensorType], shapes: &[Vec<usize>], seed: u64) {
    let (fg, cg) = both(expr, types);
    let mut rng = SplitMix64::new(seed);
    let inputs = random_inputs(&mut rng, shapes);
    let refs: Vec<(&str, Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    same_values(&run(&fg, &refs), &run(&cg, &refs), expr);
}

#[test]
fn every_function_matches_its_op() {
    let t = ty(DType::F32, &[Dim::sym("T"), Dim::c(8)]);
    let specials = [0.0f32, -0.0, 1.0, -1.0, 0.5, 80.0, -80.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
    for f in Func::all() {
        let expr = if f.arity() == 2 { format!("{f}($0, $1)") } else { format!("{f}($0)") };
        let types = vec![t.clone(); f.arity()];
        check_equal(&expr, &types, &vec![vec![5, 8]; f.arity()], f as u64);
        // Special values on both sides.
        let t10 = ty(DType::F32, &[Dim::sym("T"), Dim::c(10)]);
        let (fg, cg) = both(&expr, &vec![t10; f.arity()]);
        let a: Vec<f32> = specials.iter().flat_map(|&x| specials.iter().map(move |_| x)).collect();
        let b: Vec<f32> = specials.iter().flat_map(|_| specials.iter().copied()).collect();
        let mut inputs = vec![("x0", Tensor::f32(&[10, 10], a.clone()))];
        if f.arity() == 2 {
            inputs.push(("x1", Tensor::f32(&[10, 10], b)));
        }
        same_values(&run(&fg, &inputs), &run(&cg, &inputs), &expr);
    }
}

#[test]
fn function_values() {
    let x = [-2.0f32, -0.5, 0.0, 0.5, 2.0];
    let t = ty(DType::F32, &[Dim::c(5)]);
    let eval = |expr: &str| {
        let (fg, _) = both(expr, std::slice::from_ref(&t));
        run(&fg, &[("x0", Tensor::f32(&[5], x.to_vec()))]).as_f32().unwrap().to_vec()
    };
    let close = |got: Vec<f32>, want: &dyn Fn(f64) -> f64| {
        for (g, &xi) in got.iter().zip(&x) {
            let w = want(xi as f64) as f32;
            assert!((g - w).abs() <= 1e-6 * (1.0 + w.abs()), "{g} vs {w} at {xi}");
        }
    };
    close(eval("silu($0)"), &|v| v / (1.0 + (-v).exp()));
    close(eval("gelu_tanh($0)"), &|v| 0.5 * v * (1.0 + (0.7978845608028654 * (v + 0.044715 * v * v * v)).tanh()));
    close(eval("relu(sub($0, 0.5))"), &|v| (v - 0.5).max(0.0));
    close(eval("mul(pow($0, 2), -1)"), &|v| -v * v);
    close(eval("maximum(minimum($0, 1), -1)"), &|v| v.clamp(-1.0, 1.0));
    close(eval("rsqrt(add(abs($0), 1e-5))"), &|v| 1.0 / (v.abs() + 1e-5).sqrt());
}

#[test]
fn broadcasting() {
    let (t, f) = (Dim::sym("T"), DType::F32);
    let types = [ty(f, &[t.clone(), Dim::c(1), Dim::c(4)]), ty(f, &[Dim::c(3), Dim::c(1)]), ty(f, &[])];
    let (fg, _) = both("mul(add($0, $1), sigmoid($2))", &types);
    let out = fg.outputs()[0];
    assert_eq!(fg.ty(fg.operands(out)[0]).to_string(), "f32[T,3,4]");
    check_equal("mul(add($0, $1), sigmoid($2))", &types, &[vec![2, 1, 4], vec![3, 1], vec![]], 7);
    // An operand used twice, and a lower-rank operand first.
    let types = [ty(f, &[Dim::c(4)]), ty(f, &[t.clone(), Dim::c(4)])];
    check_equal("sub(mul($0, $1), div($1, add($0, 4.0)))", &types, &[vec![4], vec![3, 4]], 8);
    // Scalars only.
    check_equal("exp(neg($0))", &[ty(f, &[])], &[vec![]], 9);
    // Half-precision values are computed in f32, as the ops do.
    let types = [ty(DType::BF16, &[t.clone(), Dim::c(6)]), ty(DType::BF16, &[Dim::c(6)])];
    check_equal("mul(gelu_erf($0), add($1, 1.0))", &types, &[vec![2, 6], vec![6]], 10);
}

fn verify_error(expr: Option<&str>, types: &[TensorType]) -> String {
    let mut g = Graph::new("t");
    let xs: Vec<NodeId> = types
        .iter()
        .enumerate()
        .map(|(i, t)| g.add_node(OpKind::Input, Attrs::new().with("name", Attr::Str(format!("x{i}"))), &[], t.clone()))
        .collect();
    let attrs = expr.map(fused_attrs).unwrap_or_default();
    let y = g.add_node(OpKind::Fused, attrs, &xs, types[0].clone());
    g.add_node(OpKind::Output, Attrs::new().with("name", Attr::Str("y".into())), &[y], types[0].clone());
    verify(&g).unwrap_err().to_string()
}

#[test]
fn bad_expressions_are_verifier_errors() {
    let t = ty(DType::F32, &[Dim::sym("T"), Dim::c(4)]);
    let two = [t.clone(), t.clone()];
    let cases: &[(&str, &[TensorType], &str)] = &[
        (
            "mul(silu($0), $1",
            &two,
            "bad expression \"mul(silu($0), $1\": expected ',' or ')', found end of expression at column 17",
        ),
        ("mul(swish($0), $1)", &two, "unknown function 'swish' at column 5"),
        ("gelu($0)", &two[..1], "unknown function 'gelu' (write gelu_tanh or gelu_erf)"),
        ("add($0)", &two[..1], "'add' takes 2 arguments, found 1 at column 1"),
        ("neg($0, $1)", &two, "'neg' takes 1 argument, found 2"),
        ("add($0, $2)", &two, "$2 refers past the node's operands (it has 2 operands)"),
        ("exp($0)", &two, "operand $1 is not used by the expression"),
        ("", &two[..1], "empty expression"),
        ("add($0, 1.0.0)", &two[..1], "unexpected '.' in the number at column 9"),
        ("$0 + $1", &two, "unexpected '+' after the expression at column 4"),
    ];
    for (expr, types, want) in cases {
        let e = verify_error(Some(expr), types);
        assert!(e.starts_with(&format!("%{} = fused: bad expression", types.len())), "{expr}: {e}");
        assert!(e.contains(want), "{expr}: {e}\nwant: {want}");
    }
    // Operand types.
    let e = verify_error(Some("add($0, $1)"), &[t.clone(), ty(DType::F16, &[Dim::sym("T"), Dim::c(4)])]);
    assert!(e.contains("operand dtypes differ: operand 1 is f16[T,4], operand 0 is f32[T,4]"), "{e}");
    let e = verify_error(Some("neg($0)"), &[ty(DType::I32, &[Dim::c(4)])]);
    assert!(e.contains("operand 0 must be a float tensor, found i32[4]"), "{e}");
    let e = verify_error(Some("add($0, $1)"), &[t.clone(), ty(DType::F32, &[Dim::c(5)])]);
    assert!(e.contains("operand 1: shapes [T,4] and [5] do not broadcast"), "{e}");
    let e = verify_error(None, &two);
    assert!(e.contains("missing required attribute 'expr'"), "{e}");
    // A declared type that is not the broadcast of the operands.
    let mut g = Graph::new("t");
    let a =
        g.add_node(OpKind::Input, Attrs::new().with("name", Attr::Str("a".into())), &[], ty(DType::F32, &[Dim::c(4)]));
    let y = g.add_node(OpKind::Fused, fused_attrs("exp($0)"), &[a], ty(DType::F32, &[Dim::c(2), Dim::c(4)]));
    g.add_node(OpKind::Output, Attrs::new().with("name", Attr::Str("y".into())), &[y], ty(DType::F32, &[]));
    let e = verify(&g).unwrap_err().to_string();
    assert_eq!(e, "%1 = fused: declared type f32[2,4] but the operands give f32[4]");
    // The parser and the builder report the same problems.
    let src = "graph @g {\n  %0 = input {name = \"x\"} : f32[4]\n  %1 = fused %0 {expr = \"silu($1)\"} : f32[4]\n}\n";
    let e = parse(src).unwrap_err().to_string();
    assert_eq!(e, "3:8: fused: bad expression \"silu($1)\": $1 refers past the node's operands (it has 1 operand)");
    let mut b = GraphBuilder::new("g");
    let x = b.input("x", t.clone()).unwrap();
    let e = b.op(OpKind::Fused, &[x], fused_attrs("tanh($0")).unwrap_err().to_string();
    assert!(e.starts_with("cannot build 'fused': bad expression"), "{e}");
    let e = b.op(OpKind::Fused, &[], fused_attrs("1.0")).unwrap_err().to_string();
    assert!(e.contains("expects one or more operands"), "{e}");
    // The type rule itself, called with no operands (as a pass might), errs instead of panicking.
    assert_eq!(OpKind::Fused.infer(&[], &fused_attrs("1.0"), None).unwrap_err(), "fused needs at least one operand");
}

#[test]
fn print_parse_round_trip() {
    let src = r#"graph @mlp {
  %0 = input {name = "gate"} : f32[T,1536]
  %1 = input {name = "up"} : f32[T,1536]
  %2 = param {name = "b"} : bf16[1536]
  %3 = cast %2 {dtype = f32} : f32[1536]
  %4 = fused %0, %1, %3 {expr = "mul(silu($0), add($1, $2))"} : f32[T,1536]
  %5 = fused %4 {expr = "maximum(minimum($0, inf), -inf)"} : f32[T,1536]
  %6 = fused %5, %0 {expr = "add(mul($0, -0.5), mul(gelu_tanh($1), 1e-5))"} : f32[T,1536]
  %7 = fused %6 {expr = "add($0, nan)"} : f32[T,1536]
  output %7 {name = "y"}
}
"#;
    let g = parse(src).unwrap();
    verify(&g).unwrap();
    assert_eq!(print(&g), src);
    let g2 = parse(&print(&g)).unwrap();
    assert!(g2.same_as(&g));
    // Non-canonical spelling is kept as written (it is a string attribute) and still round-trips.
    let loose = src.replace("mul(silu($0), add($1, $2))", " mul( silu($0),add($1,$2) ) ");
    let g3 = parse(&loose).unwrap();
    assert_eq!(print(&g3), loose);
}

#[test]
fn expression_canonical_form_and_flops() {
    let e = Expr::parse("mul( silu( $0 ),$1 )").unwrap();
    assert_eq!(e.to_string(), "mul(silu($0), $1)");
    assert_eq!(e, Expr::call(Func::Mul, vec![Expr::call(Func::Silu, vec![Expr::Operand(0)]), Expr::Operand(1)]));
    assert_eq!(e.flops(), 6);
    assert_eq!(e.calls(), 2);
    assert_eq!(Expr::parse("gelu_tanh($0)").unwrap().flops(), 9);
    assert_eq!(Expr::parse("$0").unwrap().flops(), 0);
    assert_eq!(
        Func::from_op(OpKind::Gelu, &Attrs::new().with("approx", Attr::Ident("erf".into()))),
        Some(Func::GeluErf)
    );
    assert_eq!(Func::from_op(OpKind::MatMul, &Attrs::new()), None);
    assert_eq!(OpKind::from_name("fused"), Some(OpKind::Fused));
}

// ---------------------------------------------------------------------------------------------
// Random expressions: fused equals the chain of ops.

fn random_expr(rng: &mut SplitMix64, n: usize, depth: usize) -> Expr {
    if depth == 0 || rng.below(4) == 0 {
        return match rng.below(6) {
            0 => Expr::Num([0.5, -1.0, 2.0, 1e-5, 3.0, 0.0][rng.below(6) as usize]),
            _ => Expr::Operand(rng.below(n as u64) as usize),
        };
    }
    let funcs: Vec<Func> = Func::all().collect();
    let f = funcs[rng.below(funcs.len() as u64) as usize];
    let args = (0..f.arity()).map(|_| random_expr(rng, n, depth - 1)).collect();
    Expr::Call(f, args)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn fused_equals_the_chain(seed in any::<u64>()) {
        let mut rng = SplitMix64::new(seed);
        let n = 1 + rng.below(3) as usize;
        let mut e = random_expr(&mut rng, n, 4);
        // Use every operand.
        let uses = e.operand_uses(n).unwrap();
        for (i, _) in uses.iter().enumerate().filter(|(_, &u)| u == 0) {
            e = Expr::call(Func::Add, vec![e, Expr::Operand(i)]);
        }
        // Operand shapes: suffixes of [T, 3, 4] with some dims set to 1.
        let full = [2usize, 3, 4];
        let mut types = Vec::new();
        let mut shapes = Vec::new();
        for _ in 0..n {
            let rank = rng.below(4) as usize;
            let mut dims = Vec::new();
            let mut conc = Vec::new();
            for (d, &size) in full.iter().enumerate().skip(3 - rank) {
                let one = rng.below(3) == 0;
                conc.push(if one { 1 } else { size });
                dims.push(match (one, d) {
                    (true, _) => Dim::c(1),
                    (false, 0) => Dim::sym("T"),
                    (false, _) => Dim::c(size as i64),
                });
            }
            types.push(TensorType { dtype: DType::F32, shape: Shape(dims) });
            shapes.push(conc);
        }
        check_equal(&e.to_string(), &types, &shapes, seed);
        // And the canonical text reads back to the same expression.
        prop_assert_eq!(Expr::parse(&e.to_string()).unwrap().to_string(), e.to_string());
    }
}
