//! The generation loop shared by every executor: prefill the prompt, then sample one token at a time
//! until an end-of-sequence token or the token budget, handing each token to the caller as it is
//! produced (for streaming).

use crate::error::Result;
use crate::sampler::Sampler;
use std::time::{Duration, Instant};

/// Anything that maps "these next tokens" to the logits of the last one (and keeps its own cache).
pub trait DecodeModel {
    fn forward(&mut self, tokens: &[u32]) -> std::result::Result<Vec<f32>, String>;
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_secs: f64,
    pub decode_secs: f64,
    /// Why generation stopped: "eos" or "max_tokens".
    pub stop: String,
}

impl GenerationStats {
    pub fn prefill_tok_per_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_secs.max(1e-9)
    }

    pub fn decode_tok_per_s(&self) -> f64 {
        // The first sampled token comes from the prefill's logits; the rest each cost one step.
        self.generated_tokens.saturating_sub(1) as f64 / self.decode_secs.max(1e-9)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("the model failed: {0}")]
    Model(String),
    #[error(transparent)]
    Callback(#[from] crate::error::RuntimeError),
}

/// Generates up to `max_tokens` tokens after `prompt`. `on_token` sees each new token id.
pub fn generate(
    model: &mut dyn DecodeModel,
    prompt: &[u32],
    sampler: &mut Sampler,
    eos: &[u32],
    max_tokens: usize,
    on_token: &mut dyn FnMut(u32) -> Result<()>,
) -> std::result::Result<(Vec<u32>, GenerationStats), GenerateError> {
    let mut stats = GenerationStats { prompt_tokens: prompt.len(), stop: "max_tokens".into(), ..Default::default() };
    let mut out = Vec::new();
    if max_tokens == 0 || prompt.is_empty() {
        return Ok((out, stats));
    }
    let t0 = Instant::now();
    let mut logits = model.forward(prompt).map_err(GenerateError::Model)?;
    stats.prefill_secs = t0.elapsed().as_secs_f64();
    let mut decode = Duration::ZERO;
    loop {
        let tok = sampler.sample(&logits);
        if eos.contains(&tok) {
            stats.stop = "eos".into();
            break;
        }
        out.push(tok);
        on_token(tok)?;
        if out.len() >= max_tokens {
            break;
        }
        let t = Instant::now();
        logits = model.forward(&[tok]).map_err(GenerateError::Model)?;
        decode += t.elapsed();
    }
    stats.generated_tokens = out.len();
    stats.decode_secs = decode.as_secs_f64();
    Ok((out, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::SamplerConfig;

    /// A model whose next token is always (last token + 1) mod 10.
    struct Counter;
    impl DecodeModel for Counter {
        fn forward(&mut self, tokens: &[u32]) -> std::result::Result<Vec<f32>, String> {
            let next = (tokens.last().unwrap() + 1) % 10;
            Ok((0..10).map(|i| if i == next { 1.0 } else { 0.0 }).collect())
        }
    }

    #[test]
    fn stops_at_eos_and_at_budget() {
        let mut s = Sampler::new(SamplerConfig::default()).unwrap();
        let mut seen = Vec::new();
        let (out, stats) = generate(&mut Counter, &[3], &mut s, &[7], 100, &mut |t| {
            seen.push(t);
            Ok(())
        })
        .unwrap();
        assert_eq!(out, vec![4, 5, 6]);
        assert_eq!(seen, out);
        assert_eq!(stats.stop, "eos");
        let (out, stats) = generate(&mut Counter, &[3], &mut s, &[], 5, &mut |_| Ok(())).unwrap();
        assert_eq!(out, vec![4, 5, 6, 7, 8]);
        assert_eq!(stats.stop, "max_tokens");
    }
}
