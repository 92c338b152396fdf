//! The planner's Mixture-of-Experts annotations (`Plan::moe_layers`, the manifest's `moe_layers`)
//! and speculative router steps, on synthetic Mixtral models after `moe-dispatch`: every expert's
//! row count and own weights, the router's choice, and a copy of each later layer's router on the
//! previous layer's hidden state that nothing else reads. Dense models get none of it.
//!
//! (At the workspace root rather than in `crates/codegen/tests` because it needs the synthetic
//! models and the passes, which kiln-codegen does not depend on.)

mod support;

use kiln_codegen::kernels::WeightFormat;
use kiln_codegen::plan::{plan, Plan, PlanOptions};
use kiln_ir::interp::Overlay;
use kiln_ir::{Attr, Attrs, Dim, Graph, Interpreter, NodeId, OpKind, Patch, PatchValue, TensorType};
use kiln_models::{Arch, Checkpoint, LowerOptions, SynthOptions};
use kiln_passes::{Instrumentation, PassManager};
use kiln_runtime::artifact::manifest::{BufArg, DimExpr, MoeLayer, Step, Storage, Symbol};
use std::collections::{BTreeSet, HashSet};
use support::TempDir;

const O2: &str =
    "canonicalize,cse,const-fold,eqsat{rules=rope+layout+algebra},merge-projections,fuse-elementwise,cse,dce";

const HIDDEN: usize = 64;
const INTERMEDIATE: usize = 128;

fn mixtral(layers: usize, experts: usize, top_k: usize) -> SynthOptions {
    let mut o = SynthOptions::defaults(Arch::Mixtral);
    o.layers = Some(layers);
    o.hidden = Some(HIDDEN);
    o.intermediate = Some(INTERMEDIATE);
    o.experts = Some(experts);
    o.top_k = Some(top_k);
    o
}

/// Writes the synthetic model, runs `pipeline`, lets `tweak` edit the graph, and plans it with f32
/// weights.
fn planned(opts: &SynthOptions, pipeline: &str, tweak: impl FnOnce(&mut Graph)) -> (Graph, Plan) {
    let t = TempDir::new("plan-moe");
    let dir = t.join("m");
    kiln_models::write_synthetic_model(opts, &dir).unwrap();
    let ckpt = Checkpoint::open(&dir).unwrap();
    let mut g = ckpt.graph(&LowerOptions::default()).unwrap();
    let pm = PassManager::parse(pipeline, Instrumentation::default()).unwrap();
    let report = pm.run_with_weights(&mut g, Some(&ckpt), &mut std::io::sink()).unwrap();
    tweak(&mut g);
    let weights = Overlay { derived: &report.derived, base: &ckpt };
    let interp = Interpreter::new(&g, &weights).unwrap();
    let p = plan(&g, &interp, PlanOptions { weights: WeightFormat::F32, int8_prefill: false, interleave_lanes: 0 })
        .unwrap();
    (g, p)
}

fn kind(p: &Plan, s: &Step) -> &'static str {
    p.kernels[s.kernel].1.kind()
}

fn ids(s: &Step) -> Vec<usize> {
    s.bufs.iter().filter_map(|b| if let BufArg::Buffer { id } = b { Some(*id) } else { None }).collect()
}

/// The buffer whose memory `b` is.
fn storage(p: &Plan, mut b: usize) -> usize {
    while let Storage::Alias { of, .. } = p.buffers[b].storage {
        b = of;
    }
    b
}

/// Every kernel in this backend writes its last buffer argument.
fn output(s: &Step) -> usize {
    *ids(s).last().expect("a step writes a buffer")
}

fn dynamic_name(p: &Plan, sym: usize) -> &str {
    match &p.symbols[sym] {
        Symbol::Dynamic { name } => name,
        other => panic!("symbol {sym} is {other:?}, not a data-dependent count"),
    }
}

