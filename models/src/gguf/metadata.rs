//! GGUF metadata values: the key/value section that follows the header.
//!
//! Arrays are stored *typed* ([`MetadataArray`]) rather than as `Vec<MetadataValue>`: a
//! vocabulary of 262k strings or scores is then one allocation, and an empty array still
//! remembers its element type (GGUF records it even for zero elements).

use std::collections::HashMap;

/// The value-type ids of the GGUF spec (`gguf_type` in ggml's `gguf.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    /// Maps a raw id to a type; `None` for ids outside the spec.
    pub fn from_u32(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::U8,
            1 => Self::I8,
            2 => Self::U16,
            3 => Self::I16,
            4 => Self::U32,
            5 => Self::I32,
            6 => Self::F32,
            7 => Self::Bool,
            8 => Self::String,
            9 => Self::Array,
            10 => Self::U64,
            11 => Self::I64,
            12 => Self::F64,
            _ => return None,
        })
    }

    /// Size in bytes of one scalar of this type; `None` for strings and arrays.
    pub fn fixed_size(self) -> Option<usize> {
        Some(match self {
            Self::U8 | Self::I8 | Self::Bool => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 => 8,
            Self::String | Self::Array => return None,
        })
    }

    /// The smallest number of bytes one value of this type occupies in a file. Used to reject
    /// absurd array lengths before allocating anything for them.
    pub(crate) fn min_encoded_size(self) -> usize {
        match self {
            // u64 length (+ bytes)
            Self::String => 8,
            // u32 element type + u64 count (+ elements)
            Self::Array => 12,
            other => other.fixed_size().unwrap_or(1),
        }
    }
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetadataValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(MetadataArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A typed metadata array. Nested arrays are arrays of arrays (each inner array has its own
/// element type, as in the file).
#[derive(Clone, Debug, PartialEq)]
pub enum MetadataArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<MetadataArray>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

/// Widens an `f32` read from a file to the `f64` a person would have written: `1e-5f32` is
/// `9.999999747378752e-06` as an `f64`, which is noise in a `config.json`. Rust's `Display` for
/// `f32` prints the shortest decimal that round-trips, so re-parsing it gives `1e-5`.
pub fn f32_to_f64_shortest(x: f32) -> f64 {
    if !x.is_finite() {
        return f64::from(x);
    }
    format!("{x}").parse::<f64>().unwrap_or(f64::from(x))
}

impl MetadataValue {
    /// The value's GGUF type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Self::U8(_) => ValueType::U8,
            Self::I8(_) => ValueType::I8,
            Self::U16(_) => ValueType::U16,
            Self::I16(_) => ValueType::I16,
            Self::U32(_) => ValueType::U32,
            Self::I32(_) => ValueType::I32,
            Self::F32(_) => ValueType::F32,
            Self::Bool(_) => ValueType::Bool,
            Self::String(_) => ValueType::String,
            Self::Array(_) => ValueType::Array,
            Self::U64(_) => ValueType::U64,
            Self::I64(_) => ValueType::I64,
            Self::F64(_) => ValueType::F64,
        }
    }

    /// Any integer value that fits in `i64` (writers disagree on u32 vs i32 vs u64 for ids).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::I8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::I16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::I32(v) => Some(v.into()),
            Self::U64(v) => i64::try_from(v).ok(),
            Self::I64(v) => Some(v),
            _ => None,
        }
    }

    /// Any non-negative integer value.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U64(v) => Some(v),
            _ => self.as_i64().and_then(|v| u64::try_from(v).ok()),
        }
    }

    /// Any numeric value as `f64` (`f32` values are widened with [`f32_to_f64_shortest`]).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(f32_to_f64_shortest(v)),
            Self::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// A boolean value.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// A string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// An array value.
    pub fn as_array(&self) -> Option<&MetadataArray> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A JSON rendering, for `kiln inspect`-style dumps. Arrays longer than `max_array`
    /// elements are cut and end with a `"... (N more)"` string.
    pub fn to_json(&self, max_array: usize) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Self::U8(v) => J::from(*v),
            Self::I8(v) => J::from(*v),
            Self::U16(v) => J::from(*v),
            Self::I16(v) => J::from(*v),
            Self::U32(v) => J::from(*v),
            Self::I32(v) => J::from(*v),
            Self::U64(v) => J::from(*v),
            Self::I64(v) => J::from(*v),
            Self::F32(v) => float_json(f32_to_f64_shortest(*v)),
            Self::F64(v) => float_json(*v),
            Self::Bool(v) => J::from(*v),
            Self::String(s) => J::from(s.as_str()),
            Self::Array(a) => a.to_json(max_array),
        }
    }
}

