//! Fitting Mixture-of-Depths routers (arXiv 2404.02258) to a pretrained model, after the fact: the
//! paper trains its routers with the model; here each chosen block gets a linear probe that predicts,
//! from the residual stream entering the block, how much the block would change that token.
//!
//! - **Features**: `f = x / rms(x)` (the weightless rms_norm of [`ROUTER_NORM_EPS`]), the direction of
//!   the residual stream `x` entering the block; its scale grows with depth and position and says
//!   little about what the block will do.
//! - **Target**: `y = ln(‖out − x‖ / ‖x‖)`, the log of the block's update relative to the stream it
//!   updates. Skipping a block replaces `out` by `x`, so this is the (log) relative error skipping
//!   would make for that token; the log turns the heavy right tail into something a linear probe can
//!   fit, and ranking — all routing needs — is unchanged by it.
//! - **Fit**: ridge regression with an unpenalized bias, by the normal equations in f64 solved by
//!   Cholesky. The last 20% of tokens (in text order, so neighbours of training tokens do not leak
//!   in) are held out to report R², Spearman's ρ and the top-half overlap ([`FitQuality`]); the ridge
//!   strength is chosen by 3-fold cross-validation on the rest; the stored router is refitted on all tokens.
//! - **Random**: seeded Gaussian weights `N(0, 1/hidden)`, bias 0 — the baseline a probe must beat.
//! - Both store the percentiles of their scores on all calibration tokens, for decode thresholds.
//!
//! Calibration runs the unmodified model, so the inputs of a routed layer behind another routed
//! layer differ a little at inference from what its router was fitted on.

use crate::blocks::decoder_blocks;
use crate::routers::{FitQuality, LayerRouter, Method, Routers, QUANTILE_COUNT, ROUTER_NORM_EPS};
use kiln_ir::interp::testing::SplitMix64;
use kiln_ir::interp::Tensor;
use kiln_ir::{Attr, Attrs, Graph, OpKind, Patch};
use std::collections::HashMap;

/// What the routers predict, as stored in the routers file.
pub const TARGET: &str =
    "ln(|block(x) - x| / |x|): the log relative change the block makes to the token's residual stream";

/// Fraction of tokens held out to measure fit quality.
pub const HOLDOUT_FRACTION: f64 = 0.2;

/// Fewest tokens a layer needs: enough that the held-out fifth and each cross-validation fold of the
/// rest hold a few tokens.
pub const MIN_TOKENS: usize = 32;

/// Ridge strengths tried, as multiples of the mean diagonal of the features' Gram matrix (≈ the token
/// count, since features have unit mean square).
const RIDGE_GRID: [f64; 7] = [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0];

/// Contiguous folds of the training tokens the ridge strength is cross-validated on.
const FOLDS: usize = 3;

/// Name of the output [`add_residual_outputs`] adds for the residual stream entering layer `i` (`i`
/// = the layer count: leaving the last layer).
pub fn residual_output_name(i: usize) -> String {
    format!("calibrate.residual.{i}")
}

/// What [`add_residual_outputs`] found: the model's decoder layer count and hidden size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResidualStreams {
    pub layers: usize,
    pub hidden: usize,
}

/// Adds a graph output for each decoder block's input and the last block's output, so one run shows
/// what every block did to the residual stream.
pub fn add_residual_outputs(g: &mut Graph) -> Result<ResidualStreams, String> {
    let blocks = decoder_blocks(g)?;
    let ty = g.ty(blocks[0].input);
    let hidden = match ty.shape.dims() {
        [_, h] => h.as_const().filter(|&h| h > 0).map(|h| h as usize),
        _ => None,
    }
    .ok_or_else(|| format!("the residual stream is {ty}, not [T, hidden] with a constant hidden size"))?;
    let mut patch = Patch::new();
    let streams = blocks.iter().map(|b| b.input).chain(blocks.last().map(|b| b.output));
    for (i, n) in streams.enumerate() {
        let attrs = Attrs::new().with("name", Attr::Str(residual_output_name(i)));
        patch.add_inferred(g, OpKind::Output, attrs, &[n.into()])?;
    }
    g.apply(patch);
    Ok(ResidualStreams { layers: blocks.len(), hidden })
}

