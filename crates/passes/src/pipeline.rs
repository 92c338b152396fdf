//! Pipeline strings, as MLIR writes them: `canonicalize,cse,eqsat{rules=rope+layout,node-limit=100000},dce`.
//!
//! Grammar (whitespace is allowed around `,`, `{`, `}` and `=`, and ignored):
//!
//! ```text
//! pipeline := level | (pass (',' pass)*)?        level := -O0 | -O1 | -O2
//! pass     := name ('{' (option (',' option)*)? '}')?
//! option   := name '=' value
//! name     := [A-Za-z0-9_-]+                      value := any characters but , { } = and whitespace
//! ```
//!
//! **Canonical form** — what [`Pipeline`]'s `Display` prints, and so what `parse` then `print`
//! gives back unchanged: no whitespace, passes separated by `,`, a pass's options in braces in the
//! order they were written, separated by `,`, and no braces when a pass has no options (`cse{}`
//! prints as `cse`). A level prints as the passes it stands for.
//!
//! [`Pipeline::parse`] checks only syntax (and that an option is not given twice);
//! [`Pipeline::build`] looks the passes up in the [`registry`] and runs their
//! constructors. Either reports a [`PipelineError`] at a column of the text, with a caret line.

use crate::pass::{Pass, PassOptions};
use crate::registry;
use std::fmt;

/// `-O1`: the cheap cleanups.
pub const O1: &str = "canonicalize,cse,dce";
/// `-O2`: cleanups, constant folding, equality saturation and fusion.
pub const O2: &str =
    "canonicalize,cse,const-fold,eqsat{rules=rope+layout+algebra},merge-projections,fuse-elementwise,cse,dce";

/// The named optimization levels, as (flag, pipeline).
pub const LEVELS: &[(&str, &str)] = &[("-O0", ""), ("-O1", O1), ("-O2", O2)];

/// One pass of a pipeline, as written: its registry name and its options in the order given.
#[derive(Clone, Debug)]
pub struct PassSpec {
    pub name: String,
    pub options: Vec<(String, String)>,
    /// 1-based columns of the name and of each option key in the parsed text (0 when built in code).
    name_col: usize,
    option_cols: Vec<usize>,
}

impl PartialEq for PassSpec {
    /// Positions in the source text do not count.
    fn eq(&self, other: &PassSpec) -> bool {
        self.name == other.name && self.options == other.options
    }
}
impl Eq for PassSpec {}

impl PassSpec {
    pub fn new(name: impl Into<String>, options: Vec<(String, String)>) -> PassSpec {
        let n = options.len();
        PassSpec { name: name.into(), options, name_col: 0, option_cols: vec![0; n] }
    }

    /// The spec of a constructed pass: its name and the options it prints.
    pub fn of(pass: &dyn Pass) -> PassSpec {
        PassSpec::new(pass.name(), pass.options())
    }

    /// The options as the pass constructors read them.
    pub fn pass_options(&self) -> PassOptions {
        PassOptions(self.options.iter().cloned().collect())
    }
}

impl fmt::Display for PassSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.options.is_empty() {
            f.write_str("{")?;
            for (i, (k, v)) in self.options.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{k}={v}")?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

/// A parsed pipeline: passes in the order they run.
#[derive(Clone, Debug, Default)]
pub struct Pipeline {
    pub passes: Vec<PassSpec>,
    /// The text it was parsed from (for error columns), if any.
    text: Option<String>,
}

impl PartialEq for Pipeline {
    fn eq(&self, other: &Pipeline) -> bool {
        self.passes == other.passes
    }
}
impl Eq for Pipeline {}

impl fmt::Display for Pipeline {
    /// The canonical form (see the module docs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.passes.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Pipeline {
    type Err = PipelineError;
    fn from_str(s: &str) -> Result<Pipeline, PipelineError> {
        Pipeline::parse(s)
    }
}

/// A malformed pipeline, an unknown pass or a bad option, at a 1-based column of `text`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render("pipeline"))]
pub struct PipelineError {
    pub col: usize,
    pub msg: String,
    /// The pipeline text the column refers to.
    pub text: String,
}

impl PipelineError {
    fn new(text: &str, col: usize, msg: impl Into<String>) -> PipelineError {
        PipelineError { col, msg: msg.into(), text: text.to_string() }
    }

