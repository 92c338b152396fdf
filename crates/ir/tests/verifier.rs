//! The verifier on malformed graphs: one test per [`VerifyErrorKind`], each graph made with
//! [`Graph::add_node`] (which checks nothing), asserting the exact variant, that the message names
//! the node the way the printer numbers it, and — for shape problems — that it shows both shapes.
//! Then: `verify` reports the first problem in printed order, and `verify_all` reports them all.

use kiln_ir::{
    parse, print, verify, verify_all, Attr, Attrs, DType, Dim, Graph, GraphBuilder, NodeId, OpKind, Patch, TensorType,
    VerifyError, VerifyErrorKind,
};

fn ty(dtype: DType, dims: &[Dim]) -> TensorType {
    TensorType::new(dtype, dims.iter().cloned())
}
fn f32t(dims: &[Dim]) -> TensorType {
    ty(DType::F32, dims)
}
fn c(n: i64) -> Dim {
    Dim::c(n)
}
fn t() -> Dim {
    Dim::sym("T")
}
fn name(n: &str) -> Attrs {
    Attrs::new().with("name", Attr::Str(n.into()))
}

fn input(g: &mut Graph, n: &str, t: TensorType) -> NodeId {
    g.add_node(OpKind::Input, name(n), &[], t)
}
fn param(g: &mut Graph, n: &str, t: TensorType) -> NodeId {
    g.add_node(OpKind::Param, name(n), &[], t)
}
fn output(g: &mut Graph, n: &str, x: NodeId) -> NodeId {
    let t = g.ty(x).clone();
    g.add_node(OpKind::Output, name(n), &[x], t)
}

/// The only error of `g`, checked to be what `verify` returns too, and to name a node that the
/// printed graph shows under that name.
fn only_error(g: &Graph) -> VerifyError {
    let all = verify_all(g);
    assert_eq!(all.len(), 1, "expected exactly one error, got {all:#?}\n{}", print(g));
    assert_eq!(verify(g).unwrap_err(), all[0]);
    assert_names_a_printed_node(g, &all[0]);
    all[0].clone()
}

/// `%N = op` errors must match a printed line `  %N = op ...`; sinks print as `output "name"`.
fn assert_names_a_printed_node(g: &Graph, e: &VerifyError) {
    let text = print(g);
    if e.node.starts_with('%') {
        let prefix = format!("  {} ", e.node);
        assert!(text.lines().any(|l| format!("{l} ").starts_with(&prefix)), "{e} names no printed node:\n{text}");
    }
    assert!(e.to_string().starts_with(&format!("{}: ", e.node)), "{e}");
}

#[test]
fn arity() {
    let mut g = Graph::new("g");
    let x = input(&mut g, "x", f32t(&[t(), c(4)]));
    let m = g.add_node(OpKind::MatMul, Attrs::new(), &[x], f32t(&[t(), c(4)]));
    output(&mut g, "y", m);
    let e = only_error(&g);
    assert_eq!(e.node, "%1 = matmul");
    assert_eq!(e.kind, VerifyErrorKind::Arity { expected: "operands (a, b, bias?)".into(), found: 1 });
    assert_eq!(e.to_string(), "%1 = matmul: expects operands (a, b, bias?), found 1 operand(s)");

    // Too many, and a variadic op with none.
    let mut g = Graph::new("g");
    let x = input(&mut g, "x", f32t(&[c(4)]));
    let n = g.add_node(OpKind::Exp, Attrs::new(), &[x, x], f32t(&[c(4)]));
    let cat = g.add_node(OpKind::Concat, Attrs::new().with("axis", Attr::Int(0)), &[], f32t(&[c(4)]));
    output(&mut g, "y", n);
    output(&mut g, "z", cat);
    let all = verify_all(&g);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(all[0].node, "%1 = exp");
    assert_eq!(all[0].kind, VerifyErrorKind::Arity { expected: "operands (x)".into(), found: 2 });
    assert_eq!(all[1].node, "%2 = concat");
    assert_eq!(all[1].kind, VerifyErrorKind::Arity { expected: "one or more operands (xs...)".into(), found: 0 });
}