/// What must hold of any plan's MoE annotations, whatever the model.
fn check_invariants(p: &Plan) {
    let mut rows_symbols = HashSet::new();
    let mut listed = HashSet::new();
    for (j, l) in p.moe_layers.iter().enumerate() {
        // The router's choice.
        let select = &p.steps[l.select_step];
        assert_eq!(kind(p, select), "top_k", "layer {j}: select_step {}", select.label);
        assert_eq!(output(select), l.selected, "layer {j}: the top_k step writes `selected`");
        assert_eq!(ids(select)[0], l.scores, "layer {j}: the top_k step reads `scores`");
        assert_eq!(select.speculative, None);
        assert!(l.top_k >= 1 && l.top_k <= l.experts.len());
        for (e, x) in l.experts.iter().enumerate() {
            assert!(rows_symbols.insert(x.rows_symbol), "layer {j} expert {e}: rows symbol reused");
            let binders: Vec<&Step> = p.steps.iter().filter(|s| s.binds == Some(x.rows_symbol)).collect();
            assert_eq!(binders.len(), 1, "layer {j} expert {e}: one step binds the rows");
            assert_eq!(kind(p, binders[0]), "nonzero");
            for &w in &x.weights {
                assert!(matches!(p.buffers[w].storage, Storage::Weight { .. }), "layer {j} expert {e}: {w}");
                assert!(listed.insert(w), "weight buffer {w} is listed twice");
                // Only this expert's matmuls (over its rows) read it: nothing else needs it resident.
                for s in p.steps.iter().filter(|s| ids(s).iter().any(|&b| storage(p, b) == w)) {
                    assert_eq!(kind(p, s), "matmul", "layer {j} expert {e}: {} reads {w}", s.label);
                    assert_eq!(s.dims[0], DimExpr::sym(x.rows_symbol), "layer {j} expert {e}: {}", s.label);
                }
                assert!(p.outputs.iter().all(|o| storage(p, o.buffer) != w));
            }
        }
        assert_eq!(l.guess.is_some(), l.guess_step.is_some(), "layer {j}");
    }

    // Speculative steps: each layer's copy of its router, fed from earlier real steps, feeding
    // nothing but itself.
    let mut spec_outputs = HashSet::new();
    let mut written = HashSet::new();
    for (i, s) in p.steps.iter().enumerate() {
        match s.speculative {
            Some(j) => {
                let l = &p.moe_layers[j];
                assert!(j >= 1, "the first MoE layer has no previous one to guess from");
                assert!(l.guess_step.is_some_and(|g| i <= g), "step {i} of layer {j} after its guess_step");
                for b in ids(s) {
                    let b = storage(p, b);
                    if b == storage(p, output(s)) {
                        continue;
                    }
                    let weight = matches!(p.buffers[b].storage, Storage::Weight { .. });
                    assert!(weight || written.contains(&b), "speculative step {i} reads {b} before it is written");
                }
                let out = storage(p, output(s));
                assert!(!written.contains(&out), "speculative step {i} overwrites buffer {out}");
                assert!(matches!(p.buffers[out].storage, Storage::Activation));
                spec_outputs.insert(out);
                written.insert(out);
            }
            None => {
                for b in ids(s) {
                    assert!(!spec_outputs.contains(&storage(p, b)), "step {i} ({}) reads a guess", s.label);
                }
                written.extend(ids(s).into_iter().map(|b| storage(p, b)));
            }
        }
    }
    for o in &p.outputs {
        assert!(!spec_outputs.contains(&storage(p, o.buffer)));
    }
}

/// Layer j's speculative steps: placed after the previous layer's hidden state is computed and
/// before its router decides, the same kernels and weights as layer j's real router, ending in
/// `guess`.
fn check_guess(p: &Plan, j: usize) {
    let l = &p.moe_layers[j];
    let prev = &p.moe_layers[j - 1];
    let spec: Vec<usize> = (0..p.steps.len()).filter(|&i| p.steps[i].speculative == Some(j)).collect();
    assert!(!spec.is_empty(), "layer {j} has no speculative steps");
    assert_eq!(Some(*spec.last().unwrap()), l.guess_step);
    assert_eq!(Some(output(&p.steps[l.guess_step.unwrap()])), l.guess);
    assert_eq!(spec, (spec[0]..spec[0] + spec.len()).collect::<Vec<_>>(), "layer {j}: one run of steps");
    assert!(*spec.last().unwrap() < prev.select_step, "layer {j}: the guess is ready before layer {} routes", j - 1);
    let guess = l.guess.unwrap();
    assert_eq!(p.buffers[guess].elems, p.buffers[l.scores].elems, "guess and scores are both [T, experts]");

    // The copy's input: the hidden state written by the step just before it, which the previous
    // layer's real router reads too.
    let root = ids(&p.steps[spec[0]])[0];
    assert_eq!(output(&p.steps[spec[0] - 1]), root, "layer {j}: placed right after its input is computed");
    let prev_router = p.steps[spec.last().unwrap() + 1..prev.select_step].iter();
    assert!(prev_router.clone().any(|s| ids(s)[0] == root), "layer {j}: copies from the previous layer's stream");

    // The same kernels and packed weights as the real router, which ends just before select_step.
    let real = &p.steps[l.select_step - spec.len()..l.select_step];
    for (&i, r) in spec.iter().zip(real) {
        let s = &p.steps[i];
        assert_eq!(s.kernel, r.kernel, "layer {j}: {} vs {}", s.label, r.label);
        for (a, b) in ids(s).iter().zip(ids(r)) {
            if matches!(p.buffers[*a].storage, Storage::Weight { .. }) {
                assert_eq!(*a, b, "layer {j}: {} reads the real router's weights", s.label);
            }
        }
    }
    assert_eq!(ids(real.last().unwrap()).last(), Some(&l.scores));
}