/// Adds the tokens of one run of a graph with [`add_residual_outputs`] to `samples` (one per
/// layer).
pub fn push_run(samples: &mut [LayerSamples], outputs: &HashMap<String, Tensor>) -> Result<(), String> {
    let stream = |i: usize| {
        let name = residual_output_name(i);
        outputs
            .get(&name)
            .and_then(|t| t.as_f32())
            .ok_or_else(|| format!("the run has no float output '{name}' (see add_residual_outputs)"))
    };
    for (l, s) in samples.iter_mut().enumerate() {
        s.push(stream(l)?, stream(l + 1)?).map_err(|e| format!("layer {l}: {e}"))?;
    }
    Ok(())
}

/// The router's features for rows of `x` (`[n, hidden]`, row-major): each row divided by its RMS,
/// exactly as the `mod` pass's `rms_norm` computes it.
pub fn normalized_rows(x: &[f32], hidden: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(hidden) {
        let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / hidden as f64;
        let inv = 1.0 / (ms + ROUTER_NORM_EPS).sqrt();
        out.extend(row.iter().map(|&v| (v as f64 * inv) as f32));
    }
    out
}

/// The target for one token: `ln(‖out − x‖ / ‖x‖)`, floored at ln 1e-12 so an untouched or zero row
/// stays finite.
pub fn relative_update(x: &[f32], out: &[f32]) -> f64 {
    let dx: f64 = x.iter().zip(out).map(|(&a, &b)| (b as f64 - a as f64).powi(2)).sum::<f64>().sqrt();
    let nx: f64 = x.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
    (dx / nx.max(1e-30)).max(1e-12).ln()
}

/// One layer's calibration tokens: features `[n, hidden]` and targets `[n]`, in text order.
#[derive(Clone, Debug, Default)]
pub struct LayerSamples {
    pub hidden: usize,
    pub features: Vec<f32>,
    pub targets: Vec<f64>,
}

impl LayerSamples {
    pub fn new(hidden: usize) -> LayerSamples {
        LayerSamples { hidden, features: Vec::new(), targets: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Adds the tokens of one run: the residual stream entering the block and leaving it, both
    /// `[t, hidden]`.
    pub fn push(&mut self, x: &[f32], out: &[f32]) -> Result<(), String> {
        let h = self.hidden;
        if h == 0 || x.len() != out.len() || !x.len().is_multiple_of(h) {
            return Err(format!(
                "block input ({} values) and output ({} values) are not rows of the hidden size {h}",
                x.len(),
                out.len()
            ));
        }
        self.features.extend(normalized_rows(x, h));
        self.targets.extend(x.chunks_exact(h).zip(out.chunks_exact(h)).map(|(a, b)| relative_update(a, b)));
        Ok(())
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.hidden..(i + 1) * self.hidden]
    }
}

/// A linear router `w · f + b`.
#[derive(Clone, Debug, PartialEq)]
pub struct Ridge {
    pub weight: Vec<f64>,
    pub bias: f64,
}

impl Ridge {
    pub fn predict(&self, f: &[f32]) -> f64 {
        f.iter().zip(&self.weight).map(|(&x, &w)| x as f64 * w).sum::<f64>() + self.bias
    }
}

/// The normal equations of rows `[f, 1]`: `XᵀX` (upper triangle filled, then mirrored on solve) and
/// `Xᵀy`, in f64. Grams of disjoint token ranges add up to the Gram of their union.
#[derive(Clone, Debug)]
struct Gram {
    m: usize,
    xtx: Vec<f64>,
    xty: Vec<f64>,
}

impl Gram {
    fn of(s: &LayerSamples, rows: std::ops::Range<usize>) -> Gram {
        let m = s.hidden + 1;
        let mut g = Gram { m, xtx: vec![0.0; m * m], xty: vec![0.0; m] };
        let mut r = vec![1.0f64; m];
        for i in rows {
            for (d, &v) in r.iter_mut().zip(s.row(i)) {
                *d = v as f64;
            }
            let y = s.targets[i];
            for a in 0..m {
                let ra = r[a];
                g.xty[a] += ra * y;
                let row = &mut g.xtx[a * m..(a + 1) * m];
                for b in a..m {
                    row[b] += ra * r[b];
                }
            }
        }
        g
    }

    fn plus(&self, o: &Gram) -> Gram {
        let add = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x + y).collect();
        Gram { m: self.m, xtx: add(&self.xtx, &o.xtx), xty: add(&self.xty, &o.xty) }
    }

    /// Mean of the feature part of the diagonal: the scale ridge strengths are relative to.
    fn mean_diag(&self) -> f64 {
        let h = self.m - 1;
        (0..h).map(|i| self.xtx[i * self.m + i]).sum::<f64>() / h.max(1) as f64
    }

