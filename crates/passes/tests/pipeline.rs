//! Pipeline strings (parse, print, every error with its column) and the pass manager's
//! instrumentation: IR dumps, dump folders, timing, `verify_each` and its reproducers (with
//! deliberately broken passes injected through `PassManager::new`).

use kiln_ir::{Graph, OpKind};
use kiln_passes::manager::run_pipeline;
use kiln_passes::pipeline::{O1, O2};
use kiln_passes::{
    registry, Changed, Instrumentation, ManagerError, Pass, PassCx, PassError, PassManager, PassSpec, Pipeline,
    TimingFormat,
};
use proptest::prelude::*;
use std::path::PathBuf;

// ---- pipeline strings ----

#[test]
fn canonical_pipelines_print_back_identically() {
    for text in [
        "",
        "cse",
        "canonicalize,cse,dce",
        "canonicalize,cse,eqsat{rules=rope+layout+algebra,node-limit=100000,time-limit=2s},dce",
        "const-fold{max-elements=10},cse",
        "a{z=1,a=2,m=x.y/z}",
        O1,
        O2,
    ] {
        let p = Pipeline::parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.to_string(), text);
        assert_eq!(text.parse::<Pipeline>().unwrap(), p);
    }
}

#[test]
fn whitespace_and_empty_braces_are_not_canonical() {
    let p = Pipeline::parse("  cse ,\teqsat { rules = rope , node-limit = 5 } , dce{ } ").unwrap();
    assert_eq!(p.to_string(), "cse,eqsat{rules=rope,node-limit=5},dce");
    assert_eq!(p.passes[1].options, vec![("rules".into(), "rope".into()), ("node-limit".into(), "5".into())]);
}

#[test]
fn levels_name_pipelines() {
    assert_eq!(Pipeline::parse("-O0").unwrap(), Pipeline::default());
    assert_eq!(Pipeline::parse("-O1").unwrap().to_string(), "canonicalize,cse,dce");
    assert_eq!(
        Pipeline::parse("-O2").unwrap().to_string(),
        "canonicalize,cse,const-fold,eqsat{rules=rope+layout+algebra},merge-projections,fuse-elementwise,cse,dce"
    );
    assert_eq!(Pipeline::level("O1"), Pipeline::level("-O1"));
    assert!(Pipeline::level("-O9").is_none());
    assert_eq!(Pipeline::parse("-O1").unwrap().build().unwrap().len(), 3);
}

/// Every pass a level names is registered.
#[test]
fn levels_build() {
    for (level, _) in kiln_passes::pipeline::LEVELS {
        Pipeline::parse(level).unwrap().build().unwrap_or_else(|e| panic!("{level}: {e}"));
    }
}

/// (pipeline, column, message) for every syntax error.
#[test]
fn syntax_errors_point_at_the_column() {
    let cases = [
        (",cse", 1, "expected a pass name, found ','"),
        ("cse,", 5, "expected a pass name, found end of pipeline"),
        ("cse,,dce", 5, "expected a pass name, found ','"),
        ("cse dce", 5, "expected ',' or end of pipeline, found 'd'"),
        ("cs%e", 3, "expected ',' or end of pipeline, found '%'"),
        ("eqsat{rules}", 12, "expected '=' after option 'rules', found '}' (options are written key=value)"),
        ("eqsat{rules=}", 13, "expected a value for option 'rules', found '}'"),
        ("cse,eqsat{rules=rope", 21, "expected '}' or ',' after option 'rules' of 'eqsat', found end of pipeline"),
        ("eqsat{rules=a b}", 15, "expected '}' or ',' after option 'rules' of 'eqsat', found 'b'"),
        ("eqsat{=a}", 7, "expected an option name in the options of 'eqsat', found '='"),
        ("eqsat{a=1,}", 11, "expected an option name in the options of 'eqsat', found '}'"),
        ("eqsat{a=1,a=2}", 11, "option 'a' is given twice for 'eqsat'"),
        ("cse{a=1}}", 9, "expected ',' or end of pipeline, found '}'"),
        ("{a=1}", 1, "expected a pass name, found '{'"),
        ("-O3", 1, "unknown optimization level '-O3' (levels: -O0, -O1, -O2)"),
    ];
    for (text, col, msg) in cases {
        let e = Pipeline::parse(text).expect_err(text);
        assert_eq!((e.col, e.msg.as_str()), (col, msg), "{text}");
        assert_eq!(e.text, text);
    }
}