/// The expert weights of one layer as `model.layers.L.experts.E.wN.weight` names.
fn weight_names(g: &Graph, p: &Plan, l: &MoeLayer) -> Vec<Vec<String>> {
    // Weight buffers are named by their node's label, `%35 = param`, numbered as the planner did.
    let numbers = kiln_ir::print::value_numbers(g, &g.topo_order());
    let param_of = |w: usize| -> String {
        let name = &p.buffers[w].name;
        let (&n, _) = numbers
            .iter()
            .find(|&(&n, k)| g.op(n) == OpKind::Param && *name == format!("%{k} = param"))
            .unwrap_or_else(|| panic!("weight buffer {w} ({name}) is no param"));
        let param = g.node(n).attrs.str("name").unwrap_or_default();
        param.replacen(".block_sparse_moe.", ".", 1)
    };
    l.experts.iter().map(|x| x.weights.iter().map(|&w| param_of(w)).collect()).collect()
}

fn check_mixtral(pipeline: &str) {
    let (layers, experts, k) = (3, 4, 2);
    let (g, p) = planned(&mixtral(layers, experts, k), pipeline, |_| {});
    check_invariants(&p);
    assert_eq!(p.moe_layers.len(), layers, "{pipeline}");
    let mut last_select = 0;
    for (j, l) in p.moe_layers.iter().enumerate() {
        assert!(j == 0 || l.select_step > last_select, "layers in program order");
        last_select = l.select_step;
        assert_eq!(l.top_k, k);
        assert_eq!(l.experts.len(), experts);
        let names = weight_names(&g, &p, l);
        for (e, x) in l.experts.iter().enumerate() {
            assert_eq!(dynamic_name(&p, x.rows_symbol), format!("n{j}e{e}"));
            let want: BTreeSet<String> =
                ["w1", "w2", "w3"].iter().map(|w| format!("model.layers.{j}.experts.{e}.{w}.weight")).collect();
            assert_eq!(names[e].iter().cloned().collect::<BTreeSet<_>>(), want, "layer {j} expert {e}");
            for &w in &x.weights {
                let b = &p.buffers[w];
                let bytes = b.elems.eval(&[]) as usize * b.elem.size();
                assert_eq!(bytes, HIDDEN * INTERMEDIATE * 4, "layer {j} expert {e}: {}", b.name);
            }
        }
        if j == 0 {
            assert_eq!((l.guess, l.guess_step), (None, None));
        } else {
            check_guess(&p, j);
        }
    }
}

#[test]
fn mixtral_layers_list_every_expert_and_guess_the_next_router() {
    check_mixtral("moe-dispatch");
}

#[test]
fn mixtral_at_o2_is_annotated_the_same_way() {
    check_mixtral(&format!("{O2},moe-dispatch"));
}

/// The matmuls whose rows are `dim`, in program order.
fn expert_matmuls(g: &Graph, dim: &str) -> Vec<NodeId> {
    g.topo_order()
        .into_iter()
        .filter(|&n| g.op(n) == OpKind::MatMul && g.ty(n).shape.dim(0).symbols().any(|s| s == dim))
        .collect()
}

