//! GGUF tokenizer metadata → Hugging Face `tokenizer.json` + `tokenizer_config.json`.
//!
//! llama.cpp stores the vocabulary as parallel arrays (`tokenizer.ggml.tokens`, `.token_type`,
//! `.scores`, `.merges`) plus a *model* (`tokenizer.ggml.model`) and, for BPE, a
//! *pre-tokenizer* name (`tokenizer.ggml.pre`) that selects a hard-coded regex set in
//! `llama-vocab.cpp`. This module rebuilds the `tokenizers` JSON those names stand for:
//!
//! * `gpt2` → byte-level BPE. Tokens and merges are already in byte-level form (`Ġ` = space),
//!   so they go into the JSON unchanged. The pre-tokenizer comes from `tokenizer.ggml.pre`:
//!   - `default`, `gpt-2`, `mpt`, `olmo`, `jais`, `phi-2`, ...: the GPT-2 regex, which the HF
//!     `ByteLevel` pre-tokenizer applies itself when `use_regex` is true;
//!   - `smollm`, `starcoder`, `refact`, `command-r`, `codeshell`, `exaone`, `minerva-7b`:
//!     llama.cpp splits digits individually (`\p{N}`) and then applies the GPT-2 regex — in HF
//!     terms `Sequence[Digits(individual_digits), ByteLevel(use_regex)]`, which is what
//!     SmolLM2's own `tokenizer.json` contains;
//!   - `llama-bpe` (Llama 3), `qwen2`, `tekken`: a `Split` with the model's regex, then
//!     `ByteLevel` without its own regex (Qwen2 also NFC-normalizes).
//!
//!   An unknown `pre` falls back to the GPT-2 regex with a warning.
//! * `llama` → SentencePiece. HF represents SentencePiece-BPE models as a BPE model with
//!   `byte_fallback`, a `▁` normalizer and merges. GGUF has no merges for these, only scores;
//!   merges are reconstructed the way HF's `SentencePieceExtractor` does it: every split of a
//!   vocabulary piece into two vocabulary pieces is a merge, ranked by the piece's score. This
//!   reproduces llama.cpp's SPM algorithm (repeatedly merge the adjacent pair whose
//!   concatenation scores highest).
//!
//! Control tokens (token type 3) and the unknown token become `added_tokens` with
//! `special: true`; user-defined tokens (type 4) become non-special added tokens, so that they
//! are matched verbatim before the model runs, as llama.cpp does.

use std::collections::HashMap;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{json, Value};

use super::error::{GgufError, Result};
use super::metadata::{Metadata, MetadataArray};
use super::reader::GgufFile;

/// llama.cpp's `llama_token_type` values (`tokenizer.ggml.token_type`).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_REGEX: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The two files produced, serialized.
#[derive(Debug)]
pub struct TokenizerFiles {
    /// `tokenizer.json` bytes.
    pub tokenizer_json: Vec<u8>,
    /// `tokenizer_config.json` contents.
    pub tokenizer_config: Value,
    /// Number of tokens.
    pub vocab_size: usize,
    /// Things that were approximated or dropped.
    pub warnings: Vec<String>,
}

/// What [`build`] decided, without the bulky JSON (for reports and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerKind {
    /// Byte-level BPE with the named pre-tokenizer.
    ByteLevelBpe { pre: String },
    /// SentencePiece BPE with byte fallback.
    SentencePieceBpe,
}

/// The outcome of [`build`].
#[derive(Debug)]
pub enum TokenizerBuild {
    /// Both files were built.
    Built(TokenizerFiles, TokenizerKind),
    /// The file has no tokenizer, or one that cannot be expressed yet (`bert`, `t5`, `rwkv`);
    /// the reason says which. The weights can still be exported.
    Skipped(String),
}