#[test]
fn attr() {
    let cases: Vec<(OpKind, Attrs, &str)> = vec![
        (OpKind::Softmax, Attrs::new().with("axiz", Attr::Int(0)), "unknown attribute 'axiz' (expected one of: axis)"),
        (OpKind::RmsNorm, Attrs::new(), "missing required attribute 'eps'"),
        (OpKind::RmsNorm, Attrs::new().with("eps", Attr::Str("small".into())), "attribute 'eps': expected a float"),
        (
            OpKind::Gelu,
            Attrs::new().with("approx", Attr::Ident("fast".into())),
            "attribute 'approx': expected one of erf|tanh, found fast",
        ),
        (
            OpKind::Attention,
            Attrs::new().with("rope", Attr::Tagged { tag: "neox".into(), fields: Attrs::new() }),
            "attribute 'rope': in neox{...}: missing required attribute 'theta'",
        ),
        (
            OpKind::Attention,
            Attrs::new().with("rope", Attr::Tagged { tag: "alibi".into(), fields: Attrs::new() }),
            "attribute 'rope': unknown tag 'alibi'",
        ),
    ];
    for (op, attrs, want) in cases {
        let mut g = Graph::new("g");
        let x = input(&mut g, "x", f32t(&[t(), c(2), c(4)]));
        let p = input(&mut g, "p", ty(DType::I32, &[t()]));
        let operands: Vec<NodeId> = if op == OpKind::Attention { vec![x, x, x, p] } else { vec![x] };
        let n = g.add_node(op, attrs, &operands, f32t(&[t(), c(2), c(4)]));
        output(&mut g, "y", n);
        let e = only_error(&g);
        assert_eq!(e.node, format!("%2 = {op}"));
        match &e.kind {
            VerifyErrorKind::Attr(msg) => assert!(msg.starts_with(want), "{msg:?} does not start with {want:?}"),
            other => panic!("expected an Attr error for {op}, got {other:?}"),
        }
    }

    // An output without its name: the sink has no number and no name to show.
    let mut g = Graph::new("g");
    let x = input(&mut g, "x", f32t(&[c(4)]));
    g.add_node(OpKind::Output, Attrs::new(), &[x], f32t(&[c(4)]));
    let e = only_error(&g);
    assert_eq!(e.node, "output");
    assert_eq!(e.kind, VerifyErrorKind::Attr("missing required attribute 'name'".into()));
}

#[test]
fn type_error_names_node_and_both_shapes() {
    let mut g = Graph::new("g");
    let x = input(&mut g, "x", f32t(&[t(), c(576)]));
    let w = param(&mut g, "w", f32t(&[c(1536), c(512)]));
    let m =
        g.add_node(OpKind::MatMul, Attrs::new().with("transpose_b", Attr::Bool(true)), &[x, w], f32t(&[t(), c(1536)]));
    output(&mut g, "y", m);
    let e = only_error(&g);
    assert_eq!(e.node, "%2 = matmul");
    let VerifyErrorKind::Type(msg) = &e.kind else { panic!("expected a Type error, got {:?}", e.kind) };
    assert!(msg.contains("f32[T,576]") && msg.contains("f32[1536,512]"), "{msg}");
    let s = e.to_string();
    assert!(s.starts_with("%2 = matmul: contraction dims differ"), "{s}");
    assert!(s.contains("f32[T,576]") && s.contains("f32[1536,512]"), "{s}");

    // Broadcasting failure: both operand shapes are named.
    let mut g = Graph::new("g");
    let a = input(&mut g, "a", f32t(&[t(), c(3)]));
    let b = input(&mut g, "b", f32t(&[c(4)]));
    let s = g.add_node(OpKind::Add, Attrs::new(), &[a, b], f32t(&[t(), c(3)]));
    output(&mut g, "y", s);
    let e = only_error(&g);
    assert_eq!(e.node, "%2 = add");
    let VerifyErrorKind::Type(msg) = &e.kind else { panic!("expected a Type error, got {:?}", e.kind) };
    assert!(msg.contains("[T,3]") && msg.contains("[4]"), "{msg}");

    // Declared-type rules are checked too: inputs cannot be quantized.
    let mut g = Graph::new("g");
    let q = input(&mut g, "q", ty(DType::Quant(kiln_ir::QuantFormat::Q8_0), &[c(32)]));
    output(&mut g, "y", q);
    let e = only_error(&g);
    assert_eq!(e.node, "%0 = input");
    assert!(matches!(&e.kind, VerifyErrorKind::Type(m) if m.contains("q8_0[32]")), "{e}");
}

