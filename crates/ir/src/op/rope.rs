//! Typed view of RoPE attributes (RoFormer, arXiv 2104.09864), shared by the `rope` op and the fused
//! `rope = ...` attribute of `attention`, with the frequency rules of each scaling variant as the
//! Hugging Face implementations define them (`rope_scaling.rope_type`).

use crate::attr::{Attr, Attrs};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeLayout {
    /// GPT-NeoX / HF llama: rotate pairs (i, i + d/2).
    Neox,
    /// GPT-J / original RoFormer: rotate pairs (2i, 2i + 1).
    Interleaved,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    Linear { factor: f64 },
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position: i64 },
    Yarn { factor: f64, original_max_position: i64, beta_fast: f64, beta_slow: f64, attention_factor: Option<f64> },
}

#[derive(Clone, Debug, PartialEq)]
pub struct RopeSpec {
    pub layout: RopeLayout,
    pub theta: f64,
    /// Rotary dims (partial rotary when smaller than the head dim); `None` = the whole head.
    pub dim: Option<i64>,
    pub scaling: RopeScaling,
}

impl RopeLayout {
    pub fn name(self) -> &'static str {
        match self {
            RopeLayout::Neox => "neox",
            RopeLayout::Interleaved => "interleaved",
        }
    }

    fn parse(s: &str) -> Result<RopeLayout, String> {
        match s {
            "neox" => Ok(RopeLayout::Neox),
            "interleaved" => Ok(RopeLayout::Interleaved),
            _ => Err(format!("unknown rope layout '{s}' (expected neox or interleaved)")),
        }
    }
}

impl RopeScaling {
    fn from_attr(attr: Option<(&str, &Attrs)>) -> Result<RopeScaling, String> {
        let Some((tag, f)) = attr else { return Ok(RopeScaling::None) };
        let need = |k: &str| f.float(k).ok_or_else(|| format!("{tag} rope scaling needs '{k}'"));
        let need_int = |k: &str| f.int(k).ok_or_else(|| format!("{tag} rope scaling needs '{k}'"));
        Ok(match tag {
            "linear" => RopeScaling::Linear { factor: need("factor")? },
            "llama3" => RopeScaling::Llama3 {
                factor: need("factor")?,
                low_freq_factor: need("low_freq_factor")?,
                high_freq_factor: need("high_freq_factor")?,
                original_max_position: need_int("original_max_position")?,
            },
            "yarn" => RopeScaling::Yarn {
                factor: need("factor")?,
                original_max_position: need_int("original_max_position")?,
                beta_fast: f.float("beta_fast").unwrap_or(32.0),
                beta_slow: f.float("beta_slow").unwrap_or(1.0),
                attention_factor: f.float("attention_factor"),
            },
            other => return Err(format!("unknown rope scaling '{other}' (expected linear, llama3 or yarn)")),
        })
    }

    fn to_attr(&self) -> Option<Attr> {
        let (tag, fields) = match *self {
            RopeScaling::None => return None,
            RopeScaling::Linear { factor } => ("linear", Attrs::new().with("factor", Attr::Float(factor))),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position } => (
                "llama3",
                Attrs::new()
                    .with("factor", Attr::Float(factor))
                    .with("low_freq_factor", Attr::Float(low_freq_factor))
                    .with("high_freq_factor", Attr::Float(high_freq_factor))
                    .with("original_max_position", Attr::Int(original_max_position)),
            ),
            RopeScaling::Yarn { factor, original_max_position, beta_fast, beta_slow, attention_factor } => {
                let mut a = Attrs::new()
                    .with("factor", Attr::Float(factor))
                    .with("original_max_position", Attr::Int(original_max_position))
                    .with("beta_fast", Attr::Float(beta_fast))
                    .with("beta_slow", Attr::Float(beta_slow));
                if let Some(af) = attention_factor {
                    a.set("attention_factor", Attr::Float(af));
                }
                ("yarn", a)
            }
        };
        Some(Attr::Tagged { tag: tag.to_string(), fields })
    }
}

impl RopeSpec {
    pub fn new(layout: RopeLayout, theta: f64) -> RopeSpec {
        RopeSpec { layout, theta, dim: None, scaling: RopeScaling::None }
    }

    fn from_fields(layout: RopeLayout, f: &Attrs) -> Result<RopeSpec, String> {
        Ok(RopeSpec {
            layout,
            theta: f.float("theta").ok_or("rope needs 'theta'")?,
            dim: f.int("dim"),
            scaling: RopeScaling::from_attr(f.tagged("scaling"))?,
        })
    }

    fn fields(&self) -> Attrs {
        let mut a = Attrs::new().with("theta", Attr::Float(self.theta));
        if let Some(d) = self.dim {
            a.set("dim", Attr::Int(d));
        }
        if let Some(s) = self.scaling.to_attr() {
            a.set("scaling", s);
        }
        a
    }

    /// From the attributes of a `rope` op.
    pub fn from_rope_op(attrs: &Attrs) -> Result<RopeSpec, String> {
        let layout = RopeLayout::parse(attrs.ident("layout").ok_or("rope needs 'layout'")?)?;
        RopeSpec::from_fields(layout, attrs)
    }