/// Builds `tokenizer.json` and `tokenizer_config.json` from the file's metadata.
pub fn build(file: &GgufFile, context_length: Option<usize>) -> Result<TokenizerBuild> {
    let md = file.metadata();
    let path = file.path();
    let err = |reason: String| GgufError::Tokenizer { path: path.to_path_buf(), reason };
    let model = match md.get_str("tokenizer.ggml.model") {
        Some("none") | None => {
            return Ok(TokenizerBuild::Skipped("the file has no tokenizer (tokenizer.ggml.model)".into()))
        }
        Some(m @ ("gpt2" | "llama")) => m,
        Some(other) => {
            return Ok(TokenizerBuild::Skipped(format!("tokenizer model `{other}` cannot be exported yet")));
        }
    };
    let tokens: &[String] = match md.get_array("tokenizer.ggml.tokens") {
        Some(MetadataArray::String(t)) => t,
        Some(_) => return Err(err("tokenizer.ggml.tokens is not a string array".into())),
        None => return Err(err("tokenizer.ggml.tokens is missing".into())),
    };
    let n = tokens.len();
    let types: Vec<i32> = match md.get_array("tokenizer.ggml.token_type") {
        None => vec![token_type::NORMAL; n],
        Some(a) => {
            let v = a.to_i64_vec().ok_or_else(|| err("tokenizer.ggml.token_type is not an integer array".into()))?;
            if v.len() != n {
                return Err(err(format!("{} token types for {n} tokens", v.len())));
            }
            v.into_iter().map(|t| t as i32).collect()
        }
    };
    let mut warnings = Vec::new();
    let special = SpecialIds::read(md, n, &mut warnings);

    let mut b = Builder { path, tokens, types: &types, warnings, special };
    let (model_json, normalizer, pre_tokenizer, decoder, post_processor, kind) = match model {
        "gpt2" => b.byte_level_bpe(md)?,
        _ => b.sentencepiece_bpe(md)?,
    };

    let added = b.added_tokens();
    let doc = TokenizerJson {
        version: "1.0",
        truncation: Value::Null,
        padding: Value::Null,
        added_tokens: added.iter().map(AddedToken::json).collect(),
        normalizer,
        pre_tokenizer,
        post_processor,
        decoder,
        model: model_json,
    };
    let tokenizer_json = serde_json::to_vec(&doc).map_err(|e| err(format!("serializing tokenizer.json: {e}")))?;
    let tokenizer_config = b.tokenizer_config(md, &added, context_length);
    for w in &b.warnings {
        tracing::warn!("{w}");
    }
    Ok(TokenizerBuild::Built(
        TokenizerFiles { tokenizer_json, tokenizer_config, vocab_size: n, warnings: b.warnings },
        kind,
    ))
}

#[derive(Debug, Default)]
struct SpecialIds {
    bos: Option<usize>,
    eos: Option<usize>,
    unk: Option<usize>,
    pad: Option<usize>,
    add_bos: Option<bool>,
    add_eos: Option<bool>,
}

impl SpecialIds {
    fn read(md: &Metadata, n: usize, warnings: &mut Vec<String>) -> Self {
        let mut id = |key: &str| -> Option<usize> {
            let v = md.get_u64(key)?;
            if v as usize >= n || v > u32::MAX as u64 {
                warnings.push(format!("{key} = {v} is outside the {n}-token vocabulary; ignored"));
                return None;
            }
            Some(v as usize)
        };
        SpecialIds {
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id"),
            unk: id("tokenizer.ggml.unknown_token_id"),
            pad: id("tokenizer.ggml.padding_token_id"),
            add_bos: md.get_bool("tokenizer.ggml.add_bos_token"),
            add_eos: md.get_bool("tokenizer.ggml.add_eos_token"),
        }
    }
}

#[derive(Debug, Clone)]
struct AddedToken {
    id: usize,
    content: String,
    special: bool,
}

impl AddedToken {
    fn props(&self) -> Value {
        json!({
            "content": self.content,
            "single_word": false,
            "lstrip": false,
            "rstrip": false,
            "normalized": false,
            "special": self.special,
        })
    }

    fn json(&self) -> Value {
        let mut v = self.props();
        v["id"] = json!(self.id);
        v
    }
}

/// `tokenizer.json`'s top level, in the field order the `tokenizers` library writes.
#[derive(Serialize)]
struct TokenizerJson {
    version: &'static str,
    truncation: Value,
    padding: Value,
    added_tokens: Vec<Value>,
    normalizer: Value,
    pre_tokenizer: Value,
    post_processor: Value,
    decoder: Value,
    model: ModelJson,
}

