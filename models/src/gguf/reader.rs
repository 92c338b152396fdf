//! The GGUF container: header, metadata key/values, tensor infos, and the data section.
//!
//! Layout (all little-endian; spec: ggml's `docs/gguf.md`):
//!
//! ```text
//! "GGUF" | u32 version | u64 tensor_count | u64 kv_count
//! kv_count   × { string key | u32 value_type | value }
//! tensor_count × { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//! padding to `general.alignment` (default 32)
//! data section: tensor `i` at data_start + offset_i
//! ```
//!
//! A string is `u64 len | len bytes`; an array is `u32 element_type | u64 count | elements`.
//! Version 1 used 32-bit lengths and counts and is not read; versions 2 and 3 differ only in
//! that v3 allows big-endian files, which are detected (the version reads byte-swapped) and
//! refused rather than misread.
//!
//! Every length, count and offset read from the file is checked against the file's size
//! before it is used, so a truncated or corrupt file is an error and never a panic or a huge
//! allocation.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use super::error::{GgufError, Result};
use super::metadata::{Metadata, MetadataArray, MetadataValue, ValueType};
use super::quant::{self, GgmlType};

/// The four magic bytes at the start of every GGUF file.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and of each tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: usize = 4;
/// Arrays of arrays deeper than this are refused (the spec allows nesting; no real file nests
/// more than once, and a bound keeps a malicious file from exhausting the stack).
const MAX_ARRAY_NESTING: usize = 8;
/// The most bytes a corrupt file can make us allocate beyond its own size is bounded by the
/// checks below; this caps a single alignment value.
const MAX_ALIGNMENT: u64 = 1 << 30;

/// One tensor's header, validated against the file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    name: String,
    ggml_type: GgmlType,
    ne: Vec<u64>,
    relative_offset: u64,
    start: usize,
    n_bytes: usize,
    n_elements: u64,
}

impl TensorInfo {
    /// The GGUF tensor name (e.g. `blk.0.attn_q.weight`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The element type.
    pub fn ggml_type(&self) -> GgmlType {
        self.ggml_type
    }

    /// Dimensions as stored by ggml: `ne[0]` is the innermost (fastest-varying) one.
    pub fn ggml_dims(&self) -> &[u64] {
        &self.ne
    }

    /// Dimensions in row-major (PyTorch / Hugging Face) order: the reverse of
    /// [`ggml_dims`](Self::ggml_dims). A GGUF `[576, 49152]` embedding is `[49152, 576]` here.
    pub fn shape(&self) -> Vec<usize> {
        // Every dim was checked to fit in usize when the file was parsed.
        self.ne.iter().rev().map(|&d| d as usize).collect()
    }

    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.n_elements
    }

    /// Size of the tensor's data in bytes.
    pub fn n_bytes(&self) -> usize {
        self.n_bytes
    }

    /// Absolute byte offset of the data in the file.
    pub fn file_offset(&self) -> u64 {
        self.start as u64
    }

    /// The offset as stored: relative to the start of the data section.
    pub fn relative_offset(&self) -> u64 {
        self.relative_offset
    }

    /// Length of the innermost dimension (`ne[0]`), 1 for a scalar.
    pub fn row_len(&self) -> u64 {
        self.ne.first().copied().unwrap_or(1)
    }

    /// Number of innermost rows (`n_elements / ne[0]`), 0 for an empty tensor.
    pub fn n_rows(&self) -> u64 {
        match self.row_len() {
            0 => 0,
            r => self.n_elements / r,
        }
    }

    /// Bytes per innermost row (a whole number of blocks, checked at parse time).
    pub fn row_bytes(&self) -> usize {
        (self.row_len() as usize / self.ggml_type.block_size()) * self.ggml_type.type_size()
    }
}

enum Backing {
    Mmap(memmap2::Mmap),
    Bytes(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Bytes(b) => b,
        }
    }
}