#[test]
fn errors_render_with_a_caret() {
    let e = Pipeline::parse("canonicalize,cse,eqsat{rules=rope+layout").unwrap_err();
    assert_eq!(
        e.render("--passes"),
        "--passes:1:41: expected '}' or ',' after option 'rules' of 'eqsat', found end of pipeline\n  \
         canonicalize,cse,eqsat{rules=rope+layout\n  \
         \x20                                       ^"
    );
    assert!(e.to_string().starts_with("pipeline:1:41: "));
}

#[test]
fn build_errors_name_the_pass_or_option() {
    let e = Pipeline::parse("canonicalize,csee").unwrap().build().err().unwrap();
    assert_eq!(e.col, 14);
    assert_eq!(
        e.msg,
        format!("unknown pass 'csee' (did you mean 'cse'?); valid passes: {}", registry::names().join(", "))
    );
    assert!(e.msg.contains("canonicalize, const-fold, cse, dce"));

    let e = Pipeline::parse("dce,cse{foo=1}").unwrap().build().err().unwrap();
    assert_eq!((e.col, e.msg.as_str()), (9, "unknown option 'foo' for pass 'cse' (valid options: none)"));

    let e = Pipeline::parse("cse,const-fold{max-elements=1,bogus=2}").unwrap().build().err().unwrap();
    assert_eq!(
        (e.col, e.msg.as_str()),
        (31, "unknown option 'bogus' for pass 'const-fold' (valid options: max-elements)")
    );

    let e = Pipeline::parse("const-fold{max-elements=lots}").unwrap().build().err().unwrap();
    assert_eq!(
        (e.col, e.msg.as_str()),
        (12, "const-fold: option 'max-elements' must be a non-negative integer, found 'lots'")
    );

    // Built in code, errors point into the canonical text.
    let p = Pipeline::new(vec![
        PassSpec::new("cse", vec![]),
        PassSpec::new("const-fold", vec![("a".into(), "1".into()), ("max-elements".into(), "x".into())]),
    ]);
    let e = p.build().err().unwrap();
    assert_eq!(e.text, "cse,const-fold{a=1,max-elements=x}");
    assert_eq!(e.col, 16, "{e}");
}

#[test]
fn built_passes_print_their_pipeline() {
    let p = Pipeline::parse("canonicalize,const-fold{max-elements=7},const-fold{max-elements=65536},dce").unwrap();
    let pm = PassManager::from_pipeline(&p, Instrumentation::default()).unwrap();
    // Default option values are not printed.
    assert_eq!(pm.pipeline(), "canonicalize,const-fold{max-elements=7},const-fold,dce");
}

fn name_strategy() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_-]{0,8}"
}

proptest! {
    #[test]
    fn print_parse_round_trip(passes in prop::collection::vec(
        (name_strategy(), prop::collection::btree_map(name_strategy(), "[a-zA-Z0-9.+:/_-]{1,6}", 0..4)),
        0..5,
    )) {
        let p = Pipeline::new(
            passes.into_iter().map(|(n, o)| PassSpec::new(n, o.into_iter().collect())).collect(),
        );
        let text = p.to_string();
        let q = Pipeline::parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&q, &p);
        prop_assert_eq!(q.to_string(), text);
    }
}

// ---- the pass manager ----

const SMALL: &str = r#"graph @small {
  %0 = input {name = "x"} : f32[T,8]
  %1 = param {name = "w"} : f32[8]
  %2 = param {name = "w"} : f32[8]
  %3 = mul %0, %1 : f32[T,8]
  %4 = mul %0, %2 : f32[T,8]
  %5 = add %3, %4 : f32[T,8]
  %6 = exp %5 : f32[T,8]
  output %5 {name = "y"}
}"#;

