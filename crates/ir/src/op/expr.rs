//! The expression language of the `fused` op: one elementwise computation over the op's operands,
//! written as a string attribute, e.g. `"mul(silu($0), $1)"`.
//!
//! ```text
//! expr    := operand | number | call
//! operand := '$' DIGITS                         operand i of the node (0-based)
//! number  := ['-'] (DIGITS ['.' DIGITS] [EXP] | 'inf') | 'nan'
//! EXP     := ('e' | 'E') ['+' | '-'] DIGITS
//! call    := NAME '(' expr (',' expr)* ')'      NAME: an elementwise op of the op table
//! ```
//!
//! Function names are those of the op table's elementwise ops — `add sub mul div maximum minimum
//! pow` (two arguments) and `neg abs exp log sqrt rsqrt recip tanh sigmoid silu relu` (one) — plus
//! `gelu_tanh` and `gelu_erf` for `gelu {approx = tanh|erf}`. Spaces may appear between tokens.
//! Each function means exactly what its op means in the interpreter, evaluated per element in f32,
//! and numbers are f32 scalars; so a `fused` node computes the same values as the chain of ops it
//! replaces. The canonical text (what [`Expr`]'s `Display` prints) has no spaces except one after
//! each comma, and numbers in their shortest exact form (`1.0`, `1e-5`, `-inf`, `nan`).

use crate::attr::{Attr, Attrs};
use crate::interp::ops::elementwise::unary_f32;
use crate::op::OpKind;
use std::fmt;

/// Deepest nesting of calls the parser accepts (keeps parsing and evaluation off the stack limit).
pub const MAX_DEPTH: usize = 256;

/// A function of the expression language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Func {
    Add,
    Sub,
    Mul,
    Div,
    Maximum,
    Minimum,
    Pow,
    Neg,
    Abs,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Recip,
    Tanh,
    Sigmoid,
    Silu,
    Relu,
    GeluTanh,
    GeluErf,
}

/// Every function with its name and per-element cost (see [`Expr::flops`]).
const FUNCS: &[(Func, &str, usize)] = &[
    (Func::Add, "add", 1),
    (Func::Sub, "sub", 1),
    (Func::Mul, "mul", 1),
    (Func::Div, "div", 1),
    (Func::Maximum, "maximum", 1),
    (Func::Minimum, "minimum", 1),
    (Func::Pow, "pow", 1),
    (Func::Neg, "neg", 1),
    (Func::Abs, "abs", 1),
    (Func::Exp, "exp", 1),
    (Func::Log, "log", 1),
    (Func::Sqrt, "sqrt", 1),
    (Func::Rsqrt, "rsqrt", 2),
    (Func::Recip, "recip", 1),
    (Func::Tanh, "tanh", 1),
    // 1/(1+e^-x): neg, exp, add, recip.
    (Func::Sigmoid, "sigmoid", 4),
    // x·sigmoid(x).
    (Func::Silu, "silu", 5),
    (Func::Relu, "relu", 1),
    // x/2·(1 + tanh(√(2/π)(x + 0.044715x³))): 3 mul for the cubic term, add, mul, tanh, add, 2 mul.
    (Func::GeluTanh, "gelu_tanh", 9),
    // x/2·(1 + erf(x/√2)): mul, erf, add, 2 mul.
    (Func::GeluErf, "gelu_erf", 5),
];

impl Func {
    pub fn all() -> impl Iterator<Item = Func> {
        FUNCS.iter().map(|f| f.0)
    }

    fn row(self) -> &'static (Func, &'static str, usize) {
        let row = &FUNCS[self as usize];
        debug_assert_eq!(row.0, self);
        row
    }

    pub fn name(self) -> &'static str {
        self.row().1
    }

    pub fn from_name(name: &str) -> Option<Func> {
        FUNCS.iter().find(|f| f.1 == name).map(|f| f.0)
    }

    /// Number of arguments: 2 for the binary ops, 1 otherwise.
    pub fn arity(self) -> usize {
        if (self as usize) <= Func::Pow as usize {
            2
        } else {
            1
        }
    }

    /// Floating-point operations per element (a transcendental function counts as one).
    pub fn flops(self) -> usize {
        self.row().2
    }

    /// The op (and its attributes) this function stands for.
    pub fn op(self) -> (OpKind, Attrs) {
        let gelu = |approx: &str| (OpKind::Gelu, Attrs::new().with("approx", Attr::Ident(approx.into())));
        match self {
            Func::GeluTanh => gelu("tanh"),
            Func::GeluErf => gelu("erf"),
            f => (OpKind::from_name(f.name()).expect("function names are op names"), Attrs::new()),
        }
    }

    /// The function computing an elementwise op node, if it is one.
    pub fn from_op(op: OpKind, attrs: &Attrs) -> Option<Func> {
        match op {
            OpKind::Gelu => match attrs.ident("approx") {
                Some("tanh") => Some(Func::GeluTanh),
                Some("erf") => Some(Func::GeluErf),
                _ => None,
            },
            op if op.is_elementwise() => Func::from_name(op.name()),
            _ => None,
        }
    }

    /// The function on f32 values, exactly as the interpreter computes the op (`b` is ignored by
    /// unary functions).
    pub fn apply(self, a: f32, b: f32) -> f32 {
        let nan_or = |pick: fn(f32, f32) -> f32| if a.is_nan() || b.is_nan() { f32::NAN } else { pick(a, b) };
        match self {
            Func::Add => a + b,
            Func::Sub => a - b,
            Func::Mul => a * b,
            Func::Div => a / b,
            Func::Maximum => nan_or(f32::max),
            Func::Minimum => nan_or(f32::min),
            Func::Pow => (a as f64).powf(b as f64) as f32,
            Func::GeluTanh => unary_f32(OpKind::Gelu, true, a),
            Func::GeluErf => unary_f32(OpKind::Gelu, false, a),
            f => unary_f32(f.op().0, false, a),
        }
    }
}