    /// From the `rope` attribute of an `attention` op, if it has one.
    pub fn from_attention(attrs: &Attrs) -> Result<Option<RopeSpec>, String> {
        match attrs.tagged("rope") {
            None => Ok(None),
            Some((tag, f)) => RopeSpec::from_fields(RopeLayout::parse(tag)?, f).map(Some),
        }
    }

    pub fn to_rope_attrs(&self) -> Attrs {
        self.fields().with("layout", Attr::Ident(self.layout.name().to_string()))
    }

    pub fn to_attention_attr(&self) -> Attr {
        Attr::Tagged { tag: self.layout.name().to_string(), fields: self.fields() }
    }

    pub fn rotary_dim(&self, head_dim: usize) -> usize {
        self.dim.map_or(head_dim, |d| d as usize)
    }

    /// Inverse frequencies θ_i for the rotary dims, with the scaling rule applied.
    pub fn inv_freqs(&self, head_dim: usize) -> Vec<f64> {
        let d = self.rotary_dim(head_dim);
        let base: Vec<f64> = (0..d / 2).map(|i| 1.0 / self.theta.powf(2.0 * i as f64 / d as f64)).collect();
        match self.scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position } => {
                let old = original_max_position as f64;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
            RopeScaling::Yarn { factor, original_max_position, beta_fast, beta_slow, .. } => {
                let dd = d as f64;
                let correction = |rot: f64| {
                    dd * (original_max_position as f64 / (rot * 2.0 * std::f64::consts::PI)).ln()
                        / (2.0 * self.theta.ln())
                };
                let low = correction(beta_fast).floor().max(0.0);
                let mut high = correction(beta_slow).ceil().min(dd - 1.0);
                if low == high {
                    high += 0.001;
                }
                base.iter()
                    .enumerate()
                    .map(|(i, &extrap)| {
                        let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                        let keep = 1.0 - ramp;
                        (extrap / factor) * (1.0 - keep) + extrap * keep
                    })
                    .collect()
            }
        }
    }

    /// Multiplier on cos/sin (YaRN's attention temperature); 1 otherwise.
    pub fn attention_factor(&self) -> f64 {
        match self.scaling {
            RopeScaling::Yarn { factor, attention_factor, .. } => {
                attention_factor.unwrap_or(if factor <= 1.0 { 1.0 } else { 0.1 * factor.ln() + 1.0 })
            }
            _ => 1.0,
        }
    }

    /// Rotates one head vector in place at position `pos`.
    pub fn apply(&self, x: &mut [f32], pos: i64, inv_freqs: &[f64]) {
        let d = 2 * inv_freqs.len();
        let m = self.attention_factor();
        for (i, &f) in inv_freqs.iter().enumerate() {
            let angle = pos as f64 * f;
            let (s, c) = angle.sin_cos();
            let (a, b) = match self.layout {
                RopeLayout::Neox => (i, i + d / 2),
                RopeLayout::Interleaved => (2 * i, 2 * i + 1),
            };
            let (xa, xb) = (x[a] as f64, x[b] as f64);
            x[a] = ((xa * c - xb * s) * m) as f32;
            x[b] = ((xb * c + xa * s) * m) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_round_trip() {
        let spec = RopeSpec {
            layout: RopeLayout::Neox,
            theta: 500000.0,
            dim: Some(32),
            scaling: RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position: 8192,
            },
        };
        assert_eq!(RopeSpec::from_rope_op(&spec.to_rope_attrs()).unwrap(), spec);
        let attn = Attrs::new().with("rope", spec.to_attention_attr());
        assert_eq!(RopeSpec::from_attention(&attn).unwrap(), Some(spec));
    }

    #[test]
    fn rotation_preserves_norm_and_matches_position_zero() {
        let spec = RopeSpec::new(RopeLayout::Neox, 10000.0);
        let f = spec.inv_freqs(8);
        let mut x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let orig = x;
        spec.apply(&mut x, 0, &f);
        assert_eq!(x, orig);
        spec.apply(&mut x, 17, &f);
        let n0: f32 = orig.iter().map(|v| v * v).sum();
        let n1: f32 = x.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-3);
        // pair (0, 4) rotates by 17 rad at frequency 1
        let (s, c) = 17f64.sin_cos();
        assert!((x[0] as f64 - (1.0 * c - 5.0 * s)).abs() < 1e-5);
    }

    #[test]
    fn llama3_scaling_keeps_high_frequencies() {
        let spec = RopeSpec {
            layout: RopeLayout::Neox,
            theta: 500000.0,
            dim: None,
            scaling: RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position: 8192,
            },
        };
        let plain = RopeSpec::new(RopeLayout::Neox, 500000.0).inv_freqs(128);
        let scaled = spec.inv_freqs(128);
        assert_eq!(scaled[0], plain[0]);
        assert!((scaled[63] - plain[63] / 8.0).abs() < 1e-12);
    }
}
