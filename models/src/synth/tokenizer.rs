//! A real byte-level BPE tokenizer of any size (≥ 259 tokens), in Hugging Face `tokenizers` JSON:
//!
//! * ids 0–2: the special tokens `<|endoftext|>` (bos = eos), `<|im_start|>`, `<|im_end|>`, also
//!   listed in `added_tokens` with `special: true`;
//! * ids 3–258: the 256 byte-level symbols, byte `b` at id `3 + b`, spelled with GPT-2's
//!   `bytes_to_unicode` mapping (`Ġ` is the space byte);
//! * the rest: merges learned by a small BPE trainer over [`CORPUS`], pre-tokenized the way the
//!   GPT-2 regex of the `ByteLevel` pre-tokenizer splits text. When the corpus has no pair left to
//!   merge before the vocabulary is full, the remaining ids are filled with "filler" merges of two
//!   existing tokens whose concatenation is new (valid merges, ranked after every learned one, so
//!   they never change how the corpus-like text is split).
//!
//! Every merge's parts and result are in the vocabulary, so `tokenizers` loads the file, and since
//! all 256 bytes are tokens, any UTF-8 text round-trips through encode → decode.

use super::corpus::CORPUS;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The special tokens, by id.
pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
/// `<|endoftext|>`: the bos and eos token.
pub const ENDOFTEXT_ID: u32 = 0;
pub const IM_START_ID: u32 = 1;
pub const IM_END_ID: u32 = 2;
/// Id of byte 0; byte `b` is token `FIRST_BYTE_ID + b`.
pub const FIRST_BYTE_ID: u32 = SPECIAL_TOKENS.len() as u32;
/// The smallest vocabulary: the special tokens and the 256 bytes.
pub const MIN_VOCAB: usize = SPECIAL_TOKENS.len() + 256;

/// SmolLM2-Instruct's ChatML chat template.
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// GPT-2's reversible byte → printable-character mapping.
pub fn bytes_to_unicode() -> [char; 256] {
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let c = if printable(b) {
            b
        } else {
            n += 1;
            255 + n
        };
        out[b as usize] = char::from_u32(c).expect("valid code point");
    }
    out
}

/// The learned vocabulary and merges.
#[derive(Clone, Debug)]
pub struct Bpe {
    /// Token strings by id (byte-level spelling).
    pub tokens: Vec<String>,
    /// Merges in rank order, as pairs of token strings.
    pub merges: Vec<(String, String)>,
    /// How many of `merges` were learned from the corpus (the rest are fillers).
    pub learned: usize,
}

/// Splits text like the GPT-2 regex the `ByteLevel` pre-tokenizer uses:
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
pub fn pretokenize(text: &str) -> Vec<&str> {
    #[derive(PartialEq, Clone, Copy)]
    enum Class {
        Letter,
        Number,
        Other,
    }
    let class = |c: char| {
        if c.is_alphabetic() {
            Class::Letter
        } else if c.is_numeric() {
            Class::Number
        } else {
            Class::Other
        }
    };
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let n = chars.len();
    let at = |i: usize| if i < n { chars[i].0 } else { text.len() };
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let c = chars[i].1;
        if c == '\'' {
            let rest = &text[chars[i].0 + 1..];
            let len = ["re", "ve", "ll", "s", "t", "m", "d"].iter().find(|s| rest.starts_with(**s)).map(|s| s.len());
            if let Some(len) = len {
                out.push(&text[chars[i].0..chars[i].0 + 1 + len]);
                i += 1 + len;
                continue;
            }
        }
        let j = if c == ' ' && i + 1 < n && !chars[i + 1].1.is_whitespace() { i + 1 } else { i };
        if !chars[j].1.is_whitespace() {
            let k0 = class(chars[j].1);
            let mut k = j + 1;
            while k < n && !chars[k].1.is_whitespace() && class(chars[k].1) == k0 {
                k += 1;
            }
            out.push(&text[at(i)..at(k)]);
            i = k;
            continue;
        }
        let mut k = i;
        while k < n && chars[k].1.is_whitespace() {
            k += 1;
        }
        // `\s+(?!\S)` leaves the last whitespace character before a non-space for the next token
        // (where a space joins the word and anything else stands alone).
        let end = if k == n {
            k
        } else if k - i > 1 {
            k - 1
        } else {
            i + 1
        };
        out.push(&text[at(i)..at(end)]);
        i = end;
    }
    out
}