impl fmt::Display for Func {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// `$i`: operand i.
    Operand(usize),
    /// A scalar constant (evaluated as f32).
    Num(f64),
    Call(Func, Vec<Expr>),
}

impl Expr {
    /// Parses the text form; the error names the problem and its 1-based column.
    pub fn parse(src: &str) -> Result<Expr, String> {
        let mut p = Parser { s: src.as_bytes(), pos: 0 };
        p.skip_ws();
        if p.pos == p.s.len() {
            return Err("empty expression".into());
        }
        let e = p.expr(0)?;
        p.skip_ws();
        if p.pos < p.s.len() {
            return Err(p.err(format!("unexpected {} after the expression", p.describe())));
        }
        Ok(e)
    }

    pub fn call(f: Func, args: Vec<Expr>) -> Expr {
        Expr::Call(f, args)
    }

    /// Evaluates on one element: `args[i]` is operand i's value.
    ///
    /// # Panics
    /// When the expression refers to an operand past `args` (a verified node never does).
    pub fn eval(&self, args: &[f32]) -> f32 {
        match self {
            Expr::Operand(i) => args[*i],
            Expr::Num(x) => *x as f32,
            Expr::Call(f, xs) => {
                let a = xs[0].eval(args);
                let b = xs.get(1).map_or(0.0, |x| x.eval(args));
                f.apply(a, b)
            }
        }
    }

    /// Floating-point operations per element: the sum of the functions' costs (one per arithmetic
    /// op or transcendental call; `sigmoid` 4, `silu` 5, `gelu_tanh` 9, `gelu_erf` 5, `rsqrt` 2).
    pub fn flops(&self) -> usize {
        match self {
            Expr::Operand(_) | Expr::Num(_) => 0,
            Expr::Call(f, xs) => f.flops() + xs.iter().map(Expr::flops).sum::<usize>(),
        }
    }

    /// Number of function calls (the ops the expression stands for).
    pub fn calls(&self) -> usize {
        match self {
            Expr::Operand(_) | Expr::Num(_) => 0,
            Expr::Call(_, xs) => 1 + xs.iter().map(Expr::calls).sum::<usize>(),
        }
    }

    /// Nesting depth of calls (0 for a leaf).
    pub fn depth(&self) -> usize {
        match self {
            Expr::Operand(_) | Expr::Num(_) => 0,
            Expr::Call(_, xs) => 1 + xs.iter().map(Expr::depth).max().unwrap_or(0),
        }
    }

    /// How many times each operand `$0..$n-1` is referred to; `Err` names an operand past `n`.
    pub fn operand_uses(&self, n: usize) -> Result<Vec<usize>, String> {
        fn walk(e: &Expr, uses: &mut [usize]) -> Result<(), String> {
            match e {
                Expr::Operand(i) => match uses.get_mut(*i) {
                    Some(u) => *u += 1,
                    None => {
                        let have = match uses.len() {
                            1 => "1 operand".to_string(),
                            n => format!("{n} operands"),
                        };
                        return Err(format!("${i} refers past the node's operands (it has {have})"));
                    }
                },
                Expr::Num(_) => {}
                Expr::Call(_, xs) => xs.iter().try_for_each(|x| walk(x, uses))?,
            }
            Ok(())
        }
        let mut uses = vec![0; n];
        walk(self, &mut uses)?;
        Ok(uses)
    }