/// An open, fully validated GGUF file. Tensor data stays in the memory map until asked for.
pub struct GgufFile {
    path: PathBuf,
    backing: Backing,
    version: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
    lossy_strings: usize,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses `path`, validating every offset and size against the file.
    ///
    /// Tensor data is read from the map on demand, so the file must not be truncated or
    /// rewritten while the `GgufFile` is alive (the usual contract of memory-mapped readers).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| GgufError::io(path, "open", e))?;
        let len = file.metadata().map_err(|e| GgufError::io(path, "stat", e))?.len();
        let backing = if len == 0 {
            // Mapping an empty file fails on some platforms; there is nothing to map anyway.
            Backing::Bytes(Vec::new())
        } else {
            // SAFETY: the map is read-only and private to this process. Like every mmap-based
            // reader (llama.cpp, safetensors), we rely on the file not being truncated or
            // rewritten by another process while it is open; that is documented on `open`.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| GgufError::io(path, "mmap", e))?;
            Backing::Mmap(map)
        };
        let f = Self::parse(path.to_path_buf(), backing)?;
        tracing::debug!(
            path = %path.display(),
            version = f.version,
            tensors = f.tensors.len(),
            metadata = f.metadata.len(),
            alignment = f.alignment,
            "opened GGUF file"
        );
        Ok(f)
    }

    /// Parses an in-memory GGUF image; `name` is used in error messages in place of a path.
    pub fn from_bytes(bytes: Vec<u8>, name: impl Into<PathBuf>) -> Result<Self> {
        Self::parse(name.into(), Backing::Bytes(bytes))
    }

    fn parse(path: PathBuf, backing: Backing) -> Result<Self> {
        let parsed = parse_layout(&path, backing.bytes())?;
        let index = parsed.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        if parsed.lossy_strings > 0 {
            tracing::warn!(
                path = %path.display(),
                count = parsed.lossy_strings,
                "metadata strings with invalid UTF-8 were decoded lossily"
            );
        }
        Ok(GgufFile {
            path,
            backing,
            version: parsed.version,
            metadata: parsed.metadata,
            tensors: parsed.tensors,
            index,
            alignment: parsed.alignment,
            data_offset: parsed.data_offset,
            lossy_strings: parsed.lossy_strings,
        })
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The metadata key/values.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// `general.architecture`, if present.
    pub fn architecture(&self) -> Option<&str> {
        self.metadata.architecture()
    }

    /// The alignment in force (`general.alignment` or 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.backing.bytes().len() as u64
    }

    /// How many metadata strings were not valid UTF-8 (and were decoded lossily).
    pub fn lossy_strings(&self) -> usize {
        self.lossy_strings
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    fn require(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor(name).ok_or_else(|| GgufError::TensorNotFound { path: self.path.clone(), tensor: name.to_string() })
    }

    /// The raw (possibly quantized) bytes of tensor `name`.
    pub fn tensor_data(&self, name: &str) -> Result<&[u8]> {
        let t = self.require(name)?;
        Ok(self.bytes_of(t))
    }

    fn bytes_of(&self, t: &TensorInfo) -> &[u8] {
        // The range was validated at parse time; `get` keeps even a foreign TensorInfo from
        // panicking.
        self.backing.bytes().get(t.start..t.start + t.n_bytes).unwrap_or(&[])
    }

    /// Tensor `name` dequantized to `f32`, in row-major order (shape: [`TensorInfo::shape`]).
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.require(name)?;
        self.rows_f32(t, 0, t.n_rows())
    }

    /// Rows `row_start..row_start + row_count` of `t` dequantized to `f32`, where a row is
    /// `ne[0]` consecutive elements. Quantization blocks never straddle rows, so any row range
    /// is a contiguous, whole-block byte range; this is how stacked expert tensors are split.
    pub fn rows_f32(&self, t: &TensorInfo, row_start: u64, row_count: u64) -> Result<Vec<f32>> {
        let invalid =
            |reason: String| GgufError::InvalidTensor { path: self.path.clone(), tensor: t.name.clone(), reason };
        if !matches!(row_start.checked_add(row_count), Some(end) if end <= t.n_rows()) {
            return Err(invalid(format!("rows {row_start}..+{row_count} out of range ({} rows)", t.n_rows())));
        }
        if !t.ggml_type.can_dequantize() {
            return Err(GgufError::UnsupportedGgmlType {
                path: self.path.clone(),
                tensor: t.name.clone(),
                ggml_type: t.ggml_type,
            });
        }
        let row_bytes = t.row_bytes();
        let overflow =
            || GgufError::Overflow { path: self.path.clone(), what: format!("tensor `{}` row range", t.name) };
        let b0 = usize::try_from(row_start).ok().and_then(|r| r.checked_mul(row_bytes)).ok_or_else(overflow)?;
        let nb = usize::try_from(row_count).ok().and_then(|r| r.checked_mul(row_bytes)).ok_or_else(overflow)?;
        let src = self.bytes_of(t).get(b0..b0 + nb).ok_or_else(overflow)?;
        let n =
            usize::try_from(row_count).ok().and_then(|r| r.checked_mul(t.row_len() as usize)).ok_or_else(overflow)?;
        let mut out = Vec::new();
        out.try_reserve_exact(n).map_err(|_| GgufError::Overflow {
            path: self.path.clone(),
            what: format!("cannot allocate {n} f32 values for tensor `{}`", t.name),
        })?;
        out.resize(n, 0f32);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        quant::dequantize_parallel(t.ggml_type, src, &mut out, threads).map_err(|e| match e {
            quant::QuantError::Unsupported(ty) => {
                GgufError::UnsupportedGgmlType { path: self.path.clone(), tensor: t.name.clone(), ggml_type: ty }
            }
            other => invalid(other.to_string()),
        })?;
        Ok(out)
    }
}