/// Trains byte-level BPE on [`CORPUS`] until the vocabulary has `vocab_size` tokens
/// (`vocab_size >= MIN_VOCAB`).
pub fn train(vocab_size: usize) -> Bpe {
    assert!(vocab_size >= MIN_VOCAB, "vocab_size {vocab_size} < {MIN_VOCAB}");
    let byte_chars = bytes_to_unicode();
    let mut tokens: Vec<String> = SPECIAL_TOKENS.iter().map(|s| s.to_string()).collect();
    tokens.extend(byte_chars.iter().map(|c| c.to_string()));
    let mut index: HashMap<String, u32> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();

    // Distinct words (as token-id sequences) with their counts; BTreeMap for a fixed order.
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for w in pretokenize(CORPUS) {
        *counts.entry(w).or_default() += 1;
    }
    let mut words: Vec<(Vec<u32>, usize)> =
        counts.into_iter().map(|(w, n)| (w.bytes().map(|b| FIRST_BYTE_ID + b as u32).collect(), n)).collect();

    let mut merges: Vec<(String, String)> = Vec::new();
    let mut merged_pairs: HashSet<(u32, u32)> = HashSet::new();
    while tokens.len() < vocab_size {
        let mut pairs: HashMap<(u32, u32), usize> = HashMap::new();
        for (w, n) in &words {
            for p in w.windows(2) {
                *pairs.entry((p[0], p[1])).or_default() += n;
            }
        }
        // Most frequent pair; ties go to the lexicographically smallest spelling, then ids.
        let best = pairs.into_iter().max_by(|(pa, ca), (pb, cb)| {
            ca.cmp(cb)
                .then_with(|| {
                    (&tokens[pb.0 as usize], &tokens[pb.1 as usize])
                        .cmp(&(&tokens[pa.0 as usize], &tokens[pa.1 as usize]))
                })
                .then_with(|| pb.cmp(pa))
        });
        let Some(((a, b), _)) = best else { break };
        let merged = format!("{}{}", tokens[a as usize], tokens[b as usize]);
        let id = match index.get(&merged) {
            Some(&id) => id,
            None => {
                let id = tokens.len() as u32;
                index.insert(merged.clone(), id);
                tokens.push(merged);
                id
            }
        };
        // A pair can come back when a later merge rebuilds one of its tokens; it is merged again
        // here but listed once (its first rank already merges it at encode time).
        if merged_pairs.insert((a, b)) {
            merges.push((tokens[a as usize].clone(), tokens[b as usize].clone()));
        }
        for (w, _) in &mut words {
            let mut out = Vec::with_capacity(w.len());
            let mut i = 0;
            while i < w.len() {
                if i + 1 < w.len() && w[i] == a && w[i + 1] == b {
                    out.push(id);
                    i += 2;
                } else {
                    out.push(w[i]);
                    i += 1;
                }
            }
            *w = out;
        }
    }
    let learned = merges.len();

    // Filler: concatenations of two existing non-special tokens, in id order.
    let first = FIRST_BYTE_ID as usize;
    let mut a = first;
    'fill: while tokens.len() < vocab_size {
        let n = tokens.len();
        for b in first..n {
            if tokens.len() >= vocab_size {
                break 'fill;
            }
            let merged = format!("{}{}", tokens[a], tokens[b]);
            if index.contains_key(&merged) {
                continue;
            }
            index.insert(merged.clone(), tokens.len() as u32);
            merges.push((tokens[a].clone(), tokens[b].clone()));
            tokens.push(merged);
        }
        a += 1;
    }
    Bpe { tokens, merges, learned }
}

/// `{token: id}` in id order.
struct Vocab<'a>(&'a [String]);

impl Serialize for Vocab<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (i, t) in self.0.iter().enumerate() {
            m.serialize_entry(t, &i)?;
        }
        m.end()
    }
}

#[derive(serde::Serialize)]
struct BpeModel<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    dropout: Option<f64>,
    unk_token: Option<String>,
    continuing_subword_prefix: Option<String>,
    end_of_word_suffix: Option<String>,
    fuse_unk: bool,
    byte_fallback: bool,
    ignore_merges: bool,
    vocab: Vocab<'a>,
    /// "left right" strings: byte-level tokens never contain a space, and every `tokenizers`
    /// version reads this form.
    merges: Vec<String>,
}

#[derive(serde::Serialize)]
struct TokenizerJson<'a> {
    version: &'static str,
    truncation: Option<Value>,
    padding: Option<Value>,
    added_tokens: Vec<Value>,
    normalizer: Option<Value>,
    pre_tokenizer: Value,
    post_processor: Value,
    decoder: Value,
    model: BpeModel<'a>,
}

fn added_token(id: usize, content: &str) -> Value {
    json!({
        "id": id,
        "content": content,
        "single_word": false,
        "lstrip": false,
        "rstrip": false,
        "normalized": false,
        "special": true,
    })
}