/// The `model` object. Written by hand so that the vocabulary keeps id order (a
/// `serde_json::Map` would sort it by string).
struct ModelJson {
    fields: Vec<(&'static str, Value)>,
    vocab: Vocab,
    merges: Vec<String>,
}

struct Vocab(Vec<(String, usize)>);

impl Serialize for Vocab {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (tok, id) in &self.0 {
            m.serialize_entry(tok, id)?;
        }
        m.end()
    }
}

impl Serialize for ModelJson {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.fields.len() + 2))?;
        for (k, v) in &self.fields {
            m.serialize_entry(k, v)?;
        }
        m.serialize_entry("vocab", &self.vocab)?;
        m.serialize_entry("merges", &self.merges)?;
        m.end()
    }
}

type Parts = (ModelJson, Value, Value, Value, Value, TokenizerKind);

struct Builder<'a> {
    path: &'a std::path::Path,
    tokens: &'a [String],
    types: &'a [i32],
    warnings: Vec<String>,
    special: SpecialIds,
}

impl<'a> Builder<'a> {
    /// The vocabulary map, keeping the first id of a duplicated token (the `tokenizers` library
    /// needs token → id to be a function).
    fn vocab(&mut self) -> (Vocab, HashMap<&'a str, usize>) {
        let mut index: HashMap<&'a str, usize> = HashMap::with_capacity(self.tokens.len());
        let mut vocab = Vec::with_capacity(self.tokens.len());
        let mut dups = 0usize;
        for (id, t) in self.tokens.iter().enumerate() {
            if index.contains_key(t.as_str()) {
                dups += 1;
                continue;
            }
            index.insert(t.as_str(), id);
            vocab.push((t.clone(), id));
        }
        if dups > 0 {
            self.warnings.push(format!("{dups} duplicate token strings; each keeps its first id"));
        }
        (Vocab(vocab), index)
    }