#[test]
fn type_mismatch_names_both_types() {
    let mut g = Graph::new("g");
    let x = input(&mut g, "x", f32t(&[t(), c(4)]));
    let n = g.add_node(OpKind::Exp, Attrs::new(), &[x], f32t(&[t(), c(5)]));
    output(&mut g, "y", n);
    let e = only_error(&g);
    assert_eq!(e.node, "%1 = exp");
    assert_eq!(e.kind, VerifyErrorKind::TypeMismatch { declared: "f32[T,5]".into(), inferred: "f32[T,4]".into() });
    assert_eq!(e.to_string(), "%1 = exp: declared type f32[T,5] but the operands give f32[T,4]");

    // A dtype-only mismatch.
    let mut g = Graph::new("g");
    let x = input(&mut g, "x", f32t(&[c(4)]));
    let n = g.add_node(OpKind::Cast, Attrs::new().with("dtype", Attr::DType(DType::BF16)), &[x], f32t(&[c(4)]));
    output(&mut g, "y", n);
    let e = only_error(&g);
    assert_eq!(e.node, "%1 = cast");
    assert_eq!(e.kind, VerifyErrorKind::TypeMismatch { declared: "f32[4]".into(), inferred: "bf16[4]".into() });
}

/// Cycles can be made through the public API in two ways: a queued [`Patch`] that redirects a
/// value's uses to one of its own users, and (more obscurely) `add_node` given a `NodeId` taken from
/// another graph that happens to equal the id the new node receives, which makes a self-loop.
#[test]
fn cycle_through_a_patch() {
    let mut b = GraphBuilder::new("g");
    let x = b.input("x", f32t(&[c(4)])).unwrap();
    let y = b.unary(OpKind::Exp, x).unwrap();
    let z = b.unary(OpKind::Neg, y).unwrap();
    b.output("out", z).unwrap();
    let mut g = b.finish();
    verify(&g).unwrap();
    // Every use of x (that is, y's operand) becomes z: y -> z -> y.
    let mut p = Patch::new();
    p.replace_uses(x, z);
    g.apply(p);
    let e = only_error(&g);
    assert_eq!(e.kind, VerifyErrorKind::Cycle);
    assert!(e.node == "%1 = exp" || e.node == "%2 = neg", "the error must name a node on the cycle: {e}");
    assert!(e.to_string().ends_with(": is part of a cycle"), "{e}");
    // Printing a cyclic graph does not hang or panic, and the text does not parse back into a graph.
    let text = print(&g);
    assert!(parse(&text).is_err(), "{text}");
}

#[test]
fn cycle_through_a_self_loop() {
    // A NodeId is only meaningful for its graph, but nothing stops using one from another graph.
    let mut other = Graph::new("other");
    input(&mut other, "a", f32t(&[c(4)]));
    let second = input(&mut other, "b", f32t(&[c(4)]));

    let mut g = Graph::new("g");
    input(&mut g, "x", f32t(&[c(4)]));
    let n = g.add_node(OpKind::Exp, Attrs::new(), &[second], f32t(&[c(4)]));
    assert_eq!(n, second, "stable graphs hand out indices in order");
    assert_eq!(g.operands(n), vec![n], "the node is its own operand");
    output(&mut g, "y", n);
    let e = only_error(&g);
    assert_eq!(e.node, "%1 = exp");
    assert_eq!(e.kind, VerifyErrorKind::Cycle);
}

/// The text form cannot express a cycle: values must be defined before they are used.
#[test]
fn cycle_cannot_be_parsed() {
    let src = "graph @g {\n  %0 = exp %1 : f32[4]\n  %1 = neg %0 : f32[4]\n  output %1 {name = \"y\"}\n}\n";
    let e = parse(src).unwrap_err();
    assert_eq!(e.to_string(), "2:12: use of undefined value %1");
    let src = "graph @g {\n  %0 = exp %0 : f32[4]\n}\n";
    assert_eq!(parse(src).unwrap_err().to_string(), "2:12: use of undefined value %0");
}