/// Makes matmul `m` read `w` instead of its own weight.
fn rewire(g: &mut Graph, m: NodeId, w: NodeId) {
    let mut patch = Patch::new();
    let a = g.operands(m)[0];
    let new = patch.add(OpKind::MatMul, g.node(m).attrs.clone(), &[a.into(), PatchValue::from(w)], g.ty(m).clone());
    patch.replace_uses(m, new);
    patch.remove(m);
    g.apply(patch);
}

#[test]
fn weights_shared_outside_an_expert_are_not_offloadable() {
    // Expert 1 of layer 0 reads expert 0's gate projection: neither may list it.
    let (g, p) = planned(&mixtral(2, 4, 2), "moe-dispatch", |g| {
        let e0 = expert_matmuls(g, "n0e0")[0];
        let e1 = expert_matmuls(g, "n0e1")[0];
        rewire(g, e1, g.operands(e0)[1]);
    });
    check_invariants(&p);
    assert_eq!(p.moe_layers.len(), 2);
    let names = weight_names(&g, &p, &p.moe_layers[0]);
    let set = |v: &[&str], e: usize| -> BTreeSet<String> {
        v.iter().map(|w| format!("model.layers.0.experts.{e}.{w}.weight")).collect()
    };
    assert_eq!(names[0].iter().cloned().collect::<BTreeSet<_>>(), set(&["w2", "w3"], 0));
    assert_eq!(names[1].iter().cloned().collect::<BTreeSet<_>>(), set(&["w2", "w3"], 1));
    for (e, n) in names.iter().enumerate().skip(2) {
        assert_eq!(n.iter().cloned().collect::<BTreeSet<_>>(), set(&["w1", "w2", "w3"], e));
    }
    // The one weight both experts' matmuls read is listed by neither.
    let l = &p.moe_layers[0];
    let read_by = |e: usize| -> BTreeSet<usize> {
        let rows = DimExpr::sym(l.experts[e].rows_symbol);
        p.steps.iter().filter(|s| kind(&p, s) == "matmul" && s.dims[0] == rows).map(|s| ids(s)[1]).collect()
    };
    let shared: Vec<usize> = read_by(0).intersection(&read_by(1)).copied().collect();
    assert_eq!(shared.len(), 1);
    assert!(l.experts.iter().all(|x| !x.weights.contains(&shared[0])));
}

#[test]
fn weights_shared_with_a_dense_op_are_not_offloadable() {
    // A dense matmul over every token (the final norm's output) also reads expert 2's up
    // projection of layer 1: that weight must stay resident. (The extra node feeds nothing; the
    // planner plans it all the same.)
    let (g, p) = planned(&mixtral(2, 4, 2), "moe-dispatch", |g| {
        let up = g.operands(expert_matmuls(g, "n1e2")[1])[1];
        let norm = g.topo_order().into_iter().rev().find(|&n| g.op(n) == OpKind::RmsNorm).expect("a final norm");
        let ty = g.ty(norm).clone();
        let wide = TensorType::new(ty.dtype, [ty.shape.dim(0).clone(), Dim::c(INTERMEDIATE as i64)]);
        let mut patch = Patch::new();
        let t_b = Attrs::new().with("transpose_b", Attr::Bool(true));
        patch.add(OpKind::MatMul, t_b, &[norm.into(), up.into()], wide);
        g.apply(patch);
    });
    check_invariants(&p);
    let names = weight_names(&g, &p, &p.moe_layers[1]);
    let set =
        |v: &[&str]| -> BTreeSet<String> { v.iter().map(|w| format!("model.layers.1.experts.2.{w}.weight")).collect() };
    assert_eq!(names[2].iter().cloned().collect::<BTreeSet<_>>(), set(&["w1", "w2"]));
    assert!(names.iter().enumerate().all(|(e, n)| e == 2 || n.len() == 3));
}

