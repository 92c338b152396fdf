//! `kiln offload-report TRACE.json...`: what an offloaded run's expert cache did, from the trace
//! files `kiln run/bench --trace` write. One trace: its settings and per-layer decode counters.
//! Several: one summary row each (a cache-size/policy sweep, as bench/offload.sh runs). Optionally
//! an SVG plot of the sweep and an offline replay of LRU/LFU over the recorded routing.

mod replay;
mod svg;
mod table;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_runtime::offload::{LayerStats, PolicyKind, Trace, TRACE_FORMAT};
use serde::Serialize;
use std::path::{Path, PathBuf};
use table::Table;

#[derive(Args)]
pub struct OffloadReportArgs {
    /// Trace files (`kiln run/bench --expert-cache K --trace FILE.json`).
    #[arg(required = true, value_name = "TRACE.json")]
    pub traces: Vec<PathBuf>,
    /// Also write an SVG plot: decode hit rate and tok/s against the experts cached per layer.
    #[arg(long, value_name = "OUT.svg")]
    pub plot: Option<PathBuf>,
    /// Print the computed summary as JSON instead of tables.
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,
    /// Print the tables as Markdown (for docs).
    #[arg(long)]
    pub markdown: bool,
    /// Re-simulate LRU and LFU (and router-EMA) at every cache size on the one trace's recorded
    /// routing.
    #[arg(long)]
    pub replay: bool,
}

/// Counters of one layer (or the total), as reported.
#[derive(Serialize)]
struct LayerRow {
    hits: u64,
    misses: u64,
    hit_rate: f64,
    prefetch_hits: u64,
    loads: u64,
    mb_loaded: f64,
    stall_ms: f64,
    /// None without guesses (no prefetch).
    prefetch_precision: Option<f64>,
    prefetch_recall: Option<f64>,
}

impl LayerRow {
    fn new(s: &LayerStats) -> LayerRow {
        LayerRow {
            hits: s.hits,
            misses: s.misses,
            hit_rate: s.hit_rate(),
            prefetch_hits: s.prefetch_hits,
            loads: s.loads,
            mb_loaded: s.bytes_loaded as f64 / 1e6,
            stall_ms: s.stall_secs * 1e3,
            prefetch_precision: (s.guessed > 0).then(|| s.prefetch_precision()),
            prefetch_recall: (s.chosen_with_guess > 0).then(|| s.prefetch_recall()),
        }
    }
}

/// One trace's settings and decode results.
#[derive(Serialize)]
struct TraceSummary {
    file: String,
    artifact: String,
    policy: String,
    prefetch: usize,
    cache_experts: usize,
    experts: usize,
    top_k: usize,
    moe_layers: usize,
    budget_bytes: u64,
    io: String,
    expert_bytes: u64,
    peak_fast_bytes: u64,
    decode_tok_s: Option<f64>,
    prefill_tok_s: Option<f64>,
    /// Decode tokens (one-token calls) the counters cover.
    decode_tokens: u64,
    mb_loaded_per_token: Option<f64>,
    decode: LayerRow,
    layers: Vec<LayerRow>,
}

#[derive(Serialize)]
struct Report<'a> {
    traces: &'a [TraceSummary],
    #[serde(skip_serializing_if = "Option::is_none")]
    replay: Option<&'a replay::Replay>,
}

/// Reads and checks one trace file; every error names it.
fn load(path: &Path) -> Result<Trace> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading trace {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(f) if f == TRACE_FORMAT => {}
        Some(f) => bail!("{} is not a Kiln offload trace (format {f:?}, expected {TRACE_FORMAT:?})", path.display()),
        None => bail!(
            "{} is not a Kiln offload trace (no \"format\": {TRACE_FORMAT:?}; write one with --trace)",
            path.display()
        ),
    }
    let t: Trace =
        serde_json::from_value(value).with_context(|| format!("{}: malformed offload trace", path.display()))?;
    if t.decode.len() != t.moe_layers && !t.decode.is_empty() {
        bail!("{}: {} MoE layers but decode counters for {}", path.display(), t.moe_layers, t.decode.len());
    }
    Ok(t)
}

