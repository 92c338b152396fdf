//! `kiln offload-report` on synthetic traces: the per-layer table of one trace, the summary of a
//! sweep (text, Markdown, JSON), the SVG plot, the LRU/LFU replay against hand-counted hits, and
//! bad input.

mod support;

use kiln_runtime::offload::{LayerStats, Trace, TraceEvent, TRACE_FORMAT};
use serde_json::Value;
use std::path::{Path, PathBuf};
use support::cli::{fails_with, kiln, ok};
use support::TempDir;

fn stats(hits: u64, misses: u64) -> LayerStats {
    LayerStats { hits, misses, loads: misses, bytes_loaded: misses * 1_000_000, ..Default::default() }
}

/// A trace of an 8-expert top-2 model with two MoE layers, the given settings and decode counters.
fn trace(policy: &str, prefetch: usize, cache: usize, decode: Vec<LayerStats>, tok_s: Option<f64>) -> Trace {
    Trace {
        format: TRACE_FORMAT.into(),
        artifact: "moe.kiln".into(),
        policy: policy.into(),
        cache_experts: cache,
        prefetch,
        budget_bytes: cache as u64 * 2 * 1_000_000,
        io: "o_direct".into(),
        experts: 8,
        top_k: 2,
        moe_layers: decode.len(),
        expert_bytes: 1_000_000,
        peak_fast_bytes: cache as u64 * 2 * 1_000_000,
        // Unknown (as in traces before it was recorded): the report derives it from the uses.
        decode_calls: 0,
        decode_tok_s: tok_s,
        prefill_tok_s: tok_s.map(|t| 10.0 * t),
        prefill: vec![LayerStats::default(); decode.len()],
        decode,
        events: vec![],
    }
}

fn write(dir: &TempDir, name: &str, t: &Trace) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_string(t).unwrap()).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The whitespace-separated cells of the first line starting with `first`.
fn row(out: &str, first: &str) -> Vec<String> {
    let line = out.lines().find(|l| l.split_whitespace().next() == Some(first));
    line.unwrap_or_else(|| panic!("no row {first:?} in:\n{out}")).split_whitespace().map(String::from).collect()
}

#[test]
fn one_trace_shows_settings_and_per_layer_decode_counters() {
    let t = TempDir::new("offload-report-one");
    let l0 = LayerStats {
        hits: 3,
        misses: 1,
        prefetch_hits: 1,
        loads: 2,
        bytes_loaded: 3_000_000,
        stall_secs: 0.0125,
        guessed: 4,
        guessed_right: 3,
        chosen_with_guess: 4,
    };
    let l1 = LayerStats {
        hits: 1,
        misses: 3,
        loads: 3,
        bytes_loaded: 4_500_000,
        guessed: 4,
        guessed_right: 1,
        chosen_with_guess: 4,
        ..Default::default()
    };
    let p = write(&t, "lru.json", &Trace { decode_calls: 2, ..trace("lru", 2, 4, vec![l0, l1], Some(12.34)) });
    let (out, _) = ok(kiln(&["offload-report", s(&p)]));
    assert!(row(&out, "policy:").ends_with(&["lru".to_string()]), "{out}");
    assert!(out.contains("4 of 8 experts per layer (top-2, 2 MoE layers)"), "{out}");
    assert!(out.contains("prefetch:       2\n") && out.contains("io:             o_direct\n"), "{out}");
    assert!(out.contains("budget:         8.00 MB") && out.contains("expert size:    1.00 MB"), "{out}");
    assert!(out.contains("decode:         12.3 tok/s") && out.contains("prefill:        123.4 tok/s"), "{out}");
    // 8 uses of 2 experts in 2 layers: 2 tokens.
    assert!(out.contains("decode, per MoE layer (2 tokens):"), "{out}");
    assert_eq!(
        row(&out, "layer"),
        [
            "layer",
            "hits",
            "misses",
            "hit",
            "rate",
            "prefetch",
            "hits",
            "loads",
            "MB",
            "loaded",
            "stall",
            "ms",
            "precision",
            "recall"
        ]
    );
    assert_eq!(row(&out, "0"), ["0", "3", "1", "75.0%", "1", "2", "3.00", "12.5", "75.0%", "75.0%"]);
    assert_eq!(row(&out, "1"), ["1", "1", "3", "25.0%", "0", "3", "4.50", "0.0", "25.0%", "25.0%"]);
    assert_eq!(row(&out, "total"), ["total", "4", "4", "50.0%", "1", "5", "7.50", "12.5", "50.0%", "50.0%"]);

    // Without prefetch there is nothing to be precise about: "-", not 0%.
    let p = write(&t, "plain.json", &trace("lfu", 0, 2, vec![stats(1, 2)], None));
    let (out, _) = ok(kiln(&["offload-report", s(&p), "--markdown"]));
    assert!(out.contains("| policy | lfu |"), "{out}");
    assert!(!out.contains("tok/s"), "no speed was measured: {out}");
    assert!(out.contains("| total | 1 | 2 | 33.3% | 0 | 2 | 2.00 | 0.0 | - | - |"), "{out}");
}

