//! The full `-O2` pipeline preserves what models compute: on every synthetic architecture and on
//! SmolLM2, last-position logits stay within 1e-5 relative L2 of the unoptimized graph (prefill and
//! decode steps through the KV cache) and greedy text is identical.

mod support;

use kiln_models::synth::{write_synthetic_model, SynthOptions};
use kiln_models::{Arch, Checkpoint, InterpModel, LowerOptions};
use kiln_passes::pipeline::Pipeline;
use kiln_passes::PassCx;

fn optimized(ckpt: &Checkpoint) -> kiln_ir::Graph {
    let mut g = ckpt.graph(&LowerOptions::default()).unwrap();
    let pipeline = Pipeline::parse("-O2").unwrap();
    let mut cx = PassCx::new();
    for pass in pipeline.build().unwrap() {
        pass.run(&mut g, &mut cx).unwrap();
        kiln_ir::verify(&g).unwrap_or_else(|e| panic!("after {}: {e}", pass.name()));
    }
    g
}

/// Greedy decoding for `steps` tokens, checking the logits of both models at every step.
fn compare(ckpt: &Checkpoint, prompt: &[u32], steps: usize, what: &str) -> Vec<u32> {
    let g = optimized(ckpt);
    let mut base = InterpModel::load(ckpt, &LowerOptions::default()).unwrap();
    let mut opt = InterpModel::with_graph(ckpt, &g).unwrap();
    let (mut a, mut b) = (base.forward(prompt).unwrap(), opt.forward(prompt).unwrap());
    let mut text = Vec::new();
    for step in 0..=steps {
        let err = support::rel_l2(&b, &a);
        assert!(err <= 1e-5, "{what}: -O2 logits differ at step {step}: rel L2 {err:e}");
        let (ta, tb) = (support::argmax(&a) as u32, support::argmax(&b) as u32);
        assert_eq!(ta, tb, "{what}: greedy token differs at step {step}");
        text.push(ta);
        if step < steps {
            a = base.forward(&[ta]).unwrap();
            b = opt.forward(&[tb]).unwrap();
        }
    }
    text
}

#[test]
fn o2_preserves_every_synthetic_architecture() {
    for arch in Arch::ALL {
        let dir = support::TempDir::new(&format!("o2-{}", arch.name()));
        let m = dir.join("m");
        write_synthetic_model(&SynthOptions { seed: 21, ..SynthOptions::defaults(arch) }, &m).unwrap();
        let ckpt = Checkpoint::open(&m).unwrap();
        let prompt: Vec<u32> = (0..14).map(|i| (i * 37 + 11) % ckpt.spec.vocab_size as u32).collect();
        compare(&ckpt, &prompt, 6, arch.name());
    }
}

#[test]
fn o2_preserves_smollm2_and_its_text() {
    let Some(dir) = support::smollm2_dir() else { return };
    let ckpt = Checkpoint::open(&dir).unwrap();
    let tok = kiln_runtime::TextTokenizer::from_dir(&dir, &ckpt.spec.eos_token_ids).unwrap();
    let prompt = tok.encode("The capital of France is", true).unwrap();
    let text = compare(&ckpt, &prompt, 8, "SmolLM2");
    assert!(tok.decode(&text).unwrap().contains("Paris"));
}

#[test]
fn o2_fuses_rope_merges_projections_and_fuses_elementwise_on_smollm2() {
    let Some(dir) = support::smollm2_dir() else { return };
    let ckpt = Checkpoint::open(&dir).unwrap();
    let g = optimized(&ckpt);
    let count = |op: kiln_ir::OpKind| g.node_ids().filter(|&n| g.op(n) == op).count();
    let attn: Vec<_> = g.node_ids().filter(|&n| g.op(n) == kiln_ir::OpKind::Attention).collect();
    assert_eq!(attn.len(), 30);
    assert!(attn.iter().all(|&n| g.node(n).attrs.tagged("rope").is_some()), "every attention has fused RoPE");
    assert_eq!(count(kiln_ir::OpKind::Rope), 0);
    // q/k/v merged into one matmul and gate/up into another per layer: 2 merged + o_proj + down_proj
    // per layer, plus the LM head.
    assert_eq!(count(kiln_ir::OpKind::MatMul), 30 * 4 + 1);
    assert_eq!(count(kiln_ir::OpKind::Fused), 30);
}