fn summarize(path: &Path, t: &Trace) -> TraceSummary {
    let total = t.decode_total();
    // Traces that predate `decode_calls` say it only through the uses: top_k per layer and token.
    let per_token = (t.top_k * t.decode.len()) as u64;
    let decode_tokens = match t.decode_calls {
        0 if per_token > 0 => total.uses() / per_token,
        n => n,
    };
    TraceSummary {
        file: path.display().to_string(),
        artifact: t.artifact.clone(),
        policy: t.policy.clone(),
        prefetch: t.prefetch,
        cache_experts: t.cache_experts,
        experts: t.experts,
        top_k: t.top_k,
        moe_layers: t.moe_layers,
        budget_bytes: t.budget_bytes,
        io: t.io.clone(),
        expert_bytes: t.expert_bytes,
        peak_fast_bytes: t.peak_fast_bytes,
        decode_tok_s: t.decode_tok_s,
        prefill_tok_s: t.prefill_tok_s,
        decode_tokens,
        mb_loaded_per_token: (decode_tokens > 0).then(|| total.bytes_loaded as f64 / 1e6 / decode_tokens as f64),
        decode: LayerRow::new(&total),
        layers: t.decode.iter().map(LayerRow::new).collect(),
    }
}

/// Sort key: policy in [`PolicyKind::ALL`] order (unknown names last, by name), then prefetch,
/// then cache size; the file name keeps the order total.
fn order(s: &TraceSummary) -> (usize, String, usize, usize, String) {
    let rank = s.policy.parse::<PolicyKind>().ok().and_then(|p| PolicyKind::ALL.iter().position(|&q| q == p));
    (rank.unwrap_or(usize::MAX), s.policy.clone(), s.prefetch, s.cache_experts, s.file.clone())
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

fn opt_pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), pct)
}

fn opt_num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

fn layer_cells(name: String, r: &LayerRow) -> Vec<String> {
    vec![
        name,
        r.hits.to_string(),
        r.misses.to_string(),
        pct(r.hit_rate),
        r.prefetch_hits.to_string(),
        r.loads.to_string(),
        format!("{:.2}", r.mb_loaded),
        format!("{:.1}", r.stall_ms),
        opt_pct(r.prefetch_precision),
        opt_pct(r.prefetch_recall),
    ]
}

