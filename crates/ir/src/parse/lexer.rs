//! Tokens of the text form, with 1-based line/column positions for error messages.

use crate::error::ParseError;

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Ident(String),
    /// `%12`
    Value(u64),
    /// `@name` or `@"quoted name"`
    Global(String),
    Int(u64),
    Float(f64),
    Str(String),
    Punct(char),
    Eof,
}

impl Tok {
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("'{s}'"),
            Tok::Value(n) => format!("'%{n}'"),
            Tok::Global(s) => format!("'@{s}'"),
            Tok::Int(n) => format!("'{n}'"),
            Tok::Float(f) => format!("'{f:?}'"),
            Tok::Str(s) => format!("{s:?}"),
            Tok::Punct(c) => format!("'{c}'"),
            Tok::Eof => "end of input".to_string(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Token {
    pub tok: Tok,
    pub line: usize,
    pub col: usize,
}

pub fn lex(src: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    let err = |line, col, msg: String| ParseError { line, col, msg };
    while i < chars.len() {
        let c = chars[i];
        let (tl, tc) = (line, col);
        let advance = |n: usize, i: &mut usize, col: &mut usize| {
            *i += n;
            *col += n;
        };
        if c == '\n' {
            i += 1;
            line += 1;
            col = 1;
            continue;
        }
        if c.is_whitespace() {
            advance(1, &mut i, &mut col);
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                advance(1, &mut i, &mut col);
            }
            continue;
        }
        let start = i;
        let tok = if c.is_ascii_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                advance(1, &mut i, &mut col);
            }
            Tok::Ident(chars[start..i].iter().collect())
        } else if c.is_ascii_digit() {
            lex_number(&chars, &mut i, &mut col).map_err(|m| err(tl, tc, m))?
        } else if c == '%' {
            advance(1, &mut i, &mut col);
            let s = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                advance(1, &mut i, &mut col);
            }
            let digits: String = chars[s..i].iter().collect();
            let n = digits.parse::<u64>().map_err(|_| err(tl, tc, "expected a value number after '%'".into()))?;
            Tok::Value(n)
        } else if c == '@' {
            advance(1, &mut i, &mut col);
            if chars.get(i) == Some(&'"') {
                Tok::Global(lex_string(&chars, &mut i, &mut line, &mut col).map_err(|(l, c, m)| err(l, c, m))?)
            } else {
                let s = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '.' | '-')) {
                    advance(1, &mut i, &mut col);
                }
                if s == i {
                    return Err(err(tl, tc, "expected a name after '@'".into()));
                }
                Tok::Global(chars[s..i].iter().collect())
            }
        } else if c == '"' {
            Tok::Str(lex_string(&chars, &mut i, &mut line, &mut col).map_err(|(l, c, m)| err(l, c, m))?)
        } else if "{}[](),=:+-*".contains(c) {
            advance(1, &mut i, &mut col);
            Tok::Punct(c)
        } else {
            return Err(err(tl, tc, format!("unexpected character {c:?}")));
        };
        toks.push(Token { tok, line: tl, col: tc });
    }
    toks.push(Token { tok: Tok::Eof, line, col });
    Ok(toks)
}

fn lex_number(chars: &[char], i: &mut usize, col: &mut usize) -> Result<Tok, String> {
    let start = *i;
    let digits = |i: &mut usize, col: &mut usize| {
        let s = *i;
        while *i < chars.len() && chars[*i].is_ascii_digit() {
            *i += 1;
            *col += 1;
        }
        *i > s
    };
    digits(i, col);
    let mut is_float = false;
    if *i < chars.len() && chars[*i] == '.' {
        *i += 1;
        *col += 1;
        if !digits(i, col) {
            return Err("expected digits after '.'".into());
        }
        is_float = true;
    }
    if *i < chars.len() && (chars[*i] == 'e' || chars[*i] == 'E') {
        *i += 1;
        *col += 1;
        if *i < chars.len() && (chars[*i] == '-' || chars[*i] == '+') {
            *i += 1;
            *col += 1;
        }
        if !digits(i, col) {
            return Err("expected digits in the exponent".into());
        }
        is_float = true;
    }
    if *i < chars.len() && (chars[*i].is_ascii_alphabetic() || chars[*i] == '_') {
        return Err(format!("unexpected {:?} after a number", chars[*i]));
    }
    let text: String = chars[start..*i].iter().collect();
    if is_float {
        text.parse::<f64>().map(Tok::Float).map_err(|e| format!("bad float '{text}': {e}"))
    } else {
        text.parse::<u64>().map(Tok::Int).map_err(|_| format!("integer '{text}' is too large"))
    }
}

/// A double-quoted string with Rust's escapes (what `{:?}` prints).
fn lex_string(
    chars: &[char],
    i: &mut usize,
    line: &mut usize,
    col: &mut usize,
) -> Result<String, (usize, usize, String)> {
    let (sl, sc) = (*line, *col);
    *i += 1;
    *col += 1;
    let mut s = String::new();
    loop {
        let Some(&c) = chars.get(*i) else {
            return Err((sl, sc, "unterminated string".into()));
        };
        let (cl, cc) = (*line, *col);
        *i += 1;
        *col += 1;
        match c {
            '"' => return Ok(s),
            '\n' => return Err((sl, sc, "unterminated string".into())),
            '\\' => {
                let Some(&e) = chars.get(*i) else {
                    return Err((sl, sc, "unterminated string".into()));
                };
                *i += 1;
                *col += 1;
                match e {
                    'n' => s.push('\n'),
                    't' => s.push('\t'),
                    'r' => s.push('\r'),
                    '0' => s.push('\0'),
                    '\\' => s.push('\\'),
                    '"' => s.push('"'),
                    '\'' => s.push('\''),
                    'u' => {
                        if chars.get(*i) != Some(&'{') {
                            return Err((cl, cc, "expected '{' after \\u".into()));
                        }
                        let s0 = *i + 1;
                        let mut j = s0;
                        while j < chars.len() && chars[j] != '}' && j - s0 <= 6 {
                            j += 1;
                        }
                        let hex: String = chars[s0..j.min(chars.len())].iter().collect();
                        let ch = (chars.get(j) == Some(&'}'))
                            .then(|| u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32))
                            .flatten()
                            .ok_or((cl, cc, format!("bad unicode escape '\\u{{{hex}}}'")))?;
                        s.push(ch);
                        *col += j + 1 - *i;
                        *i = j + 1;
                    }
                    other => return Err((cl, cc, format!("unknown escape '\\{other}'"))),
                }
            }
            c => s.push(c),
        }
    }
}