    /// `origin:1:COL: message`, then the pipeline and a caret under the column:
    ///
    /// ```text
    /// --passes:1:18: expected '}' or ',' after option 'rules', found end of pipeline
    ///   cse,eqsat{rules=rope
    ///                       ^
    /// ```
    pub fn render(&self, origin: &str) -> String {
        format!("{origin}:1:{}: {}\n  {}\n  {}^", self.col, self.msg, self.text, " ".repeat(self.col.saturating_sub(1)))
    }
}

/// The pipeline text of a list of constructed passes (their names and printed options).
pub fn describe(passes: &[Box<dyn Pass>]) -> String {
    Pipeline { passes: passes.iter().map(|p| PassSpec::of(p.as_ref())).collect(), text: None }.to_string()
}

impl Pipeline {
    pub fn new(passes: Vec<PassSpec>) -> Pipeline {
        Pipeline { passes, text: None }
    }

    pub fn is_empty(&self) -> bool {
        self.passes.is_empty()
    }

    /// The pipeline of an optimization level: `-O0`, `-O1`, `-O2` (the leading `-` is optional).
    pub fn level(level: &str) -> Option<Pipeline> {
        let flag = if level.starts_with('-') { level.to_string() } else { format!("-{level}") };
        let (_, text) = LEVELS.iter().find(|(l, _)| *l == flag)?;
        Some(Pipeline::parse(text).expect("the built-in levels parse"))
    }

    /// Parses a pipeline string or a level name (`-O2`). Syntax only: pass names are looked up by
    /// [`build`](Self::build).
    pub fn parse(text: &str) -> Result<Pipeline, PipelineError> {
        let trimmed = text.trim();
        if trimmed.starts_with("-O") {
            let mut p = Pipeline::level(trimmed).ok_or_else(|| {
                let levels: Vec<&str> = LEVELS.iter().map(|(l, _)| *l).collect();
                let col = text.chars().take_while(|c| c.is_whitespace()).count() + 1;
                PipelineError::new(
                    text,
                    col,
                    format!("unknown optimization level '{trimmed}' (levels: {})", levels.join(", ")),
                )
            })?;
            p.text = None;
            return Ok(p);
        }
        let mut p = Parser { text, chars: text.chars().collect(), at: 0 };
        let passes = p.pipeline()?;
        Ok(Pipeline { passes, text: Some(text.to_string()) })
    }

    /// The text that error columns refer to, and the columns of each pass's name and option keys.
    fn located(&self) -> (String, Vec<(usize, Vec<usize>)>) {
        if let Some(t) = &self.text {
            return (t.clone(), self.passes.iter().map(|p| (p.name_col, p.option_cols.clone())).collect());
        }
        // Built in code: point into the canonical text.
        let mut cols = Vec::new();
        let mut col = 1;
        for (i, p) in self.passes.iter().enumerate() {
            if i > 0 {
                col += 1;
            }
            let name_col = col;
            col += p.name.chars().count();
            let mut ocols = Vec::new();
            if !p.options.is_empty() {
                col += 1;
                for (j, (k, v)) in p.options.iter().enumerate() {
                    if j > 0 {
                        col += 1;
                    }
                    ocols.push(col);
                    col += k.chars().count() + 1 + v.chars().count();
                }
                col += 1;
            }
            cols.push((name_col, ocols));
        }
        (self.to_string(), cols)
    }

