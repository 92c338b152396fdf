//! `kiln offload-report --plot OUT.svg`: decode hit rate (left) and decode speed (right) against
//! the experts cached per layer, one line per (policy, prefetch), with the naive and all-resident
//! baselines as dashed lines on the speed panel.
//!
//! Written by hand as plain SVG text (no plotting dependency); the output depends only on the
//! input, so a rerun on the same traces gives the same file.

use std::fmt::Write;

/// One trace, as the plot needs it.
pub struct Point {
    pub policy: String,
    pub prefetch: usize,
    pub cache_experts: usize,
    pub experts: usize,
    pub hit_rate: f64,
    pub tok_s: Option<f64>,
}

const WIDTH: f64 = 1120.0;
const PANEL_W: f64 = 360.0;
const PANEL_H: f64 = 300.0;
const TOP: f64 = 70.0;
/// Left edges of the two plot areas, and of the legend.
const LEFT: [f64; 2] = [80.0, 540.0];
const LEGEND_X: f64 = 940.0;
const COLORS: [&str; 8] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/// Escapes text for element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A round tick step (1, 2 or 5 × 10ⁿ) giving about `n` intervals over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    mag * if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    }
}

fn decimals(step: f64) -> usize {
    if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    }
}

/// A series: (policy, prefetch) and its points, sorted by cache size.
struct Series<'a> {
    policy: &'a str,
    prefetch: usize,
    points: Vec<&'a Point>,
}

/// Maps data to one panel's pixels.
struct Axes {
    left: f64,
    x0: f64,
    x1: f64,
    /// The y range shown (the hit-rate panel starts above 0 so policies a few points apart stay
    /// apart).
    y0: f64,
    y1: f64,
}

impl Axes {
    fn x(&self, v: f64) -> f64 {
        self.left + (v - self.x0) / (self.x1 - self.x0) * PANEL_W
    }
    fn y(&self, v: f64) -> f64 {
        TOP + PANEL_H - (v - self.y0) / (self.y1 - self.y0) * PANEL_H
    }
}

