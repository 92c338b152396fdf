//! The Mixture-of-Depths routers file that `kiln calibrate` writes and the `mod` pass reads: a
//! safetensors file with, per routed layer l,
//!
//! - `mod.layers.{l}.router.weight` f32 `[hidden]` and `mod.layers.{l}.router.bias` f32 `[1]`: the
//!   router scores a token by `w · rms_norm(x) + b`, where `x` is the residual stream entering the
//!   block and the norm has no weight (eps [`ROUTER_NORM_EPS`]), so the router sees the direction of
//!   the stream, not its scale;
//! - `mod.layers.{l}.router.quantiles` f32 `[101]`: percentiles 0, 1, …, 100 of those scores on the
//!   calibration tokens, from which the decode threshold for a capacity is read
//!   ([`LayerRouter::threshold`]);
//!
//! and in `__metadata__` the format and version, the model's hidden size and layer count, how the
//! routers were made (`probe` or `random`), what they were fitted to predict, the number of
//! calibration tokens and the held-out fit quality per layer (JSON).

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// `__metadata__["format"]` of a routers file.
pub const FORMAT: &str = "kiln-mod-routers";
/// The version this build reads and writes.
pub const VERSION: u32 = 1;
/// Score percentiles stored per layer: 0, 1, …, 100.
pub const QUANTILE_COUNT: usize = 101;
/// The eps of the weightless rms_norm the router reads its input through. Calibration and the
/// `mod` pass must agree on it, so it is part of the format (a change means a new version).
pub const ROUTER_NORM_EPS: f64 = 1e-6;

/// How the routers were made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// A ridge-regression probe fitted on the calibration text.
    Probe,
    /// Seeded random Gaussian weights: the baseline a probe must beat.
    Random,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Probe => "probe",
            Method::Random => "random",
        }
    }

    pub fn parse(s: &str) -> Option<Method> {
        match s {
            "probe" => Some(Method::Probe),
            "random" => Some(Method::Random),
            _ => None,
        }
    }
}

/// How well a router's scores predict the target on held-out calibration tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitQuality {
    /// Coefficient of determination of the probe's predictions (none for random routers, whose
    /// scores are not on the target's scale).
    pub r2: Option<f64>,
    /// Spearman rank correlation of scores and targets.
    pub spearman: f64,
    /// Of the held-out tokens with the top half of targets, the fraction the top half of scores
    /// picks (0.5 is chance): what routing at capacity 0.5 gets right.
    pub top_half_overlap: f64,
}

/// One layer's router.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerRouter {
    pub weight: Vec<f32>,
    pub bias: f32,
    /// Percentiles 0..=100 of the calibration scores, non-decreasing.
    pub quantiles: Vec<f32>,
    pub quality: Option<FitQuality>,
}

impl LayerRouter {
    /// The decode threshold for `capacity` in (0, 1]: the (1 − capacity) quantile of the
    /// calibration scores (linear between stored percentiles), so that a fraction `capacity` of
    /// calibration tokens scores above it. `None` for capacity 1, where every token is taken.
    pub fn threshold(&self, capacity: f64) -> Option<f64> {
        if capacity >= 1.0 {
            return None;
        }
        let p = (1.0 - capacity).clamp(0.0, 1.0) * (QUANTILE_COUNT - 1) as f64;
        let i = (p.floor() as usize).min(QUANTILE_COUNT - 2);
        let frac = p - i as f64;
        let (lo, hi) = (self.quantiles[i] as f64, self.quantiles[i + 1] as f64);
        Some(lo + frac * (hi - lo))
    }

    /// The router's score for one residual-stream row, as the `mod` pass computes it.
    pub fn score(&self, x: &[f32]) -> f64 {
        let ms = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / x.len().max(1) as f64;
        let inv = 1.0 / (ms + ROUTER_NORM_EPS).sqrt();
        x.iter().zip(&self.weight).map(|(&v, &w)| v as f64 * inv * w as f64).sum::<f64>() + self.bias as f64
    }
}