/// Settings and the per-layer decode table of one trace.
fn single(s: &TraceSummary, markdown: bool) -> String {
    let settings: Vec<(&str, String)> = [
        ("trace", Some(s.file.clone())),
        ("artifact", Some(s.artifact.clone())),
        ("policy", Some(s.policy.clone())),
        (
            "cache",
            Some(format!(
                "{} of {} experts per layer (top-{}, {} MoE layers)",
                s.cache_experts, s.experts, s.top_k, s.moe_layers
            )),
        ),
        ("prefetch", Some(s.prefetch.to_string())),
        ("budget", Some(mb(s.budget_bytes))),
        ("io", Some(s.io.clone())),
        ("expert size", Some(mb(s.expert_bytes))),
        ("peak fast tier", Some(mb(s.peak_fast_bytes))),
        ("decode", s.decode_tok_s.map(|v| format!("{v:.1} tok/s"))),
        ("prefill", s.prefill_tok_s.map(|v| format!("{v:.1} tok/s"))),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    let mut out = String::new();
    if markdown {
        let mut t = Table::new(&["setting", "value"]);
        for (k, v) in settings {
            t.row(vec![k.to_string(), v]);
        }
        out += &t.render(true);
    } else {
        for (k, v) in settings {
            out += &format!("{:<15} {v}\n", format!("{k}:"));
        }
    }
    out += &format!("\ndecode, per MoE layer ({} tokens):\n", s.decode_tokens);
    if markdown {
        out += "\n";
    }
    let mut t = Table::new(&[
        "layer",
        "hits",
        "misses",
        "hit rate",
        "prefetch hits",
        "loads",
        "MB loaded",
        "stall ms",
        "precision",
        "recall",
    ]);
    for (i, r) in s.layers.iter().enumerate() {
        t.row(layer_cells(i.to_string(), r));
    }
    t.rule();
    t.row(layer_cells("total".to_string(), &s.decode));
    out += &t.render(markdown);
    out
}

/// One row per trace (already sorted).
fn summary(all: &[TraceSummary], markdown: bool) -> String {
    let mixed = all.iter().any(|s| s.artifact != all[0].artifact);
    let mut header =
        vec!["policy", "prefetch", "cache/layer", "hit rate", "recall", "precision", "decode tok/s", "MB/token"];
    if mixed {
        header.push("artifact");
    }
    header.push("trace");
    let mut t = Table::new(&header);
    for col in header.len() - if mixed { 2 } else { 1 }..header.len() {
        t.left(col);
    }
    for s in all {
        let mut row = vec![
            s.policy.clone(),
            s.prefetch.to_string(),
            format!("{}/{}", s.cache_experts, s.experts),
            pct(s.decode.hit_rate),
            opt_pct(s.decode.prefetch_recall),
            opt_pct(s.decode.prefetch_precision),
            opt_num(s.decode_tok_s, 1),
            opt_num(s.mb_loaded_per_token, 2),
        ];
        if mixed {
            row.push(s.artifact.clone());
        }
        row.push(Path::new(&s.file).file_name().map_or(s.file.clone(), |f| f.to_string_lossy().into_owned()));
        t.row(row);
    }
    let mut out = String::new();
    if !mixed {
        out += &format!("artifact: {}\n\n", all[0].artifact);
    }
    out + &t.render(markdown)
}

/// The replay table, and how the runtime's own counters compare at its cache size.
fn replay_text(s: &TraceSummary, r: &replay::Replay, markdown: bool) -> String {
    let ema = r.rows.iter().all(|row| row.router_ema.is_some());
    let mut header = vec!["cache/layer", "LRU hits", "LRU hit rate", "LFU hits", "LFU hit rate"];
    if ema {
        header.extend(["router-ema hits", "router-ema hit rate"]);
    }
    let mut t = Table::new(&header);
    for row in &r.rows {
        let mut cells = vec![
            format!("{}/{}", row.cache_experts, s.experts),
            row.lru.hits.to_string(),
            pct(row.lru.hit_rate()),
            row.lfu.hits.to_string(),
            pct(row.lfu.hit_rate()),
        ];
        if let Some(e) = row.router_ema.filter(|_| ema) {
            cells.extend([e.hits.to_string(), pct(e.hit_rate())]);
        }
        t.row(cells);
    }
    let uses = r.rows.first().map_or(0, |row| row.lru.hits + row.lru.misses);
    let mut out = format!(
        "\nreplay: decode hits at every cache size ({} tokens, {uses} expert uses; prefill fills the cache, \
         only decode counts):\n",
        r.decode_tokens
    );
    if markdown {
        out += "\n";
    }
    out += &t.render(markdown);
    // Without prefetch the runtime's cache follows the same rules, so its counters must agree.
    let replayed = r.rows.iter().find(|row| row.cache_experts == s.cache_experts).and_then(|row| {
        match s.policy.parse::<PolicyKind>().ok()? {
            PolicyKind::Lru => Some(row.lru),
            PolicyKind::Lfu => Some(row.lfu),
            PolicyKind::RouterEma => row.router_ema,
            PolicyKind::None => None,
        }
    });
    if let (Some(rep), 0) = (replayed, s.prefetch) {
        let same = rep.hits == s.decode.hits && rep.misses == s.decode.misses;
        let verdict = if same {
            "matches the replay".to_string()
        } else {
            format!("differs from the replay ({} hits, {} misses)", rep.hits, rep.misses)
        };
        out += &format!(
            "\nruntime {} at {}/layer: {} hits, {} misses: {verdict}\n",
            s.policy, s.cache_experts, s.decode.hits, s.decode.misses
        );
        // The known, benign causes of a difference.
        if !same {
            out += "(the replay starts from an empty cache and sees only the recorded routing: a trace \
                    written by an older kiln, or a run with prefetch, differs)\n";
        }
    }
    out
}

fn plot(all: &[TraceSummary], out: &Path) -> Result<()> {
    let points: Vec<svg::Point> = all
        .iter()
        .map(|s| svg::Point {
            policy: s.policy.clone(),
            prefetch: s.prefetch,
            cache_experts: s.cache_experts,
            experts: s.experts,
            hit_rate: s.decode.hit_rate,
            tok_s: s.decode_tok_s,
        })
        .collect();
    let title = if all.iter().all(|s| s.artifact == all[0].artifact) {
        format!("MoE expert offloading: {}", all[0].artifact)
    } else {
        "MoE expert offloading".to_string()
    };
    std::fs::write(out, svg::plot(&title, &points)).with_context(|| format!("writing the plot {}", out.display()))
}

pub fn run(args: OffloadReportArgs) -> Result<()> {
    if args.replay && args.traces.len() != 1 {
        bail!("--replay takes one trace (got {})", args.traces.len());
    }
    let mut traces = Vec::new();
    for p in &args.traces {
        traces.push((p, load(p)?));
    }
    let replayed = match (args.replay, traces.first()) {
        (true, Some((p, t))) => Some(replay::replay(t).with_context(|| format!("replaying {}", p.display()))?),
        _ => None,
    };
    let mut all: Vec<TraceSummary> = traces.iter().map(|(p, t)| summarize(p, t)).collect();
    all.sort_by_cached_key(order);
    if let Some(out) = &args.plot {
        plot(&all, out)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&Report { traces: &all, replay: replayed.as_ref() })?);
        return Ok(());
    }
    let mut out = if all.len() == 1 { single(&all[0], args.markdown) } else { summary(&all, args.markdown) };
    if let Some(r) = &replayed {
        out += &replay_text(&all[0], r, args.markdown);
    }
    print!("{out}");
    Ok(())
}