struct Parsed {
    version: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
    lossy_strings: usize,
}

/// A bounds-checked little-endian reader over the whole file.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
    lossy_strings: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn truncated(&self, what: String, needed: u64) -> GgufError {
        GgufError::Truncated {
            path: self.path.to_path_buf(),
            what,
            offset: self.pos as u64,
            needed,
            file_len: self.buf.len() as u64,
        }
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        match usize::try_from(n) {
            Ok(n) if n <= self.remaining() => {
                let s = &self.buf[self.pos..self.pos + n];
                self.pos += n;
                Ok(s)
            }
            _ => Err(self.truncated(what(), n)),
        }
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn raw_string(&mut self, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        self.take(len, what)
    }

    /// A string value: invalid UTF-8 is decoded lossily (and counted) rather than refused,
    /// since llama.cpp itself treats strings as bytes.
    fn value_string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let raw = self.raw_string(what)?;
        Ok(match std::str::from_utf8(raw) {
            Ok(s) => s.to_string(),
            Err(_) => {
                self.lossy_strings += 1;
                String::from_utf8_lossy(raw).into_owned()
            }
        })
    }

    fn value(&mut self, ty: ValueType, key: &str, depth: usize) -> Result<MetadataValue> {
        let what = || format!("value of metadata key `{key}`");
        Ok(match ty {
            ValueType::U8 => MetadataValue::U8(self.array::<1>(&what)?[0]),
            ValueType::I8 => MetadataValue::I8(self.array::<1>(&what)?[0] as i8),
            ValueType::Bool => MetadataValue::Bool(self.array::<1>(&what)?[0] != 0),
            ValueType::U16 => MetadataValue::U16(u16::from_le_bytes(self.array(&what)?)),
            ValueType::I16 => MetadataValue::I16(i16::from_le_bytes(self.array(&what)?)),
            ValueType::U32 => MetadataValue::U32(u32::from_le_bytes(self.array(&what)?)),
            ValueType::I32 => MetadataValue::I32(i32::from_le_bytes(self.array(&what)?)),
            ValueType::F32 => MetadataValue::F32(f32::from_le_bytes(self.array(&what)?)),
            ValueType::U64 => MetadataValue::U64(u64::from_le_bytes(self.array(&what)?)),
            ValueType::I64 => MetadataValue::I64(i64::from_le_bytes(self.array(&what)?)),
            ValueType::F64 => MetadataValue::F64(f64::from_le_bytes(self.array(&what)?)),
            ValueType::String => MetadataValue::String(self.value_string(&what)?),
            ValueType::Array => MetadataValue::Array(self.array_value(key, depth)?),
        })
    }

    fn array_value(&mut self, key: &str, depth: usize) -> Result<MetadataArray> {
        if depth >= MAX_ARRAY_NESTING {
            return Err(GgufError::InvalidMetadata {
                path: self.path.to_path_buf(),
                key: key.to_string(),
                reason: format!("arrays nested more than {MAX_ARRAY_NESTING} deep"),
            });
        }
        let raw_ty = self.u32(&|| format!("element type of array `{key}`"))?;
        let ty = ValueType::from_u32(raw_ty).ok_or_else(|| GgufError::UnknownValueType {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            value_type: raw_ty,
        })?;
        let count = self.u64(&|| format!("length of array `{key}`"))?;
        // Refuse counts the rest of the file cannot possibly hold, before allocating for them.
        let min = ty.min_encoded_size() as u64;
        let needed = count.saturating_mul(min);
        if needed > self.remaining() as u64 {
            return Err(self.truncated(format!("array `{key}` of {count} {ty:?} elements"), needed));
        }
        let n = count as usize; // <= remaining bytes, so it fits
        let what = || format!("elements of array `{key}`");
        macro_rules! fixed {
            ($variant:ident, $t:ty, $conv:expr) => {{
                let raw = self.take((n * std::mem::size_of::<$t>()) as u64, &what)?;
                MetadataArray::$variant(raw.chunks_exact(std::mem::size_of::<$t>()).map($conv).collect())
            }};
        }
        Ok(match ty {
            ValueType::U8 => fixed!(U8, u8, |c| c[0]),
            ValueType::I8 => fixed!(I8, i8, |c| c[0] as i8),
            ValueType::Bool => fixed!(Bool, u8, |c| c[0] != 0),
            ValueType::U16 => fixed!(U16, u16, |c| u16::from_le_bytes([c[0], c[1]])),
            ValueType::I16 => fixed!(I16, i16, |c| i16::from_le_bytes([c[0], c[1]])),
            ValueType::U32 => fixed!(U32, u32, |c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ValueType::I32 => fixed!(I32, i32, |c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ValueType::F32 => fixed!(F32, f32, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ValueType::U64 => fixed!(U64, u64, |c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
            ValueType::I64 => fixed!(I64, i64, |c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
            ValueType::F64 => fixed!(F64, f64, |c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
            ValueType::String => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.value_string(&|| format!("element {i} of array `{key}`"))?);
                }
                MetadataArray::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.array_value(key, depth + 1)?);
                }
                MetadataArray::Array(v)
            }
        })
    }
}

