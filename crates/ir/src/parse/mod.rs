//! Parser for the text form (see [`crate::print`]). Driven by the op table: op names, operand counts
//! and attribute kinds come from it, and each node's type is inferred and checked against the
//! written one, so errors point at the line and column that caused them.

mod lexer;

use crate::attr::{check_attrs, find_spec, spec_names, Attr, AttrKind, AttrSpec, Attrs};
use crate::dtype::DType;
use crate::error::ParseError;
use crate::graph::{Graph, NodeId};
use crate::op::OpKind;
use crate::shape::{Dim, Shape, TensorType};
use lexer::{lex, Tok, Token};
use std::collections::HashMap;

/// Parses one graph.
pub fn parse(src: &str) -> Result<Graph, ParseError> {
    let toks = lex(src)?;
    let mut p = Parser { toks, pos: 0 };
    let g = p.graph()?;
    Ok(g)
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
}

type P<T> = Result<T, ParseError>;

impl Parser {
    fn peek(&self) -> &Token {
        &self.toks[self.pos]
    }

    fn next(&mut self) -> Token {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn err_at<T>(&self, t: &Token, msg: impl Into<String>) -> P<T> {
        Err(ParseError { line: t.line, col: t.col, msg: msg.into() })
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek().tok == Tok::Punct(c)
    }

    fn eat_punct(&mut self, c: char) -> bool {
        if self.is_punct(c) {
            self.next();
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, c: char) -> P<()> {
        let t = self.next();
        if t.tok == Tok::Punct(c) {
            Ok(())
        } else {
            self.err_at(&t, format!("expected '{c}', found {}", t.tok.describe()))
        }
    }

    fn ident(&mut self, what: &str) -> P<(String, Token)> {
        let t = self.next();
        match &t.tok {
            Tok::Ident(s) => Ok((s.clone(), t.clone())),
            other => self.err_at(&t, format!("expected {what}, found {}", other.describe())),
        }
    }

    fn graph(&mut self) -> P<Graph> {
        let (kw, t) = self.ident("'graph'")?;
        if kw != "graph" {
            return self.err_at(&t, format!("expected 'graph', found '{kw}'"));
        }
        let t = self.next();
        let name = match &t.tok {
            Tok::Global(n) => n.clone(),
            other => return self.err_at(&t, format!("expected a graph name like @model, found {}", other.describe())),
        };
        self.expect_punct('{')?;
        let mut g = Graph::new(name);
        let mut values: HashMap<u64, NodeId> = HashMap::new();
        while !self.is_punct('}') {
            if self.peek().tok == Tok::Eof {
                let t = self.peek().clone();
                return self.err_at(&t, "expected '}' to close the graph");
            }
            self.statement(&mut g, &mut values)?;
        }
        self.next();
        let t = self.next();
        if t.tok != Tok::Eof {
            return self.err_at(&t, format!("unexpected {} after the graph", t.tok.describe()));
        }
        Ok(g)
    }

    fn statement(&mut self, g: &mut Graph, values: &mut HashMap<u64, NodeId>) -> P<()> {
        let start = self.peek().clone();
        let def = if let Tok::Value(n) = start.tok {
            self.next();
            if values.contains_key(&n) {
                return self.err_at(&start, format!("value %{n} is defined twice"));
            }
            self.expect_punct('=')?;
            Some(n)
        } else {
            None
        };
        let (name, op_tok) = self.ident("an op name")?;
        let Some(op) = OpKind::from_name(&name) else {
            let hint = suggest(&name).map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default();
            return self.err_at(&op_tok, format!("unknown op '{name}'{hint}"));
        };
        let info = op.info();
        if info.has_result && def.is_none() {
            return self.err_at(&op_tok, format!("'{name}' produces a value: write '%N = {name} ...'"));
        }
        if !info.has_result && def.is_some() {
            return self.err_at(&start, format!("'{name}' produces no value: drop the '%N ='"));
        }
        // Operands.
        let mut operands = Vec::new();
        while let Tok::Value(n) = self.peek().tok {
            let t = self.next();
            match values.get(&n) {
                Some(&id) => operands.push(id),
                None => return self.err_at(&t, format!("use of undefined value %{n}")),
            }
            if !self.eat_punct(',') {
                break;
            }
        }
        if !info.operands.accepts(operands.len()) {
            return self
                .err_at(&op_tok, format!("'{name}' expects {}, found {}", info.operands.describe(), operands.len()));
        }
        let attrs = if self.is_punct('{') { self.attrs(info.attrs)? } else { Attrs::new() };
        if let Err(e) = check_attrs(info.attrs, &attrs) {
            return self.err_at(&op_tok, format!("{name}: {e}"));
        }
        let declared = if info.has_result {
            let colon = self.peek().clone();
            if self.eat_punct(':') {
                Some((self.tensor_type()?, colon))
            } else if info.declares_type {
                return self.err_at(&colon, format!("'{name}' needs its type written: ': f32[...]'"));
            } else {
                None
            }
        } else {
            None
        };
        let tys: Vec<&TensorType> = operands.iter().map(|&o| g.ty(o)).collect();
        let ty = match op.infer(&tys, &attrs, declared.as_ref().map(|(t, _)| t)) {
            Ok(t) => t,
            Err(e) => return self.err_at(&op_tok, format!("{name}: {e}")),
        };
        if let Some((written, colon)) = &declared {
            if *written != ty {
                return self.err_at(colon, format!("{name}: written type {written} but the operands give {ty}"));
            }
        }
        let id = g.add_node(op, attrs, &operands, ty);
        if let Some(n) = def {
            values.insert(n, id);
        }
        Ok(())
    }

    fn attrs(&mut self, specs: &[AttrSpec]) -> P<Attrs> {
        self.expect_punct('{')?;
        let mut attrs = Attrs::new();
        if self.eat_punct('}') {
            return Ok(attrs);
        }
        loop {
            let (key, kt) = self.ident("an attribute name")?;
            let Some(spec) = find_spec(specs, &key) else {
                return self.err_at(&kt, format!("unknown attribute '{key}' (expected one of: {})", spec_names(specs)));
            };
            if attrs.get(&key).is_some() {
                return self.err_at(&kt, format!("attribute '{key}' is given twice"));
            }
            let value = if self.eat_punct('=') {
                self.attr_value(spec.kind, &key)?
            } else if matches!(spec.kind, AttrKind::Flag) {
                Attr::Bool(true)
            } else {
                let t = self.peek().clone();
                return self.err_at(&t, format!("attribute '{key}' needs a value: '{key} = ...'"));
            };
            attrs.set(&key, value);
            if self.eat_punct('}') {
                return Ok(attrs);
            }
            self.expect_punct(',')?;
        }
    }

    fn attr_value(&mut self, kind: AttrKind, key: &str) -> P<Attr> {
        let t = self.peek().clone();
        let wrong = |p: &Parser, t: &Token| {
            p.err_at(t, format!("attribute '{key}' must be {}, found {}", kind.describe(), t.tok.describe()))
        };
        match kind {
            AttrKind::Flag => match self.next().tok {
                Tok::Ident(s) if s == "true" => Ok(Attr::Bool(true)),
                Tok::Ident(s) if s == "false" => Ok(Attr::Bool(false)),
                _ => wrong(self, &t),
            },
            AttrKind::Int => self.int().map(Attr::Int).or_else(|_| wrong(self, &t)),
            AttrKind::Float => {
                let neg = self.eat_punct('-');
                let t2 = self.next();
                let v = match t2.tok {
                    Tok::Float(f) => f,
                    Tok::Int(i) => i as f64,
                    Tok::Ident(ref s) if s == "inf" => f64::INFINITY,
                    Tok::Ident(ref s) if s == "NaN" || s == "nan" => f64::NAN,
                    _ => return wrong(self, &t2),
                };
                Ok(Attr::Float(if neg { -v } else { v }))
            }
            AttrKind::Str => match self.next().tok {
                Tok::Str(s) => Ok(Attr::Str(s)),
                _ => wrong(self, &t),
            },
            AttrKind::Ident(allowed) => match self.next().tok {
                Tok::Ident(s) if allowed.contains(&s.as_str()) => Ok(Attr::Ident(s)),
                _ => wrong(self, &t),
            },
            AttrKind::Ints => {
                self.expect_punct('[')?;
                let mut v = Vec::new();
                if !self.eat_punct(']') {
                    loop {
                        let t = self.peek().clone();
                        match self.int() {
                            Ok(i) => v.push(i),
                            Err(_) => return wrong(self, &t),
                        }
                        if self.eat_punct(']') {
                            break;
                        }
                        self.expect_punct(',')?;
                    }
                }
                Ok(Attr::Ints(v))
            }
            AttrKind::Shape => self.shape().map(Attr::Shape),
            AttrKind::DType => {
                let (s, t) = self.ident("a dtype")?;
                s.parse::<DType>().map(Attr::DType).or_else(|e| self.err_at(&t, e))
            }
            AttrKind::Tagged(tags) => {
                let (tag, tt) = self.ident("a tag")?;
                let Some(spec) = tags.iter().find(|s| s.tag == tag) else {
                    return wrong(self, &tt);
                };
                let fields = self.attrs(spec.fields)?;
                if let Err(e) = check_attrs(spec.fields, &fields) {
                    return self.err_at(&tt, format!("attribute '{key}': in {tag}{{...}}: {e}"));
                }
                Ok(Attr::Tagged { tag, fields })
            }
        }
    }

    fn int(&mut self) -> P<i64> {
        let neg = self.eat_punct('-');
        let t = self.next();
        match &t.tok {
            // Negated before narrowing, so that i64::MIN (which prints as -9223372036854775808) reads back.
            Tok::Int(i) => match signed(neg, *i) {
                Some(v) => Ok(v),
                None => self.err_at(&t, "integer out of range"),
            },
            other => self.err_at(&t, format!("expected an integer, found {}", other.describe())),
        }
    }

    fn tensor_type(&mut self) -> P<TensorType> {
        let (s, t) = self.ident("a type like f32[T,576]")?;
        let dtype = s.parse::<DType>().or_else(|e| self.err_at(&t, e))?;
        let shape = self.shape()?;
        Ok(TensorType { dtype, shape })
    }

    fn shape(&mut self) -> P<Shape> {
        self.expect_punct('[')?;
        let mut dims = Vec::new();
        if self.eat_punct(']') {
            return Ok(Shape(dims));
        }
        loop {
            dims.push(self.dim()?);
            if self.eat_punct(']') {
                return Ok(Shape(dims));
            }
            self.expect_punct(',')?;
        }
    }

    /// `['-'] term (('+'|'-') term)*` with `term := INT ['*' IDENT] | IDENT`.
    /// Arithmetic is checked: a dimension that does not fit `i64` is an error, not an overflow.
    fn dim(&mut self) -> P<Dim> {
        let mut neg = self.eat_punct('-');
        let mut acc = Dim::c(0);
        loop {
            let t = self.next();
            let term = match &t.tok {
                Tok::Int(k) => {
                    let k = signed(neg, *k);
                    if self.eat_punct('*') {
                        let (s, _) = self.ident("a symbol after '*'")?;
                        k.and_then(|k| Dim::sym(&s).checked_scale(k))
                    } else {
                        k.map(Dim::c)
                    }
                }
                Tok::Ident(s) => Dim::sym(s).checked_scale(if neg { -1 } else { 1 }),
                other => return self.err_at(&t, format!("expected a dimension, found {}", other.describe())),
            };
            match term.and_then(|term| acc.checked_add(&term)) {
                Some(d) => acc = d,
                None => return self.err_at(&t, "dimension out of range"),
            }
            if self.eat_punct('+') {
                neg = false;
            } else if self.eat_punct('-') {
                neg = true;
            } else {
                return Ok(acc);
            }
        }
    }
}

/// A literal's magnitude with its sign applied, if it fits `i64` (`-9223372036854775808` does).
fn signed(neg: bool, magnitude: u64) -> Option<i64> {
    if neg {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// The closest op name within two edits, for "did you mean".
fn suggest(name: &str) -> Option<&'static str> {
    OpKind::all().map(|k| (edit_distance(name, k.name()), k.name())).filter(|(d, _)| *d <= 2).min().map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let sub = prev[j - 1] + usize::from(a[i - 1] != b[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> String {
        parse(src).unwrap_err().to_string()
    }

    #[test]
    fn unknown_op_points_at_it() {
        let src = "graph @g {\n  %0 = input {name = \"x\"} : f32[4,4]\n  %1 = matmull %0, %0 : f32[4,4]\n}\n";
        assert_eq!(err(src), "3:8: unknown op 'matmull' (did you mean 'matmul'?)");
    }

    #[test]
    fn shape_mismatch_names_both_shapes() {
        let src = "graph @g {\n  %0 = input {name = \"x\"} : f32[T,576]\n  %1 = param {name = \"w\"} : f32[10,512]\n  %2 = matmul %0, %1 {transpose_b} : f32[T,10]\n}\n";
        let e = err(src);
        assert!(e.starts_with("4:8: matmul: contraction dims differ"), "{e}");
        assert!(e.contains("f32[T,576]") && e.contains("f32[10,512]"), "{e}");
    }

    #[test]
    fn positions_of_lexical_errors() {
        assert_eq!(err("graph @g {\n  %0 = input {name = \"x} : f32[4]\n}"), "2:22: unterminated string");
        assert_eq!(err("graph @g {\n  %0 = input {name = \"x\"} : f33[4]\n}"),
            "2:29: unknown dtype 'f33' (expected one of: f32, f16, bf16, i32, i64, bool, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k)");
        assert_eq!(err("graph @g {\n  %0 = exp %3 : f32[4]\n}"), "2:12: use of undefined value %3");
        assert_eq!(err("graph @g {\n  %0 = input {name = \"x\"} : f32[4]\n"), "3:1: expected '}' to close the graph");
    }

    #[test]
    fn attribute_errors() {
        let e = err("graph @g {\n  %0 = input {name = \"x\"} : f32[4]\n  %1 = softmax %0 {axiz = 0} : f32[4]\n}");
        assert_eq!(e, "3:20: unknown attribute 'axiz' (expected one of: axis)");
        let e = err("graph @g {\n  %0 = input {name = \"x\"} : f32[4]\n  %1 = gelu %0 {approx = fast} : f32[4]\n}");
        assert_eq!(e, "3:26: attribute 'approx' must be one of erf|tanh, found 'fast'");
    }

    #[test]
    fn dims_with_arithmetic() {
        let src = "graph @g {\n  %0 = input {name = \"x\"} : f32[P+T,2*T-1,4]\n  output %0 {name = \"y\"}\n}\n";
        let g = parse(src).unwrap();
        assert_eq!(g.ty(g.inputs()[0]).to_string(), "f32[P+T,2*T-1,4]");
        assert_eq!(crate::print(&g), src);
    }
}
