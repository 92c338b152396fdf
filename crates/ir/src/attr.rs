//! Attributes: the typed, named parameters of an op (`eps`, `axis`, `rope = neox{...}`). Which
//! attributes an op accepts, and of what kind, is declared in the op table; the parser reads values by
//! their declared kind and the verifier checks them with [`check_attrs`].

use crate::dtype::DType;
use crate::shape::Shape;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attr {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// One of a fixed set of names (`neox`, `tanh`).
    Ident(String),
    Ints(Vec<i64>),
    Shape(Shape),
    DType(DType),
    /// A tagged record, `llama3{factor = 8.0, ...}`: the tag picks which fields are allowed.
    Tagged {
        tag: String,
        fields: Attrs,
    },
}

// Floats compare and hash by bits so that graphs (and CSE keys) have a total structural equality.
impl PartialEq for Attr {
    fn eq(&self, other: &Attr) -> bool {
        use Attr::*;
        match (self, other) {
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (Float(a), Float(b)) => a.to_bits() == b.to_bits(),
            (Str(a), Str(b)) | (Ident(a), Ident(b)) => a == b,
            (Ints(a), Ints(b)) => a == b,
            (Shape(a), Shape(b)) => a == b,
            (DType(a), DType(b)) => a == b,
            (Tagged { tag: t1, fields: f1 }, Tagged { tag: t2, fields: f2 }) => t1 == t2 && f1 == f2,
            _ => false,
        }
    }
}
impl Eq for Attr {}

impl Hash for Attr {
    fn hash<H: Hasher>(&self, h: &mut H) {
        std::mem::discriminant(self).hash(h);
        match self {
            Attr::Bool(b) => b.hash(h),
            Attr::Int(i) => i.hash(h),
            Attr::Float(f) => f.to_bits().hash(h),
            Attr::Str(s) | Attr::Ident(s) => s.hash(h),
            Attr::Ints(v) => v.hash(h),
            Attr::Shape(s) => s.hash(h),
            Attr::DType(d) => d.hash(h),
            Attr::Tagged { tag, fields } => {
                tag.hash(h);
                fields.hash(h);
            }
        }
    }
}

/// An op's attributes, sorted by name (so printing is stable).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attrs(pub BTreeMap<String, Attr>);

impl Attrs {
    pub fn new() -> Attrs {
        Attrs::default()
    }

    pub fn with(mut self, name: &str, value: Attr) -> Attrs {
        self.0.insert(name.to_string(), value);
        self
    }

    pub fn set(&mut self, name: &str, value: Attr) {
        self.0.insert(name.to_string(), value);
    }

    pub fn get(&self, name: &str) -> Option<&Attr> {
        self.0.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Attr)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// A flag is set when present and not `false`.
    pub fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some(Attr::Bool(true)))
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        match self.get(name) {
            Some(Attr::Int(i)) => Some(*i),
            _ => None,
        }
    }

    /// Floats; integer literals are accepted where a float is wanted.
    pub fn float(&self, name: &str) -> Option<f64> {
        match self.get(name) {
            Some(Attr::Float(f)) => Some(*f),
            Some(Attr::Int(i)) => Some(*i as f64),
            _ => None,
        }
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(Attr::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn ident(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(Attr::Ident(s)) => Some(s),
            _ => None,
        }
    }

    pub fn ints(&self, name: &str) -> Option<&[i64]> {
        match self.get(name) {
            Some(Attr::Ints(v)) => Some(v),
            _ => None,
        }
    }

    pub fn shape(&self, name: &str) -> Option<&Shape> {
        match self.get(name) {
            Some(Attr::Shape(s)) => Some(s),
            _ => None,
        }
    }

    pub fn dtype(&self, name: &str) -> Option<DType> {
        match self.get(name) {
            Some(Attr::DType(d)) => Some(*d),
            _ => None,
        }
    }

    pub fn tagged(&self, name: &str) -> Option<(&str, &Attrs)> {
        match self.get(name) {
            Some(Attr::Tagged { tag, fields }) => Some((tag, fields)),
            _ => None,
        }
    }
}

/// The kind of value an attribute holds; drives parsing and checking.
#[derive(Clone, Copy, Debug)]
pub enum AttrKind {
    /// Written bare (`causal`) when true.
    Flag,
    Int,
    Float,
    Str,
    Ident(&'static [&'static str]),
    Ints,
    Shape,
    DType,
    Tagged(&'static [TagSpec]),
}

#[derive(Clone, Copy, Debug)]
pub struct TagSpec {
    pub tag: &'static str,
    pub fields: &'static [AttrSpec],
}

#[derive(Clone, Copy, Debug)]
pub struct AttrSpec {
    pub name: &'static str,
    pub kind: AttrKind,
    pub required: bool,
}

impl AttrKind {
    pub fn describe(&self) -> String {
        match self {
            AttrKind::Flag => "a flag".into(),
            AttrKind::Int => "an integer".into(),
            AttrKind::Float => "a float".into(),
            AttrKind::Str => "a string".into(),
            AttrKind::Ident(names) => format!("one of {}", names.join("|")),
            AttrKind::Ints => "a list of integers".into(),
            AttrKind::Shape => "a shape".into(),
            AttrKind::DType => "a dtype".into(),
            AttrKind::Tagged(tags) => {
                format!("one of {}", tags.iter().map(|t| format!("{}{{...}}", t.tag)).collect::<Vec<_>>().join("|"))
            }
        }
    }