#[test]
fn duplicate_names() {
    // Outputs print without a number; the message names them by their name.
    let mut g = Graph::new("g");
    let x = input(&mut g, "x", f32t(&[c(4)]));
    let e1 = g.add_node(OpKind::Exp, Attrs::new(), &[x], f32t(&[c(4)]));
    output(&mut g, "y", x);
    output(&mut g, "y", e1);
    let e = only_error(&g);
    assert_eq!(e.node, "output \"y\"");
    assert_eq!(e.kind, VerifyErrorKind::DuplicateName { what: "output", name: "y".into() });
    assert_eq!(e.to_string(), "output \"y\": duplicate output name 'y'");

    // Inputs: the second declaration is the one reported.
    let mut g = Graph::new("g");
    let a = input(&mut g, "x", f32t(&[c(4)]));
    let b = input(&mut g, "x", f32t(&[c(4)]));
    let s = g.add_node(OpKind::Add, Attrs::new(), &[a, b], f32t(&[c(4)]));
    output(&mut g, "y", s);
    let e = only_error(&g);
    assert_eq!(e.node, "%1 = input");
    assert_eq!(e.kind, VerifyErrorKind::DuplicateName { what: "input", name: "x".into() });

    // An input and an output may share a name (the fixtures do: "hidden" in, "hidden" out).
    let mut g = Graph::new("g");
    let a = input(&mut g, "hidden", f32t(&[c(4)]));
    output(&mut g, "hidden", a);
    assert!(verify_all(&g).is_empty());
}

#[test]
fn param_conflict() {
    let mut g = Graph::new("g");
    let x = input(&mut g, "x", f32t(&[t(), c(4)]));
    let w1 = param(&mut g, "w", f32t(&[c(4), c(4)]));
    let w2 = param(&mut g, "w", f32t(&[c(8), c(4)]));
    let tb = Attrs::new().with("transpose_b", Attr::Bool(true));
    let m1 = g.add_node(OpKind::MatMul, tb.clone(), &[x, w1], f32t(&[t(), c(4)]));
    let m2 = g.add_node(OpKind::MatMul, tb, &[x, w2], f32t(&[t(), c(8)]));
    output(&mut g, "a", m1);
    output(&mut g, "b", m2);
    let e = only_error(&g);
    assert_eq!(e.node, "%3 = param");
    assert_eq!(e.kind, VerifyErrorKind::ParamConflict { name: "w".into(), a: "f32[4,4]".into(), b: "f32[8,4]".into() });
    assert_eq!(e.to_string(), "%3 = param: param 'w' is used with two types: f32[4,4] and f32[8,4]");

    // The same weight declared twice with one type is fine.
    let mut g = Graph::new("g");
    let w1 = param(&mut g, "w", f32t(&[c(4)]));
    let w2 = param(&mut g, "w", f32t(&[c(4)]));
    let s = g.add_node(OpKind::Add, Attrs::new(), &[w1, w2], f32t(&[c(4)]));
    output(&mut g, "y", s);
    assert!(verify_all(&g).is_empty());
}

#[test]
fn no_outputs() {
    let mut g = Graph::new("g");
    let x = input(&mut g, "x", f32t(&[c(4)]));
    g.add_node(OpKind::Exp, Attrs::new(), &[x], f32t(&[c(4)]));
    let e = only_error(&g);
    assert_eq!(e.node, "graph @g");
    assert_eq!(e.kind, VerifyErrorKind::NoOutputs);
    assert_eq!(e.to_string(), "graph @g: graph has no outputs");

    // The graph is named as the printer writes it, quoted when it must be.
    let g = Graph::new("my \"graph\"");
    let e = only_error(&g);
    assert_eq!(e.node, "graph @\"my \\\"graph\\\"\"");
    assert!(print(&g).starts_with(&format!("{} {{", e.node)));
}

