//! Token sampling: greedy at temperature 0, otherwise temperature-scaled softmax with optional
//! top-k and nucleus (top-p) truncation, driven by a seeded PRNG so runs are reproducible.

use crate::error::{Result, RuntimeError};

#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig { temperature: 0.0, top_k: None, top_p: None, seed: 0 }
    }
}

/// splitmix64: tiny, fast and good enough for sampling; no global state.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub struct Sampler {
    cfg: SamplerConfig,
    rng: Rng,
}

/// Index of the largest value; the lowest index wins ties; NaNs never win.
pub fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] || xs[best].is_nan() {
            best = i;
        }
    }
    best
}

impl Sampler {
    pub fn new(cfg: SamplerConfig) -> Result<Sampler> {
        if !(cfg.temperature >= 0.0 && cfg.temperature.is_finite()) {
            return Err(RuntimeError::Sampling(format!("--temperature must be ≥ 0, got {}", cfg.temperature)));
        }
        if cfg.top_k == Some(0) {
            return Err(RuntimeError::Sampling("--top-k must be ≥ 1".into()));
        }
        if let Some(p) = cfg.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(RuntimeError::Sampling(format!("--top-p must be in (0, 1], got {p}")));
            }
        }
        let rng = Rng::new(cfg.seed);
        Ok(Sampler { cfg, rng })
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// The candidate tokens and their probabilities after temperature, top-k and top-p, sorted by
    /// probability (highest first). Greedy returns the argmax with probability 1.
    pub fn distribution(&self, logits: &[f32]) -> Vec<(u32, f64)> {
        if self.cfg.temperature == 0.0 || logits.len() <= 1 {
            return vec![(argmax(logits) as u32, 1.0)];
        }
        let t = self.cfg.temperature as f64;
        let mut cands: Vec<(u32, f64)> =
            logits.iter().enumerate().filter(|(_, l)| !l.is_nan()).map(|(i, &l)| (i as u32, l as f64 / t)).collect();
        cands.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if let Some(k) = self.cfg.top_k {
            cands.truncate(k.max(1));
        }
        let max = cands.first().map_or(0.0, |c| c.1);
        let mut sum = 0.0;
        for c in &mut cands {
            c.1 = (c.1 - max).exp();
            sum += c.1;
        }
        for c in &mut cands {
            c.1 /= sum;
        }
        if let Some(p) = self.cfg.top_p {
            let mut cum = 0.0;
            let mut keep = cands.len();
            for (i, c) in cands.iter().enumerate() {
                cum += c.1;
                if cum >= p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            cands.truncate(keep);
            let s: f64 = cands.iter().map(|c| c.1).sum();
            for c in &mut cands {
                c.1 /= s;
            }
        }
        cands
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let dist = self.distribution(logits);
        if dist.len() == 1 {
            return dist[0].0;
        }
        let u = self.rng.next_f64();
        let mut cum = 0.0;
        for &(tok, p) in &dist {
            cum += p;
            if u < cum {
                return tok;
            }
        }
        dist.last().map_or(0, |d| d.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax_with_low_index_ties() {
        let mut s = Sampler::new(SamplerConfig::default()).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn top_k_and_top_p_truncate() {
        let logits = [1.0f32, 4.0, 3.0, 2.0];
        let s = Sampler::new(SamplerConfig { temperature: 1.0, top_k: Some(2), ..Default::default() }).unwrap();
        let d = s.distribution(&logits);
        assert_eq!(d.iter().map(|c| c.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!((d[0].1 - 1.0 / (1.0 + (-1f64).exp())).abs() < 1e-9);
        let s = Sampler::new(SamplerConfig { temperature: 1.0, top_p: Some(0.5), ..Default::default() }).unwrap();
        assert_eq!(s.distribution(&logits).len(), 1);
    }

    #[test]
    fn sampling_follows_the_distribution_and_the_seed() {
        let logits = [0.0f32, (3f32).ln()]; // p = [0.25, 0.75]
        let mut s = Sampler::new(SamplerConfig { temperature: 1.0, seed: 7, ..Default::default() }).unwrap();
        let n = 20000;
        let ones = (0..n).filter(|_| s.sample(&logits) == 1).count() as f64 / n as f64;
        assert!((ones - 0.75).abs() < 0.02, "{ones}");
        let run = |seed| {
            let mut s = Sampler::new(SamplerConfig { temperature: 0.8, seed, ..Default::default() }).unwrap();
            (0..32).map(|_| s.sample(&[0.5, 0.1, 0.9, 0.3])).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn bad_settings_are_errors() {
        assert!(Sampler::new(SamplerConfig { temperature: -1.0, ..Default::default() }).is_err());
        assert!(Sampler::new(SamplerConfig { top_p: Some(0.0), temperature: 1.0, ..Default::default() }).is_err());
        assert!(Sampler::new(SamplerConfig { top_k: Some(0), ..Default::default() }).is_err());
    }
}