fn small() -> Graph {
    kiln_ir::parse(SMALL).unwrap()
}

fn run_with(pipeline: &str, inst: Instrumentation) -> (Result<kiln_passes::RunReport, ManagerError>, String, Graph) {
    let mut g = small();
    let pm = PassManager::parse(pipeline, inst).unwrap();
    let mut out = Vec::new();
    let r = pm.run(&mut g, &mut out);
    (r, String::from_utf8(out).unwrap(), g)
}

fn headers(dump: &str) -> Vec<&str> {
    dump.lines().filter(|l| l.starts_with("// -----// IR Dump")).collect()
}

#[test]
fn print_ir_after_all_dumps_every_pass() {
    let inst = Instrumentation { print_ir_after_all: true, ..Default::default() };
    let (r, out, g) = run_with("canonicalize,cse,dce", inst);
    r.unwrap();
    assert_eq!(
        headers(&out),
        [
            "// -----// IR Dump After canonicalize //----- //",
            "// -----// IR Dump After cse //----- //",
            "// -----// IR Dump After dce //----- //",
        ]
    );
    // The last dump is the result.
    assert!(out.ends_with(&format!("{}\n", kiln_ir::print(&g))));
    assert_eq!(g.len(), 5);
}

#[test]
fn print_ir_before_after_and_after_change() {
    let inst = Instrumentation {
        print_ir_before: vec!["cse".into()],
        print_ir_after: vec!["dce".into()],
        ..Default::default()
    };
    let (r, out, _) = run_with("canonicalize,cse,dce", inst);
    r.unwrap();
    assert_eq!(headers(&out), ["// -----// IR Dump Before cse //----- //", "// -----// IR Dump After dce //----- //"]);

    // canonicalize changes nothing here; cse and dce do.
    let inst = Instrumentation { print_ir_after_change: true, ..Default::default() };
    let (r, out, _) = run_with("canonicalize,cse,dce,cse", inst);
    let report = r.unwrap();
    assert_eq!(headers(&out), ["// -----// IR Dump After cse //----- //", "// -----// IR Dump After dce //----- //"]);
    assert_eq!(report.passes.iter().map(|p| p.changed).collect::<Vec<_>>(), [false, true, true, false]);
}

#[test]
fn unknown_names_in_print_options_are_errors() {
    let inst = Instrumentation { print_ir_after: vec!["csee".into()], ..Default::default() };
    let e = PassManager::parse("cse", inst).unwrap_err().to_string();
    assert!(e.starts_with("unknown pass 'csee' in print-ir-after (valid passes: canonicalize, "), "{e}");
}