    fn accepts(&self, value: &Attr) -> Result<(), String> {
        let ok = match (self, value) {
            (AttrKind::Flag, Attr::Bool(_))
            | (AttrKind::Int, Attr::Int(_))
            | (AttrKind::Float, Attr::Float(_) | Attr::Int(_))
            | (AttrKind::Str, Attr::Str(_))
            | (AttrKind::Ints, Attr::Ints(_))
            | (AttrKind::Shape, Attr::Shape(_))
            | (AttrKind::DType, Attr::DType(_)) => true,
            (AttrKind::Ident(names), Attr::Ident(s)) => names.contains(&s.as_str()),
            (AttrKind::Tagged(tags), Attr::Tagged { tag, fields }) => {
                let spec = tags.iter().find(|t| t.tag == tag).ok_or_else(|| format!("unknown tag '{tag}'"))?;
                return check_attrs(spec.fields, fields).map_err(|e| format!("in {tag}{{...}}: {e}"));
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("expected {}, found {value}", self.describe()))
        }
    }
}

pub fn find_spec<'a>(specs: &'a [AttrSpec], name: &str) -> Option<&'a AttrSpec> {
    specs.iter().find(|s| s.name == name)
}

pub fn spec_names(specs: &[AttrSpec]) -> String {
    if specs.is_empty() {
        "none".to_string()
    } else {
        specs.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
    }
}

/// Checks attribute names, presence and kinds against a spec list.
pub fn check_attrs(specs: &[AttrSpec], attrs: &Attrs) -> Result<(), String> {
    for (name, value) in attrs.iter() {
        let spec = find_spec(specs, name)
            .ok_or_else(|| format!("unknown attribute '{name}' (expected one of: {})", spec_names(specs)))?;
        spec.kind.accepts(value).map_err(|e| format!("attribute '{name}': {e}"))?;
    }
    for spec in specs.iter().filter(|s| s.required) {
        if attrs.get(spec.name).is_none() {
            return Err(format!("missing required attribute '{}'", spec.name));
        }
    }
    Ok(())
}

/// Stores integers given for float attributes as floats (recursing into tagged records), so that a
/// graph prints the way it parses back: the parser reads `theta = 10000` as `Float(10000.0)`, and an
/// `Int` kept here would print as `10000` and compare unequal to the re-parsed graph.
pub(crate) fn normalize_floats(specs: &[AttrSpec], attrs: &mut Attrs) {
    for (name, value) in attrs.0.iter_mut() {
        let Some(spec) = find_spec(specs, name) else { continue };
        match (spec.kind, value) {
            (AttrKind::Float, value) => {
                if let Attr::Int(i) = *value {
                    *value = Attr::Float(i as f64);
                }
            }
            (AttrKind::Tagged(tags), Attr::Tagged { tag, fields }) => {
                if let Some(spec) = tags.iter().find(|t| t.tag == tag) {
                    normalize_floats(spec.fields, fields);
                }
            }
            _ => {}
        }
    }
}

fn fmt_float(f: &mut fmt::Formatter<'_>, x: f64) -> fmt::Result {
    // `{:?}` is the shortest text that parses back to the same bits, and always shows a '.' or an
    // exponent, so the value reads back as a float. It spells every NaN `NaN`, so the sign of a
    // negative NaN (what x86 computes for 0.0/0.0) is written out; NaN payloads are not kept.
    if x.is_nan() && x.is_sign_negative() {
        return f.write_str("-NaN");
    }
    write!(f, "{x:?}")
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attr::Bool(b) => write!(f, "{b}"),
            Attr::Int(i) => write!(f, "{i}"),
            Attr::Float(x) => fmt_float(f, *x),
            Attr::Str(s) => write!(f, "{s:?}"),
            Attr::Ident(s) => f.write_str(s),
            Attr::Ints(v) => {
                f.write_str("[")?;
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str("]")
            }
            Attr::Shape(s) => write!(f, "{s}"),
            Attr::DType(d) => write!(f, "{d}"),
            Attr::Tagged { tag, fields } => write!(f, "{tag}{fields}"),
        }
    }
}

impl fmt::Display for Attrs {
    /// `{a = 1, causal, rope = neox{theta = 10000.0}}`; true flags print bare.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match v {
                Attr::Bool(true) => f.write_str(k)?,
                v => write!(f, "{k} = {v}")?,
            }
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[AttrSpec] = &[
        AttrSpec { name: "eps", kind: AttrKind::Float, required: true },
        AttrSpec { name: "causal", kind: AttrKind::Flag, required: false },
        AttrSpec { name: "mode", kind: AttrKind::Ident(&["a", "b"]), required: false },
    ];

    #[test]
    fn check_reports_each_problem() {
        let ok = Attrs::new().with("eps", Attr::Float(1e-5)).with("causal", Attr::Bool(true));
        assert!(check_attrs(SPECS, &ok).is_ok());
        assert_eq!(ok.to_string(), "{causal, eps = 1e-5}");
        let missing = Attrs::new();
        assert!(check_attrs(SPECS, &missing).unwrap_err().contains("missing required attribute 'eps'"));
        let unknown = ok.clone().with("epz", Attr::Int(1));
        assert!(check_attrs(SPECS, &unknown).unwrap_err().contains("unknown attribute 'epz'"));
        let wrong = ok.clone().with("mode", Attr::Ident("c".into()));
        assert!(check_attrs(SPECS, &wrong).unwrap_err().contains("expected one of a|b"));
    }
}
