//! Test support: a small GGUF *writer*, reference quantizers/packers, and a self-cleaning
//! temporary directory. Compiled only for tests.
//!
//! The packers are written from the block-layout descriptions (which bits of which byte hold
//! what), independently of the dequantizers in `quant.rs`, so that a test comparing the two
//! catches a misreading of the layout in either.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::metadata::{MetadataArray, MetadataValue};
use super::quant::GgmlType;

/// A directory under the system temp dir, removed (with its contents) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let p = std::env::temp_dir().join(format!("kiln-gguf-{tag}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One tensor to write.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    /// ggml order: `ne[0]` (innermost) first.
    pub ne: Vec<u64>,
    /// Raw type id, so tests can write unknown ids.
    pub type_id: u32,
    pub data: Vec<u8>,
    /// Write this offset instead of the computed one (to forge corrupt files).
    pub offset_override: Option<u64>,
}

/// Builds GGUF files in memory.
#[derive(Clone, Debug)]
pub struct GgufWriter {
    pub version: u32,
    pub alignment: u64,
    pub kvs: Vec<(String, MetadataValue)>,
    pub tensors: Vec<TensorSpec>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        GgufWriter { version: 3, alignment: 32, kvs: Vec::new(), tensors: Vec::new() }
    }

    pub fn kv(mut self, key: &str, value: MetadataValue) -> Self {
        if key == "general.alignment" {
            if let Some(a) = value.as_u64() {
                self.alignment = a;
            }
        }
        self.kvs.push((key.to_string(), value));
        self
    }

    pub fn kv_str(self, key: &str, v: &str) -> Self {
        self.kv(key, MetadataValue::String(v.to_string()))
    }

    pub fn kv_u32(self, key: &str, v: u32) -> Self {
        self.kv(key, MetadataValue::U32(v))
    }

    pub fn kv_f32(self, key: &str, v: f32) -> Self {
        self.kv(key, MetadataValue::F32(v))
    }

    /// Adds a tensor given its row-major (PyTorch) shape; it is written reversed, as ggml does.
    pub fn tensor(mut self, name: &str, shape: &[u64], ty: GgmlType, data: Vec<u8>) -> Self {
        self.tensors.push(TensorSpec {
            name: name.to_string(),
            ne: shape.iter().rev().copied().collect(),
            type_id: ty.id(),
            data,
            offset_override: None,
        });
        self
    }

    /// Adds an F32 tensor.
    pub fn tensor_f32(self, name: &str, shape: &[u64], values: &[f32]) -> Self {
        let n: u64 = shape.iter().product();
        assert_eq!(n as usize, values.len(), "{name}: shape/value count mismatch");
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, shape, GgmlType::F32, data)
    }

    /// Serializes the file.
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kvs.len() as u64).to_le_bytes());
        for (k, v) in &self.kvs {
            write_str(&mut out, k);
            out.extend((v.value_type() as u32).to_le_bytes());
            write_value(&mut out, v);
        }
        let align = self.alignment.max(1);
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for t in &self.tensors {
            write_str(&mut out, &t.name);
            out.extend((t.ne.len() as u32).to_le_bytes());
            for d in &t.ne {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.type_id.to_le_bytes());
            out.extend(t.offset_override.unwrap_or(offset).to_le_bytes());
            offsets.push(offset);
            offset += (t.data.len() as u64).div_ceil(align) * align;
        }
        if !self.tensors.is_empty() {
            while out.len() as u64 % align != 0 {
                out.push(0);
            }
        }
        for (t, off) in self.tensors.iter().zip(&offsets) {
            let start = out.len() as u64;
            debug_assert!(start >= *off);
            out.extend(&t.data);
            while (out.len() as u64) % align != 0 {
                out.push(0);
            }
        }
        out
    }

    /// Writes the file into `dir` and returns its path.
    pub fn write_to(&self, dir: &Path, file_name: &str) -> PathBuf {
        let p = dir.join(file_name);
        std::fs::write(&p, self.build()).expect("write gguf");
        p
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, v: &MetadataValue) {
    match v {
        MetadataValue::U8(x) => out.push(*x),
        MetadataValue::I8(x) => out.push(*x as u8),
        MetadataValue::U16(x) => out.extend(x.to_le_bytes()),
        MetadataValue::I16(x) => out.extend(x.to_le_bytes()),
        MetadataValue::U32(x) => out.extend(x.to_le_bytes()),
        MetadataValue::I32(x) => out.extend(x.to_le_bytes()),
        MetadataValue::F32(x) => out.extend(x.to_le_bytes()),
        MetadataValue::Bool(x) => out.push(u8::from(*x)),
        MetadataValue::String(s) => write_str(out, s),
        MetadataValue::Array(a) => write_array(out, a),
        MetadataValue::U64(x) => out.extend(x.to_le_bytes()),
        MetadataValue::I64(x) => out.extend(x.to_le_bytes()),
        MetadataValue::F64(x) => out.extend(x.to_le_bytes()),
    }
}