fn float_json(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

impl MetadataArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Self::U8(v) => v.len(),
            Self::I8(v) => v.len(),
            Self::U16(v) => v.len(),
            Self::I16(v) => v.len(),
            Self::U32(v) => v.len(),
            Self::I32(v) => v.len(),
            Self::F32(v) => v.len(),
            Self::Bool(v) => v.len(),
            Self::String(v) => v.len(),
            Self::Array(v) => v.len(),
            Self::U64(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::F64(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn element_type(&self) -> ValueType {
        match self {
            Self::U8(_) => ValueType::U8,
            Self::I8(_) => ValueType::I8,
            Self::U16(_) => ValueType::U16,
            Self::I16(_) => ValueType::I16,
            Self::U32(_) => ValueType::U32,
            Self::I32(_) => ValueType::I32,
            Self::F32(_) => ValueType::F32,
            Self::Bool(_) => ValueType::Bool,
            Self::String(_) => ValueType::String,
            Self::Array(_) => ValueType::Array,
            Self::U64(_) => ValueType::U64,
            Self::I64(_) => ValueType::I64,
            Self::F64(_) => ValueType::F64,
        }
    }

    /// The elements of a string array.
    pub fn as_strings(&self) -> Option<&[String]> {
        match self {
            Self::String(v) => Some(v),
            _ => None,
        }
    }

    /// The elements of any integer array as `i64` (`None` if a `u64` element does not fit).
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        fn conv<T: Copy + Into<i64>>(v: &[T]) -> Vec<i64> {
            v.iter().map(|&x| x.into()).collect()
        }
        Some(match self {
            Self::U8(v) => conv(v),
            Self::I8(v) => conv(v),
            Self::U16(v) => conv(v),
            Self::I16(v) => conv(v),
            Self::U32(v) => conv(v),
            Self::I32(v) => conv(v),
            Self::I64(v) => v.clone(),
            Self::U64(v) => v.iter().map(|&x| i64::try_from(x).ok()).collect::<Option<_>>()?,
            _ => return None,
        })
    }

    /// The elements of any numeric array as `f32`.
    pub fn to_f32_vec(&self) -> Option<Vec<f32>> {
        Some(match self {
            Self::F32(v) => v.clone(),
            Self::F64(v) => v.iter().map(|&x| x as f32).collect(),
            _ => self.to_i64_vec()?.into_iter().map(|x| x as f32).collect(),
        })
    }

    /// See [`MetadataValue::to_json`].
    pub fn to_json(&self, max_array: usize) -> serde_json::Value {
        fn list<T>(v: &[T], max: usize, f: impl Fn(&T) -> serde_json::Value) -> serde_json::Value {
            let mut out: Vec<serde_json::Value> = v.iter().take(max).map(f).collect();
            if v.len() > max {
                out.push(format!("... ({} more)", v.len() - max).into());
            }
            serde_json::Value::Array(out)
        }
        let m = max_array;
        match self {
            Self::U8(v) => list(v, m, |x| (*x).into()),
            Self::I8(v) => list(v, m, |x| (*x).into()),
            Self::U16(v) => list(v, m, |x| (*x).into()),
            Self::I16(v) => list(v, m, |x| (*x).into()),
            Self::U32(v) => list(v, m, |x| (*x).into()),
            Self::I32(v) => list(v, m, |x| (*x).into()),
            Self::U64(v) => list(v, m, |x| (*x).into()),
            Self::I64(v) => list(v, m, |x| (*x).into()),
            Self::F32(v) => list(v, m, |x| float_json(f32_to_f64_shortest(*x))),
            Self::F64(v) => list(v, m, |x| float_json(*x)),
            Self::Bool(v) => list(v, m, |x| (*x).into()),
            Self::String(v) => list(v, m, |x| x.as_str().into()),
            Self::Array(v) => list(v, m, |x| x.to_json(max_array)),
        }
    }
}

/// The metadata section: key/value pairs in file order, with lookup by key.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    entries: Vec<(String, MetadataValue)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    /// Inserts a pair; returns `false` (and changes nothing) if the key already exists.
    pub(crate) fn insert(&mut self, key: String, value: MetadataValue) -> bool {
        if self.index.contains_key(&key) {
            return false;
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
        true
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// Pairs in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MetadataValue)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A string value (`None` if absent or not a string).
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(MetadataValue::as_str)
    }

    /// A non-negative integer value (`None` if absent or not such an integer).
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(MetadataValue::as_u64)
    }

    /// A numeric value as `f64`.
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(MetadataValue::as_f64)
    }

    /// A boolean value.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(MetadataValue::as_bool)
    }

    /// An array value.
    pub fn get_array(&self, key: &str) -> Option<&MetadataArray> {
        self.get(key).and_then(MetadataValue::as_array)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }
}