/// `tokenizer.json`, pretty-printed.
pub fn tokenizer_json(bpe: &Bpe) -> String {
    let t = TokenizerJson {
        version: "1.0",
        truncation: None,
        padding: None,
        added_tokens: SPECIAL_TOKENS.iter().enumerate().map(|(i, s)| added_token(i, s)).collect(),
        normalizer: None,
        pre_tokenizer: json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}),
        post_processor: json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true}),
        decoder: json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
        model: BpeModel {
            kind: "BPE",
            dropout: None,
            unk_token: None,
            continuing_subword_prefix: None,
            end_of_word_suffix: None,
            fuse_unk: false,
            byte_fallback: false,
            ignore_merges: false,
            vocab: Vocab(&bpe.tokens),
            merges: bpe.merges.iter().map(|(a, b)| format!("{a} {b}")).collect(),
        },
    };
    serde_json::to_string_pretty(&t).expect("tokenizer JSON serializes") + "\n"
}

/// `tokenizer_config.json` (transformers' `GPT2Tokenizer` settings, as SmolLM2 ships them).
pub fn tokenizer_config(model_max_length: usize, vocab_size: usize) -> Value {
    let decoder: serde_json::Map<String, Value> = SPECIAL_TOKENS
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut v = added_token(i, s);
            let o = v.as_object_mut().expect("object");
            o.remove("id");
            (i.to_string(), v)
        })
        .collect();
    json!({
        "add_prefix_space": false,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": [SPECIAL_TOKENS[1], SPECIAL_TOKENS[2]],
        "bos_token": SPECIAL_TOKENS[0],
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": false,
        "eos_token": SPECIAL_TOKENS[0],
        "model_max_length": model_max_length,
        "pad_token": SPECIAL_TOKENS[0],
        "tokenizer_class": "GPT2Tokenizer",
        "unk_token": SPECIAL_TOKENS[0],
        "vocab_size": vocab_size,
    })
}

/// `generation_config.json`: bos `<|endoftext|>`; generation stops at `<|endoftext|>` or at the
/// ChatML turn end `<|im_end|>`.
pub fn generation_config() -> Value {
    json!({
        "_from_model_config": true,
        "bos_token_id": ENDOFTEXT_ID,
        "eos_token_id": [ENDOFTEXT_ID, IM_END_ID],
        "pad_token_id": ENDOFTEXT_ID,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_mapping_is_gpt2s() {
        let m = bytes_to_unicode();
        assert_eq!(m[b' ' as usize], 'Ġ');
        assert_eq!(m[b'\n' as usize], 'Ċ');
        assert_eq!(m[b'a' as usize], 'a');
        assert_eq!(m[0], 'Ā');
        assert_eq!(m[0xa0], 'ł');
        assert_eq!(m[0xad], 'Ń');
        assert_eq!(m.iter().collect::<HashSet<_>>().len(), 256);
    }

    #[test]
    fn pretokenize_like_gpt2() {
        assert_eq!(pretokenize("Hello world"), ["Hello", " world"]);
        assert_eq!(pretokenize("don't stop"), ["don", "'t", " stop"]);
        assert_eq!(pretokenize("a  b"), ["a", " ", " b"]);
        assert_eq!(pretokenize("2,480 books."), ["2", ",", "480", " books", "."]);
        assert_eq!(pretokenize("end.\n\nNext"), ["end", ".", "\n", "\n", "Next"]);
        assert_eq!(pretokenize("x \n\n y"), ["x", " \n\n", " y"]);
        assert_eq!(pretokenize("tail  "), ["tail", "  "]);
        assert_eq!(pretokenize("héllo wörld"), ["héllo", " wörld"]);
        let text = "The river ran slowly, and   it's 12:30!\n";
        assert_eq!(pretokenize(text).concat(), text);
    }

    #[test]
    fn training_fills_the_vocab_consistently() {
        for size in [MIN_VOCAB, 320, 1000, 5000] {
            let bpe = train(size);
            assert_eq!(bpe.tokens.len(), size);
            let set: HashSet<&String> = bpe.tokens.iter().collect();
            assert_eq!(set.len(), size, "duplicate tokens");
            // A learned merge may rebuild an existing token (`ab c` after `a bc`), so merges can
            // outnumber the tokens they added.
            assert!(bpe.merges.len() >= size - MIN_VOCAB);
            assert_eq!(bpe.merges.iter().collect::<HashSet<_>>().len(), bpe.merges.len(), "duplicate merges");
            for (a, b) in &bpe.merges {
                assert!(set.contains(a) && set.contains(b) && set.contains(&format!("{a}{b}")), "{a} {b}");
                assert!(!a.contains(' ') && !b.contains(' '));
            }
        }
        let bpe = train(320);
        assert_eq!(bpe.learned, bpe.merges.len());
        assert!(bpe.tokens.contains(&"Ġthe".to_string()), "{:?}", &bpe.tokens[MIN_VOCAB..]);
    }
}
