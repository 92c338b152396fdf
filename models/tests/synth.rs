//! Synthetic model folders: every architecture loads, lowers, matches its checkpoint and verifies;
//! output is deterministic; the tokenizer is a real `tokenizers` BPE; bad options fail cleanly.

use kiln_models::synth::tokenizer::{CHAT_TEMPLATE, MIN_VOCAB, SPECIAL_TOKENS};
use kiln_models::{parse_config, write_synthetic_model, Arch, Checkpoint, SynthDtype, SynthOptions};
use safetensors::Dtype;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh path under the system temp dir (not created), removed with its contents on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let root = std::env::temp_dir().join(format!(
            "kiln-synth-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&root).unwrap();
        TempDir(root)
    }

    /// The model folder path inside (does not exist yet).
    fn model(&self) -> PathBuf {
        self.0.join("model")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn opts(arch: Arch, seed: u64) -> SynthOptions {
    SynthOptions { seed, ..SynthOptions::new(arch) }
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Files in a folder, sorted (hidden temporaries included).
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

const FILES: [&str; 5] =
    ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"];

#[test]
fn every_arch_loads_lowers_and_verifies() {
    for arch in Arch::ALL {
        let tmp = TempDir::new(arch.name());
        let dst = tmp.model();
        let report = write_synthetic_model(&opts(arch, 7), &dst).unwrap_or_else(|e| panic!("{}: {e}", arch.name()));
        assert_eq!(report.files, FILES.map(String::from).to_vec(), "{}", arch.name());
        assert_eq!(listing(&dst), FILES.map(String::from).to_vec());
        // Only the model folder is left next to it: the temporary folder was renamed into place.
        assert_eq!(listing(&tmp.0), ["model"]);

        let ckpt = Checkpoint::open(&dst).unwrap_or_else(|e| panic!("{}: {e}", arch.name()));
        assert_eq!(ckpt.spec, report.spec);
        let graph = ckpt.graph(&Default::default()).unwrap();
        ckpt.check_graph(&graph).unwrap_or_else(|e| panic!("{}: {e}", arch.name()));
        kiln_ir::verify(&graph).unwrap_or_else(|e| panic!("{}: {e}", arch.name()));
        // Exactly the tensors the graph reads: nothing missing, nothing extra.
        let n_params = graph.node_ids().filter(|&n| graph.node(n).op == kiln_ir::OpKind::Param).count();
        assert_eq!(ckpt.tensor_names().count(), n_params, "{}", arch.name());
        assert_eq!(report.tensors, n_params);
        let numel: usize = ckpt.tensor_names().map(|n| ckpt.meta(n).unwrap().shape.iter().product::<usize>()).sum();
        assert_eq!(report.params, numel, "{}", arch.name());
        // DecoderSpec::param_count leaves out biases and q/k norm weights.
        if !ckpt.spec.qkv_bias && !ckpt.spec.qk_norm {
            assert_eq!(report.params, ckpt.spec.param_count(), "{}", arch.name());
        }
        for name in ckpt.tensor_names() {
            assert_eq!(ckpt.meta(name).unwrap().dtype, Dtype::F32);
        }
        let lm_head = ckpt.tensor_names().any(|n| n == "lm_head.weight");
        assert_eq!(lm_head, !ckpt.spec.tie_word_embeddings, "{}", arch.name());
    }
}

#[test]
fn default_shapes_per_arch() {
    let spec = |arch| {
        let tmp = TempDir::new("shapes");
        let dst = tmp.model();
        write_synthetic_model(&opts(arch, 1), &dst).unwrap();
        let cfg = read_json(&dst.join("config.json"));
        (parse_config(&dst.join("config.json"), &cfg).unwrap(), cfg)
    };
    for arch in Arch::ALL {
        let (s, cfg) = spec(arch);
        assert_eq!((s.num_layers(), s.hidden_size, s.intermediate_size), (2, 64, 128), "{}", arch.name());
        assert_eq!((s.num_heads, s.num_kv_heads, s.vocab_size), (4, 2, 320), "{}", arch.name());
        assert_eq!(s.head_dim, if arch == Arch::Gemma3 { 32 } else { 16 });
        assert_eq!((s.bos_token_id, s.eos_token_ids.clone()), (Some(0), vec![0]));
        assert_eq!(cfg["torch_dtype"], "float32");
        let d = SynthOptions::defaults(arch);
        assert_eq!(d.arch, arch);
        assert_eq!(d.tie, Some(s.tie_word_embeddings));
    }

    let (llama, cfg) = spec(Arch::Llama);
    assert!(llama.tie_word_embeddings && !llama.qkv_bias);
    assert!(llama.layers.iter().all(|l| l.window.is_none()));
    assert_eq!(cfg["architectures"][0], "LlamaForCausalLM");
    assert_eq!(cfg["rope_scaling"]["rope_type"], "llama3");
    assert!(
        matches!(llama.layers[0].rope.scaling, kiln_ir::RopeScaling::Llama3 { factor, original_max_position: 256, .. } if factor == 8.0)
    );

    let (mistral, cfg) = spec(Arch::Mistral);
    assert!(!mistral.tie_word_embeddings);
    assert!(mistral.layers.iter().all(|l| l.window == Some(16)));
    assert_eq!(cfg["architectures"][0], "MistralForCausalLM");

    let (qwen2, cfg) = spec(Arch::Qwen2);
    assert!(qwen2.qkv_bias && !qwen2.o_bias && !qwen2.tie_word_embeddings);
    assert!(qwen2.layers.iter().all(|l| l.window.is_none()));
    assert_eq!((cfg["use_sliding_window"].as_bool(), cfg["sliding_window"].as_u64()), (Some(false), Some(1024)));

    let (mixtral, cfg) = spec(Arch::Mixtral);
    let moe = mixtral.moe.unwrap();
    assert_eq!((moe.experts, moe.top_k), (8, 2));
    assert!(mixtral.layers.iter().all(|l| l.window == Some(32)));
    assert_eq!(cfg["use_flash_attn"], false);

    let (gemma, cfg) = spec(Arch::Gemma3);
    assert_eq!(cfg["model_type"], "gemma3_text");
    assert_eq!(cfg["architectures"][0], "Gemma3ForCausalLM");
    assert!(gemma.tie_word_embeddings && gemma.qk_norm && gemma.sandwich_norms);
    assert_eq!(gemma.layers[0].window, Some(8));
    assert_eq!(gemma.layers[1].window, None);
    assert_eq!(gemma.layers[0].rope.theta, 10000.0);
    assert_eq!(gemma.layers[0].rope.scaling, kiln_ir::RopeScaling::None);
    assert_eq!(gemma.layers[1].rope.theta, 1e6);
    assert_eq!(gemma.layers[1].rope.scaling, kiln_ir::RopeScaling::Linear { factor: 2.0 });
    assert_eq!(cfg["layer_types"], serde_json::json!(["sliding_attention", "full_attention"]));
    assert_eq!(cfg["query_pre_attn_scalar"], 32);
}

/// The keys candle-transformers 0.9's config structs require (no serde default) are present with
/// the right JSON types, so candle can deserialize the config too.
#[test]
fn configs_have_the_keys_candle_requires() {
    use serde_json::Value;
    /// A key and a check of its value.
    type Key = (&'static str, fn(&Value) -> bool);
    let common: &[Key] = &[
        ("vocab_size", |v| v.is_u64()),
        ("hidden_size", |v| v.is_u64()),
        ("intermediate_size", |v| v.is_u64()),
        ("num_hidden_layers", |v| v.is_u64()),
        ("num_attention_heads", |v| v.is_u64()),
        ("num_key_value_heads", |v| v.is_u64()),
        ("max_position_embeddings", |v| v.is_u64()),
        ("rms_norm_eps", |v| v.is_number()),
        ("rope_theta", |v| v.is_number()),
    ];
    let extra: &[(Arch, &[Key])] = &[
        (
            Arch::Llama,
            &[("rope_scaling", |v| {
                v["factor"].is_number()
                    && v["low_freq_factor"].is_number()
                    && v["high_freq_factor"].is_number()
                    && v["original_max_position_embeddings"].is_u64()
                    && v["rope_type"] == "llama3"
            })],
        ),
        (Arch::Mistral, &[("hidden_act", |v| v == "silu")]),
        (
            Arch::Qwen2,
            &[
                ("sliding_window", |v| v.is_u64()),
                ("max_window_layers", |v| v.is_u64()),
                ("tie_word_embeddings", |v| v.is_boolean()),
                ("use_sliding_window", |v| v.is_boolean()),
                ("hidden_act", |v| v == "silu"),
            ],
        ),
        (
            Arch::Mixtral,
            &[
                ("hidden_act", |v| v == "silu"),
                ("sliding_window", |v| v.is_u64()),
                ("num_experts_per_tok", |v| v.is_u64()),
                ("num_local_experts", |v| v.is_u64()),
                ("use_flash_attn", |v| v.is_boolean()),
            ],
        ),
        (
            Arch::Gemma3,
            &[
                ("attention_bias", |v| v.is_boolean()),
                ("head_dim", |v| v.is_u64()),
                ("hidden_activation", |v| v == "gelu_pytorch_tanh"),
                ("rope_local_base_freq", |v| v.is_number()),
                ("query_pre_attn_scalar", |v| v.is_u64()),
                ("sliding_window", |v| v.is_u64()),
                ("sliding_window_pattern", |v| v.is_u64()),
            ],
        ),
    ];
    for (arch, keys) in extra {
        let tmp = TempDir::new("candle");
        let dst = tmp.model();
        let report = write_synthetic_model(&opts(*arch, 3), &dst).unwrap();
        let cfg = read_json(&dst.join("config.json"));
        assert_eq!(cfg, report.config);
        for (key, ok) in common.iter().chain(keys.iter()) {
            assert!(ok(&cfg[*key]), "{}: key '{key}' missing or mistyped: {}", arch.name(), cfg[*key]);
        }
    }
}

#[test]
fn same_seed_same_bytes_different_seed_different_weights() {
    let tmp = TempDir::new("det");
    let (a, b, c) = (tmp.0.join("a"), tmp.0.join("b"), tmp.0.join("c"));
    for arch in [Arch::Llama, Arch::Mixtral, Arch::Gemma3] {
        for d in [&a, &b, &c] {
            let _ = std::fs::remove_dir_all(d);
        }
        write_synthetic_model(&opts(arch, 11), &a).unwrap();
        write_synthetic_model(&opts(arch, 11), &b).unwrap();
        write_synthetic_model(&opts(arch, 12), &c).unwrap();
        for f in FILES {
            assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{} {f}", arch.name());
        }
        for f in ["config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
            assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(c.join(f)).unwrap(), "{f} depends on the seed");
        }
        let (ca, cc) = (Checkpoint::open(&a).unwrap(), Checkpoint::open(&c).unwrap());
        for name in ca.tensor_names() {
            let (sa, va) = ca.tensor_f32(name).unwrap();
            let (sc, vc) = cc.tensor_f32(name).unwrap();
            assert_eq!(sa, sc);
            let same = va.iter().zip(&vc).filter(|(x, y)| x == y).count();
            assert!(same * 100 < va.len().max(100), "{}: {name}: {same} of {} values equal", arch.name(), va.len());
        }
    }
}

/// A tensor's values depend on the seed and its name only, not on the rest of the model.
#[test]
fn tensors_are_stable_across_shapes() {
    let tmp = TempDir::new("stable");
    let (a, b) = (tmp.0.join("a"), tmp.0.join("b"));
    write_synthetic_model(&opts(Arch::Llama, 5), &a).unwrap();
    write_synthetic_model(&SynthOptions { layers: Some(3), ..opts(Arch::Llama, 5) }, &b).unwrap();
    let (ca, cb) = (Checkpoint::open(&a).unwrap(), Checkpoint::open(&b).unwrap());
    let name = "model.layers.1.mlp.down_proj.weight";
    assert_eq!(ca.tensor_f32(name).unwrap(), cb.tensor_f32(name).unwrap());
}

fn stats(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn weight_scales() {
    for arch in Arch::ALL {
        let tmp = TempDir::new("scales");
        let dst = tmp.model();
        write_synthetic_model(&SynthOptions { hidden: Some(128), ..opts(arch, 9) }, &dst).unwrap();
        let ck = Checkpoint::open(&dst).unwrap();
        let gemma = arch == Arch::Gemma3;
        let h = 128f64;
        for name in ck.tensor_names() {
            let (shape, v) = ck.tensor_f32(name).unwrap();
            let (mean, std) = stats(&v);
            let head = 2.0 / h.sqrt();
            let (want_mean, want_std) = if name == "model.embed_tokens.weight" {
                (
                    0.0,
                    if ck.spec.tie_word_embeddings {
                        head
                    } else if gemma {
                        h.powf(-0.5)
                    } else {
                        1.0
                    },
                )
            } else if name == "lm_head.weight" {
                (0.0, head)
            } else if gemma
                && (name.contains("post_attention_layernorm") || name.contains("post_feedforward_layernorm"))
            {
                (5.0, 0.1)
            } else if name.ends_with("norm.weight") {
                (if gemma { 0.0 } else { 1.0 }, 0.1)
            } else if name.ends_with(".bias") {
                (0.0, 0.05)
            } else {
                (0.0, (shape[1] as f64).powf(-0.5))
            };
            let n = v.len() as f64;
            assert!(
                (mean - want_mean).abs() < 4.0 * want_std / n.sqrt() + 1e-6,
                "{}: {name}: mean {mean}, want {want_mean}",
                arch.name()
            );
            assert!(
                (std / want_std - 1.0).abs() < 0.1 + 3.0 / n.sqrt(),
                "{}: {name}: std {std}, want {want_std}",
                arch.name()
            );
        }
    }
}

/// The head sees RMS-normed activations (O(1) per element), so logits = normed · head have std
/// about sqrt(hidden)·std(head) = 2: spread but not degenerate.
#[test]
fn logit_scale_is_reasonable() {
    for arch in Arch::ALL {
        let tmp = TempDir::new("logits");
        let dst = tmp.model();
        write_synthetic_model(&opts(arch, 4), &dst).unwrap();
        let ck = Checkpoint::open(&dst).unwrap();
        let (_, head) = ck.tensor_f32(&ck.spec.head_weight_name()).unwrap();
        let (_, emb) = ck.tensor_f32(&ck.spec.embed_name()).unwrap();
        let h = ck.spec.hidden_size;
        // Embedding of token 100, RMS-normed: a stand-in for the final hidden state.
        let x = &emb[100 * h..101 * h];
        let rms = (x.iter().map(|v| v * v).sum::<f32>() / h as f32).sqrt();
        let logits: Vec<f32> = head.chunks(h).map(|row| row.iter().zip(x).map(|(a, b)| a * b / rms).sum()).collect();
        let (_, std) = stats(&logits);
        assert!((1.5..2.8).contains(&std), "{}: logit std {std}", arch.name());
    }
}

#[test]
fn half_precision_outputs() {
    for (dtype, st, torch) in [(SynthDtype::BF16, Dtype::BF16, "bfloat16"), (SynthDtype::F16, Dtype::F16, "float16")] {
        for arch in [Arch::Qwen2, Arch::Gemma3] {
            let tmp = TempDir::new(dtype.name());
            let dst = tmp.model();
            let f32_dir = tmp.0.join("f32");
            let report = write_synthetic_model(&SynthOptions { dtype: Some(dtype), ..opts(arch, 2) }, &dst).unwrap();
            assert_eq!(report.dtype, dtype);
            write_synthetic_model(&opts(arch, 2), &f32_dir).unwrap();
            assert_eq!(read_json(&dst.join("config.json"))["torch_dtype"], torch);
            let ck = Checkpoint::open(&dst).unwrap();
            let graph = ck.graph(&Default::default()).unwrap();
            ck.check_graph(&graph).unwrap();
            let full = Checkpoint::open(&f32_dir).unwrap();
            for name in ck.tensor_names() {
                assert_eq!(ck.meta(name).unwrap().dtype, st);
                // The same values, rounded.
                let (_, lo) = ck.tensor_f32(name).unwrap();
                let (_, hi) = full.tensor_f32(name).unwrap();
                for (a, b) in lo.iter().zip(&hi) {
                    assert!((a - b).abs() <= b.abs() * 1e-2 + 1e-4, "{name}: {a} vs {b}");
                }
            }
            let size = std::fs::metadata(dst.join("model.safetensors")).unwrap().len();
            assert_eq!(size, report.weight_bytes);
            assert!(size * 3 < 2 * std::fs::metadata(f32_dir.join("model.safetensors")).unwrap().len());
        }
    }
}

#[test]
fn custom_shapes() {
    let tmp = TempDir::new("custom");
    let o = SynthOptions {
        layers: Some(3),
        hidden: Some(96),
        intermediate: Some(80),
        heads: Some(6),
        kv_heads: Some(3),
        vocab: Some(700),
        experts: Some(4),
        top_k: Some(3),
        window: Some(5),
        tie: Some(true),
        ..opts(Arch::Mixtral, 1)
    };
    let dst = tmp.model();
    let r = write_synthetic_model(&o, &dst).unwrap();
    let s = &r.spec;
    assert_eq!(
        (s.num_layers(), s.hidden_size, s.intermediate_size, s.num_heads, s.num_kv_heads, s.head_dim),
        (3, 96, 80, 6, 3, 16)
    );
    assert_eq!((s.vocab_size, s.moe.unwrap().experts, s.moe.unwrap().top_k), (700, 4, 3));
    assert!(s.tie_word_embeddings && s.layers.iter().all(|l| l.window == Some(5)));
    let ck = Checkpoint::open(&dst).unwrap();
    ck.check_graph(&ck.graph(&Default::default()).unwrap()).unwrap();
    let tok = tokenizers::Tokenizer::from_file(dst.join("tokenizer.json")).unwrap();
    assert_eq!(tok.get_vocab_size(true), 700);

    // head_dim set explicitly, not hidden / heads (as gemma3 does by default).
    let dst = tmp.0.join("hd");
    let r = write_synthetic_model(
        &SynthOptions { head_dim: Some(24), heads: Some(5), kv_heads: Some(1), ..opts(Arch::Llama, 1) },
        &dst,
    )
    .unwrap();
    assert_eq!((r.spec.num_heads, r.spec.head_dim, r.spec.hidden_size), (5, 24, 64));
    let ck = Checkpoint::open(&dst).unwrap();
    ck.check_graph(&ck.graph(&Default::default()).unwrap()).unwrap();

    // A qwen2 window applies to the upper half of the layers; no window for mistral.
    let dst = tmp.0.join("qw");
    let r = write_synthetic_model(&SynthOptions { window: Some(6), layers: Some(4), ..opts(Arch::Qwen2, 1) }, &dst)
        .unwrap();
    assert_eq!(r.spec.layers.iter().map(|l| l.window).collect::<Vec<_>>(), [None, None, Some(6), Some(6)]);
    let dst = tmp.0.join("mw");
    let r = write_synthetic_model(&SynthOptions { window: Some(0), ..opts(Arch::Mistral, 1) }, &dst).unwrap();
    assert!(r.spec.layers.iter().all(|l| l.window.is_none()));
    let dst = tmp.0.join("g6");
    let r = write_synthetic_model(&SynthOptions { layers: Some(5), tie: Some(false), ..opts(Arch::Gemma3, 1) }, &dst)
        .unwrap();
    assert_eq!(r.spec.layers.iter().map(|l| l.window.is_some()).collect::<Vec<_>>(), [true, false, true, false, true]);
    assert!(Checkpoint::open(&dst).unwrap().tensor_names().any(|n| n == "lm_head.weight"));
}

#[test]
fn bad_options_fail_clearly_and_leave_nothing() {
    let cases: Vec<(SynthOptions, &str)> = vec![
        (SynthOptions { heads: Some(5), ..opts(Arch::Llama, 0) }, "heads (5) must divide hidden (64)"),
        (SynthOptions { kv_heads: Some(3), ..opts(Arch::Mistral, 0) }, "kv_heads (3) must divide heads (4)"),
        (SynthOptions { top_k: Some(9), ..opts(Arch::Mixtral, 0) }, "top_k (9) must not exceed experts (8)"),
        (SynthOptions { experts: Some(4), ..opts(Arch::Llama, 0) }, "apply only to mixtral"),
        (SynthOptions { layers: Some(0), ..opts(Arch::Qwen2, 0) }, "layers (num_hidden_layers) must be at least 1"),
        (SynthOptions { head_dim: Some(15), ..opts(Arch::Gemma3, 0) }, "must be even"),
        (SynthOptions { vocab: Some(100), ..opts(Arch::Llama, 0) }, "vocab (100) must be at least 259"),
        (SynthOptions { window: Some(8), ..opts(Arch::Llama, 0) }, "llama has no sliding window"),
        (SynthOptions { window: Some(0), ..opts(Arch::Gemma3, 0) }, "gemma3 needs a sliding window"),
    ];
    let tmp = TempDir::new("bad");
    let dst = tmp.0.join("nested").join("model");
    for (o, want) in cases {
        let e = write_synthetic_model(&o, &dst).unwrap_err().to_string();
        assert!(e.contains(want), "error {e:?} lacks {want:?}");
        assert!(e.contains(&dst.display().to_string()), "error {e:?} does not name the path");
        assert!(!dst.exists() && !tmp.0.join("nested").exists());
        assert!(listing(&tmp.0).is_empty());
    }
}

#[test]
fn existing_destination() {
    let tmp = TempDir::new("exists");
    let dst = tmp.model();
    // An empty folder is fine.
    std::fs::create_dir(&dst).unwrap();
    write_synthetic_model(&opts(Arch::Llama, 1), &dst).unwrap();
    let before = std::fs::read(dst.join("model.safetensors")).unwrap();
    // A non-empty one is refused, and left as it was.
    let e = write_synthetic_model(&opts(Arch::Llama, 2), &dst).unwrap_err().to_string();
    assert!(e.contains("not empty") && e.contains(&dst.display().to_string()), "{e}");
    assert_eq!(std::fs::read(dst.join("model.safetensors")).unwrap(), before);
    // Unless forced: replaced whole (stray files go too).
    std::fs::write(dst.join("stray.txt"), "x").unwrap();
    write_synthetic_model(&SynthOptions { force: true, ..opts(Arch::Mistral, 2) }, &dst).unwrap();
    assert_eq!(listing(&dst), FILES.map(String::from).to_vec());
    assert_ne!(std::fs::read(dst.join("model.safetensors")).unwrap(), before);
    assert_eq!(Checkpoint::open(&dst).unwrap().spec.arch, Arch::Mistral);
    assert_eq!(listing(&tmp.0), ["model"], "no temporary folders left");
    // A file in the way is an error even when forced.
    let file = tmp.0.join("file");
    std::fs::write(&file, "x").unwrap();
    let e =
        write_synthetic_model(&SynthOptions { force: true, ..opts(Arch::Llama, 1) }, &file).unwrap_err().to_string();
    assert!(e.contains("not a folder"), "{e}");
}

#[test]
fn tokenizer_loads_and_round_trips() {
    let tmp = TempDir::new("tok");
    for vocab in [MIN_VOCAB, 320, 2000] {
        let dst = tmp.0.join(format!("v{vocab}"));
        let r = write_synthetic_model(&SynthOptions { vocab: Some(vocab), ..opts(Arch::Qwen2, 0) }, &dst).unwrap();
        assert!(r.merges >= vocab - MIN_VOCAB);
        let tok =
            tokenizers::Tokenizer::from_file(dst.join("tokenizer.json")).unwrap_or_else(|e| panic!("{vocab}: {e}"));
        assert_eq!(tok.get_vocab_size(true), vocab);
        assert_eq!(tok.get_vocab_size(false), vocab);
        for (i, s) in SPECIAL_TOKENS.iter().enumerate() {
            assert_eq!(tok.token_to_id(s), Some(i as u32));
        }
        assert_eq!(tok.token_to_id("Ġ"), Some(3 + 32));
        for text in [
            "Hello, world! The river ran slowly past the old mill.",
            "  leading and trailing spaces  \n\ttabs\r\nand newlines\n\n",
            "Ünïcödé: naïve café, 日本語のテキスト, emoji 🦀🔥, Ελληνικά, Ω≈ç√",
            "numbers 1234567890 and symbols #$%^&*()[]{}<>|\\/~`'\"",
            "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>",
            "",
        ] {
            let enc = tok.encode(text, false).unwrap();
            assert!(enc.get_ids().iter().all(|&id| (id as usize) < vocab));
            let dec = tok.decode(enc.get_ids(), false).unwrap();
            assert_eq!(dec, text, "vocab {vocab}");
        }
        let enc = tok.encode("<|im_start|>user", false).unwrap();
        assert_eq!(enc.get_ids()[0], 1, "special tokens are matched whole");
        // Learned merges compress English: fewer tokens than bytes.
        let text = "the children and the farmers remembered the river";
        let n = tok.encode(text, false).unwrap().get_ids().len();
        if vocab >= 320 {
            assert!(n * 2 < text.len(), "{n} tokens for {} bytes", text.len());
        } else {
            assert_eq!(n, text.len());
        }

        let tc = read_json(&dst.join("tokenizer_config.json"));
        assert_eq!(tc["chat_template"], CHAT_TEMPLATE);
        assert_eq!(tc["bos_token"], "<|endoftext|>");
        assert_eq!(tc["eos_token"], "<|endoftext|>");
        assert_eq!(tc["added_tokens_decoder"]["2"]["content"], "<|im_end|>");
        let gc = read_json(&dst.join("generation_config.json"));
        assert_eq!(
            (gc["bos_token_id"].clone(), gc["eos_token_id"].clone()),
            (serde_json::json!(0), serde_json::json!([0, 2]))
        );
    }
}

/// tokenizer.json's structure, checked by hand (independently of the `tokenizers` crate).
#[test]
fn tokenizer_json_structure() {
    let tmp = TempDir::new("tokjson");
    let dst = tmp.model();
    write_synthetic_model(&opts(Arch::Llama, 0), &dst).unwrap();
    let t = read_json(&dst.join("tokenizer.json"));
    assert_eq!(t["model"]["type"], "BPE");
    assert_eq!(
        t["pre_tokenizer"],
        serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
    );
    assert_eq!(t["decoder"]["type"], "ByteLevel");
    assert!(t["normalizer"].is_null());
    let vocab = t["model"]["vocab"].as_object().unwrap();
    assert_eq!(vocab.len(), 320);
    let mut ids: Vec<u64> = vocab.values().map(|v| v.as_u64().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, (0..320).collect::<Vec<u64>>());
    let added = t["added_tokens"].as_array().unwrap();
    assert_eq!(added.len(), 3);
    for (i, a) in added.iter().enumerate() {
        assert_eq!(a["id"], i);
        assert_eq!(a["special"], true);
        assert_eq!(vocab[a["content"].as_str().unwrap()], i);
    }
    for m in t["model"]["merges"].as_array().unwrap() {
        let (a, b) = m.as_str().unwrap().split_once(' ').unwrap();
        assert!(vocab.contains_key(a) && vocab.contains_key(b) && vocab.contains_key(&format!("{a}{b}")), "{m}");
    }
}