/// A whole routers file.
#[derive(Clone, Debug, PartialEq)]
pub struct Routers {
    /// The model's hidden size (every weight has this many entries).
    pub hidden_size: usize,
    /// The model's decoder layer count (routed layers are below it).
    pub num_layers: usize,
    pub method: Method,
    /// What the routers were fitted to predict, in words.
    pub target: String,
    pub calibration_tokens: usize,
    /// Routers by layer.
    pub layers: BTreeMap<usize, LayerRouter>,
}

/// A routers file that cannot be read, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {msg}")]
pub struct RoutersError {
    pub file: String,
    pub msg: String,
}

const PARTS: [&str; 3] = ["weight", "bias", "quantiles"];

/// `mod.layers.{layer}.router.{part}`.
pub fn tensor_name(layer: usize, part: &str) -> String {
    format!("mod.layers.{layer}.router.{part}")
}

/// (layer, part) of a routers tensor name.
fn parse_tensor_name(name: &str) -> Option<(usize, &'static str)> {
    let rest = name.strip_prefix("mod.layers.")?;
    let (layer, part) = rest.split_once(".router.")?;
    let layer: usize = layer.parse().ok()?;
    PARTS.iter().find(|&&p| p == part).map(|&p| (layer, p))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn metadata_usize(meta: &HashMap<String, String>, key: &str) -> Result<usize, String> {
    let v = meta.get(key).ok_or_else(|| format!("metadata lacks '{key}'"))?;
    v.parse().map_err(|_| format!("metadata '{key}' must be a non-negative integer, found '{v}'"))
}

fn quality_json(q: &FitQuality) -> serde_json::Value {
    serde_json::json!({ "r2": q.r2, "spearman": q.spearman, "top_half_overlap": q.top_half_overlap })
}

fn parse_quality(v: &serde_json::Value) -> Option<FitQuality> {
    Some(FitQuality {
        r2: match v.get("r2")? {
            serde_json::Value::Null => None,
            r => Some(r.as_f64()?),
        },
        spearman: v.get("spearman")?.as_f64()?,
        top_half_overlap: v.get("top_half_overlap")?.as_f64()?,
    })
}

impl Routers {
    /// Checks shapes, ranges and values; the message names the offending tensor.
    pub fn validate(&self) -> Result<(), String> {
        if self.hidden_size == 0 || self.num_layers == 0 {
            return Err(format!(
                "hidden size {} and layer count {} must be positive",
                self.hidden_size, self.num_layers
            ));
        }
        if self.layers.is_empty() {
            return Err("holds no router".into());
        }
        for (&l, r) in &self.layers {
            if l >= self.num_layers {
                return Err(format!(
                    "tensor '{}': layer {l} is out of range for a {}-layer model",
                    tensor_name(l, "weight"),
                    self.num_layers
                ));
            }
            if r.weight.len() != self.hidden_size {
                return Err(format!(
                    "tensor '{}' has {} values, expected the hidden size {}",
                    tensor_name(l, "weight"),
                    r.weight.len(),
                    self.hidden_size
                ));
            }
            if r.quantiles.len() != QUANTILE_COUNT {
                return Err(format!(
                    "tensor '{}' has {} values, expected {QUANTILE_COUNT}",
                    tensor_name(l, "quantiles"),
                    r.quantiles.len()
                ));
            }
            let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
            for (part, ok) in
                [("weight", finite(&r.weight)), ("bias", r.bias.is_finite()), ("quantiles", finite(&r.quantiles))]
            {
                if !ok {
                    return Err(format!("tensor '{}' holds a NaN or infinite value", tensor_name(l, part)));
                }
            }
            if r.quantiles.windows(2).any(|w| w[1] < w[0]) {
                return Err(format!("tensor '{}' is not non-decreasing", tensor_name(l, "quantiles")));
            }
        }
        Ok(())
    }

    /// The file's bytes (after [`validate`](Self::validate)).
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        self.validate()?;
        let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        let mut quality = serde_json::Map::new();
        for (&l, r) in &self.layers {
            data.push((tensor_name(l, "weight"), vec![self.hidden_size], f32_bytes(&r.weight)));
            data.push((tensor_name(l, "bias"), vec![1], f32_bytes(&[r.bias])));
            data.push((tensor_name(l, "quantiles"), vec![QUANTILE_COUNT], f32_bytes(&r.quantiles)));
            if let Some(q) = &r.quality {
                quality.insert(l.to_string(), quality_json(q));
            }
        }
        let views = data
            .iter()
            .map(|(n, shape, bytes)| Ok((n.as_str(), TensorView::new(Dtype::F32, shape.clone(), bytes)?)))
            .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
            .map_err(|e| e.to_string())?;
        let meta: HashMap<String, String> = [
            ("format", FORMAT.to_string()),
            ("version", VERSION.to_string()),
            ("hidden_size", self.hidden_size.to_string()),
            ("num_layers", self.num_layers.to_string()),
            ("method", self.method.as_str().to_string()),
            ("target", self.target.clone()),
            ("calibration_tokens", self.calibration_tokens.to_string()),
            ("quality", serde_json::Value::Object(quality).to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        safetensors::serialize(views, &Some(meta)).map_err(|e| e.to_string())
    }

    /// Parses and validates a routers file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Routers, String> {
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| format!("not a safetensors file ({e})"))?;
        let meta = header
            .metadata()
            .as_ref()
            .ok_or("has no __metadata__: not a routers file (write one with `kiln calibrate`)")?;
        match meta.get("format") {
            Some(f) if f == FORMAT => {}
            other => {
                return Err(format!(
                    "metadata 'format' is {other:?}, not \"{FORMAT}\": not a routers file (write one with `kiln calibrate`)"
                ))
            }
        }
        let version = metadata_usize(meta, "version")?;
        if version != VERSION as usize {
            return Err(format!("routers format version {version} is not supported (this build reads {VERSION})"));
        }
        let method = meta.get("method").ok_or("metadata lacks 'method'")?;
        let method = Method::parse(method)
            .ok_or_else(|| format!("metadata 'method' must be 'probe' or 'random', found '{method}'"))?;
        let quality: serde_json::Value = match meta.get("quality") {
            None => serde_json::Value::Null,
            Some(q) => serde_json::from_str(q).map_err(|e| format!("metadata 'quality' is not JSON: {e}"))?,
        };
        let hidden_size = metadata_usize(meta, "hidden_size")?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file ({e})"))?;
        let mut parts: BTreeMap<usize, BTreeMap<&str, Vec<f32>>> = BTreeMap::new();
        for (name, view) in st.tensors() {
            let (layer, part) = parse_tensor_name(&name).ok_or_else(|| {
                format!("unexpected tensor '{name}' (expected mod.layers.N.router.weight, .bias or .quantiles)")
            })?;
            if view.dtype() != Dtype::F32 {
                return Err(format!("tensor '{name}' is {:?}, expected F32", view.dtype()));
            }
            let want = match part {
                "weight" => hidden_size,
                "bias" => 1,
                _ => QUANTILE_COUNT,
            };
            if view.shape() != [want] {
                return Err(format!("tensor '{name}' has shape {:?}, expected [{want}]", view.shape()));
            }
            let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            parts.entry(layer).or_default().insert(part, values);
        }
        let mut layers = BTreeMap::new();
        for (l, mut p) in parts {
            let mut take = |part: &str| {
                p.remove(part).ok_or_else(|| format!("layer {l} has no tensor '{}'", tensor_name(l, part)))
            };
            let (weight, bias, quantiles) = (take("weight")?, take("bias")?, take("quantiles")?);
            let q = quality.get(l.to_string());
            let quality = match q {
                None => None,
                Some(v) => {
                    Some(parse_quality(v).ok_or_else(|| format!("metadata 'quality' for layer {l} is malformed"))?)
                }
            };
            layers.insert(l, LayerRouter { weight, bias: bias[0], quantiles, quality });
        }
        let r = Routers {
            hidden_size,
            num_layers: metadata_usize(meta, "num_layers")?,
            method,
            target: meta.get("target").cloned().unwrap_or_default(),
            calibration_tokens: metadata_usize(meta, "calibration_tokens")?,
            layers,
        };
        r.validate()?;
        Ok(r)
    }

    /// Reads and validates a routers file.
    pub fn read(path: &Path) -> Result<Routers, RoutersError> {
        let err = |msg: String| RoutersError { file: path.display().to_string(), msg };
        let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read the routers file ({e})")))?;
        Routers::from_bytes(&bytes).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Routers {
        let router = |w: f32| LayerRouter {
            weight: vec![w, -w, 0.5],
            bias: 0.25,
            quantiles: (0..QUANTILE_COUNT).map(|i| i as f32 / 10.0).collect(),
            quality: Some(FitQuality { r2: Some(0.5), spearman: 0.7, top_half_overlap: 0.8 }),
        };
        Routers {
            hidden_size: 3,
            num_layers: 4,
            method: Method::Probe,
            target: "test".into(),
            calibration_tokens: 100,
            layers: [(1, router(1.0)), (3, router(2.0))].into(),
        }
    }

    #[test]
    fn round_trips() {
        let r = sample();
        let back = Routers::from_bytes(&r.to_bytes().unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn thresholds_interpolate_the_quantiles() {
        let r = &sample().layers[&1];
        // Percentile p is stored as p / 10.
        assert_eq!(r.threshold(1.0), None);
        assert!((r.threshold(0.5).unwrap() - 5.0).abs() < 1e-6);
        assert!((r.threshold(0.125).unwrap() - 8.75).abs() < 1e-5, "{:?}", r.threshold(0.125));
        assert!((r.threshold(1e-9).unwrap() - 10.0).abs() < 1e-5);
    }

    #[test]
    fn score_is_a_dot_product_with_the_normalized_stream() {
        let r = &sample().layers[&1];
        // rms of (3, 3, 3) is 3, so the normalized row is (1, 1, 1): 1 - 1 + 0.5 + 0.25.
        assert!((r.score(&[3.0, 3.0, 3.0]) - 0.75).abs() < 1e-6);
    }

    #[test]
    fn bad_files_are_named_errors() {
        let mut r = sample();
        r.layers.get_mut(&3).unwrap().quantiles[5] = -1.0;
        assert!(r.to_bytes().unwrap_err().contains("mod.layers.3.router.quantiles' is not non-decreasing"));
        let mut r = sample();
        r.num_layers = 2;
        assert!(r.to_bytes().unwrap_err().contains("layer 3 is out of range"));
        assert!(Routers::from_bytes(b"garbage").unwrap_err().contains("not a safetensors file"));
        // A safetensors file that is not a routers file.
        let w = f32_bytes(&[1.0]);
        let plain = safetensors::serialize([("x", TensorView::new(Dtype::F32, vec![1], &w).unwrap())], &None).unwrap();
        assert!(Routers::from_bytes(&plain).unwrap_err().contains("no __metadata__"));
        let e = Routers::read(Path::new("/no/such/routers.safetensors")).unwrap_err().to_string();
        assert!(e.starts_with("/no/such/routers.safetensors: cannot read"), "{e}");
    }

    #[test]
    fn tensor_names() {
        assert_eq!(parse_tensor_name("mod.layers.12.router.bias"), Some((12, "bias")));
        assert_eq!(parse_tensor_name("mod.layers.x.router.bias"), None);
        assert_eq!(parse_tensor_name("mod.layers.1.router.scale"), None);
    }
}
