//! Language-model quality metrics for comparing a modified model against the unmodified one on the
//! same text: perplexity of each, top-1 agreement and the KL divergence of the modified model's
//! next-token distribution from the reference's (KL(P_ref ‖ P_model), in nats), position by position.

use serde::Serialize;

/// `log softmax(logits)`, computed in f64.
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    logits.iter().map(|&x| x as f64 - lse).collect()
}

fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Sums over scored positions; [`Tally::summary`] turns them into the reported means.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    positions: u64,
    nll: f64,
    agree: u64,
    kl: f64,
}

/// Per-configuration results.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Quality {
    /// Positions scored (each predicts the next token of the text).
    pub positions: u64,
    /// exp(mean negative log-likelihood of the next token).
    pub perplexity: f64,
    /// Fraction of positions whose most likely next token is the reference's.
    pub top1_agreement: f64,
    /// Mean KL(P_ref ‖ P_model) in nats.
    pub kl: f64,
}

impl Tally {
    /// Scores one position: the model's and the reference's log-probabilities (same vocabulary)
    /// and the token that actually came next.
    pub fn add(&mut self, model: &[f64], reference: &[f64], next: usize) {
        self.positions += 1;
        self.nll -= model[next];
        self.agree += u64::from(argmax(model) == argmax(reference));
        self.kl += reference
            .iter()
            .zip(model)
            .map(|(&r, &m)| if r == f64::NEG_INFINITY { 0.0 } else { r.exp() * (r - m) })
            .sum::<f64>();
    }

    pub fn summary(&self) -> Quality {
        let n = self.positions.max(1) as f64;
        Quality {
            positions: self.positions,
            perplexity: (self.nll / n).exp(),
            top1_agreement: self.agree as f64 / n,
            kl: (self.kl / n).max(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_models_agree_fully() {
        let l = log_softmax(&[1.0, 2.0, 0.5]);
        let mut t = Tally::default();
        t.add(&l, &l, 1);
        t.add(&l, &l, 0);
        let q = t.summary();
        assert_eq!(q.top1_agreement, 1.0);
        assert!(q.kl.abs() < 1e-12);
        let want = (-(l[1] + l[0]) / 2.0).exp();
        assert!((q.perplexity - want).abs() < 1e-12);
    }

    #[test]
    fn kl_of_known_distributions() {
        let p = [0.5f64.ln(), 0.5f64.ln()];
        let q = [0.9f64.ln(), 0.1f64.ln()];
        let mut t = Tally::default();
        t.add(&q, &p, 0);
        let want = 0.5 * (0.5f64 / 0.9).ln() + 0.5 * (0.5f64 / 0.1).ln();
        assert!((t.summary().kl - want).abs() < 1e-12);
        assert_eq!(t.summary().top1_agreement, 1.0, "a tie goes to the lower index, which q also picks");
    }
}