    /// Solves `(XᵀX + λ·I_features) w = Xᵀy`; the bias is not penalized.
    fn solve(&self, lambda: f64) -> Result<Ridge, String> {
        let m = self.m;
        let mut a = vec![0.0; m * m];
        for i in 0..m {
            for j in i..m {
                a[i * m + j] = self.xtx[i * m + j];
                a[j * m + i] = self.xtx[i * m + j];
            }
            if i + 1 < m {
                a[i * m + i] += lambda;
            }
        }
        let mut w = cholesky_solve(&mut a, &self.xty, m)?;
        let bias = w.pop().unwrap_or(0.0);
        Ok(Ridge { weight: w, bias })
    }
}

/// Solves `A x = b` for a symmetric positive definite `A` (`n × n`, row-major, overwritten by its
/// Cholesky factor).
pub fn cholesky_solve(a: &mut [f64], b: &[f64], n: usize) -> Result<Vec<f64>, String> {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        if !(d > 0.0 && d.is_finite()) {
            return Err(format!("the normal equations are not positive definite (pivot {j} is {d})"));
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
    }
    // L y = b, then Lᵀ x = y.
    let mut x = b.to_vec();
    for i in 0..n {
        for k in 0..i {
            x[i] -= a[i * n + k] * x[k];
        }
        x[i] /= a[i * n + i];
    }
    for i in (0..n).rev() {
        for k in i + 1..n {
            x[i] -= a[k * n + i] * x[k];
        }
        x[i] /= a[i * n + i];
    }
    Ok(x)
}

/// Ridge regression of `targets` on the rows of `s` in `rows`, with strength `alpha` times the mean
/// diagonal of the features' Gram matrix.
pub fn fit_ridge(s: &LayerSamples, rows: std::ops::Range<usize>, alpha: f64) -> Result<Ridge, String> {
    let g = Gram::of(s, rows);
    g.solve(alpha * g.mean_diag())
}

/// `1 − SSE/SST`; 0 when the targets are constant.
pub fn r2(pred: &[f64], y: &[f64]) -> f64 {
    let mean = y.iter().sum::<f64>() / y.len().max(1) as f64;
    let sst: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
    let sse: f64 = pred.iter().zip(y).map(|(p, v)| (p - v).powi(2)).sum();
    if sst > 0.0 {
        1.0 - sse / sst
    } else {
        0.0
    }
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().max(1) as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    if va > 0.0 && vb > 0.0 {
        cov / (va * vb).sqrt()
    } else {
        0.0
    }
}

/// Ranks 0..n with ties given their average rank.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        for &k in &idx[i..=j] {
            r[k] = (i + j) as f64 / 2.0;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    pearson(&ranks(a), &ranks(b))
}