/// A graph with one of each problem, built so that index order (creation order) differs from
/// printed order: `verify` must report the problem printed first, `verify_all` all of them in
/// printed order.
#[test]
fn first_error_in_printed_order_and_verify_all_finds_all() {
    let mut g = Graph::new("many");
    let x = input(&mut g, "x", f32t(&[t(), c(4)])); // %0
                                                    // Created first, printed late: only the second output uses it.
    let late = g.add_node(OpKind::Exp, Attrs::new(), &[x], f32t(&[t(), c(5)]));
    // Created second, printed first: the first output's operand.
    let early = g.add_node(OpKind::Neg, Attrs::new(), &[x, x], f32t(&[t(), c(4)]));
    let w = param(&mut g, "w", f32t(&[c(3), c(7)]));
    let w_again = param(&mut g, "w", f32t(&[c(7), c(3)]));
    let tb = Attrs::new().with("transpose_b", Attr::Bool(true));
    let bad_mm = g.add_node(OpKind::MatMul, tb, &[early, w], f32t(&[t(), c(3)]));
    let sm = g.add_node(OpKind::Softmax, Attrs::new().with("axes", Attr::Int(0)), &[w_again], f32t(&[c(7), c(3)]));
    output(&mut g, "first", bad_mm);
    output(&mut g, "second", late);
    output(&mut g, "third", sm);
    output(&mut g, "first", x);

    let text = print(&g);
    let all = verify_all(&g);
    let got: Vec<(String, &str)> = all
        .iter()
        .map(|e| {
            let k = match e.kind {
                VerifyErrorKind::Arity { .. } => "arity",
                VerifyErrorKind::Attr(_) => "attr",
                VerifyErrorKind::Type(_) => "type",
                VerifyErrorKind::TypeMismatch { .. } => "mismatch",
                VerifyErrorKind::Cycle => "cycle",
                VerifyErrorKind::DuplicateName { .. } => "duplicate",
                VerifyErrorKind::ParamConflict { .. } => "param",
                VerifyErrorKind::NoOutputs => "no outputs",
            };
            (e.node.clone(), k)
        })
        .collect();
    // Printed order: %0 x, then a walk from the outputs' operands — neg (%1), w (%2), matmul (%3),
    // exp (%4), the second w (%5), softmax (%6) — then the outputs.
    let want: Vec<(String, &str)> = vec![
        ("%1 = neg".into(), "arity"),
        ("%3 = matmul".into(), "type"),
        ("%4 = exp".into(), "mismatch"),
        ("%5 = param".into(), "param"),
        ("%6 = softmax".into(), "attr"),
        ("output \"first\"".into(), "duplicate"),
    ];
    assert_eq!(got, want, "\n{text}");
    for e in &all {
        assert_names_a_printed_node(&g, e);
    }
    assert_eq!(verify(&g).unwrap_err(), all[0]);
    assert_eq!(all[0].node, "%1 = neg", "creation order put `late` (exp) first; printed order puts neg first");
    let _ = late;
}

/// Well-formed graphs verify clean: the fixtures, and the builder's output.
#[test]
fn fixtures_verify_clean() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "kir") {
            let src = std::fs::read_to_string(&path).unwrap();
            let g = parse(&src).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(verify_all(&g), vec![], "{}", path.display());
            n += 1;
        }
    }
    assert!(n >= 5, "expected the model fixtures in {dir}");
}

/// The `bad/` fixtures: each fails to parse, or parses and fails to verify, with a located message.
#[test]
fn bad_fixtures_are_reported() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/bad");
    let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).unwrap();
    let g = parse(&read("duplicate_output.kir")).unwrap();
    let e = verify(&g).unwrap_err();
    assert_eq!(e.kind, VerifyErrorKind::DuplicateName { what: "output", name: "y".into() });
    let e = parse(&read("shape_mismatch.kir")).unwrap_err();
    assert!(e.msg.contains("f32[T,576]") && e.msg.contains("f32[1536,512]"), "{e}");
    assert_eq!((e.line, e.col), (4, 8));
    assert!(parse(&read("truncated_type.kir")).is_err());
    assert_eq!(
        parse(&read("unknown_op.kir")).unwrap_err().to_string(),
        "3:8: unknown op 'matmull' (did you mean 'matmul'?)"
    );
}

/// A sink has no value: using an `output` as an operand used to pass both the builder and the
/// verifier, and then printed as `%?`, which does not parse.
#[test]
fn regression_output_used_as_operand() {
    let mut b = GraphBuilder::new("g");
    let x = b.input("x", f32t(&[c(4)])).unwrap();
    let o = b.output("y", x).unwrap();
    let e = b.unary(OpKind::Exp, o).unwrap_err();
    assert_eq!(e.to_string(), "cannot build 'exp': operand 0 is a 'output', which produces no value");

    let mut g = Graph::new("g");
    let x = input(&mut g, "x", f32t(&[c(4)]));
    let o = output(&mut g, "y", x);
    let e = g.add_node(OpKind::Exp, Attrs::new(), &[o], f32t(&[c(4)]));
    output(&mut g, "z", e);
    let err = only_error(&g);
    assert_eq!(err.node, "%1 = exp");
    assert_eq!(err.kind, VerifyErrorKind::Type("operand 0 is output \"y\", which produces no value".into()));
}