    /// Creates the passes through the registry. An unknown pass is an error listing the valid ones;
    /// an option the pass rejects (unknown, or a bad value) is an error at that option.
    pub fn build(&self) -> Result<Vec<Box<dyn Pass>>, PipelineError> {
        let (text, cols) = self.located();
        let mut out = Vec::with_capacity(self.passes.len());
        for (spec, (name_col, option_cols)) in self.passes.iter().zip(cols) {
            let entry = registry::lookup(&spec.name).ok_or_else(|| {
                let mut msg = format!("unknown pass '{}'", spec.name);
                if let Some(s) = registry::suggest(&spec.name) {
                    msg += &format!(" (did you mean '{s}'?)");
                }
                msg += &format!("; valid passes: {}", registry::names().join(", "));
                PipelineError::new(&text, name_col, msg)
            })?;
            let pass = (entry.create)(&spec.pass_options()).map_err(|msg| {
                // Point at the option the message names, else at the pass.
                let col = spec
                    .options
                    .iter()
                    .zip(&option_cols)
                    .find(|((k, _), _)| msg.contains(&format!("option '{k}'")))
                    .map_or(name_col, |(_, &c)| c);
                let msg = if msg.contains(&format!("'{}'", spec.name)) { msg } else { format!("{}: {msg}", spec.name) };
                PipelineError::new(&text, col, msg)
            })?;
            out.push(pass);
        }
        Ok(out)
    }
}

struct Parser<'a> {
    text: &'a str,
    chars: Vec<char>,
    /// Index into `chars`; its column is `at + 1`.
    at: usize,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn is_value_char(c: char) -> bool {
    !matches!(c, ',' | '{' | '}' | '=') && !c.is_whitespace()
}

impl Parser<'_> {
    fn err(&self, col: usize, msg: impl Into<String>) -> PipelineError {
        PipelineError::new(self.text, col, msg)
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    fn found(&self) -> String {
        match self.peek() {
            Some(c) => format!("'{c}'"),
            None => "end of pipeline".to_string(),
        }
    }

    /// Consumes a run of characters; returns it and its column.
    fn run_of(&mut self, ok: fn(char) -> bool) -> (String, usize) {
        let col = self.at + 1;
        let start = self.at;
        while self.peek().is_some_and(ok) {
            self.at += 1;
        }
        (self.chars[start..self.at].iter().collect(), col)
    }

    fn pipeline(&mut self) -> Result<Vec<PassSpec>, PipelineError> {
        let mut passes = Vec::new();
        self.skip_ws();
        if self.peek().is_none() {
            return Ok(passes);
        }
        loop {
            passes.push(self.pass()?);
            self.skip_ws();
            match self.peek() {
                None => return Ok(passes),
                Some(',') => {
                    self.at += 1;
                    self.skip_ws();
                }
                Some(_) => {
                    return Err(
                        self.err(self.at + 1, format!("expected ',' or end of pipeline, found {}", self.found()))
                    )
                }
            }
        }
    }

    fn pass(&mut self) -> Result<PassSpec, PipelineError> {
        let (name, name_col) = self.run_of(is_name_char);
        if name.is_empty() {
            return Err(self.err(name_col, format!("expected a pass name, found {}", self.found())));
        }
        let mut spec = PassSpec { name, options: Vec::new(), name_col, option_cols: Vec::new() };
        self.skip_ws();
        if self.peek() != Some('{') {
            return Ok(spec);
        }
        self.at += 1;
        self.skip_ws();
        if self.peek() == Some('}') {
            self.at += 1;
            return Ok(spec);
        }
        loop {
            let (key, key_col) = self.run_of(is_name_char);
            if key.is_empty() {
                return Err(self.err(
                    key_col,
                    format!("expected an option name in the options of '{}', found {}", spec.name, self.found()),
                ));
            }
            if spec.options.iter().any(|(k, _)| *k == key) {
                return Err(self.err(key_col, format!("option '{key}' is given twice for '{}'", spec.name)));
            }
            self.skip_ws();
            if self.peek() != Some('=') {
                return Err(self.err(
                    self.at + 1,
                    format!(
                        "expected '=' after option '{key}', found {} (options are written key=value)",
                        self.found()
                    ),
                ));
            }
            self.at += 1;
            self.skip_ws();
            let (value, value_col) = self.run_of(is_value_char);
            if value.is_empty() {
                return Err(self.err(value_col, format!("expected a value for option '{key}', found {}", self.found())));
            }
            spec.options.push((key.clone(), value));
            spec.option_cols.push(key_col);
            self.skip_ws();
            match self.peek() {
                Some(',') => {
                    self.at += 1;
                    self.skip_ws();
                }
                Some('}') => {
                    self.at += 1;
                    return Ok(spec);
                }
                _ => {
                    return Err(self.err(
                        self.at + 1,
                        format!("expected '}}' or ',' after option '{key}' of '{}', found {}", spec.name, self.found()),
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_canonically() {
        let text = "canonicalize,cse,eqsat{rules=rope+layout+algebra,node-limit=100000,time-limit=2s},dce";
        let p = Pipeline::parse(text).unwrap();
        assert_eq!(p.passes.len(), 4);
        assert_eq!(p.passes[2].name, "eqsat");
        assert_eq!(p.passes[2].options[1], ("node-limit".to_string(), "100000".to_string()));
        assert_eq!(p.passes[2].pass_options().usize("node-limit", 0), Ok(100000));
        assert_eq!(p.to_string(), text);
        let spaced = Pipeline::parse(" cse , eqsat { rules = rope , node-limit=5 } ,dce{} ").unwrap();
        assert_eq!(spaced.to_string(), "cse,eqsat{rules=rope,node-limit=5},dce");
    }

    #[test]
    fn errors_point_at_the_column() {
        let e = Pipeline::parse("cse,eqsat{rules=rope").unwrap_err();
        assert_eq!(e.col, 21);
        assert_eq!(
            e.to_string(),
            "pipeline:1:21: expected '}' or ',' after option 'rules' of 'eqsat', found end of pipeline\n  \
             cse,eqsat{rules=rope\n                      ^"
        );
    }

    #[test]
    fn levels() {
        assert!(Pipeline::parse("-O0").unwrap().is_empty());
        assert_eq!(Pipeline::parse("-O1").unwrap().to_string(), O1);
        assert_eq!(Pipeline::level("O2").unwrap().to_string(), O2);
        assert_eq!(Pipeline::parse("-O3").unwrap_err().col, 1);
    }
}
