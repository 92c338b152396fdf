//! Text in and out: the model's `tokenizer.json` (Hugging Face `tokenizers`), its chat template
//! (`tokenizer_config.json`, rendered with minijinja), and a streaming decoder that emits text as
//! soon as it is complete UTF-8.

use crate::error::{Result, RuntimeError};
use serde_json::Value;
use std::path::Path;

pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    chat_template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    /// Tokens that end generation.
    pub eos_ids: Vec<u32>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

fn tok_err(file: &Path, msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Tokenizer { file: file.display().to_string(), msg: msg.into() }
}

/// `"<s>"` or `{"content": "<s>", ...}` as HF writes special tokens.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
        _ => None,
    }
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| tok_err(path, e.to_string()))?;
    serde_json::from_str(&text).map(Some).map_err(|e| tok_err(path, format!("invalid JSON: {e}")))
}

fn ids_of(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|i| vec![i as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_u64().map(|i| i as u32)).collect(),
        _ => Vec::new(),
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json`, and when present `tokenizer_config.json` (chat template, special
    /// tokens) and `generation_config.json` (EOS ids). `extra_eos` adds ids from config.json.
    pub fn from_dir(dir: &Path, extra_eos: &[u32]) -> Result<TextTokenizer> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(tok_err(&path, "missing (the model folder needs a tokenizer.json)"));
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| tok_err(&path, e.to_string()))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg = read_json(&cfg_path)?;
        let chat_template = cfg.as_ref().and_then(|c| match c.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: use the default one.
            Some(Value::Array(items)) => items
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .or_else(|| items.first())
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(str::to_string),
            _ => None,
        });
        let bos_token = token_text(cfg.as_ref().and_then(|c| c.get("bos_token")));
        let eos_token = token_text(cfg.as_ref().and_then(|c| c.get("eos_token")));
        let mut eos_ids: Vec<u32> = extra_eos.to_vec();
        if let Some(gen) = read_json(&dir.join("generation_config.json"))? {
            eos_ids.extend(ids_of(gen.get("eos_token_id")));
        }
        if let Some(id) = eos_token.as_deref().and_then(|t| inner.token_to_id(t)) {
            eos_ids.push(id);
        }
        eos_ids.sort_unstable();
        eos_ids.dedup();
        Ok(TextTokenizer { inner, chat_template, bos_token, eos_token, eos_ids })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        self.inner.encode(text, add_special_tokens).map(|e| e.get_ids().to_vec()).map_err(|e| RuntimeError::Tokenizer {
            file: "tokenizer.json".into(),
            msg: format!("encoding failed: {e}"),
        })
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| RuntimeError::Tokenizer {
            file: "tokenizer.json".into(),
            msg: format!("decoding failed: {e}"),
        })
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// Renders the chat template for the messages, ending with the assistant's turn prompt.
    pub fn apply_chat_template(&self, messages: &[ChatMessage]) -> Result<String> {
        let template = self.chat_template.as_deref().ok_or_else(|| RuntimeError::Tokenizer {
            file: "tokenizer_config.json".into(),
            msg: "the model has no chat_template; run without --chat".into(),
        })?;
        let err = |e: minijinja::Error| RuntimeError::Tokenizer {
            file: "tokenizer_config.json".into(),
            msg: format!("chat_template: {e:#}"),
        };
        let mut env = minijinja::Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", template).map_err(err)?;
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        };
        env.get_template("chat").and_then(|t| t.render(ctx)).map_err(err)
    }

    pub fn stream(&self) -> StreamDecoder<'_> {
        StreamDecoder { tok: self, ids: Vec::new(), emitted: 0 }
    }
}

/// Decodes a growing token sequence and returns only the new text, holding back output while the
/// tail is an incomplete UTF-8 sequence (byte-level BPE splits characters across tokens).
pub struct StreamDecoder<'a> {
    tok: &'a TextTokenizer,
    ids: Vec<u32>,
    emitted: usize,
}

impl StreamDecoder<'_> {
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = self.tok.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}') || text.len() < self.emitted || !text.is_char_boundary(self.emitted) {
            return Ok(String::new());
        }
        let new = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(new)
    }

    /// Whatever is left at the end (including a trailing replacement character).
    pub fn finish(&mut self) -> Result<String> {
        let text = self.tok.decode(&self.ids)?;
        let rest = if text.len() > self.emitted && text.is_char_boundary(self.emitted) {
            text[self.emitted..].to_string()
        } else {
            String::new()
        };
        self.emitted = text.len();
        Ok(rest)
    }
}