fn parse_layout(path: &Path, buf: &[u8]) -> Result<Parsed> {
    let mut cur = Cursor { buf, pos: 0, path, lossy_strings: 0 };
    let magic: [u8; 4] = cur.array(&|| "magic".to_string())?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic { path: path.to_path_buf(), found: magic });
    }
    let version = cur.u32(&|| "version".to_string())?;
    match version {
        2 | 3 => {}
        v if matches!(v.swap_bytes(), 1..=3) => return Err(GgufError::BigEndian { path: path.to_path_buf() }),
        v => return Err(GgufError::UnsupportedVersion { path: path.to_path_buf(), version: v }),
    }
    let tensor_count = cur.u64(&|| "tensor count".to_string())?;
    let kv_count = cur.u64(&|| "metadata count".to_string())?;
    // Smallest possible encodings: a kv is key length (8) + type (4) + a 1-byte value; a tensor
    // info is name length (8) + n_dims (4) + type (4) + offset (8).
    let min_needed = kv_count.saturating_mul(13).saturating_add(tensor_count.saturating_mul(24));
    if min_needed > cur.remaining() as u64 {
        return Err(cur.truncated(format!("{kv_count} metadata entries and {tensor_count} tensor infos"), min_needed));
    }

    let mut metadata = Metadata::default();
    for i in 0..kv_count {
        let raw_key = cur.raw_string(&|| format!("key of metadata entry {i}"))?;
        let key = std::str::from_utf8(raw_key)
            .map_err(|_| GgufError::InvalidMetadata {
                path: path.to_path_buf(),
                key: String::from_utf8_lossy(raw_key).into_owned(),
                reason: format!("key of metadata entry {i} is not valid UTF-8"),
            })?
            .to_string();
        let raw_ty = cur.u32(&|| format!("value type of metadata key `{key}`"))?;
        let ty = ValueType::from_u32(raw_ty).ok_or_else(|| GgufError::UnknownValueType {
            path: path.to_path_buf(),
            key: key.clone(),
            value_type: raw_ty,
        })?;
        let value = cur.value(ty, &key, 0)?;
        if !metadata.insert(key.clone(), value) {
            return Err(GgufError::DuplicateKey { path: path.to_path_buf(), key });
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a.is_power_of_two() && a <= MAX_ALIGNMENT => a,
            _ => {
                return Err(GgufError::InvalidMetadata {
                    path: path.to_path_buf(),
                    key: "general.alignment".into(),
                    reason: format!("{v:?} is not a power of two between 1 and {MAX_ALIGNMENT}"),
                })
            }
        },
    };

    struct Raw {
        name: String,
        ty: GgmlType,
        ne: Vec<u64>,
        offset: u64,
        n_elements: u64,
        n_bytes: u64,
    }
    let mut raws: Vec<Raw> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for i in 0..tensor_count {
        let raw_name = cur.raw_string(&|| format!("name of tensor {i}"))?;
        let name = std::str::from_utf8(raw_name)
            .map_err(|_| GgufError::InvalidTensor {
                path: path.to_path_buf(),
                tensor: String::from_utf8_lossy(raw_name).into_owned(),
                reason: format!("name of tensor {i} is not valid UTF-8"),
            })?
            .to_string();
        let invalid =
            |reason: String| GgufError::InvalidTensor { path: path.to_path_buf(), tensor: name.clone(), reason };
        let n_dims = cur.u32(&|| format!("rank of tensor `{name}`"))?;
        if n_dims as usize > MAX_DIMS {
            return Err(invalid(format!("has {n_dims} dimensions; ggml allows at most {MAX_DIMS}")));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            let v = cur.u64(&|| format!("dimension {d} of tensor `{name}`"))?;
            if v > i64::MAX as u64 || usize::try_from(v).is_err() {
                return Err(invalid(format!("dimension {d} is {v}, which is out of range")));
            }
            ne.push(v);
        }
        let raw_ty = cur.u32(&|| format!("type of tensor `{name}`"))?;
        let ty = GgmlType::from_u32(raw_ty).ok_or_else(|| GgufError::UnknownGgmlType {
            path: path.to_path_buf(),
            tensor: name.clone(),
            ggml_type: raw_ty,
        })?;
        let offset = cur.u64(&|| format!("data offset of tensor `{name}`"))?;

        let overflow = || GgufError::Overflow {
            path: path.to_path_buf(),
            what: format!("tensor `{name}` with dimensions {ne:?} has too many elements"),
        };
        let n_elements = ne.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).ok_or_else(overflow)?;
        // The largest f32 buffer we might allocate for it must be addressable.
        if n_elements > (usize::MAX / 4) as u64 {
            return Err(overflow());
        }
        let bs = ty.block_size() as u64;
        let row = ne.first().copied().unwrap_or(1);
        if row % bs != 0 {
            return Err(invalid(format!("innermost dimension {row} is not a multiple of the {ty} block size {bs}")));
        }
        let n_bytes = (n_elements / bs).checked_mul(ty.type_size() as u64).ok_or_else(overflow)?;
        if offset % alignment != 0 {
            return Err(invalid(format!("data offset {offset} is not a multiple of the alignment {alignment}")));
        }
        if !seen.insert(name.clone()) {
            return Err(GgufError::DuplicateTensor { path: path.to_path_buf(), tensor: name });
        }
        raws.push(Raw { name, ty, ne, offset, n_elements, n_bytes });
    }

    let file_len = buf.len() as u64;
    let end_of_infos = cur.pos as u64;
    let data_offset = end_of_infos
        .checked_add(alignment - 1)
        .map(|v| v / alignment * alignment)
        .ok_or_else(|| GgufError::Overflow { path: path.to_path_buf(), what: "data section offset".into() })?;
    if !raws.is_empty() && data_offset > file_len {
        return Err(GgufError::Truncated {
            path: path.to_path_buf(),
            what: "padding before the data section".into(),
            offset: end_of_infos,
            needed: data_offset - end_of_infos,
            file_len,
        });
    }

    let mut tensors = Vec::with_capacity(raws.len());
    for r in raws {
        let start = data_offset.checked_add(r.offset);
        let end = start.and_then(|s| s.checked_add(r.n_bytes));
        match (start, end) {
            (Some(start), Some(end)) if end <= file_len => tensors.push(TensorInfo {
                name: r.name,
                ggml_type: r.ty,
                ne: r.ne,
                relative_offset: r.offset,
                start: start as usize,
                n_bytes: r.n_bytes as usize,
                n_elements: r.n_elements,
            }),
            _ => {
                return Err(GgufError::TensorOutOfBounds {
                    path: path.to_path_buf(),
                    tensor: r.name,
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    file_len,
                })
            }
        }
    }

    Ok(Parsed { version, metadata, tensors, alignment, data_offset, lossy_strings: cur.lossy_strings })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::testutil::{str_array, GgufWriter, TempDir};

    fn sample() -> GgufWriter {
        let q8 = crate::gguf::testutil::pack::quantize_q8_0(&(0..64).map(|i| i as f32 / 10.0).collect::<Vec<_>>());
        GgufWriter::new()
            .kv_str("general.architecture", "llama")
            .kv("u8", MetadataValue::U8(200))
            .kv("i8", MetadataValue::I8(-5))
            .kv("u16", MetadataValue::U16(60000))
            .kv("i16", MetadataValue::I16(-30000))
            .kv_u32("u32", 4_000_000_000)
            .kv("i32", MetadataValue::I32(-7))
            .kv_f32("f32", 1e-5)
            .kv("bool", MetadataValue::Bool(true))
            .kv("u64", MetadataValue::U64(u64::MAX))
            .kv("i64", MetadataValue::I64(i64::MIN))
            .kv("f64", MetadataValue::F64(0.125))
            .kv("strs", str_array(&["a", "", "ü"]))
            .kv("empty", MetadataValue::Array(MetadataArray::F32(vec![])))
            .kv(
                "nested",
                MetadataValue::Array(MetadataArray::Array(vec![
                    MetadataArray::I32(vec![1, 2]),
                    MetadataArray::String(vec!["x".into()]),
                    MetadataArray::Array(vec![MetadataArray::Bool(vec![true, false])]),
                ])),
            )
            .tensor_f32("a.weight", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
            .tensor("b.weight", &[2, 32], GgmlType::Q8_0, q8)
            .tensor_f32("c", &[5], &[0.5; 5])
    }

    #[test]
    fn parses_all_value_types_v2_and_v3() {
        for version in [2, 3] {
            let mut w = sample();
            w.version = version;
            let f = GgufFile::from_bytes(w.build(), "sample.gguf").expect("parse");
            assert_eq!(f.version(), version);
            let m = f.metadata();
            assert_eq!(m.len(), w.kvs.len());
            for (k, v) in &w.kvs {
                assert_eq!(m.get(k), Some(v), "key {k}");
            }
            // Order is preserved.
            let keys: Vec<&str> = m.iter().map(|(k, _)| k).collect();
            let want: Vec<&str> = w.kvs.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(keys, want);
            assert_eq!(m.get_f64("f32"), Some(1e-5));
            assert_eq!(f.architecture(), Some("llama"));
            assert_eq!(f.alignment(), 32);
            assert_eq!(f.data_offset() % 32, 0);
        }
    }

    #[test]
    fn shapes_are_row_major_and_data_reads_back() {
        let f = GgufFile::from_bytes(sample().build(), "sample.gguf").unwrap();
        let a = f.tensor("a.weight").unwrap();
        assert_eq!(a.ggml_dims(), &[3, 2]);
        assert_eq!(a.shape(), vec![2, 3]);
        assert_eq!(a.n_elements(), 6);
        assert_eq!(f.tensor_f32("a.weight").unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = f.tensor("b.weight").unwrap();
        assert_eq!(b.shape(), vec![2, 32]);
        assert_eq!(b.ggml_type(), GgmlType::Q8_0);
        assert_eq!(b.n_bytes(), 68);
        let bv = f.tensor_f32("b.weight").unwrap();
        assert!((bv[10] - 1.0).abs() < 0.01, "{}", bv[10]);
        assert_eq!(f.rows_f32(b, 1, 1).unwrap(), bv[32..].to_vec());
        assert!(f.rows_f32(b, 1, 2).is_err());
        assert_eq!(f.tensor_f32("c").unwrap(), vec![0.5; 5]);
        assert!(matches!(f.tensor_f32("nope"), Err(GgufError::TensorNotFound { .. })));
        // Every tensor starts on an alignment boundary.
        for t in f.tensors() {
            assert_eq!(t.file_offset() % 32, 0, "{}", t.name());
        }
    }

    #[test]
    fn custom_alignment_is_honoured() {
        let w = GgufWriter::new().kv_u32("general.alignment", 64).tensor_f32("x", &[3], &[1.0, 2.0, 3.0]).tensor_f32(
            "y",
            &[2],
            &[4.0, 5.0],
        );
        let f = GgufFile::from_bytes(w.build(), "aligned.gguf").unwrap();
        assert_eq!(f.alignment(), 64);
        assert_eq!(f.data_offset() % 64, 0);
        assert_eq!(f.tensor("y").unwrap().relative_offset(), 64);
        assert_eq!(f.tensor_f32("y").unwrap(), vec![4.0, 5.0]);

        let bad = GgufWriter::new().kv_u32("general.alignment", 48).build();
        let e = GgufFile::from_bytes(bad, "bad.gguf").unwrap_err();
        assert!(matches!(e, GgufError::InvalidMetadata { ref key, .. } if key == "general.alignment"), "{e}");
    }

    #[test]
    fn open_reads_from_disk_and_names_the_file() {
        let dir = TempDir::new("reader");
        let p = sample().write_to(dir.path(), "m.gguf");
        let f = GgufFile::open(&p).unwrap();
        assert_eq!(f.path(), p);
        assert_eq!(f.tensors().len(), 3);

        let empty = dir.path().join("empty.gguf");
        std::fs::write(&empty, b"").unwrap();
        let e = GgufFile::open(&empty).unwrap_err();
        assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
        assert!(e.to_string().contains("empty.gguf"), "{e}");

        let e = GgufFile::open(dir.path().join("missing.gguf")).unwrap_err();
        assert!(matches!(e, GgufError::Io { .. }), "{e}");
    }

    #[test]
    fn bad_magic_and_versions() {
        let mut b = sample().build();
        b[0..4].copy_from_slice(b"GGML");
        assert!(matches!(GgufFile::from_bytes(b, "x"), Err(GgufError::BadMagic { found, .. }) if &found == b"GGML"));

        for (v, big_endian) in [(1u32, false), (4, false), (3u32.swap_bytes(), true), (2u32.swap_bytes(), true)] {
            let mut w = sample();
            w.version = v;
            let e = GgufFile::from_bytes(w.build(), "x").unwrap_err();
            if big_endian {
                assert!(matches!(e, GgufError::BigEndian { .. }), "{e}");
            } else {
                assert!(matches!(e, GgufError::UnsupportedVersion { version, .. } if version == v), "{e}");
            }
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let full = sample().build();
        // The last tensor's data ends before the final padding; cutting only padding is fine.
        let f = GgufFile::from_bytes(full.clone(), "x").unwrap();
        let needed = f.tensors().iter().map(|t| t.file_offset() as usize + t.n_bytes()).max().unwrap();
        for len in 0..needed {
            let e = GgufFile::from_bytes(full[..len].to_vec(), "cut.gguf");
            match e {
                Err(GgufError::Truncated { .. }) | Err(GgufError::TensorOutOfBounds { .. }) => {}
                Err(other) => panic!("len {len}: unexpected error {other}"),
                Ok(_) => panic!("len {len}: truncated file parsed"),
            }
        }
        assert!(GgufFile::from_bytes(full[..needed].to_vec(), "x").is_ok());
    }

    #[test]
    fn unknown_value_types_are_named() {
        let mut b = GgufWriter::new().kv_u32("some.key", 1).build();
        // Header is 24 bytes; then key len (8) + "some.key" (8) + type (4).
        b[40..44].copy_from_slice(&77u32.to_le_bytes());
        let e = GgufFile::from_bytes(b, "x").unwrap_err();
        assert!(matches!(e, GgufError::UnknownValueType { ref key, value_type: 77, .. } if key == "some.key"), "{e}");

        let mut b = GgufWriter::new().kv("arr", str_array(&["q"])).build();
        // Array element type follows the value type at 24 + 8 + 3 + 4.
        b[39..43].copy_from_slice(&13u32.to_le_bytes());
        let e = GgufFile::from_bytes(b, "x").unwrap_err();
        assert!(matches!(e, GgufError::UnknownValueType { value_type: 13, .. }), "{e}");
    }

    #[test]
    fn unknown_ggml_type_names_the_tensor() {
        let mut w = GgufWriter::new().tensor_f32("blk.0.attn_q.weight", &[2], &[1.0, 2.0]);
        w.tensors[0].type_id = 4; // removed Q4_2
        let e = GgufFile::from_bytes(w.build(), "t.gguf").unwrap_err();
        assert!(
            matches!(e, GgufError::UnknownGgmlType { ref tensor, ggml_type: 4, .. } if tensor == "blk.0.attn_q.weight")
        );
        let msg = e.to_string();
        assert!(msg.contains("t.gguf") && msg.contains("blk.0.attn_q.weight"), "{msg}");
    }

    #[test]
    fn out_of_range_and_misaligned_offsets() {
        let mut w = GgufWriter::new().tensor_f32("w", &[4], &[1.0; 4]);
        w.tensors[0].offset_override = Some(1 << 20);
        let e = GgufFile::from_bytes(w.build(), "o.gguf").unwrap_err();
        assert!(matches!(e, GgufError::TensorOutOfBounds { ref tensor, .. } if tensor == "w"), "{e}");

        w.tensors[0].offset_override = Some(u64::MAX - 31);
        let e = GgufFile::from_bytes(w.build(), "o.gguf").unwrap_err();
        assert!(matches!(e, GgufError::TensorOutOfBounds { .. }), "{e}");

        w.tensors[0].offset_override = Some(4);
        let e = GgufFile::from_bytes(w.build(), "o.gguf").unwrap_err();
        assert!(matches!(e, GgufError::InvalidTensor { ref reason, .. } if reason.contains("alignment")), "{e}");
    }

    #[test]
    fn overflowing_and_malformed_dims() {
        let mut w = GgufWriter::new().tensor_f32("big", &[1], &[1.0]);
        w.tensors[0].ne = vec![1 << 40, 1 << 40];
        let e = GgufFile::from_bytes(w.build(), "x").unwrap_err();
        assert!(matches!(e, GgufError::Overflow { .. }), "{e}");

        w.tensors[0].ne = vec![u64::MAX];
        let e = GgufFile::from_bytes(w.build(), "x").unwrap_err();
        assert!(matches!(e, GgufError::InvalidTensor { .. }), "{e}");

        w.tensors[0].ne = vec![1, 1, 1, 1, 1];
        let e = GgufFile::from_bytes(w.build(), "x").unwrap_err();
        assert!(matches!(e, GgufError::InvalidTensor { ref reason, .. } if reason.contains("dimensions")), "{e}");

        let mut w = GgufWriter::new().tensor("q", &[1, 32], GgmlType::Q4_0, vec![0; 18]);
        w.tensors[0].ne = vec![16, 2];
        let e = GgufFile::from_bytes(w.build(), "x").unwrap_err();
        assert!(matches!(e, GgufError::InvalidTensor { ref reason, .. } if reason.contains("block size")), "{e}");
    }

    #[test]
    fn absurd_counts_do_not_allocate() {
        // A header claiming 2^60 tensors and metadata entries.
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend((1u64 << 60).to_le_bytes());
        b.extend((1u64 << 60).to_le_bytes());
        assert!(matches!(GgufFile::from_bytes(b, "x"), Err(GgufError::Truncated { .. })));

        // An array claiming 2^62 elements.
        let mut b = GgufWriter::new().kv("arr", str_array(&[])).build();
        let at = 24 + 8 + 3 + 4 + 4;
        b[at..at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
        assert!(matches!(GgufFile::from_bytes(b, "x"), Err(GgufError::Truncated { .. })));

        // A string claiming u64::MAX bytes.
        let mut b = GgufWriter::new().kv_str("s", "abc").build();
        let at = 24 + 8 + 1 + 4;
        b[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(GgufFile::from_bytes(b, "x"), Err(GgufError::Truncated { .. })));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut a = MetadataArray::U8(vec![1]);
        for _ in 0..20 {
            a = MetadataArray::Array(vec![a]);
        }
        let b = GgufWriter::new().kv("deep", MetadataValue::Array(a)).build();
        assert!(matches!(GgufFile::from_bytes(b, "x"), Err(GgufError::InvalidMetadata { .. })));
    }

    #[test]
    fn duplicates_are_refused() {
        let b = GgufWriter::new().kv_u32("k", 1).kv_u32("k", 2).build();
        assert!(matches!(GgufFile::from_bytes(b, "x"), Err(GgufError::DuplicateKey { .. })));
        let b = GgufWriter::new().tensor_f32("t", &[1], &[1.0]).tensor_f32("t", &[1], &[2.0]).build();
        assert!(matches!(GgufFile::from_bytes(b, "x"), Err(GgufError::DuplicateTensor { .. })));
    }

    #[test]
    fn unsupported_type_is_an_error_on_read_not_on_open() {
        let w = GgufWriter::new().tensor("iq", &[256], GgmlType::IQ2_XXS, vec![0; 66]);
        let f = GgufFile::from_bytes(w.build(), "iq.gguf").unwrap();
        let e = f.tensor_f32("iq").unwrap_err();
        assert!(
            matches!(e, GgufError::UnsupportedGgmlType { ref tensor, ggml_type: GgmlType::IQ2_XXS, .. } if tensor == "iq"),
            "{e}"
        );
    }

    #[test]
    fn random_corruption_never_panics() {
        let full = sample().build();
        let mut s: u64 = 0x1234_5678_9ABC_DEF1;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for _ in 0..3000 {
            let mut b = full.clone();
            for _ in 0..(1 + next() % 4) {
                let at = (next() % b.len() as u64) as usize;
                b[at] = next() as u8;
            }
            if next() % 4 == 0 {
                let cut = (next() % b.len() as u64) as usize;
                b.truncate(cut);
            }
            if let Ok(f) = GgufFile::from_bytes(b, "fuzz.gguf") {
                for t in f.tensors() {
                    let _ = f.tensor_f32(t.name());
                }
                f.metadata().iter().for_each(|(_, v)| drop(v.to_json(4)));
            }
        }
    }
}