#[test]
fn a_gap_in_expert_numbers_leaves_the_layer_out() {
    // Layer 0's last expert renumbered 7: its layer is not annotated (with a warning), the compile
    // goes on, and the next layer becomes the first annotated one, without a guess.
    let (_, p) = planned(&mixtral(3, 4, 2), "moe-dispatch", |g| {
        let gate = g
            .topo_order()
            .into_iter()
            .find(|&n| g.op(n) == OpKind::ExpertGate && g.node(n).attrs.int("expert") == Some(3))
            .unwrap();
        g.node_mut(gate).attrs.set("expert", Attr::Int(7));
    });
    check_invariants(&p);
    assert_eq!(p.moe_layers.len(), 2);
    assert_eq!(dynamic_name(&p, p.moe_layers[0].experts[0].rows_symbol), "n1e0");
    assert_eq!(p.moe_layers[0].guess, None);
    check_guess(&p, 1);
}

#[test]
fn moefied_dense_model_is_annotated() {
    let (_, p) = planned(&SynthOptions::defaults(Arch::Llama), "moefy{experts=4,top-k=2},moe-dispatch", |_| {});
    check_invariants(&p);
    assert_eq!(p.moe_layers.len(), 2);
    for (j, l) in p.moe_layers.iter().enumerate() {
        assert_eq!(l.experts.len(), 4);
        for x in &l.experts {
            // Each expert: a quarter of the FFN's neurons in gate, up and down.
            let bytes: Vec<usize> =
                x.weights.iter().map(|&w| p.buffers[w].elems.eval(&[]) as usize * p.buffers[w].elem.size()).collect();
            assert_eq!(bytes, vec![HIDDEN * INTERMEDIATE / 4 * 4; 3], "layer {j}");
        }
        if j > 0 {
            check_guess(&p, j);
        }
    }
}

#[test]
fn dense_models_have_no_moe_layers() {
    for pipeline in ["canonicalize", O2] {
        let (_, p) = planned(&SynthOptions::defaults(Arch::Llama), pipeline, |_| {});
        assert!(p.moe_layers.is_empty());
        assert!(p.steps.iter().all(|s| s.speculative.is_none()));
    }
    // Without moe-dispatch the experts are one `moe` op the CPU backend cannot plan; nothing to
    // annotate in any case.
}

#[test]
fn compiled_artifact_records_moe_layers_and_guesses_change_nothing() {
    let t = TempDir::new("plan-moe-art");
    let dir = t.join("m");
    kiln_models::write_synthetic_model(&mixtral(2, 4, 2), &dir).unwrap();
    let ckpt = Checkpoint::open(&dir).unwrap();
    let mut g = ckpt.graph(&LowerOptions::default()).unwrap();
    let pm = PassManager::parse("moe-dispatch", Instrumentation::default()).unwrap();
    let report = pm.run_with_weights(&mut g, Some(&ckpt), &mut std::io::sink()).unwrap();
    let weights = Overlay { derived: &report.derived, base: &ckpt };
    let out = t.join("mx.kiln");
    let spec = support::TestArtifact {
        format: WeightFormat::F32,
        pipeline: "moe-dispatch",
        max_tokens: 32,
        max_context: 64,
        int8_prefill: false,
    };
    support::compile_for_test(&g, &weights, ckpt.spec.vocab_size, &spec, &out);
    let text = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    let m: kiln_runtime::artifact::manifest::Manifest = serde_json::from_str(&text).unwrap();
    assert_eq!(m.moe_layers.len(), 2);
    assert!(m.moe_layers[1].guess.is_some());
    assert!(m.steps.iter().any(|s| s.speculative == Some(1)));

    // Run with the speculative steps skipped (as a runtime without prefetch does) and, from a copy
    // of the artifact whose steps are unmarked, executed: the logits must not change by one bit.
    let eager = t.join("eager.kiln");
    std::fs::create_dir_all(&eager).unwrap();
    for f in std::fs::read_dir(&out).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, eager.join(f.file_name().unwrap())).unwrap();
    }
    let mut unmarked = m.clone();
    unmarked.steps.iter_mut().for_each(|s| s.speculative = None);
    std::fs::write(eager.join("manifest.json"), serde_json::to_string(&unmarked).unwrap()).unwrap();
    let prompt = [1, 2, 3, 4, 5, 6, 7];
    let run = |dir: &std::path::Path| {
        let mut model = kiln_runtime::cpu::CpuModel::load(dir, 1).unwrap();
        let mut logits = model.forward(&prompt).unwrap();
        logits.extend(model.forward(&[9]).unwrap());
        logits.iter().map(|x| x.to_bits()).collect::<Vec<u32>>()
    };
    assert_eq!(run(&out), run(&eager));
}