fn write_array(out: &mut Vec<u8>, a: &MetadataArray) {
    out.extend((a.element_type() as u32).to_le_bytes());
    out.extend((a.len() as u64).to_le_bytes());
    match a {
        MetadataArray::U8(v) => out.extend(v),
        MetadataArray::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
        MetadataArray::U16(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        MetadataArray::I16(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        MetadataArray::U32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        MetadataArray::I32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        MetadataArray::F32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        MetadataArray::Bool(v) => out.extend(v.iter().map(|&x| u8::from(x))),
        MetadataArray::String(v) => v.iter().for_each(|s| write_str(out, s)),
        MetadataArray::Array(v) => v.iter().for_each(|x| write_array(out, x)),
        MetadataArray::U64(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        MetadataArray::I64(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        MetadataArray::F64(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
    }
}

/// A string-array metadata value.
pub fn str_array(items: &[&str]) -> MetadataValue {
    MetadataValue::Array(MetadataArray::String(items.iter().map(|s| s.to_string()).collect()))
}

/// Reference quantizers and bit packers for the block formats.
pub mod pack {
    use half::f16;

    use crate::gguf::quant::GgmlType;

    fn h(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_bits().to_le_bytes()
    }
    fn hr(v: f32) -> f32 {
        f16::from_f32(v).to_f32()
    }

    /// Q8_0: `d = amax / 127`, `q = round(x / d)`.
    pub fn quantize_q8_0(x: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in x.chunks(32) {
            let amax = c.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            out.extend(h(d));
            out.extend(c.iter().map(|v| (v * id).round() as i8 as u8));
        }
        out
    }

    /// What Q8_0 blocks from [`quantize_q8_0`] must decode to.
    pub fn reference_q8_0(x: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        for c in x.chunks(32) {
            let amax = c.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            out.extend(c.iter().map(|v| f32::from((v * id).round() as i8) * hr(d)));
        }
        out
    }

    /// Packs 32 4-bit codes as ggml's 32-value formats do: code `j` in the low nibble of byte
    /// `j`, code `j + 16` in its high nibble.
    fn nibbles(q: &[u8]) -> Vec<u8> {
        (0..16).map(|j| (q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4)).collect()
    }

    /// Q4_0 with ggml's choice `d = max / -8` (max = the signed value of largest magnitude).
    /// Returns the blocks and the values they must decode to.
    pub fn quantize_q4_0(x: &[f32]) -> (Vec<u8>, Vec<f32>) {
        let (mut out, mut want) = (Vec::new(), Vec::new());
        for c in x.chunks(32) {
            let max = c.iter().fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
            let d = max / -8.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let q: Vec<u8> = c.iter().map(|v| ((v * id + 8.5) as i32).clamp(0, 15) as u8).collect();
            out.extend(h(d));
            out.extend(nibbles(&q));
            want.extend(q.iter().map(|&q| (f32::from(q) - 8.0) * hr(d)));
        }
        (out, want)
    }

    /// Q4_1: `d = (max - min) / 15`, `m = min`.
    pub fn quantize_q4_1(x: &[f32]) -> (Vec<u8>, Vec<f32>) {
        let (mut out, mut want) = (Vec::new(), Vec::new());
        for c in x.chunks(32) {
            let min = c.iter().copied().fold(f32::INFINITY, f32::min);
            let max = c.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let d = (max - min) / 15.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let q: Vec<u8> = c.iter().map(|v| (((v - min) * id).round() as i32).clamp(0, 15) as u8).collect();
            out.extend(h(d));
            out.extend(h(min));
            out.extend(nibbles(&q));
            want.extend(q.iter().map(|&q| f32::from(q) * hr(d) + hr(min)));
        }
        (out, want)
    }

    /// Packs the fifth bits of 32 5-bit codes into the little-endian `u32` `qh`: bit `j` is
    /// the fifth bit of code `j`.
    fn fifth_bits(q: &[u8]) -> [u8; 4] {
        let mut qh = 0u32;
        for (j, &v) in q.iter().enumerate() {
            qh |= u32::from(v >> 4) << j;
        }
        qh.to_le_bytes()
    }

    /// Q5_0: `d = max / -16`, codes `0..32`, value `(q - 16) * d`.
    pub fn quantize_q5_0(x: &[f32]) -> (Vec<u8>, Vec<f32>) {
        let (mut out, mut want) = (Vec::new(), Vec::new());
        for c in x.chunks(32) {
            let max = c.iter().fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
            let d = max / -16.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let q: Vec<u8> = c.iter().map(|v| ((v * id + 16.5) as i32).clamp(0, 31) as u8).collect();
            out.extend(h(d));
            out.extend(fifth_bits(&q));
            out.extend(nibbles(&q));
            want.extend(q.iter().map(|&q| (f32::from(q) - 16.0) * hr(d)));
        }
        (out, want)
    }

    /// Q5_1: `d = (max - min) / 31`, `m = min`.
    pub fn quantize_q5_1(x: &[f32]) -> (Vec<u8>, Vec<f32>) {
        let (mut out, mut want) = (Vec::new(), Vec::new());
        for c in x.chunks(32) {
            let min = c.iter().copied().fold(f32::INFINITY, f32::min);
            let max = c.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let d = (max - min) / 31.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let q: Vec<u8> = c.iter().map(|v| (((v - min) * id).round() as i32).clamp(0, 31) as u8).collect();
            out.extend(h(d));
            out.extend(h(min));
            out.extend(fifth_bits(&q));
            out.extend(nibbles(&q));
            want.extend(q.iter().map(|&q| f32::from(q) * hr(d) + hr(min)));
        }
        (out, want)
    }

    /// Packs eight 6-bit scales and mins into the 12-byte K-quant layout (the inverse of
    /// `get_scale_min_k4`): bytes 0..4 hold scales 0..4 in their low six bits and the top two
    /// bits of scales 4..8 in their top two bits; bytes 4..8 do the same for mins; bytes 8..12
    /// hold the low nibbles of scale (low) and min (high) 4..8.
    pub fn pack_scale_min_k4(sc: &[u8; 8], mn: &[u8; 8]) -> [u8; 12] {
        let mut p = [0u8; 12];
        for j in 0..4 {
            p[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
            p[j + 4] = (mn[j] & 63) | ((mn[j + 4] >> 4) << 6);
            p[j + 8] = (sc[j + 4] & 0x0F) | ((mn[j + 4] & 0x0F) << 4);
        }
        p
    }

    /// Q4_K with explicit scales: value `i` decodes to `d*sc[i/32]*q[i] - dmin*mn[i/32]`.
    pub fn pack_q4_k(d: f32, dmin: f32, sc: &[u8; 8], mn: &[u8; 8], q: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(h(d));
        out.extend(h(dmin));
        out.extend(pack_scale_min_k4(sc, mn));
        // 64-value chunk c: byte c*32 + l = q[c*64 + l] | q[c*64 + 32 + l] << 4.
        for c in 0..4 {
            for l in 0..32 {
                out.push((q[c * 64 + l] & 0x0F) | ((q[c * 64 + 32 + l] & 0x0F) << 4));
            }
        }
        out
    }

    /// Q5_K with explicit scales and 5-bit codes.
    pub fn pack_q5_k(d: f32, dmin: f32, sc: &[u8; 8], mn: &[u8; 8], q: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(h(d));
        out.extend(h(dmin));
        out.extend(pack_scale_min_k4(sc, mn));
        let mut qh = [0u8; 32];
        for c in 0..4 {
            for l in 0..32 {
                qh[l] |= ((q[c * 64 + l] >> 4) & 1) << (2 * c);
                qh[l] |= ((q[c * 64 + 32 + l] >> 4) & 1) << (2 * c + 1);
            }
        }
        out.extend(qh);
        for c in 0..4 {
            for l in 0..32 {
                out.push((q[c * 64 + l] & 0x0F) | ((q[c * 64 + 32 + l] & 0x0F) << 4));
            }
        }
        out
    }

    /// Q6_K with explicit per-16 scales and codes in -32..32.
    pub fn pack_q6_k(d: f32, sc: &[i8; 16], q: &[i8]) -> Vec<u8> {
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        for n in 0..2 {
            for k in 0..4 {
                for l in 0..32 {
                    let u = (i32::from(q[n * 128 + k * 32 + l]) + 32) as u8;
                    ql[n * 64 + l + 32 * (k % 2)] |= (u & 0x0F) << (4 * (k / 2));
                    qh[n * 32 + l] |= (u >> 4) << (2 * k);
                }
            }
        }
        let mut out = Vec::new();
        out.extend(ql);
        out.extend(qh);
        out.extend(sc.iter().map(|&s| s as u8));
        out.extend(h(d));
        out
    }

    /// Q2_K with 4-bit scales/mins per 16 values and 2-bit codes.
    pub fn pack_q2_k(d: f32, dmin: f32, sc: &[u8; 16], mn: &[u8; 16], q: &[u8]) -> Vec<u8> {
        let mut out: Vec<u8> = (0..16).map(|g| (sc[g] & 0x0F) | (mn[g] << 4)).collect();
        let mut qs = [0u8; 64];
        for n in 0..2 {
            for s in 0..4 {
                for l in 0..32 {
                    qs[n * 32 + l] |= (q[n * 128 + s * 32 + l] & 3) << (2 * s);
                }
            }
        }
        out.extend(qs);
        out.extend(h(d));
        out.extend(h(dmin));
        out
    }

    /// Q3_K with signed 6-bit scales (-32..32) and codes in -4..4.
    pub fn pack_q3_k(d: f32, sc: &[i8; 16], q: &[i8]) -> Vec<u8> {
        let mut hmask = [0u8; 32];
        let mut qs = [0u8; 64];
        for n in 0..2 {
            for s in 0..4 {
                for l in 0..32 {
                    let u = (i32::from(q[n * 128 + s * 32 + l]) + 4) as u8; // 0..8
                    qs[n * 32 + l] |= (u & 3) << (2 * s);
                    hmask[l] |= (u >> 2) << (n * 4 + s);
                }
            }
        }
        let mut scales = [0u8; 12];
        for i in 0..16 {
            let u = (i32::from(sc[i]) + 32) as u8;
            if i < 8 {
                scales[i] |= u & 0x0F;
            } else {
                scales[i - 8] |= (u & 0x0F) << 4;
            }
            scales[8 + i % 4] |= (u >> 4) << (2 * (i / 4));
        }
        let mut out = Vec::new();
        out.extend(hmask);
        out.extend(qs);
        out.extend(scales);
        out.extend(h(d));
        out
    }

    /// Two pseudo-random blocks of `ty` whose scale fields are overwritten with sane values
    /// (random bytes there would often be inf/NaN halves). The same generator is easy to write
    /// in Python (xorshift64, byte = state >> 24 & 0xff, seed = 0x9E3779B97F4A7C15 ^ type id),
    /// which is how [`GOLDEN`] was computed with gguf-py.
    pub fn golden_block(ty: GgmlType) -> Vec<u8> {
        let mut s: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(ty.id());
        let mut b: Vec<u8> = (0..2 * ty.type_size())
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect();
        let d = h(0.0123);
        let m = h(0.0045);
        for blk in b.chunks_mut(ty.type_size()) {
            let mut set = |at: usize, v: [u8; 2]| blk[at..at + 2].copy_from_slice(&v);
            match ty {
                GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL | GgmlType::IQ4_XS => set(0, d),
                GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => {
                    set(0, d);
                    set(2, m);
                }
                GgmlType::Q2_K => {
                    set(80, d);
                    set(82, m);
                }
                GgmlType::Q3_K => set(108, d),
                GgmlType::Q6_K => set(208, d),
                GgmlType::Q8_K => blk[0..4].copy_from_slice(&0.0123f32.to_le_bytes()),
                _ => {}
            }
        }
        b
    }

    /// `(type, sum, sum of squares, first 8 values)` of [`golden_block`] dequantized by
    /// gguf-py 0.19's `gguf.quants.dequantize`.
    #[rustfmt::skip]
    #[allow(clippy::excessive_precision)]
    pub const GOLDEN: &[(GgmlType, f64, f64, [f32; 8])] = &[
        (GgmlType::Q4_0, -0.332061767578125, 0.21463108342140913, [-0.098388671875, 0.0, 0.086090087890625, -0.061492919921875, -0.02459716796875, 0.02459716796875, 0.0491943359375, -0.061492919921875]),
        (GgmlType::Q4_1, 5.60107421875, 0.667459063231945, [0.1889801025390625, 0.0782928466796875, 0.1643829345703125, 0.1766815185546875, 0.0782928466796875, 0.0167999267578125, 0.0045013427734375, 0.1643829345703125]),
        (GgmlType::Q5_0, 0.012298583984375, 0.8184417141601443, [-0.061492919921875, 0.098388671875, -0.19677734375, 0.061492919921875, 0.159881591796875, -0.036895751953125, -0.12298583984375, 0.036895751953125]),
        (GgmlType::Q5_1, 10.71728515625, 2.5361434761434793, [0.1274871826171875, 0.2873687744140625, 0.0905914306640625, 0.1274871826171875, 0.0045013427734375, 0.3242645263671875, 0.3488616943359375, 0.2627716064453125]),
        (GgmlType::Q8_0, -10.40460205078125, 57.12907696142793, [-0.971588134765625, 0.1475830078125, -1.25445556640625, 0.51654052734375, -0.7379150390625, 1.50042724609375, 1.25445556640625, -0.061492919921875]),
        (GgmlType::Q2_K, 59.602325439453125, 19.681220326572657, [0.308349609375, 0.308349609375, -0.0360107421875, -0.0360107421875, 0.48052978515625, 0.13616943359375, -0.0360107421875, -0.0360107421875]),
        (GgmlType::Q3_K, -21.952972412109375, 172.18691695760936, [-0.9346923828125, -0.9346923828125, -0.9346923828125, 0.46734619140625, -0.233673095703125, -0.233673095703125, 0.0, -0.9346923828125]),
        (GgmlType::Q4_K, 841.0745849609375, 3926.767550910823, [0.327484130859375, 0.93011474609375, 0.327484130859375, -0.10296630859375, 0.24139404296875, 1.102294921875, 0.7579345703125, 0.58575439453125]),
        (GgmlType::Q5_K, 3629.2459106445312, 44265.170566105284, [6.855621337890625, 4.592681884765625, 6.289886474609375, 1.198272705078125, 6.855621337890625, 6.855621337890625, 5.4412841796875, 1.764007568359375]),
        (GgmlType::Q6_K, 323.4650573730469, 170096.3819203684, [-8.2646484375, -6.88720703125, -20.66162109375, -10.330810546875, 15.840576171875, 7.575927734375, -6.198486328125, 16.529296875]),
        (GgmlType::IQ4_NL, 3.1976318359375, 38.931870207190514, [-0.12298583984375, 1.094573974609375, -0.799407958984375, 0.159881591796875, 0.651824951171875, 0.651824951171875, -1.020782470703125, 0.159881591796875]),
        (GgmlType::IQ4_XS, 22.4326171875, 95482.90739340708, [11.449981689453125, 24.302001953125, 15.188751220703125, -26.405059814453125, 5.14080810546875, -26.405059814453125, 2.33673095703125, -5.841827392578125]),
    ];
}