#[test]
fn several_traces_are_summarized_sorted_by_policy_prefetch_and_cache() {
    let t = TempDir::new("offload-report-sweep");
    let files = [
        write(&t, "a.json", &trace("router-ema", 2, 3, vec![stats(6, 2), stats(6, 2)], Some(9.0))),
        write(&t, "b.json", &trace("lru", 0, 4, vec![stats(5, 3), stats(5, 3)], Some(7.5))),
        write(&t, "c.json", &trace("lfu", 0, 2, vec![stats(2, 6), stats(2, 6)], Some(5.0))),
        write(&t, "d.json", &trace("lru", 0, 2, vec![stats(1, 7), stats(1, 7)], Some(4.0))),
        write(&t, "e.json", &trace("none", 0, 2, vec![stats(0, 8), stats(0, 8)], Some(2.0))),
    ];
    let mut args = vec!["offload-report"];
    args.extend(files.iter().map(|f| s(f)));
    let (out, _) = ok(kiln(&args));
    assert!(out.starts_with("artifact: moe.kiln\n"), "{out}");
    let rows: Vec<&str> = out.lines().skip(4).collect();
    let order: Vec<&str> = rows.iter().map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(order, ["none", "lru", "lru", "lfu", "router-ema"], "{out}");
    // 16 uses ÷ (top-2 × 2 layers) = 4 tokens; 6 MB loaded → 1.50 MB/token.
    assert_eq!(row(&out, "router-ema"), ["router-ema", "2", "3/8", "75.0%", "-", "-", "9.0", "1.00", "a.json"]);
    assert_eq!(
        rows[1].split_whitespace().collect::<Vec<_>>(),
        ["lru", "0", "2/8", "12.5%", "-", "-", "4.0", "3.50", "d.json"]
    );

    args.push("--markdown");
    let (md, _) = ok(kiln(&args));
    assert!(md.contains("| policy | prefetch | cache/layer | hit rate | recall | precision | decode tok/s | MB/token | trace |\n|---|--:|--:|--:|--:|--:|--:|--:|---|\n"), "{md}");
    assert!(md.contains("| lru | 0 | 4/8 | 62.5% | - | - | 7.5 | 1.50 | b.json |"), "{md}");

    args.pop();
    args.push("--json");
    let (json, _) = ok(kiln(&args));
    let v: Value = serde_json::from_str(&json).unwrap();
    let traces = v["traces"].as_array().unwrap();
    let policies: Vec<&str> = traces.iter().map(|t| t["policy"].as_str().unwrap()).collect();
    assert_eq!(policies, ["none", "lru", "lru", "lfu", "router-ema"]);
    assert_eq!(traces[2]["decode"]["hit_rate"], 0.625);
    assert_eq!(traces[2]["decode_tokens"], 4);
    assert_eq!(traces[2]["layers"].as_array().unwrap().len(), 2);
    assert!(traces[2]["decode"]["prefetch_recall"].is_null());
    assert!(v.get("replay").is_none());
}