    fn byte_level_bpe(&mut self, md: &Metadata) -> Result<Parts> {
        let pre = md.get_str("tokenizer.ggml.pre").unwrap_or("default").to_string();
        let byte_level = |use_regex: bool, trim_offsets: bool| json!({ "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": trim_offsets, "use_regex": use_regex });
        let split = |regex: &str| json!({ "type": "Split", "pattern": { "Regex": regex }, "behavior": "Isolated", "invert": false });
        let mut normalizer = Value::Null;
        let mut ignore_merges = false;
        let pre_tokenizer = match pre.as_str() {
            "default" | "gpt-2" | "gpt2" | "mpt" | "olmo" | "jais" | "phi-2" | "trillion" | "granite-docling" => {
                byte_level(true, true)
            }
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => json!({
                "type": "Sequence",
                "pretokenizers": [ { "type": "Digits", "individual_digits": true }, byte_level(true, true) ],
            }),
            "llama-bpe" | "llama3" | "smaug-bpe" | "dbrx" | "falcon3" => {
                ignore_merges = matches!(pre.as_str(), "llama-bpe" | "llama3");
                json!({ "type": "Sequence", "pretokenizers": [ split(LLAMA3_REGEX), byte_level(false, true) ] })
            }
            "qwen2" | "stablelm2" | "deepseek-r1-qwen" | "megrez" => {
                normalizer = json!({ "type": "NFC" });
                json!({ "type": "Sequence", "pretokenizers": [ split(QWEN2_REGEX), byte_level(false, false) ] })
            }
            "tekken" => {
                json!({ "type": "Sequence", "pretokenizers": [ split(TEKKEN_REGEX), byte_level(false, false) ] })
            }
            other => {
                self.warnings.push(format!(
                    "pre-tokenizer `{other}` is not known to Kiln; using the GPT-2 regex ({GPT2_REGEX}), which may \
                     split some text differently from llama.cpp"
                ));
                byte_level(true, true)
            }
        };

        let (vocab, index) = self.vocab();
        let raw_merges: &[String] = match md.get_array("tokenizer.ggml.merges") {
            Some(MetadataArray::String(m)) => m,
            Some(_) => {
                return Err(GgufError::Tokenizer {
                    path: self.path.to_path_buf(),
                    reason: "tokenizer.ggml.merges is not a string array".into(),
                })
            }
            None => {
                self.warnings.push("gpt2 tokenizer without tokenizer.ggml.merges; BPE will not merge".into());
                &[]
            }
        };
        // The `tokenizers` library refuses merges whose parts or result are not in the
        // vocabulary; llama.cpp ignores them. Drop them here, counted.
        let mut merges = Vec::with_capacity(raw_merges.len());
        let mut dropped = 0usize;
        for m in raw_merges {
            // llama.cpp splits at the first space after the first byte (`find(' ', 1)`): that
            // is, the first space that is not the first character.
            let split_at = m.char_indices().skip(1).find(|&(_, c)| c == ' ').map(|(i, _)| i);
            let ok = split_at.is_some_and(|i| {
                let (l, r) = (&m[..i], &m[i + 1..]);
                !r.is_empty()
                    && !r.contains(' ')
                    && index.contains_key(l)
                    && index.contains_key(r)
                    && index.contains_key(format!("{l}{r}").as_str())
            });
            if ok {
                merges.push(m.clone());
            } else {
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.warnings.push(format!("{dropped} merges refer to tokens outside the vocabulary and were dropped"));
        }

        let mut fields = vec![
            ("type", json!("BPE")),
            ("dropout", Value::Null),
            ("unk_token", Value::Null),
            ("continuing_subword_prefix", Value::Null),
            ("end_of_word_suffix", Value::Null),
            ("fuse_unk", json!(false)),
            ("byte_fallback", json!(false)),
        ];
        if ignore_merges {
            fields.push(("ignore_merges", json!(true)));
        }
        let model = ModelJson { fields, vocab, merges };
        let decoder = json!({ "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true });
        let byte_level_pp =
            json!({ "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true });
        let post = match self.template_processing(false) {
            Some(t) => json!({ "type": "Sequence", "processors": [byte_level_pp, t] }),
            None => byte_level_pp,
        };
        Ok((model, normalizer, pre_tokenizer, decoder, post, TokenizerKind::ByteLevelBpe { pre }))
    }

    fn sentencepiece_bpe(&mut self, md: &Metadata) -> Result<Parts> {
        let add_space_prefix = md.get_bool("tokenizer.ggml.add_space_prefix").unwrap_or(true);
        let scores: Vec<f32> = match md.get_array("tokenizer.ggml.scores").and_then(MetadataArray::to_f32_vec) {
            Some(s) if s.len() == self.tokens.len() => s,
            _ => {
                self.warnings.push("no usable tokenizer.ggml.scores; merge priority follows token ids".into());
                (0..self.tokens.len()).map(|i| -(i as f32)).collect()
            }
        };
        let (vocab, index) = self.vocab();
        let merges = spm_merges(self.tokens, self.types, &scores, &index);
        let has_bytes = self.types.contains(&token_type::BYTE);
        let unk = self
            .special
            .unk
            .or_else(|| self.types.iter().position(|&t| t == token_type::UNKNOWN))
            .map(|i| self.tokens[i].clone());
        let model = ModelJson {
            fields: vec![
                ("type", json!("BPE")),
                ("dropout", Value::Null),
                ("unk_token", unk.map_or(Value::Null, Value::String)),
                ("continuing_subword_prefix", Value::Null),
                ("end_of_word_suffix", Value::Null),
                ("fuse_unk", json!(true)),
                ("byte_fallback", json!(has_bytes)),
            ],
            vocab,
            merges,
        };
        let replace_space = json!({ "type": "Replace", "pattern": { "String": " " }, "content": "\u{2581}" });
        let normalizer = if add_space_prefix {
            json!({ "type": "Sequence", "normalizers": [ { "type": "Prepend", "prepend": "\u{2581}" }, replace_space ] })
        } else {
            replace_space
        };
        let mut decoders = vec![
            json!({ "type": "Replace", "pattern": { "String": "\u{2581}" }, "content": " " }),
            json!({ "type": "ByteFallback" }),
            json!({ "type": "Fuse" }),
        ];
        if add_space_prefix {
            decoders.push(json!({ "type": "Strip", "content": " ", "start": 1, "stop": 0 }));
        }
        let decoder = json!({ "type": "Sequence", "decoders": decoders });
        let post = self.template_processing(true).unwrap_or(Value::Null);
        Ok((model, normalizer, Value::Null, decoder, post, TokenizerKind::SentencePieceBpe))
    }

    /// A `TemplateProcessing` post-processor adding BOS/EOS as `tokenizer.ggml.add_*_token`
    /// say (defaults: llama.cpp adds BOS for SentencePiece models, nothing for BPE).
    fn template_processing(&self, default_bos: bool) -> Option<Value> {
        let s = &self.special;
        let bos = s.bos.filter(|_| s.add_bos.unwrap_or(default_bos));
        let eos = s.eos.filter(|_| s.add_eos.unwrap_or(false));
        if bos.is_none() && eos.is_none() {
            return None;
        }
        let tok = |id: usize, type_id: u32| json!({ "SpecialToken": { "id": self.tokens[id], "type_id": type_id } });
        let seq = |name: &str, type_id: u32| json!({ "Sequence": { "id": name, "type_id": type_id } });
        let mut single = Vec::new();
        let mut pair = Vec::new();
        for (out, parts) in [(&mut single, vec![("A", 0u32)]), (&mut pair, vec![("A", 0), ("B", 1)])] {
            for (name, type_id) in parts {
                if let Some(b) = bos {
                    out.push(tok(b, type_id));
                }
                out.push(seq(name, type_id));
                if let Some(e) = eos {
                    out.push(tok(e, type_id));
                }
            }
        }
        let mut specials = serde_json::Map::new();
        for id in [bos, eos].into_iter().flatten() {
            let t = &self.tokens[id];
            specials.insert(t.clone(), json!({ "id": t, "ids": [id], "tokens": [t] }));
        }
        Some(json!({ "type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials }))
    }

    fn added_tokens(&self) -> Vec<AddedToken> {
        let s = &self.special;
        let forced: Vec<usize> = [s.bos, s.eos, s.unk, s.pad].into_iter().flatten().collect();
        let mut out = Vec::new();
        for (id, (tok, &ty)) in self.tokens.iter().zip(self.types).enumerate() {
            let special = match ty {
                token_type::CONTROL | token_type::UNKNOWN => true,
                token_type::USER_DEFINED => false,
                _ if forced.contains(&id) => true,
                _ => continue,
            };
            out.push(AddedToken { id, content: tok.clone(), special });
        }
        out
    }

    fn tokenizer_config(&self, md: &Metadata, added: &[AddedToken], context_length: Option<usize>) -> Value {
        let s = &self.special;
        let name = |id: Option<usize>| id.map_or(Value::Null, |i| json!(self.tokens[i]));
        let mut decoder = serde_json::Map::new();
        for a in added {
            decoder.insert(a.id.to_string(), a.props());
        }
        let model = md.get_str("tokenizer.ggml.model").unwrap_or("");
        let mut c = json!({
            "add_bos_token": s.add_bos.unwrap_or(model == "llama"),
            "add_eos_token": s.add_eos.unwrap_or(false),
            "added_tokens_decoder": decoder,
            "bos_token": name(s.bos),
            "eos_token": name(s.eos),
            "unk_token": name(s.unk),
            "pad_token": name(s.pad),
            "clean_up_tokenization_spaces": false,
            "tokenizer_class": "PreTrainedTokenizerFast",
        });
        if let Some(ctx) = context_length {
            c["model_max_length"] = json!(ctx);
        }
        if let Some(t) = chat_template(md) {
            c["chat_template"] = t;
        }
        c
    }
}

/// `tokenizer.chat_template`, plus any named variants (`tokenizer.chat_template.tool_use`),
/// which HF writes as a list of `{name, template}`.
fn chat_template(md: &Metadata) -> Option<Value> {
    let default = md.get_str("tokenizer.chat_template");
    let named: Vec<(&str, &str)> =
        md.iter().filter_map(|(k, v)| Some((k.strip_prefix("tokenizer.chat_template.")?, v.as_str()?))).collect();
    match (default, named.is_empty()) {
        (None, true) => None,
        (Some(t), true) => Some(json!(t)),
        (d, false) => {
            let mut list = Vec::new();
            if let Some(t) = d {
                list.push(json!({ "name": "default", "template": t }));
            }
            list.extend(named.into_iter().map(|(n, t)| json!({ "name": n, "template": t })));
            Some(Value::Array(list))
        }
    }
}

/// Reconstructs BPE merges for a SentencePiece vocabulary (see the module docs): every way of
/// splitting a normal piece into two vocabulary pieces, ordered by the piece's score
/// (descending), then the piece's id, then the ids of the two halves.
fn spm_merges(tokens: &[String], types: &[i32], scores: &[f32], index: &HashMap<&str, usize>) -> Vec<String> {
    let mergeable = |id: usize| matches!(types[id], token_type::NORMAL | token_type::USER_DEFINED);
    let mut found: Vec<(f32, usize, usize, usize)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        if !mergeable(id) || index.get(piece.as_str()) != Some(&id) {
            continue;
        }
        for (pos, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(pos);
            if let (Some(&li), Some(&ri)) = (index.get(l), index.get(r)) {
                if mergeable(li) && mergeable(ri) {
                    found.push((scores[id], id, li, ri));
                }
            }
        }
    }
    found.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)).then(a.3.cmp(&b.3)));
    found.into_iter().map(|(_, _, l, r)| format!("{} {}", tokens[l], tokens[r])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::metadata::MetadataValue;
    use crate::gguf::testutil::{str_array, GgufWriter};

    fn file_with(w: GgufWriter) -> GgufFile {
        GgufFile::from_bytes(w.build(), "tok.gguf").unwrap()
    }

    fn types(t: &[i32]) -> MetadataValue {
        MetadataValue::Array(MetadataArray::I32(t.to_vec()))
    }

    fn built(f: &GgufFile, ctx: Option<usize>) -> (TokenizerFiles, TokenizerKind) {
        match build(f, ctx).unwrap() {
            TokenizerBuild::Built(files, kind) => (files, kind),
            TokenizerBuild::Skipped(why) => panic!("skipped: {why}"),
        }
    }

    fn parse(files: &TokenizerFiles) -> Value {
        serde_json::from_slice(&files.tokenizer_json).unwrap()
    }

    #[test]
    fn gpt2_smollm_tokenizer() {
        let toks = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "a", "b", "ab", "Ġ", "Ġa", "1", "x y"];
        let w = GgufWriter::new()
            .kv_str("tokenizer.ggml.model", "gpt2")
            .kv_str("tokenizer.ggml.pre", "smollm")
            .kv("tokenizer.ggml.tokens", str_array(&toks))
            .kv("tokenizer.ggml.token_type", types(&[3, 3, 3, 1, 1, 1, 1, 1, 1, 4]))
            .kv("tokenizer.ggml.merges", str_array(&["a b", "Ġ a", "z q", "ab"]))
            .kv_u32("tokenizer.ggml.bos_token_id", 1)
            .kv_u32("tokenizer.ggml.eos_token_id", 2)
            .kv_u32("tokenizer.ggml.unknown_token_id", 0)
            .kv_u32("tokenizer.ggml.padding_token_id", 2)
            .kv("tokenizer.ggml.add_bos_token", MetadataValue::Bool(false))
            .kv_str("tokenizer.chat_template", "{{ messages }}");
        let f = file_with(w);
        let (files, kind) = built(&f, Some(8192));
        assert_eq!(kind, TokenizerKind::ByteLevelBpe { pre: "smollm".into() });
        let j = parse(&files);
        assert_eq!(j["version"], "1.0");
        assert_eq!(j["model"]["type"], "BPE");
        assert_eq!(j["model"]["vocab"].as_object().unwrap().len(), toks.len());
        assert_eq!(j["model"]["vocab"]["Ġa"], 7);
        assert_eq!(j["model"]["merges"], json!(["a b", "Ġ a"]));
        assert!(files.warnings.iter().any(|w| w.contains("2 merges")), "{:?}", files.warnings);
        let pre = &j["pre_tokenizer"];
        assert_eq!(pre["type"], "Sequence");
        assert_eq!(pre["pretokenizers"][0], json!({"type": "Digits", "individual_digits": true}));
        assert_eq!(pre["pretokenizers"][1]["type"], "ByteLevel");
        assert_eq!(pre["pretokenizers"][1]["use_regex"], true);
        assert_eq!(j["decoder"]["type"], "ByteLevel");
        assert_eq!(j["post_processor"]["type"], "ByteLevel");
        let added = j["added_tokens"].as_array().unwrap();
        assert_eq!(added.len(), 4);
        assert_eq!(added[1]["content"], "<|im_start|>");
        assert_eq!(added[1]["special"], true);
        assert_eq!(added[3]["content"], "x y");
        assert_eq!(added[3]["special"], false);
        // The vocab keeps id order in the serialized text.
        let text = String::from_utf8(files.tokenizer_json.clone()).unwrap();
        assert!(text.find("\"<|endoftext|>\":0").unwrap() < text.find("\"ab\":5").unwrap());

        let c = &files.tokenizer_config;
        assert_eq!(c["bos_token"], "<|im_start|>");
        assert_eq!(c["eos_token"], "<|im_end|>");
        assert_eq!(c["pad_token"], "<|im_end|>");
        assert_eq!(c["unk_token"], "<|endoftext|>");
        assert_eq!(c["chat_template"], "{{ messages }}");
        assert_eq!(c["model_max_length"], 8192);
        assert_eq!(c["add_bos_token"], false);
        assert_eq!(c["added_tokens_decoder"]["2"]["content"], "<|im_end|>");
    }

    #[test]
    fn pre_tokenizer_variants() {
        for (pre, first_type, regex) in [
            ("llama-bpe", "Split", Some(LLAMA3_REGEX)),
            ("qwen2", "Split", Some(QWEN2_REGEX)),
            ("default", "", None),
            ("something-new", "", None),
        ] {
            let w = GgufWriter::new()
                .kv_str("tokenizer.ggml.model", "gpt2")
                .kv_str("tokenizer.ggml.pre", pre)
                .kv("tokenizer.ggml.tokens", str_array(&["a", "b", "<s>"]))
                .kv("tokenizer.ggml.merges", str_array(&[]))
                .kv_u32("tokenizer.ggml.bos_token_id", 2)
                .kv("tokenizer.ggml.add_bos_token", MetadataValue::Bool(pre == "llama-bpe"));
            let (files, _) = built(&file_with(w), None);
            let j = parse(&files);
            match regex {
                Some(r) => {
                    assert_eq!(j["pre_tokenizer"]["pretokenizers"][0]["type"], first_type);
                    assert_eq!(j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"], r);
                    assert_eq!(j["pre_tokenizer"]["pretokenizers"][1]["use_regex"], false);
                }
                None => assert_eq!(j["pre_tokenizer"]["type"], "ByteLevel"),
            }
            if pre == "qwen2" {
                assert_eq!(j["normalizer"]["type"], "NFC");
            }
            if pre == "llama-bpe" {
                assert_eq!(j["model"]["ignore_merges"], true);
                let pp = &j["post_processor"];
                assert_eq!(pp["type"], "Sequence");
                assert_eq!(pp["processors"][1]["type"], "TemplateProcessing");
                assert_eq!(pp["processors"][1]["special_tokens"]["<s>"]["ids"], json!([2]));
            }
            assert_eq!(files.warnings.iter().any(|w| w.contains("something-new")), pre == "something-new");
        }
    }

    /// A small SentencePiece vocabulary whose scores order the merges: "▁ab" can be made as
    /// "▁a"+"b" or "▁"+"ab".
    fn sentencepiece_writer() -> GgufWriter {
        let toks = ["<unk>", "<s>", "</s>", "<0x0A>", "▁", "a", "b", "ab", "▁a", "▁ab"];
        let tys = [2, 3, 3, 6, 1, 1, 1, 1, 1, 1];
        let scores = [0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0];
        GgufWriter::new()
            .kv_str("tokenizer.ggml.model", "llama")
            .kv("tokenizer.ggml.tokens", str_array(&toks))
            .kv("tokenizer.ggml.token_type", types(&tys))
            .kv("tokenizer.ggml.scores", MetadataValue::Array(MetadataArray::F32(scores.to_vec())))
            .kv_u32("tokenizer.ggml.bos_token_id", 1)
            .kv_u32("tokenizer.ggml.eos_token_id", 2)
            .kv_u32("tokenizer.ggml.unknown_token_id", 0)
    }

    #[test]
    fn sentencepiece_tokenizer_reconstructs_merges() {
        // Scores: higher merges first.
        let w = sentencepiece_writer();
        let (files, kind) = built(&file_with(w), Some(4096));
        assert_eq!(kind, TokenizerKind::SentencePieceBpe);
        let j = parse(&files);
        assert_eq!(j["model"]["byte_fallback"], true);
        assert_eq!(j["model"]["unk_token"], "<unk>");
        // "ab" (score -4) first, then "▁a" (-5), then the two splits of "▁ab" (-6) by left id.
        assert_eq!(j["model"]["merges"], json!(["a b", "▁ a", "▁ ab", "▁a b"]));
        assert_eq!(j["normalizer"]["normalizers"][0]["type"], "Prepend");
        assert_eq!(j["post_processor"]["single"][0]["SpecialToken"]["id"], "<s>");
        let added: Vec<&str> =
            j["added_tokens"].as_array().unwrap().iter().map(|a| a["content"].as_str().unwrap()).collect();
        assert_eq!(added, ["<unk>", "<s>", "</s>"]);
        assert_eq!(files.tokenizer_config["add_bos_token"], true);
    }

    /// The JSON must load in Hugging Face's own `tokenizers` library and tokenize as llama.cpp
    /// would: specials verbatim, byte-level merges, individual digits.
    #[test]
    fn byte_level_json_loads_in_hf_tokenizers() {
        let toks = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "a", "b", "ab", "Ġ", "Ġa", "1", "2", "Ċ"];
        let w = GgufWriter::new()
            .kv_str("tokenizer.ggml.model", "gpt2")
            .kv_str("tokenizer.ggml.pre", "smollm")
            .kv("tokenizer.ggml.tokens", str_array(&toks))
            .kv("tokenizer.ggml.token_type", types(&[3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1]))
            .kv("tokenizer.ggml.merges", str_array(&["a b", "Ġ a"]))
            .kv_u32("tokenizer.ggml.eos_token_id", 2);
        let (files, _) = built(&file_with(w), None);
        let tk = tokenizers::Tokenizer::from_bytes(&files.tokenizer_json).expect("tokenizers rejects the JSON");
        let enc = tk.encode("<|im_start|>ab a\n12<|im_end|>", true).unwrap();
        assert_eq!(enc.get_ids(), [1, 5, 7, 10, 8, 9, 2]);
        assert_eq!(tk.decode(enc.get_ids(), false).unwrap(), "<|im_start|>ab a\n12<|im_end|>");
    }

    #[test]
    fn sentencepiece_json_loads_in_hf_tokenizers() {
        let w = sentencepiece_writer();
        let (files, _) = built(&file_with(w), None);
        let tk = tokenizers::Tokenizer::from_bytes(&files.tokenizer_json).expect("tokenizers rejects the JSON");
        // "ab" → "▁ab": a+b merges first (higher score), then ▁+ab. BOS is prepended.
        assert_eq!(tk.encode("ab", true).unwrap().get_ids(), [1, 9]);
        // A newline is not a piece: byte fallback to <0x0A>.
        let enc = tk.encode("a\nb", true).unwrap();
        assert_eq!(enc.get_ids(), [1, 8, 3, 6]);
        assert_eq!(tk.decode(enc.get_ids(), true).unwrap(), "a\nb");
    }

    #[test]
    fn unsupported_or_missing_tokenizers() {
        let f = file_with(GgufWriter::new());
        assert!(matches!(build(&f, None).unwrap(), TokenizerBuild::Skipped(_)));
        let f = file_with(
            GgufWriter::new().kv_str("tokenizer.ggml.model", "bert").kv("tokenizer.ggml.tokens", str_array(&["a"])),
        );
        assert!(matches!(build(&f, None).unwrap(), TokenizerBuild::Skipped(ref w) if w.contains("bert")));
        let f = file_with(GgufWriter::new().kv_str("tokenizer.ggml.model", "gpt2"));
        assert!(matches!(build(&f, None), Err(GgufError::Tokenizer { .. })));
        let f = file_with(
            GgufWriter::new()
                .kv_str("tokenizer.ggml.model", "gpt2")
                .kv("tokenizer.ggml.tokens", str_array(&["a", "b"]))
                .kv("tokenizer.ggml.token_type", types(&[1])),
        );
        assert!(matches!(build(&f, None), Err(GgufError::Tokenizer { .. })));
    }

    #[test]
    fn named_chat_templates_become_a_list() {
        let w =
            GgufWriter::new().kv_str("tokenizer.chat_template", "A").kv_str("tokenizer.chat_template.tool_use", "B");
        let f = file_with(w);
        assert_eq!(
            chat_template(f.metadata()).unwrap(),
            json!([{"name": "default", "template": "A"}, {"name": "tool_use", "template": "B"}])
        );
    }
}
