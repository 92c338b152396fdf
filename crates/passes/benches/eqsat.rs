//! Times the `eqsat` pass on whole-model graphs of SmolLM2-135M's shape (hidden 576, 9 query / 3
//! KV heads, intermediate 1536, vocab 49152) at 10, 20 and 30 layers, to show time growing
//! linearly with depth, and compares with one whole-graph e-graph. With `--gguf FILE` it also
//! imports a real GGUF checkpoint (bf16, into a temporary folder) and times its graph. Cargo runs
//! benchmarks in the crate's folder, so give the file as an absolute path:
//!
//! ```text
//! cargo bench -p kiln-passes --bench eqsat
//! cargo bench -p kiln-passes --bench eqsat -- --gguf $PWD/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf
//! ```

use kiln_ir::{Graph, OpKind};
use kiln_passes::egraph::{rules, saturate, EqsatConfig, Partition};
use kiln_passes::passes::eqsat;
use kiln_passes::{PassCx, PassOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const RUNS: usize = 7;

fn smollm2_graph(layers: usize) -> Graph {
    let config = serde_json::json!({
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "num_hidden_layers": layers,
        "vocab_size": 49152,
        "rms_norm_eps": 1e-5,
        "rope_theta": 100000.0,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": true,
        "hidden_act": "silu"
    });
    let spec = kiln_models::parse_config(Path::new("config.json"), &config).expect("a valid config");
    kiln_models::lower(&spec, "smollm2", &kiln_models::LowerOptions::default()).expect("lowers")
}

fn count(g: &Graph, op: OpKind) -> usize {
    g.node_ids().filter(|&n| g.op(n) == op).count()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the default `eqsat` pass `RUNS` times on copies of `g`; prints min and median.
fn bench_pass(label: &str, g: &Graph) {
    let pass = eqsat::create(&PassOptions::default()).expect("default options");
    let mut times = Vec::with_capacity(RUNS);
    let mut last = None;
    for _ in 0..RUNS {
        let mut h = g.clone();
        let mut cx = PassCx::new();
        let t = Instant::now();
        pass.run(&mut h, &mut cx).expect("eqsat runs");
        times.push(t.elapsed());
        last = Some((h, cx));
    }
    times.sort();
    let (h, cx) = last.expect("at least one run");
    let s = &cx.stats["eqsat"];
    println!(
        "{label:<28} {:>5} nodes {:>3} attn  min {:>7.2} ms  median {:>7.2} ms  regions {:>3}  e-nodes {:>6} (max {:>4})  \
         iters {:>4}  stop {}  rope left {}  applied {}",
        g.len(),
        count(g, OpKind::Attention),
        ms(times[0]),
        ms(times[RUNS / 2]),
        s["regions"],
        s["egraph_nodes"],
        s["max_egraph_nodes"],
        s["iterations"],
        s["stop_reasons"],
        count(&h, OpKind::Rope),
        s["applied"],
    );
}

fn bench_whole(g: &Graph) {
    let mut h = g.clone();
    let cfg = EqsatConfig { partition: Partition::Whole, ..EqsatConfig::default() };
    let t = Instant::now();
    let r = saturate(&mut h, &rules::all_rules(), &cfg).expect("eqsat runs");
    println!(
        "{:<28} {:>5} nodes  one e-graph: {:>7.2} ms, {} e-nodes, {} iterations, stop {:?}",
        "whole graph at once",
        g.len(),
        ms(t.elapsed()),
        r.egraph_nodes,
        r.iterations,
        r.stop_reasons
    );
}

fn import_gguf(file: &Path) -> Result<Graph, String> {
    use kiln_models::gguf::{import_gguf, ImportOptions, OutputDType};
    let dir: PathBuf = std::env::temp_dir().join(format!("kiln-eqsat-bench-{}", std::process::id()));
    let opts = ImportOptions { dtype: OutputDType::BF16, overwrite: true, ..Default::default() };
    let t = Instant::now();
    import_gguf(file, &dir, &opts).map_err(|e| e.to_string())?;
    let g = kiln_models::Checkpoint::open(&dir)
        .and_then(|c| c.graph(&kiln_models::LowerOptions::default()))
        .map_err(|e| e.to_string());
    let _ = std::fs::remove_dir_all(&dir);
    println!("imported {} in {:.1} s", file.display(), t.elapsed().as_secs_f64());
    g
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let gguf = args.iter().position(|a| a == "--gguf").and_then(|i| args.get(i + 1)).map(PathBuf::from);
    println!("eqsat, default options (rules=rope+layout+algebra, node-limit=10000, iter-limit=30, time-limit=2s)");
    for layers in [10, 20, 30] {
        bench_pass(&format!("SmolLM2 shape, {layers} layers"), &smollm2_graph(layers));
    }
    bench_whole(&smollm2_graph(30));
    if let Some(file) = gguf {
        match import_gguf(&file) {
            Ok(g) => bench_pass("SmolLM2-135M (GGUF import)", &g),
            Err(e) => println!("--gguf {}: {e}", file.display()),
        }
    }
}
