//! Hugging Face folders in their other shapes: sharded (model.safetensors.index.json) and bf16/f16
//! weights give the same model as the single f32 file.

use kiln_models::synth::{write_synthetic_model, SynthDtype, SynthOptions};
use kiln_models::{Arch, Checkpoint, InterpModel, LowerOptions};
use safetensors::tensor::TensorView;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn temp(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("kiln-ckpt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

fn logits(dir: &std::path::Path) -> Vec<f32> {
    let ckpt = Checkpoint::open(dir).unwrap();
    let mut m = InterpModel::load(&ckpt, &LowerOptions::default()).unwrap();
    m.forward(&[5, 17, 99, 3, 250]).unwrap()
}

#[test]
fn sharded_checkpoint_reads_like_the_single_file() {
    let root = temp("shards");
    let single = root.join("single");
    write_synthetic_model(&SynthOptions { seed: 4, ..SynthOptions::defaults(Arch::Qwen2) }, &single).unwrap();
    let sharded = root.join("sharded");
    std::fs::create_dir_all(&sharded).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        std::fs::copy(single.join(f), sharded.join(f)).unwrap();
    }
    let ckpt = Checkpoint::open(&single).unwrap();
    let mut names: Vec<String> = ckpt.tensor_names().map(str::to_string).collect();
    names.sort();
    let half = names.len() / 2;
    let mut weight_map = serde_json::Map::new();
    for (i, chunk) in [&names[..half], &names[half..]].iter().enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", i + 1);
        let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = chunk
            .iter()
            .map(|n| {
                let (shape, data) = ckpt.tensor_f32(n).unwrap();
                (n.clone(), shape, data.iter().flat_map(|x| x.to_le_bytes()).collect())
            })
            .collect();
        let views: BTreeMap<String, TensorView> = tensors
            .iter()
            .map(|(n, s, b)| (n.clone(), TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, &None, &sharded.join(&file)).unwrap();
        for n in chunk.iter() {
            weight_map.insert(n.clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(sharded.join("model.safetensors.index.json"), index.to_string()).unwrap();
    assert_eq!(logits(&single), logits(&sharded));

    // A shard listed in the index but missing is an error naming the index and the shard.
    std::fs::remove_file(sharded.join("model-00002-of-00002.safetensors")).unwrap();
    let err = Checkpoint::open(&sharded).err().unwrap().to_string();
    assert!(err.contains("model.safetensors.index.json") && err.contains("model-00002-of-00002.safetensors"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn half_precision_checkpoints_match_f32() {
    let root = temp("half");
    let f32_dir = root.join("f32");
    write_synthetic_model(&SynthOptions { seed: 9, ..SynthOptions::defaults(Arch::Llama) }, &f32_dir).unwrap();
    let reference = logits(&f32_dir);
    for (dtype, tol) in [(SynthDtype::BF16, 3e-2), (SynthDtype::F16, 3e-3)] {
        let dir = root.join(dtype.name());
        let opts = SynthOptions { seed: 9, dtype: Some(dtype), ..SynthOptions::defaults(Arch::Llama) };
        write_synthetic_model(&opts, &dir).unwrap();
        let got = logits(&dir);
        let num: f64 = got.iter().zip(&reference).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
        let den: f64 = reference.iter().map(|b| (*b as f64).powi(2)).sum();
        let err = (num / den).sqrt();
        assert!(err < tol, "{}: rel L2 {err} vs f32", dtype.name());
        assert!(err > 0.0, "{}: weights were not actually stored in half precision", dtype.name());
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn param_count_matches_the_checkpoint() {
    for arch in Arch::ALL {
        let dir = temp(&format!("count-{}", arch.name()));
        write_synthetic_model(&SynthOptions { seed: 1, ..SynthOptions::defaults(arch) }, &dir).unwrap();
        let ckpt = Checkpoint::open(&dir).unwrap();
        let stored: usize = ckpt.tensor_names().map(|n| ckpt.meta(n).unwrap().shape.iter().product::<usize>()).sum();
        assert_eq!(ckpt.spec.param_count(), stored, "{}", arch.name());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