/// Frame, grid, ticks and labels of one panel. `y_label` formats a y tick.
fn axes(out: &mut String, a: &Axes, title: &str, y_title: &str, y_step: f64, y_label: &dyn Fn(f64) -> String) {
    let (l, r, t, b) = (a.left, a.left + PANEL_W, TOP, TOP + PANEL_H);
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="14">{}</text>"#,
        l + PANEL_W / 2.0,
        t - 12.0,
        escape(title)
    );
    // Y ticks and horizontal grid lines.
    let n = ((a.y1 - a.y0) / y_step).round() as usize;
    for i in 0..=n {
        let v = a.y0 + i as f64 * y_step;
        let y = a.y(v);
        let _ = writeln!(out, r##"<line x1="{l:.1}" y1="{y:.1}" x2="{r:.1}" y2="{y:.1}" stroke="#e0e0e0"/>"##);
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            l - 6.0,
            y + 4.0,
            escape(&y_label(v))
        );
    }
    // X ticks: whole numbers of experts.
    let x_step = nice_step(a.x1 - a.x0, 8.0).max(1.0).round();
    let mut v = (a.x0 / x_step).ceil() * x_step;
    while v <= a.x1 + 1e-9 {
        let x = a.x(v);
        let _ = writeln!(out, r##"<line x1="{x:.1}" y1="{b:.1}" x2="{x:.1}" y2="{:.1}" stroke="#333"/>"##, b + 5.0);
        let _ = writeln!(out, r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{v:.0}</text>"#, b + 19.0);
        v += x_step;
    }
    let _ = writeln!(
        out,
        r##"<rect x="{l:.1}" y="{t:.1}" width="{PANEL_W:.1}" height="{PANEL_H:.1}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">experts cached per layer</text>"#,
        l + PANEL_W / 2.0,
        b + 40.0
    );
    let (yx, yy) = (l - 52.0, t + PANEL_H / 2.0);
    let _ = writeln!(
        out,
        r#"<text x="{yx:.1}" y="{yy:.1}" text-anchor="middle" transform="rotate(-90 {yx:.1} {yy:.1})">{}</text>"#,
        escape(y_title)
    );
}

/// One series' line and markers (circles without prefetch, squares with).
fn series(out: &mut String, a: &Axes, s: &Series, color: &str, value: &dyn Fn(&Point) -> Option<f64>) {
    let pts: Vec<(f64, f64)> =
        s.points.iter().filter_map(|p| value(p).map(|v| (a.x(p.cache_experts as f64), a.y(v)))).collect();
    if pts.is_empty() {
        return;
    }
    let coords: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = writeln!(
        out,
        r#"<polyline class="series" points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
        coords.join(" ")
    );
    for (x, y) in pts {
        marker(out, x, y, s.prefetch, color);
    }
}

/// A point: a circle without prefetch, a square with.
fn marker(out: &mut String, x: f64, y: f64, prefetch: usize, color: &str) {
    if prefetch == 0 {
        let _ = writeln!(out, r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{color}"/>"#);
    } else {
        let _ = writeln!(out, r#"<rect x="{:.1}" y="{:.1}" width="7" height="7" fill="{color}"/>"#, x - 3.5, y - 3.5);
    }
}

fn series_name(s: &Series) -> String {
    format!("{}, prefetch {}", s.policy, s.prefetch)
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The SVG document. `points` come sorted (policy, prefetch, cache size); traces of policy
/// `none` are the naive baseline and are drawn only as a reference line.
pub fn plot(title: &str, points: &[Point]) -> String {
    let mut all: Vec<Series> = Vec::new();
    for p in points.iter().filter(|p| p.policy != "none") {
        match all.iter_mut().find(|s| s.policy == p.policy && s.prefetch == p.prefetch) {
            Some(s) => s.points.push(p),
            None => all.push(Series { policy: &p.policy, prefetch: p.prefetch, points: vec![p] }),
        }
    }
    for s in &mut all {
        s.points.sort_by_key(|p| p.cache_experts);
    }
    // Baselines (mean speed when several traces qualify).
    let naive: Vec<f64> = points.iter().filter(|p| p.policy == "none").filter_map(|p| p.tok_s).collect();
    let resident: Vec<f64> =
        points.iter().filter(|p| p.policy != "none" && p.cache_experts >= p.experts).filter_map(|p| p.tok_s).collect();
    let baselines: Vec<(&str, f64)> = [("naive: on demand", mean(&naive)), ("all resident", mean(&resident))]
        .into_iter()
        .filter_map(|(l, v)| v.map(|v| (l, v)))
        .collect();

    let xs = points.iter().map(|p| p.cache_experts as f64);
    let (mut x0, mut x1) = (xs.clone().fold(f64::INFINITY, f64::min), xs.fold(f64::NEG_INFINITY, f64::max));
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 - x0 < 1.0 {
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    }
    let max_tok = all
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.tok_s))
        .chain(baselines.iter().map(|b| b.1))
        .fold(0.0f64, f64::max);
    let tok_step = if max_tok > 0.0 { nice_step(max_tok * 1.05, 5.0) } else { 0.2 };
    let tok_top = if max_tok > 0.0 { (max_tok * 1.05 / tok_step).ceil() * tok_step } else { 1.0 };

    let entries = all.len() + baselines.len();
    let height = (TOP + PANEL_H + 60.0).max(TOP + 20.0 * entries as f64 + 20.0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0}" height="{height:.0}" viewBox="0 0 {WIDTH:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="26" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );

    // The lowest hit rate plotted, rounded down to a tenth.
    let min_hit = all.iter().flat_map(|s| s.points.iter().map(|p| p.hit_rate)).fold(1.0f64, f64::min);
    let hit_y0 = ((min_hit * 10.0).floor() / 10.0).clamp(0.0, 0.9);
    let hit_step = if 1.0 - hit_y0 <= 0.5 { 0.05 } else { 0.1 };
    let hit = Axes { left: LEFT[0], x0, x1, y0: hit_y0, y1: 1.0 };
    axes(&mut out, &hit, "decode hit rate vs experts cached per layer", "decode hit rate", hit_step, &|v| {
        format!("{:.0}%", v * 100.0)
    });
    let tok = Axes { left: LEFT[1], x0, x1, y0: 0.0, y1: tok_top };
    let d = decimals(tok_step);
    axes(&mut out, &tok, "decode tok/s vs experts cached per layer", "decode tok/s", tok_step, &|v| format!("{v:.d$}"));
    if max_tok <= 0.0 {
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#666">no decode tok/s in these traces</text>"##,
            LEFT[1] + PANEL_W / 2.0,
            TOP + PANEL_H / 2.0
        );
    }
    for (label, v) in &baselines {
        let y = tok.y(*v);
        let (l, r) = (LEFT[1], LEFT[1] + PANEL_W);
        let _ = writeln!(
            out,
            r##"<line class="baseline" x1="{l:.1}" y1="{y:.1}" x2="{r:.1}" y2="{y:.1}" stroke="#555" stroke-width="1.5" stroke-dasharray="6 4"/>"##
        );
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{} ({v:.1} tok/s)</text>"##,
            r - 4.0,
            y - 4.0,
            escape(label)
        );
    }
    for (i, s) in all.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        series(&mut out, &hit, s, color, &|p| Some(p.hit_rate));
        series(&mut out, &tok, s, color, &|p| p.tok_s);
    }

    // Legend: the series, then the baselines.
    let mut y = TOP + 6.0;
    for (i, s) in all.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let _ = writeln!(
            out,
            r#"<line x1="{LEGEND_X:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="2"/>"#,
            LEGEND_X + 24.0
        );
        marker(&mut out, LEGEND_X + 12.0, y, s.prefetch, color);
        let _ = writeln!(
            out,
            r#"<text class="legend" x="{:.1}" y="{:.1}">{}</text>"#,
            LEGEND_X + 30.0,
            y + 4.0,
            escape(&series_name(s))
        );
        y += 20.0;
    }
    for (label, _) in &baselines {
        let _ = writeln!(
            out,
            r##"<line x1="{LEGEND_X:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#555" stroke-width="1.5" stroke-dasharray="6 4"/>"##,
            LEGEND_X + 24.0
        );
        let _ = writeln!(
            out,
            r#"<text class="legend" x="{:.1}" y="{:.1}">{}</text>"#,
            LEGEND_X + 30.0,
            y + 4.0,
            escape(label)
        );
        y += 20.0;
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(policy: &str, prefetch: usize, k: usize, hit: f64, tok: Option<f64>) -> Point {
        Point { policy: policy.into(), prefetch, cache_experts: k, experts: 8, hit_rate: hit, tok_s: tok }
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(escape(r#"a<b & "c" 'd'>"#), "a&lt;b &amp; &quot;c&quot; &#39;d&#39;&gt;");
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(10.0, 5.0), 2.0);
        assert_eq!(nice_step(0.9, 5.0), 0.2);
        assert_eq!(nice_step(130.0, 5.0), 50.0);
    }

    #[test]
    fn series_baselines_and_determinism() {
        let pts = vec![
            p("none", 0, 2, 0.0, Some(1.0)),
            p("lru", 0, 2, 0.3, Some(2.0)),
            p("lru", 0, 4, 0.6, Some(3.0)),
            p("lru", 0, 8, 1.0, Some(5.0)),
            p("lru", 2, 4, 0.7, None),
        ];
        let a = plot("t <x>", &pts);
        assert_eq!(a, plot("t <x>", &pts));
        assert!(a.starts_with("<svg") && a.ends_with("</svg>\n"));
        // Two series, each drawn in both panels (the prefetch one has no speed: hit rate only).
        assert_eq!(a.matches(r#"class="series""#).count(), 3);
        assert_eq!(a.matches(r#"class="baseline""#).count(), 2);
        assert!(a.contains("t &lt;x&gt;") && a.contains("naive: on demand") && a.contains("all resident"));
        assert!(a.contains(">lru, prefetch 2</text>"));
    }
}