    /// Checks the expression against a node with `n` operands: every `$i` in range and every operand
    /// used.
    pub fn check_operands(&self, n: usize) -> Result<(), String> {
        let uses = self.operand_uses(n)?;
        match uses.iter().position(|&u| u == 0) {
            Some(i) => Err(format!("operand ${i} is not used by the expression")),
            None => Ok(()),
        }
    }
}

fn fmt_num(f: &mut fmt::Formatter<'_>, x: f64) -> fmt::Result {
    if x.is_nan() {
        f.write_str("nan")
    } else if x.is_infinite() {
        f.write_str(if x > 0.0 { "inf" } else { "-inf" })
    } else {
        // Shortest text that reads back to the same bits; always has a '.' or an exponent.
        write!(f, "{x:?}")
    }
}

impl fmt::Display for Expr {
    /// The canonical text: `mul(silu($0), $1)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Operand(i) => write!(f, "${i}"),
            Expr::Num(x) => fmt_num(f, *x),
            Expr::Call(func, xs) => {
                write!(f, "{func}(")?;
                for (i, x) in xs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str(")")
            }
        }
    }
}

impl std::str::FromStr for Expr {
    type Err = String;
    fn from_str(s: &str) -> Result<Expr, String> {
        Expr::parse(s)
    }
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, msg: String) -> String {
        format!("{msg} at column {}", self.col(self.pos))
    }

    /// 1-based column of a byte offset, counting characters.
    fn col(&self, pos: usize) -> usize {
        String::from_utf8_lossy(&self.s[..pos.min(self.s.len())]).chars().count() + 1
    }

    fn describe(&self) -> String {
        match std::str::from_utf8(&self.s[self.pos..]).ok().and_then(|r| r.chars().next()) {
            Some(c) => format!("{c:?}"),
            None if self.pos >= self.s.len() => "end of expression".into(),
            None => "a non-UTF-8 byte".into(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        std::str::from_utf8(&self.s[start..self.pos]).unwrap_or_default()
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(format!("expected '{}', found {}", c as char, self.describe())))
        }
    }

    fn expr(&mut self, depth: usize) -> Result<Expr, String> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            Some(b'$') => {
                self.pos += 1;
                let digits = self.take_while(|c| c.is_ascii_digit());
                if digits.is_empty() {
                    return Err(self.err("expected an operand number after '$'".into()));
                }
                let i = digits
                    .parse::<usize>()
                    .map_err(|_| format!("operand number too large at column {}", self.col(start)))?;
                Ok(Expr::Operand(i))
            }
            Some(c) if c.is_ascii_digit() || c == b'-' || c == b'.' => self.number(),
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let name = self.take_while(|c| c.is_ascii_alphanumeric() || c == b'_').to_string();
                match name.as_str() {
                    "inf" => return Ok(Expr::Num(f64::INFINITY)),
                    "nan" => return Ok(Expr::Num(f64::NAN)),
                    _ => {}
                }
                let Some(func) = Func::from_name(&name) else {
                    let hint = if name == "gelu" { " (write gelu_tanh or gelu_erf)" } else { "" };
                    return Err(format!("unknown function '{name}'{hint} at column {}", self.col(start)));
                };
                if depth >= MAX_DEPTH {
                    return Err(format!("calls nested deeper than {MAX_DEPTH} at column {}", self.col(start)));
                }
                self.expect(b'(')?;
                let mut args = vec![self.expr(depth + 1)?];
                loop {
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => {
                            self.pos += 1;
                            args.push(self.expr(depth + 1)?);
                        }
                        Some(b')') => {
                            self.pos += 1;
                            break;
                        }
                        _ => return Err(self.err(format!("expected ',' or ')', found {}", self.describe()))),
                    }
                }
                if args.len() != func.arity() {
                    let want = if func.arity() == 1 { "1 argument" } else { "2 arguments" };
                    return Err(format!("'{name}' takes {want}, found {} at column {}", args.len(), self.col(start)));
                }
                Ok(Expr::Call(func, args))
            }
            _ => Err(self.err(format!("expected an operand ($0), a number or a call, found {}", self.describe()))),
        }
    }

    fn number(&mut self) -> Result<Expr, String> {
        let start = self.pos;
        let neg = self.peek() == Some(b'-');
        if neg {
            self.pos += 1;
            if self.s[self.pos..].starts_with(b"inf") {
                self.pos += 3;
                return self.end_of_number(start, f64::NEG_INFINITY);
            }
        }
        let int = self.take_while(|c| c.is_ascii_digit()).len();
        let mut frac = 0;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            frac = self.take_while(|c| c.is_ascii_digit()).len();
        }
        if int == 0 && frac == 0 {
            return Err(format!("expected a number at column {}", self.col(start)));
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.take_while(|c| c.is_ascii_digit()).is_empty() {
                return Err(self.err("expected digits in the exponent".into()));
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or_default();
        let x = text.parse::<f64>().map_err(|e| format!("bad number '{text}' at column {}: {e}", self.col(start)))?;
        self.end_of_number(start, x)
    }

    fn end_of_number(&mut self, start: usize, x: f64) -> Result<Expr, String> {
        if self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.') {
            return Err(format!("unexpected {} in the number at column {}", self.describe(), self.col(start)));
        }
        Ok(Expr::Num(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn func_table_is_indexed_by_variant() {
        for (i, (f, name, _)) in FUNCS.iter().enumerate() {
            assert_eq!(*f as usize, i, "{name}");
            assert_eq!(Func::from_name(name), Some(*f));
            let (op, attrs) = f.op();
            assert!(op.is_elementwise(), "{name}");
            assert_eq!(Func::from_op(op, &attrs), Some(*f));
            assert_eq!(f.arity(), op.info().operands.describe().matches(',').count() + 1, "{name}");
        }
        // Every elementwise op has a function.
        for op in OpKind::all().filter(|k| k.is_elementwise() && *k != OpKind::Gelu) {
            assert!(Func::from_name(op.name()).is_some(), "{op}");
        }
    }

    #[test]
    fn parse_print_canonical() {
        for (src, canon) in [
            ("mul(silu($0), $1)", "mul(silu($0), $1)"),
            (" mul ( silu($0) ,$1 ) ", "mul(silu($0), $1)"),
            ("add($0, 1)", "add($0, 1.0)"),
            ("mul($0, -0.5)", "mul($0, -0.5)"),
            ("add($0, 1e-5)", "add($0, 1e-5)"),
            ("add($0, 1.5E+2)", "add($0, 150.0)"),
            ("maximum($0, -inf)", "maximum($0, -inf)"),
            ("minimum($0, inf)", "minimum($0, inf)"),
            ("add($0, nan)", "add($0, nan)"),
            ("$3", "$3"),
            ("gelu_tanh(add($0, $1))", "gelu_tanh(add($0, $1))"),
            ("mul($0, -0.0)", "mul($0, -0.0)"),
        ] {
            let e = Expr::parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert_eq!(e.to_string(), canon, "{src}");
            assert_eq!(Expr::parse(canon).unwrap().to_string(), canon);
        }
    }

    #[test]
    fn parse_errors() {
        let err = |s: &str| Expr::parse(s).unwrap_err();
        assert_eq!(err(""), "empty expression");
        assert_eq!(err("foo($0)"), "unknown function 'foo' at column 1");
        assert_eq!(err("gelu($0)"), "unknown function 'gelu' (write gelu_tanh or gelu_erf) at column 1");
        assert_eq!(err("add($0)"), "'add' takes 2 arguments, found 1 at column 1");
        assert_eq!(err("exp($0, $1)"), "'exp' takes 1 argument, found 2 at column 1");
        assert_eq!(err("mul($0, $1"), "expected ',' or ')', found end of expression at column 11");
        assert_eq!(err("$"), "expected an operand number after '$' at column 2");
        assert_eq!(err("$0 $1"), "unexpected '$' after the expression at column 4");
        assert_eq!(err("exp"), "expected '(', found end of expression at column 4");
        assert_eq!(err("add($0, 1.2.3)"), "unexpected '.' in the number at column 9");
        assert_eq!(err("add($0, 1e)"), "expected digits in the exponent at column 11");
        assert_eq!(err("add($0, #)"), "expected an operand ($0), a number or a call, found '#' at column 9");
        let deep = "neg(".repeat(MAX_DEPTH + 1) + "$0" + &")".repeat(MAX_DEPTH + 1);
        assert!(err(&deep).contains("nested deeper"));
        let ok = "neg(".repeat(MAX_DEPTH) + "$0" + &")".repeat(MAX_DEPTH);
        assert_eq!(Expr::parse(&ok).unwrap().depth(), MAX_DEPTH);
    }

    #[test]
    fn operands_and_counts() {
        let e = Expr::parse("mul(silu($0), add($1, $0))").unwrap();
        assert_eq!(e.operand_uses(2).unwrap(), vec![2, 1]);
        assert!(e.check_operands(2).is_ok());
        assert_eq!(e.check_operands(3).unwrap_err(), "operand $2 is not used by the expression");
        assert_eq!(e.check_operands(1).unwrap_err(), "$1 refers past the node's operands (it has 1 operand)");
        assert_eq!(e.calls(), 3);
        assert_eq!(e.flops(), 1 + 5 + 1);
        assert_eq!(e.depth(), 2);
        assert_eq!(e.eval(&[1.0, 2.0]), (1.0f32 * (1.0 / (1.0 + (-1.0f64).exp())) as f32) * 3.0);
    }
}