fn temp_dir(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("kiln-passes-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

fn files(dir: &PathBuf) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn print_ir_dir_writes_one_file_per_pass() {
    let dir = temp_dir("dump-dir");
    let inst = Instrumentation { print_ir_dir: Some(dir.clone()), ..Default::default() };
    let (r, out, g) = run_with("canonicalize,cse,dce", inst);
    r.unwrap();
    assert!(out.is_empty());
    assert_eq!(files(&dir), ["00-input.kir", "01-canonicalize.kir", "02-cse.kir", "03-dce.kir"]);
    assert_eq!(std::fs::read_to_string(dir.join("00-input.kir")).unwrap(), kiln_ir::print(&small()));
    let last = std::fs::read_to_string(dir.join("03-dce.kir")).unwrap();
    assert!(last.starts_with("// -----// IR Dump After dce //----- //\n"));
    // A dump is IR again.
    assert!(kiln_ir::parse(&last).unwrap().same_as(&g));
    std::fs::remove_dir_all(&dir).unwrap();

    // With a print option, only what it asks for (and the input).
    let dir = temp_dir("dump-dir-before");
    let inst =
        Instrumentation { print_ir_dir: Some(dir.clone()), print_ir_before: vec!["dce".into()], ..Default::default() };
    run_with("canonicalize,cse,dce", inst).0.unwrap();
    assert_eq!(files(&dir), ["00-input.kir", "03-dce.before.kir"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn timing_report_text_and_json() {
    let inst = Instrumentation { pass_timing: Some(TimingFormat::Json), ..Default::default() };
    let (r, out, _) = run_with("canonicalize,cse,dce", inst);
    let report = r.unwrap();
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let passes = v["passes"].as_array().unwrap();
    assert_eq!(passes.len(), 3);
    assert_eq!(passes[1]["pass"], "cse");
    assert_eq!(passes[1]["changed"], true);
    assert_eq!(passes[1]["stats"]["merged"], 2);
    assert_eq!((passes[2]["nodes_before"].as_u64(), passes[2]["nodes_after"].as_u64()), (Some(6), Some(5)));
    assert_eq!(passes[2]["stats"]["removed"], 1);
    assert!(v["total_ms"].as_f64().unwrap() >= passes.iter().map(|p| p["time_ms"].as_f64().unwrap()).sum::<f64>());

    let table = report.table();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("pass timing: total "));
    assert!(lines[1].contains("pass") && lines[1].contains("time (ms)") && lines[1].contains("changed"));
    assert!(
        lines[3].contains("cse")
            && lines[3].contains("yes")
            && lines[3].contains("8 -> 6")
            && lines[3].ends_with("merged=2")
    );
    assert_eq!(lines.len(), 5);

    let inst = Instrumentation { pass_timing: Some(TimingFormat::Text), ..Default::default() };
    let (_, out, _) = run_with("dce", inst);
    assert!(out.starts_with("pass timing: total "));
}

/// Gives the first `add` a wrong result type: the verifier rejects it.
struct BreakTypes;

impl Pass for BreakTypes {
    fn name(&self) -> &'static str {
        "break-types"
    }
    fn run(&self, g: &mut Graph, _: &mut PassCx) -> Result<Changed, PassError> {
        let add = g.node_ids().find(|&n| g.op(n) == OpKind::Add).unwrap();
        g.node_mut(add).ty =
            kiln_ir::TensorType::new(kiln_ir::DType::F16, [kiln_ir::Dim::sym("T"), kiln_ir::Dim::c(8)]);
        Ok(Changed::Yes)
    }
}

/// Changes the graph but says it did not.
struct Liar;

impl Pass for Liar {
    fn name(&self) -> &'static str {
        "liar"
    }
    fn run(&self, g: &mut Graph, _: &mut PassCx) -> Result<Changed, PassError> {
        let exp = g.node_ids().find(|&n| g.op(n) == OpKind::Exp).unwrap();
        g.node_mut(exp).op = OpKind::Tanh;
        Ok(Changed::No)
    }
}

struct Fails;

impl Pass for Fails {
    fn name(&self) -> &'static str {
        "fails"
    }
    fn run(&self, _: &mut Graph, _: &mut PassCx) -> Result<Changed, PassError> {
        Err(PassError::new("fails", "ran out of patience"))
    }
}

fn with(extra: Box<dyn Pass>) -> Vec<Box<dyn Pass>> {
    let mut passes = Pipeline::parse("canonicalize,cse").unwrap().build().unwrap();
    passes.push(extra);
    passes.extend(Pipeline::parse("dce").unwrap().build().unwrap());
    passes
}

#[test]
fn verify_each_names_the_pass_and_writes_a_reproducer() {
    let dir = temp_dir("repro");
    let inst = Instrumentation {
        verify_each: true,
        print_ir_dir: Some(dir.clone()),
        print_ir_after: vec!["dce".into()],
        ..Default::default()
    };
    let pm = PassManager::new(with(Box::new(BreakTypes)), inst).unwrap();
    assert_eq!(pm.pipeline(), "canonicalize,cse,break-types,dce");
    let mut g = small();
    let e = pm.run(&mut g, &mut std::io::sink()).unwrap_err();
    let path = dir.join("reproducer-03-break-types.kir");
    assert_eq!(e.reproducer(), Some(path.as_path()));
    assert_eq!(
        e.to_string(),
        format!(
            "pass 'break-types' (3 of 4) produced invalid IR: %3 = add: declared type f16[T,8] but the operands give \
             f32[T,8]; reproducer: {}",
            path.display()
        )
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("// kiln opt --passes 'break-types' --verify-each"));
    assert_eq!(
        lines.next(),
        Some("// Reproducer: the input of pass 3 of 4, 'break-types', in 'canonicalize,cse,break-types,dce'.")
    );
    assert_eq!(lines.next(), Some("// error: %3 = add: declared type f16[T,8] but the operands give f32[T,8]"));
    // The rest is the IR that went into the pass: the small graph after canonicalize and cse.
    let mut want = small();
    run_pipeline(&mut want, "canonicalize,cse").unwrap();
    let repro = kiln_ir::parse(&text).unwrap();
    assert!(repro.same_as(&want), "{text}");
    assert!(text.ends_with(&kiln_ir::print(&want)));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reproducers_go_to_the_temp_dir_by_default() {
    let inst = Instrumentation { verify_each: true, ..Default::default() };
    let pm = PassManager::new(with(Box::new(BreakTypes)), inst).unwrap();
    let e = pm.run(&mut small(), &mut std::io::sink()).unwrap_err();
    let path = e.reproducer().unwrap().to_path_buf();
    assert!(path.starts_with(std::env::temp_dir()), "{}", path.display());
    assert!(path.file_name().unwrap().to_string_lossy().ends_with("-break-types.kir"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("// kiln opt --passes 'break-types' --verify-each\n"));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn without_verify_each_the_final_verification_catches_it() {
    let pm = PassManager::new(with(Box::new(BreakTypes)), Instrumentation::default()).unwrap();
    let e = pm.run(&mut small(), &mut std::io::sink()).unwrap_err();
    assert!(matches!(e, ManagerError::InvalidOutput(_)));
    assert_eq!(
        e.to_string(),
        "the IR after the pipeline fails verification: %3 = add: declared type f16[T,8] but the operands give \
         f32[T,8] (rerun with --verify-each to find the pass)"
    );
}

#[test]
fn verify_each_catches_unreported_changes() {
    let dir = temp_dir("liar");
    let inst = Instrumentation { verify_each: true, print_ir_dir: Some(dir.clone()), ..Default::default() };
    let pm = PassManager::new(with(Box::new(Liar)), inst).unwrap();
    let e = pm.run(&mut small(), &mut std::io::sink()).unwrap_err();
    assert!(e.to_string().starts_with("pass 'liar' (3 of 4) reported no change but changed the graph; reproducer: "));
    assert!(dir.join("reproducer-03-liar.kir").exists());
    std::fs::remove_dir_all(&dir).unwrap();
    // Without verify_each nobody checks.
    let pm = PassManager::new(with(Box::new(Liar)), Instrumentation::default()).unwrap();
    pm.run(&mut small(), &mut std::io::sink()).unwrap();
}

#[test]
fn pass_errors_and_bad_input() {
    let pm = PassManager::new(with(Box::new(Fails)), Instrumentation::default()).unwrap();
    let e = pm.run(&mut small(), &mut std::io::sink()).unwrap_err();
    assert_eq!(e.to_string(), "pass 'fails' (3 of 4) failed: ran out of patience");

    let mut bad = small();
    BreakTypes.run(&mut bad, &mut PassCx::new()).unwrap();
    let e = run_pipeline(&mut bad, "cse").unwrap_err();
    assert!(e.to_string().starts_with("the input IR fails verification: %5 = add: "), "{e}");

    let e = run_pipeline(&mut small(), "cse,{").unwrap_err();
    assert!(matches!(e, ManagerError::Pipeline(_)));
    assert!(e.to_string().starts_with("pipeline:1:5: expected a pass name, found '{'"));
}

#[test]
fn empty_pipeline_verifies_and_keeps_the_graph() {
    let mut g = small();
    let report = run_pipeline(&mut g, "-O0").unwrap();
    assert!(report.passes.is_empty() && !report.changed());
    assert!(g.same_as(&small()));
}
