//! Insta snapshots of the IR Kiln builds for each architecture (synthetic models, one decoder
//! layer; two for gemma3 to show a sliding and a global layer) and of the hand-written fixtures as
//! printed. `cargo insta review` re-blesses them; CI never writes them (INSTA_UPDATE=no).

mod support;

use kiln_models::synth::{write_synthetic_model, SynthOptions};
use kiln_models::{Arch, Checkpoint, LowerOptions};

fn arch_ir(arch: Arch, layers: usize) -> String {
    let dir = support::TempDir::new(&format!("snap-{}", arch.name()));
    let model = dir.join("model");
    write_synthetic_model(&SynthOptions::defaults(arch), &model).unwrap();
    let ckpt = Checkpoint::open(&model).unwrap();
    let mut g = ckpt.graph(&LowerOptions { layers: Some(layers), ..Default::default() }).unwrap();
    g.name = format!("{}_layer", arch.name());
    kiln_ir::verify(&g).unwrap();
    kiln_ir::print(&g)
}

#[test]
fn llama_ir() {
    insta::assert_snapshot!(arch_ir(Arch::Llama, 1));
}

#[test]
fn mistral_ir() {
    insta::assert_snapshot!(arch_ir(Arch::Mistral, 1));
}

#[test]
fn qwen2_ir() {
    insta::assert_snapshot!(arch_ir(Arch::Qwen2, 1));
}

#[test]
fn mixtral_ir() {
    insta::assert_snapshot!(arch_ir(Arch::Mixtral, 1));
}

#[test]
fn gemma3_ir() {
    insta::assert_snapshot!(arch_ir(Arch::Gemma3, 2));
}

#[test]
fn fixtures_print_canonically() {
    let dir = support::workspace_root().join("tests/fixtures");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "kir"))
        .collect();
    files.sort();
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap();
        let g = kiln_ir::parse(&src).unwrap();
        kiln_ir::verify(&g).unwrap();
        let printed = kiln_ir::print(&g);
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        insta::assert_snapshot!(name.clone(), printed);
        // Round trip: the printed text parses back to the same graph and prints identically.
        let again = kiln_ir::parse(&printed).unwrap();
        assert!(again.same_as(&g), "{name}: parse(print(g)) differs from g");
        assert_eq!(kiln_ir::print(&again), printed, "{name}");
    }
}