#[test]
fn plot_has_a_line_per_series_a_legend_and_the_baselines() {
    let t = TempDir::new("offload-report-plot");
    let mut files = Vec::new();
    let mut add = |name: &str, policy: &str, prefetch: usize, k: usize, hits: u64, tok: f64| {
        let mut tr = trace(policy, prefetch, k, vec![stats(hits, 8 - hits)], Some(tok));
        tr.artifact = "moe <v2> & co".into();
        files.push(write(&t, name, &tr));
    };
    add("lru2.json", "lru", 0, 2, 2, 3.0);
    add("lru4.json", "lru", 0, 4, 5, 5.0);
    add("lru8.json", "lru", 0, 8, 8, 9.0);
    add("lfu4.json", "lfu", 0, 4, 6, 5.5);
    add("ema3.json", "router-ema", 2, 3, 5, 4.5);
    add("none.json", "none", 0, 2, 0, 1.0);
    let svg = t.join("out.svg");
    let mut args = vec!["offload-report", "--plot", s(&svg)];
    args.extend(files.iter().map(|f| s(f)));
    ok(kiln(&args));
    let a = std::fs::read_to_string(&svg).unwrap();
    assert!(a.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{a}");
    assert!(a.trim_end().ends_with("</svg>"));
    // Three series (lru, lfu, router-ema with prefetch), each in both panels; `none` is a baseline.
    assert_eq!(a.matches("<polyline").count(), 6, "{a}");
    for label in ["lru, prefetch 0", "lfu, prefetch 0", "router-ema, prefetch 2", "naive: on demand", "all resident"] {
        assert!(a.contains(&format!(">{label}</text>")), "legend lacks {label}");
    }
    assert!(a.contains("naive: on demand (1.0 tok/s)") && a.contains("all resident (9.0 tok/s)"), "{a}");
    assert!(a.contains("decode hit rate vs experts cached per layer"));
    assert!(a.contains("decode tok/s vs experts cached per layer"));
    assert!(a.contains("moe &lt;v2&gt; &amp; co") && !a.contains("<v2>"), "title not escaped");
    // Same input, same bytes.
    ok(kiln(&args));
    assert_eq!(std::fs::read_to_string(&svg).unwrap(), a);
}

/// One MoE layer, 4 experts, top-1: a prefill choosing {0, 1}, then decode tokens choosing
/// 0 0 2 1 3 0 1.
fn routed_trace(policy: &str, cache: usize, hits: u64, misses: u64) -> Trace {
    let ev = |call: u64, tokens: usize, chosen: Vec<usize>| TraceEvent {
        call,
        tokens,
        layer: 0,
        missed: vec![],
        guessed: vec![],
        scores: vec![0.25; 4],
        chosen,
    };
    let mut events = vec![ev(0, 5, vec![0, 1])];
    for (i, e) in [0, 0, 2, 1, 3, 0, 1].into_iter().enumerate() {
        events.push(ev(i as u64 + 1, 1, vec![e]));
    }
    Trace {
        experts: 4,
        top_k: 1,
        events,
        ..trace(policy, 0, cache, vec![LayerStats { hits, misses, ..Default::default() }], None)
    }
}

#[test]
fn replay_counts_lru_and_lfu_hits_by_hand() {
    // By hand, with the cache starting empty and the prefill loading 0 and 1:
    // - 1 slot: the prefill keeps 1 (0 ran first); 0 m, 0 h, then every token misses: 1 hit.
    // - 2 slots, LRU: 0 h 0 h, 2 m (evicts 1), 1 m (evicts 0), 3 m (evicts 2), 0 m (evicts 1),
    //   1 m (evicts 3): 2 hits. LFU: 0 h 0 h, 2 m (evicts 1: once vs 3 times), 1 m (evicts 2),
    //   3 m (evicts 1: twice vs 0's 3), 0 h, 1 m (evicts 3): 3 hits.
    // - 3 slots, LRU: 0 h 0 h, 2 m (free slot), 1 h, 3 m (evicts 0), 0 m (evicts 2), 1 h: 4 hits.
    //   LFU: ... 3 m evicts 2 (used once), then 0 h and 1 h: 5 hits.
    // - 4 slots: only the first uses of 2 and 3 miss: 5 hits.
    let t = TempDir::new("offload-report-replay");
    let p = write(&t, "lfu3.json", &routed_trace("lfu", 3, 5, 2));
    let (out, _) = ok(kiln(&["offload-report", s(&p), "--replay"]));
    assert!(out.contains("replay: decode hits at every cache size (7 tokens, 7 expert uses;"), "{out}");
    assert_eq!(row(&out, "1/4")[..5], ["1/4", "1", "14.3%", "1", "14.3%"], "{out}");
    assert_eq!(row(&out, "2/4")[..5], ["2/4", "2", "28.6%", "3", "42.9%"], "{out}");
    assert_eq!(row(&out, "3/4")[..5], ["3/4", "4", "57.1%", "5", "71.4%"], "{out}");
    assert_eq!(row(&out, "4/4")[..5], ["4/4", "5", "71.4%", "5", "71.4%"], "{out}");
    assert!(out.contains("runtime lfu at 3/layer: 5 hits, 2 misses: matches the replay"), "{out}");

    let (json, _) = ok(kiln(&["offload-report", s(&p), "--replay", "--json"]));
    let v: Value = serde_json::from_str(&json).unwrap();
    let rows = v["replay"]["rows"].as_array().unwrap();
    let lru: Vec<u64> = rows.iter().map(|r| r["lru"]["hits"].as_u64().unwrap()).collect();
    let lfu: Vec<u64> = rows.iter().map(|r| r["lfu"]["hits"].as_u64().unwrap()).collect();
    assert_eq!((lru, lfu), (vec![1, 2, 4, 5], vec![1, 3, 5, 5]));
    assert_eq!(rows[1]["lru"]["misses"], 5);

    // Counters that disagree with the replay are called out.
    let p = write(&t, "lru2.json", &routed_trace("lru", 2, 3, 4));
    let (out, _) = ok(kiln(&["offload-report", s(&p), "--replay"]));
    assert!(
        out.contains("runtime lru at 2/layer: 3 hits, 4 misses: differs from the replay (2 hits, 5 misses)"),
        "{out}"
    );
}

#[test]
fn bad_input_names_the_file() {
    let t = TempDir::new("offload-report-bad");
    let bench = t.join("bench.json");
    std::fs::write(&bench, r#"{"artifact": "a.kiln", "decode_tok_per_s": 3.0}"#).unwrap();
    fails_with(kiln(&["offload-report", s(&bench)]), &["bench.json", "not a Kiln offload trace"]);
    let other = t.join("other.json");
    std::fs::write(&other, r#"{"format": "something-else"}"#).unwrap();
    fails_with(kiln(&["offload-report", s(&other)]), &["other.json", "something-else", TRACE_FORMAT]);
    let broken = t.join("broken.json");
    std::fs::write(&broken, format!(r#"{{"format": "{TRACE_FORMAT}", "policy": "lru"}}"#)).unwrap();
    fails_with(kiln(&["offload-report", s(&broken)]), &["broken.json", "malformed offload trace"]);
    let text = t.join("text.json");
    std::fs::write(&text, "not json").unwrap();
    fails_with(kiln(&["offload-report", s(&text)]), &["text.json", "not JSON"]);
    let missing = t.join("missing.json");
    fails_with(kiln(&["offload-report", s(&missing)]), &["missing.json"]);

    let good = write(&t, "good.json", &trace("lru", 0, 2, vec![stats(1, 1)], None));
    fails_with(kiln(&["offload-report", s(&good), s(&good), "--replay"]), &["--replay takes one trace (got 2)"]);
    // A trace without routing events has nothing to replay.
    fails_with(kiln(&["offload-report", s(&good), "--replay"]), &["good.json", "no decode events"]);
    let mut bad = routed_trace("lru", 2, 0, 0);
    bad.events[3].chosen = vec![7];
    let bad = write(&t, "outofrange.json", &bad);
    fails_with(kiln(&["offload-report", s(&bad), "--replay"]), &["outofrange.json", "expert 7"]);
    let plot = t.join("no/such/dir/p.svg");
    fails_with(kiln(&["offload-report", s(&good), "--plot", s(&plot)]), &["writing the plot", "p.svg"]);
}