/// Indices of the ⌈fraction·n⌉ largest values (ties → earlier index).
fn top(v: &[f64], fraction: f64) -> Vec<usize> {
    let k = ((fraction * v.len() as f64).ceil() as usize).min(v.len());
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Of the tokens with the top `fraction` of `targets`, the share the top `fraction` of `scores`
/// picks.
pub fn top_overlap(scores: &[f64], targets: &[f64], fraction: f64) -> f64 {
    let want: std::collections::HashSet<usize> = top(targets, fraction).into_iter().collect();
    if want.is_empty() {
        return 0.0;
    }
    top(scores, fraction).iter().filter(|i| want.contains(i)).count() as f64 / want.len() as f64
}

/// Percentiles 0, 1, …, 100 of `scores` (linear between order statistics, as numpy's default).
pub fn quantiles(scores: &[f64]) -> Vec<f32> {
    let mut s: Vec<f64> = scores.to_vec();
    s.sort_by(f64::total_cmp);
    (0..QUANTILE_COUNT)
        .map(|p| {
            if s.is_empty() {
                return 0.0;
            }
            let pos = p as f64 / (QUANTILE_COUNT - 1) as f64 * (s.len() - 1) as f64;
            let (i, frac) = (pos.floor() as usize, pos - pos.floor());
            let hi = s[(i + 1).min(s.len() - 1)];
            (s[i] + frac * (hi - s[i])) as f32
        })
        .collect()
}

/// Standard normal samples (Box–Muller over SplitMix64).
fn gaussian(rng: &mut SplitMix64) -> f64 {
    let u1 = 1.0 - rng.next_f64(); // (0, 1]: ln is finite
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A random router for `layer`: weights `N(0, 1/hidden)` from `seed` (each layer its own stream),
/// bias 0.
pub fn random_router(hidden: usize, seed: u64, layer: usize) -> Ridge {
    let mut rng = SplitMix64::new(seed ^ (layer as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let std = 1.0 / (hidden.max(1) as f64).sqrt();
    Ridge { weight: (0..hidden).map(|_| gaussian(&mut rng) * std).collect(), bias: 0.0 }
}

fn scores(r: &Ridge, s: &LayerSamples, rows: std::ops::Range<usize>) -> Vec<f64> {
    rows.map(|i| r.predict(s.row(i))).collect()
}

/// How many of `n` calibration tokens (the last ones) are held out to measure a router.
pub fn held_out_tokens(n: usize) -> usize {
    ((n as f64 * HOLDOUT_FRACTION).round() as usize).clamp(1, n.max(1))
}

/// The ridge strength with the least squared error over contiguous folds of the training tokens
/// (each fold predicted by a fit on the others).
fn choose_alpha(s: &LayerSamples, folds: &[std::ops::Range<usize>], grams: &[Gram]) -> Result<f64, String> {
    let mut sse = [0.0; RIDGE_GRID.len()];
    for (k, fold) in folds.iter().enumerate() {
        let others = grams.iter().enumerate().filter(|&(j, _)| j != k).map(|(_, g)| g);
        let Some(train) = others.cloned().reduce(|a, g| a.plus(&g)) else { continue };
        for (i, alpha) in RIDGE_GRID.iter().enumerate() {
            let r = train.solve(alpha * train.mean_diag())?;
            sse[i] += fold.clone().map(|t| (r.predict(s.row(t)) - s.targets[t]).powi(2)).sum::<f64>();
        }
    }
    let best = (0..RIDGE_GRID.len()).min_by(|&a, &b| sse[a].total_cmp(&sse[b])).unwrap_or(0);
    Ok(RIDGE_GRID[best])
}

/// Fits (or draws, for [`Method::Random`]) one layer's router and measures it on the held-out tokens.
pub fn fit_layer(s: &LayerSamples, method: Method, seed: u64, layer: usize) -> Result<LayerRouter, String> {
    let n = s.len();
    if n < MIN_TOKENS {
        return Err(format!("{n} calibration tokens are too few to fit and evaluate a router (at least {MIN_TOKENS})"));
    }
    let n_hold = held_out_tokens(n);
    let n_train = n - n_hold;
    let held = n_train..n;
    let (router, r2_held) = match method {
        Method::Random => (random_router(s.hidden, seed, layer), None),
        Method::Probe => {
            let folds: Vec<std::ops::Range<usize>> =
                (0..FOLDS).map(|k| k * n_train / FOLDS..(k + 1) * n_train / FOLDS).collect();
            let grams: Vec<Gram> = folds.iter().map(|r| Gram::of(s, r.clone())).collect();
            let alpha = choose_alpha(s, &folds, &grams)?;
            let g_train = grams[1..].iter().fold(grams[0].clone(), |a, g| a.plus(g));
            let held_fit = g_train.solve(alpha * g_train.mean_diag())?;
            let q = r2(&scores(&held_fit, s, held.clone()), &s.targets[held.clone()]);
            let g_all = g_train.plus(&Gram::of(s, held.clone()));
            (g_all.solve(alpha * g_all.mean_diag())?, Some((held_fit, q)))
        }
    };
    // Held-out quality of the router that never saw those tokens.
    let judged = r2_held.as_ref().map_or(&router, |(r, _)| r);
    let held_scores = scores(judged, s, held.clone());
    let held_y = &s.targets[held];
    let quality = FitQuality {
        r2: r2_held.map(|(_, q)| q),
        spearman: spearman(&held_scores, held_y),
        top_half_overlap: top_overlap(&held_scores, held_y, 0.5),
    };
    Ok(LayerRouter {
        weight: router.weight.iter().map(|&w| w as f32).collect(),
        bias: router.bias as f32,
        quantiles: quantiles(&scores(&router, s, 0..n)),
        quality: Some(quality),
    })
}

/// Routers for every layer from its samples (`samples[l]` for layer l).
pub fn fit_routers(samples: &[LayerSamples], method: Method, seed: u64) -> Result<Routers, String> {
    let hidden = samples.first().map(|s| s.hidden).ok_or("no layers to calibrate")?;
    let mut layers = std::collections::BTreeMap::new();
    for (l, s) in samples.iter().enumerate() {
        layers.insert(l, fit_layer(s, method, seed, l).map_err(|e| format!("layer {l}: {e}"))?);
    }
    Ok(Routers {
        hidden_size: hidden,
        num_layers: samples.len(),
        method,
        target: TARGET.to_string(),
        calibration_tokens: samples[0].len(),
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples whose target is a known linear function of the (normalized) features plus a little
    /// noise.
    fn linear_samples(n: usize, h: usize, noise: f64) -> (LayerSamples, Vec<f64>, f64) {
        let mut rng = SplitMix64::new(11);
        let w: Vec<f64> = (0..h).map(|_| gaussian(&mut rng)).collect();
        let b = 0.7;
        let mut s = LayerSamples::new(h);
        for _ in 0..n {
            let x: Vec<f32> = (0..h).map(|_| gaussian(&mut rng) as f32).collect();
            let f = normalized_rows(&x, h);
            let y = f.iter().zip(&w).map(|(&a, &c)| a as f64 * c).sum::<f64>() + b + noise * gaussian(&mut rng);
            s.features.extend(f);
            s.targets.push(y);
        }
        (s, w, b)
    }

    #[test]
    fn ridge_recovers_a_linear_function() {
        let (s, w, b) = linear_samples(500, 8, 0.0);
        let r = fit_ridge(&s, 0..s.len(), 1e-9).unwrap();
        for (got, want) in r.weight.iter().zip(&w) {
            assert!((got - want).abs() < 1e-4, "{:?} vs {w:?}", r.weight);
        }
        assert!((r.bias - b).abs() < 1e-4);
        // A strong ridge shrinks the weights towards 0.
        let shrunk = fit_ridge(&s, 0..s.len(), 100.0).unwrap();
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>();
        assert!(norm(&shrunk.weight) < 0.1 * norm(&w));
    }

    #[test]
    fn probe_beats_random_on_a_learnable_target() {
        let (s, _, _) = linear_samples(400, 16, 0.3);
        let probe = fit_layer(&s, Method::Probe, 0, 0).unwrap().quality.unwrap();
        let random = fit_layer(&s, Method::Random, 0, 0).unwrap().quality.unwrap();
        assert!(probe.r2.unwrap() > 0.8, "{probe:?}");
        assert!(probe.spearman > 0.9 && probe.top_half_overlap > 0.8, "{probe:?}");
        assert!(random.r2.is_none());
        assert!(random.spearman.abs() < 0.5, "{random:?}");
        assert!(fit_layer(&LayerSamples::new(16), Method::Probe, 0, 0).unwrap_err().contains("too few"));
    }

    #[test]
    fn quantiles_and_thresholds() {
        let scores: Vec<f64> = (0..=200).map(|i| i as f64).collect();
        let q = quantiles(&scores);
        assert_eq!(q.len(), QUANTILE_COUNT);
        assert_eq!((q[0], q[50], q[100]), (0.0, 100.0, 200.0));
        assert_eq!(q[25], 50.0);
        let r = LayerRouter { weight: vec![], bias: 0.0, quantiles: q, quality: None };
        // A fraction C of the scores lies above the threshold for capacity C.
        for c in [0.125, 0.25, 0.5, 0.9] {
            let th = r.threshold(c).unwrap();
            let above = scores.iter().filter(|&&s| s > th).count() as f64 / scores.len() as f64;
            assert!((above - c).abs() < 0.01, "capacity {c}: threshold {th}, {above} above");
        }
    }

    #[test]
    fn ranks_and_correlations() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![2.5, 0.0, 2.5, 1.0]);
        let a = [1.0, 2.0, 3.0, 4.0];
        assert!((spearman(&a, &[10.0, 20.0, 25.0, 100.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&a, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert_eq!(top_overlap(&a, &[0.0, 0.0, 1.0, 1.0], 0.5), 1.0);
        assert_eq!(top_overlap(&a, &[1.0, 1.0, 0.0, 0.0], 0.5), 0.0);
        assert!((r2(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn targets_and_features() {
        assert!((relative_update(&[3.0, 4.0], &[3.0, 4.0 + 0.5]) - (0.1f64).ln()).abs() < 1e-9);
        assert!(relative_update(&[1.0], &[1.0]).is_finite());
        let f = normalized_rows(&[3.0, -3.0, 6.0, 0.0], 2);
        assert!((f[0] - 1.0).abs() < 1e-5 && (f[1] + 1.0).abs() < 1e-5);
        assert!((f[2] - 2f32.sqrt()).abs() < 1e-5);
        let mut s = LayerSamples::new(2);
        assert!(s.push(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]).unwrap_err().contains("hidden size 2"));
    }
}
