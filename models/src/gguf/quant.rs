//! ggml tensor types, their block layouts, and dequantization to `f32`.
//!
//! A ggml tensor of a quantized type is a sequence of fixed-size *blocks* along its innermost
//! dimension (`ne[0]`); each block encodes [`GgmlType::block_size`] consecutive values in
//! [`GgmlType::type_size`] bytes. The layouts below follow ggml's `ggml-common.h` structs and
//! the `dequantize_row_*` functions of `ggml-quants.c` byte for byte; each function's doc
//! comment spells out its struct so the code can be checked against it. All multi-byte fields
//! are little-endian, `ggml_half` is IEEE binary16.
//!
//! The functions are written from the layout descriptions, not translated from ggml, and are
//! tested against independently packed blocks (see the tests at the bottom of this file).

use std::fmt;

use half::{bf16, f16};

/// Values per super-block in the K-quant formats.
pub const QK_K: usize = 256;

macro_rules! ggml_types {
    ($( $(#[$doc:meta])* $variant:ident = $id:literal, $name:literal, $block:expr, $size:expr, $deq:expr; )*) => {
        /// A ggml tensor element type (`enum ggml_type`). Ids 4, 5 and 31–33, 36–38 were
        /// removed from ggml and are rejected as unknown.
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum GgmlType { $( $(#[$doc])* $variant, )* }

        impl GgmlType {
            /// Maps a raw `ggml_type` id; `None` for unknown or removed ids.
            pub fn from_u32(id: u32) -> Option<Self> {
                match id { $( $id => Some(Self::$variant), )* _ => None }
            }
            /// The raw `ggml_type` id.
            pub fn id(self) -> u32 {
                match self { $( Self::$variant => $id, )* }
            }
            /// The name used by gguf-py and llama.cpp's tools (e.g. `Q4_K`).
            pub fn name(self) -> &'static str {
                match self { $( Self::$variant => $name, )* }
            }
            /// Values per block.
            pub fn block_size(self) -> usize {
                match self { $( Self::$variant => $block, )* }
            }
            /// Bytes per block.
            pub fn type_size(self) -> usize {
                match self { $( Self::$variant => $size, )* }
            }
            /// Whether [`dequantize`] supports this type.
            pub fn can_dequantize(self) -> bool {
                match self { $( Self::$variant => $deq, )* }
            }
            /// All known types, in id order.
            pub const ALL: &'static [GgmlType] = &[ $( Self::$variant, )* ];
        }
    };
}

ggml_types! {
    F32 = 0, "F32", 1, 4, true;
    F16 = 1, "F16", 1, 2, true;
    /// `{ half d; u8 qs[16]; }`
    Q4_0 = 2, "Q4_0", 32, 2 + 16, true;
    /// `{ half d; half m; u8 qs[16]; }`
    Q4_1 = 3, "Q4_1", 32, 2 + 2 + 16, true;
    /// `{ half d; u8 qh[4]; u8 qs[16]; }`
    Q5_0 = 6, "Q5_0", 32, 2 + 4 + 16, true;
    /// `{ half d; half m; u8 qh[4]; u8 qs[16]; }`
    Q5_1 = 7, "Q5_1", 32, 2 + 2 + 4 + 16, true;
    /// `{ half d; i8 qs[32]; }`
    Q8_0 = 8, "Q8_0", 32, 2 + 32, true;
    /// `{ half d; half s; i8 qs[32]; }`: only an intermediate of ggml's dot products.
    Q8_1 = 9, "Q8_1", 32, 2 + 2 + 32, false;
    Q2_K = 10, "Q2_K", QK_K, QK_K / 16 + QK_K / 4 + 2 + 2, true;
    Q3_K = 11, "Q3_K", QK_K, QK_K / 8 + QK_K / 4 + 12 + 2, true;
    Q4_K = 12, "Q4_K", QK_K, 2 + 2 + 12 + QK_K / 2, true;
    Q5_K = 13, "Q5_K", QK_K, 2 + 2 + 12 + QK_K / 8 + QK_K / 2, true;
    Q6_K = 14, "Q6_K", QK_K, QK_K / 2 + QK_K / 4 + QK_K / 16 + 2, true;
    Q8_K = 15, "Q8_K", QK_K, 4 + QK_K + QK_K / 8, true;
    IQ2_XXS = 16, "IQ2_XXS", QK_K, 2 + QK_K / 4, false;
    IQ2_XS = 17, "IQ2_XS", QK_K, 2 + QK_K / 4 + QK_K / 32, false;
    IQ3_XXS = 18, "IQ3_XXS", QK_K, 2 + QK_K / 4 + QK_K / 8, false;
    IQ1_S = 19, "IQ1_S", QK_K, 2 + QK_K / 8 + QK_K / 16, false;
    IQ4_NL = 20, "IQ4_NL", 32, 2 + 16, true;
    IQ3_S = 21, "IQ3_S", QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4, false;
    IQ2_S = 22, "IQ2_S", QK_K, 2 + QK_K / 4 + QK_K / 16, false;
    IQ4_XS = 23, "IQ4_XS", QK_K, 2 + 2 + QK_K / 2 + QK_K / 64, true;
    I8 = 24, "I8", 1, 1, true;
    I16 = 25, "I16", 1, 2, true;
    I32 = 26, "I32", 1, 4, true;
    I64 = 27, "I64", 1, 8, true;
    F64 = 28, "F64", 1, 8, true;
    IQ1_M = 29, "IQ1_M", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32, false;
    BF16 = 30, "BF16", 1, 2, true;
    TQ1_0 = 34, "TQ1_0", QK_K, 2 + 4 * 13, false;
    TQ2_0 = 35, "TQ2_0", QK_K, 2 + 64, false;
    MXFP4 = 39, "MXFP4", 32, 1 + 16, false;
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a buffer could not be dequantized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// The type has no dequantizer here.
    #[error("no dequantizer for ggml type {0}")]
    Unsupported(GgmlType),
    /// `src` is not a whole number of blocks, or `dst` does not have room for exactly them.
    #[error("{ty}: {src_len} source bytes do not decode to {dst_len} values")]
    Length { ty: GgmlType, src_len: usize, dst_len: usize },
}

/// Dequantizes whole blocks of `ty` from `src` into `dst`.
///
/// `src.len()` must be a multiple of `ty.type_size()` and `dst.len()` must be exactly
/// `src.len() / type_size * block_size`.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    let (bs, ts) = (ty.block_size(), ty.type_size());
    let len_err = || QuantError::Length { ty, src_len: src.len(), dst_len: dst.len() };
    if src.len() % ts != 0 || (src.len() / ts).checked_mul(bs) != Some(dst.len()) {
        return Err(len_err());
    }
    match ty {
        GgmlType::F32 => scalar(src, dst, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        GgmlType::F16 => scalar(src, dst, |b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()),
        GgmlType::BF16 => scalar(src, dst, |b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()),
        GgmlType::F64 => scalar(src, dst, |b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32),
        GgmlType::I8 => scalar(src, dst, |b| f32::from(b[0] as i8)),
        GgmlType::I16 => scalar(src, dst, |b| f32::from(i16::from_le_bytes([b[0], b[1]]))),
        GgmlType::I32 => scalar(src, dst, |b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32),
        GgmlType::I64 => scalar(src, dst, |b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32),
        GgmlType::Q4_0 => blocks(src, dst, ts, bs, dequant_q4_0),
        GgmlType::Q4_1 => blocks(src, dst, ts, bs, dequant_q4_1),
        GgmlType::Q5_0 => blocks(src, dst, ts, bs, dequant_q5_0),
        GgmlType::Q5_1 => blocks(src, dst, ts, bs, dequant_q5_1),
        GgmlType::Q8_0 => blocks(src, dst, ts, bs, dequant_q8_0),
        GgmlType::Q2_K => blocks(src, dst, ts, bs, dequant_q2_k),
        GgmlType::Q3_K => blocks(src, dst, ts, bs, dequant_q3_k),
        GgmlType::Q4_K => blocks(src, dst, ts, bs, dequant_q4_k),
        GgmlType::Q5_K => blocks(src, dst, ts, bs, dequant_q5_k),
        GgmlType::Q6_K => blocks(src, dst, ts, bs, dequant_q6_k),
        GgmlType::Q8_K => blocks(src, dst, ts, bs, dequant_q8_k),
        GgmlType::IQ4_NL => blocks(src, dst, ts, bs, dequant_iq4_nl),
        GgmlType::IQ4_XS => blocks(src, dst, ts, bs, dequant_iq4_xs),
        other => return Err(QuantError::Unsupported(other)),
    }
    Ok(())
}

/// Like [`dequantize`], but splits large buffers across up to `threads` scoped threads (on
/// block boundaries, so the result is identical).
pub fn dequantize_parallel(ty: GgmlType, src: &[u8], dst: &mut [f32], threads: usize) -> Result<(), QuantError> {
    /// Below this many values a thread costs more than it saves.
    const MIN_VALUES_PER_THREAD: usize = 1 << 18;
    let (bs, ts) = (ty.block_size(), ty.type_size());
    let n_blocks = src.len() / ts;
    let threads = threads.clamp(1, 64).min(dst.len() / MIN_VALUES_PER_THREAD).max(1);
    if threads == 1 || !ty.can_dequantize() || src.len() % ts != 0 || n_blocks * bs != dst.len() {
        return dequantize(ty, src, dst);
    }
    let per = n_blocks.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = src
            .chunks(per * ts)
            .zip(dst.chunks_mut(per * bs))
            .map(|(s_chunk, d_chunk)| s.spawn(move || dequantize(ty, s_chunk, d_chunk)))
            .collect();
        handles.into_iter().try_for_each(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    })
}

fn scalar(src: &[u8], dst: &mut [f32], f: impl Fn(&[u8]) -> f32) {
    let w = src.len() / dst.len().max(1);
    for (b, y) in src.chunks_exact(w.max(1)).zip(dst.iter_mut()) {
        *y = f(b);
    }
}

fn blocks(src: &[u8], dst: &mut [f32], ts: usize, bs: usize, f: fn(&[u8], &mut [f32])) {
    for (b, y) in src.chunks_exact(ts).zip(dst.chunks_exact_mut(bs)) {
        f(b, y);
    }
}

#[inline]
fn half_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// `block_q4_0 { half d; u8 qs[16]; }`: value `j` (0..16) is the low nibble of `qs[j]`, value
/// `j + 16` the high nibble; `x = (nibble - 8) * d`.
fn dequant_q4_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = (i32::from(qs[j] & 0x0F) - 8) as f32 * d;
        y[j + 16] = (i32::from(qs[j] >> 4) - 8) as f32 * d;
    }
}

/// `block_q4_1 { half d; half m; u8 qs[16]; }`: nibbles as in Q4_0, `x = nibble * d + m`.
fn dequant_q4_1(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let m = half_at(b, 2);
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = f32::from(qs[j] & 0x0F) * d + m;
        y[j + 16] = f32::from(qs[j] >> 4) * d + m;
    }
}

/// `block_q5_0 { half d; u8 qh[4]; u8 qs[16]; }`: the fifth bit of value `j` (0..32) is bit `j`
/// of the little-endian `u32` `qh`; low four bits are nibbles as in Q4_0; `x = (q - 16) * d`.
fn dequant_q5_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let h0 = ((qh >> j) & 1) as u8;
        let h1 = ((qh >> (j + 16)) & 1) as u8;
        y[j] = (i32::from((qs[j] & 0x0F) | (h0 << 4)) - 16) as f32 * d;
        y[j + 16] = (i32::from((qs[j] >> 4) | (h1 << 4)) - 16) as f32 * d;
    }
}

/// `block_q5_1 { half d; half m; u8 qh[4]; u8 qs[16]; }`: bits as in Q5_0, `x = q * d + m`.
fn dequant_q5_1(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let m = half_at(b, 2);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let h0 = ((qh >> j) & 1) as u8;
        let h1 = ((qh >> (j + 16)) & 1) as u8;
        y[j] = f32::from((qs[j] & 0x0F) | (h0 << 4)) * d + m;
        y[j + 16] = f32::from((qs[j] >> 4) | (h1 << 4)) * d + m;
    }
}

/// `block_q8_0 { half d; i8 qs[32]; }`: `x = qs[j] * d`.
fn dequant_q8_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for (j, &q) in b[2..34].iter().enumerate() {
        y[j] = f32::from(q as i8) * d;
    }
}

/// `block_q2_K { u8 scales[16]; u8 qs[64]; half d; half dmin; }`.
///
/// The 256 values are two halves of 128. In half `n`, the 2-bit quant of value
/// `n*128 + s*32 + l` (`s` in 0..4, `l` in 0..32) is bits `2s..2s+2` of `qs[n*32 + l]`. Each run
/// of 16 values has its own byte `scales[n*8 + s*2 + l/16]`: low nibble a scale, high nibble a
/// min; `x = d * scale * q - dmin * min`.
fn dequant_q2_k(b: &[u8], y: &mut [f32]) {
    let scales = &b[0..16];
    let qs = &b[16..80];
    let d = half_at(b, 80);
    let dmin = half_at(b, 82);
    for n in 0..2 {
        for s in 0..4 {
            for l in 0..32 {
                let sc = scales[n * 8 + s * 2 + l / 16];
                let dl = d * f32::from(sc & 0x0F);
                let ml = dmin * f32::from(sc >> 4);
                let q = (qs[n * 32 + l] >> (2 * s)) & 3;
                y[n * 128 + s * 32 + l] = dl * f32::from(q) - ml;
            }
        }
    }
}

/// Unpacks Q3_K's sixteen 6-bit scales from 12 bytes: scale `i`'s low four bits are the low
/// nibble of byte `i` (i < 8) or the high nibble of byte `i - 8` (i >= 8); its high two bits are
/// bits `2*(i/4)..+2` of byte `8 + i%4`. The stored value is offset by 32.
pub(crate) fn q3_k_scales(packed: &[u8]) -> [i32; 16] {
    let mut out = [0i32; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let low = if i < 8 { packed[i] & 0x0F } else { packed[i - 8] >> 4 };
        let high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
        *o = i32::from(low | (high << 4)) - 32;
    }
    out
}

/// `block_q3_K { u8 hmask[32]; u8 qs[64]; u8 scales[12]; half d; }`.
///
/// Value `n*128 + s*32 + l` takes its low two bits from bits `2s..2s+2` of `qs[n*32 + l]`, and
/// its "high" bit from bit `n*4 + s` of `hmask[l]`. The 3-bit quant is `low - 4` when that bit
/// is clear and `low` when it is set (so quants span -4..3). Scale index `n*8 + s*2 + l/16`;
/// `x = d * (scale - 32) * q`.
fn dequant_q3_k(b: &[u8], y: &mut [f32]) {
    let hmask = &b[0..32];
    let qs = &b[32..96];
    let scales = q3_k_scales(&b[96..108]);
    let d = half_at(b, 108);
    for n in 0..2 {
        for s in 0..4 {
            let bit = 1u8 << (n * 4 + s);
            for l in 0..32 {
                let dl = d * scales[n * 8 + s * 2 + l / 16] as f32;
                let low = i32::from((qs[n * 32 + l] >> (2 * s)) & 3);
                let q = if hmask[l] & bit != 0 { low } else { low - 4 };
                y[n * 128 + s * 32 + l] = dl * q as f32;
            }
        }
    }
}

/// ggml's `get_scale_min_k4`: the eight 6-bit (scale, min) pairs of Q4_K/Q5_K packed in 12
/// bytes. Pairs 0..4 are the low six bits of bytes `j` (scale) and `j + 4` (min). Pairs 4..8
/// take their low four bits from the low (scale) and high (min) nibble of byte `j + 4`, and their
/// top two bits from the top two bits of bytes `j - 4` (scale) and `j` (min).
pub fn get_scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        let sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        let m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        (sc, m)
    }
}

/// `block_q4_K { half d; half dmin; u8 scales[12]; u8 qs[128]; }`.
///
/// Four chunks of 64 values; chunk `c` reads `qs[c*32..c*32+32]`: the low nibbles are values
/// `c*64 + l`, the high nibbles values `c*64 + 32 + l`, with (scale, min) pairs `2c` and `2c+1`
/// from [`get_scale_min_k4`]; `x = d * scale * q - dmin * min`.
fn dequant_q4_k(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let dmin = half_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for c in 0..4 {
        let (sc1, m1) = get_scale_min_k4(2 * c, scales);
        let (sc2, m2) = get_scale_min_k4(2 * c + 1, scales);
        let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, min2) = (d * f32::from(sc2), dmin * f32::from(m2));
        for l in 0..32 {
            let q = qs[c * 32 + l];
            y[c * 64 + l] = d1 * f32::from(q & 0x0F) - min1;
            y[c * 64 + 32 + l] = d2 * f32::from(q >> 4) - min2;
        }
    }
}

/// `block_q5_K { half d; half dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; }`.
///
/// As Q4_K, plus a fifth bit: for chunk `c`, value `c*64 + l` adds 16 if bit `2c` of `qh[l]` is
/// set, value `c*64 + 32 + l` if bit `2c + 1` is.
fn dequant_q5_k(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let dmin = half_at(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for c in 0..4 {
        let (sc1, m1) = get_scale_min_k4(2 * c, scales);
        let (sc2, m2) = get_scale_min_k4(2 * c + 1, scales);
        let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, min2) = (d * f32::from(sc2), dmin * f32::from(m2));
        for l in 0..32 {
            let q = qs[c * 32 + l];
            let h1 = (qh[l] >> (2 * c)) & 1;
            let h2 = (qh[l] >> (2 * c + 1)) & 1;
            y[c * 64 + l] = d1 * f32::from((q & 0x0F) | (h1 << 4)) - min1;
            y[c * 64 + 32 + l] = d2 * f32::from((q >> 4) | (h2 << 4)) - min2;
        }
    }
}

/// `block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; half d; }`.
///
/// Two halves of 128 values; half `n` uses `ql[n*64..]`, `qh[n*32..]`, `scales[n*8..]`. For
/// `l` in 0..32 and quarter `k` in 0..4, value `n*128 + k*32 + l` has low four bits from the low
/// (k = 0, 1) or high (k = 2, 3) nibble of `ql[l + 32*(k%2)]` and high two bits from bits
/// `2k..2k+2` of `qh[l]`; the 6-bit quant is offset by 32 and scaled by
/// `d * scales[k*2 + l/16]`.
fn dequant_q6_k(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 208);
    for n in 0..2 {
        let ql = &b[n * 64..n * 64 + 64];
        let qh = &b[128 + n * 32..128 + n * 32 + 32];
        let sc = &b[192 + n * 8..192 + n * 8 + 8];
        for l in 0..32 {
            for k in 0..4 {
                let lo = if k < 2 { ql[l + 32 * k] & 0x0F } else { ql[l + 32 * (k - 2)] >> 4 };
                let hi = (qh[l] >> (2 * k)) & 3;
                let q = i32::from(lo | (hi << 4)) - 32;
                let scale = f32::from(sc[k * 2 + l / 16] as i8);
                y[n * 128 + k * 32 + l] = d * scale * q as f32;
            }
        }
    }
}

/// `block_q8_K { f32 d; i8 qs[256]; i16 bsums[16]; }`: `x = qs[j] * d` (bsums are a cache for
/// dot products and carry no information of their own).
fn dequant_q8_k(b: &[u8], y: &mut [f32]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (j, &q) in b[4..4 + QK_K].iter().enumerate() {
        y[j] = f32::from(q as i8) * d;
    }
}

/// The 16 non-linear levels of IQ4_NL / IQ4_XS (`kvalues_iq4nl`).
const KVALUES_IQ4NL: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// `block_iq4_nl { half d; u8 qs[16]; }`: nibbles as in Q4_0, each indexing
/// `KVALUES_IQ4NL`; `x = d * level`.
fn dequant_iq4_nl(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for j in 0..16 {
        let q = b[2 + j];
        y[j] = d * f32::from(KVALUES_IQ4NL[usize::from(q & 0x0F)]);
        y[j + 16] = d * f32::from(KVALUES_IQ4NL[usize::from(q >> 4)]);
    }
}

/// `block_iq4_xs { half d; u16 scales_h; u8 scales_l[4]; u8 qs[128]; }`: eight sub-blocks of
/// 32, each an IQ4_NL block whose 6-bit scale has low nibble
/// `scales_l[i/2] >> 4*(i%2)` and high bits `scales_h >> 2i`; `x = d * (scale - 32) * level`.
fn dequant_iq4_xs(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let scales_h = u16::from_le_bytes([b[2], b[3]]);
    let scales_l = &b[4..8];
    let qs = &b[8..136];
    for ib in 0..8 {
        let lo = (scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F;
        let hi = ((scales_h >> (2 * ib)) & 3) as u8;
        let dl = d * (i32::from(lo | (hi << 4)) - 32) as f32;
        let q = &qs[ib * 16..ib * 16 + 16];
        for j in 0..16 {
            y[ib * 32 + j] = dl * f32::from(KVALUES_IQ4NL[usize::from(q[j] & 0x0F)]);
            y[ib * 32 + j + 16] = dl * f32::from(KVALUES_IQ4NL[usize::from(q[j] >> 4)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::testutil::pack;

    fn deq(ty: GgmlType, src: &[u8]) -> Vec<f32> {
        let n = src.len() / ty.type_size() * ty.block_size();
        let mut out = vec![f32::NAN; n];
        dequantize(ty, src, &mut out).expect("dequantize");
        out
    }

    fn assert_close(got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol * (1.0 + w.abs()), "index {i}: got {g}, want {w}");
        }
    }

    /// Deterministic pseudo-random numbers (xorshift), so tests need no `rand` crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn f32(&mut self) -> f32 {
            (self.below(2_000_001) as f32 / 1_000_000.0) - 1.0
        }
    }

    #[test]
    fn type_table_matches_ggml_sizes() {
        // (id, block, bytes) from ggml's type_traits / gguf-py's GGML_QUANT_SIZES.
        let expect = [
            (0, 1, 4),
            (1, 1, 2),
            (2, 32, 18),
            (3, 32, 20),
            (6, 32, 22),
            (7, 32, 24),
            (8, 32, 34),
            (10, 256, 84),
            (11, 256, 110),
            (12, 256, 144),
            (13, 256, 176),
            (14, 256, 210),
            (15, 256, 292),
            (16, 256, 66),
            (17, 256, 74),
            (18, 256, 98),
            (19, 256, 50),
            (20, 32, 18),
            (21, 256, 110),
            (22, 256, 82),
            (23, 256, 136),
            (24, 1, 1),
            (25, 1, 2),
            (26, 1, 4),
            (27, 1, 8),
            (28, 1, 8),
            (29, 256, 56),
            (30, 1, 2),
            (34, 256, 54),
            (35, 256, 66),
            (39, 32, 17),
        ];
        for (id, bs, ts) in expect {
            let t = GgmlType::from_u32(id).unwrap_or_else(|| panic!("id {id}"));
            assert_eq!((t.id(), t.block_size(), t.type_size()), (id, bs, ts), "{t}");
        }
        for removed in [4, 5, 31, 32, 33, 36, 37, 38, 1000] {
            assert!(GgmlType::from_u32(removed).is_none());
        }
    }

    #[test]
    fn float_and_int_types() {
        let vals = [0.0f32, 1.5, -2.25, 65504.0, 1e-3];
        let mut f32b = Vec::new();
        let mut f16b = Vec::new();
        let mut bf16b = Vec::new();
        for v in vals {
            f32b.extend(v.to_le_bytes());
            f16b.extend(f16::from_f32(v).to_bits().to_le_bytes());
            bf16b.extend(bf16::from_f32(v).to_bits().to_le_bytes());
        }
        assert_eq!(deq(GgmlType::F32, &f32b), vals);
        let want16: Vec<f32> = vals.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
        assert_eq!(deq(GgmlType::F16, &f16b), want16);
        let wantb: Vec<f32> = vals.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
        assert_eq!(deq(GgmlType::BF16, &bf16b), wantb);
        assert_eq!(deq(GgmlType::I8, &[0xFF, 3]), [-1.0, 3.0]);
        assert_eq!(deq(GgmlType::I16, &(-300i16).to_le_bytes()), [-300.0]);
        assert_eq!(deq(GgmlType::I32, &70000i32.to_le_bytes()), [70000.0]);
        assert_eq!(deq(GgmlType::F64, &0.5f64.to_le_bytes()), [0.5]);
    }

    #[test]
    fn q8_0_block() {
        let mut rng = Rng(1);
        let x: Vec<f32> = (0..64).map(|_| rng.f32() * 3.0).collect();
        let blocks = pack::quantize_q8_0(&x);
        assert_eq!(blocks.len(), 2 * 34);
        // Expected values straight from the quantizer's own (d, q) choice.
        let want = pack::reference_q8_0(&x);
        assert_close(&deq(GgmlType::Q8_0, &blocks), &want, 0.0);
        // And the round trip is within half a quantization step.
        let got = deq(GgmlType::Q8_0, &blocks);
        for (chunk_x, chunk_y) in x.chunks(32).zip(got.chunks(32)) {
            let amax = chunk_x.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (a, b) in chunk_x.iter().zip(chunk_y) {
                assert!((a - b).abs() <= amax / 127.0 * 0.51 + 1e-3, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn q4_0_hand_block() {
        // d = 0.5, nibble j = j % 16 in the low half and 15 - j in the high half.
        let mut b = f16::from_f32(0.5).to_bits().to_le_bytes().to_vec();
        for j in 0..16u8 {
            b.push(j | ((15 - j) << 4));
        }
        let want: Vec<f32> = (0..32)
            .map(|i| if i < 16 { (i as f32 - 8.0) * 0.5 } else { ((15 - (i - 16)) as f32 - 8.0) * 0.5 })
            .collect();
        assert_eq!(deq(GgmlType::Q4_0, &b), want);
    }

    #[test]
    fn q4_1_q5_0_q5_1_from_reference_quantizers() {
        let mut rng = Rng(7);
        for _ in 0..20 {
            let x: Vec<f32> = (0..96).map(|_| rng.f32() * 2.0 + 0.3).collect();
            let (b, want) = pack::quantize_q4_1(&x);
            assert_close(&deq(GgmlType::Q4_1, &b), &want, 1e-6);
            let (b, want) = pack::quantize_q5_0(&x);
            assert_close(&deq(GgmlType::Q5_0, &b), &want, 1e-6);
            let (b, want) = pack::quantize_q5_1(&x);
            assert_close(&deq(GgmlType::Q5_1, &b), &want, 1e-6);
            let (b, want) = pack::quantize_q4_0(&x);
            assert_close(&deq(GgmlType::Q4_0, &b), &want, 1e-6);
        }
    }

    #[test]
    fn q5_0_high_bits_use_both_halves_of_qh() {
        // All nibbles zero; qh has only bit 3 and bit 20 set: values 3 and 20 get q = 16.
        let mut b = f16::from_f32(1.0).to_bits().to_le_bytes().to_vec();
        b.extend(((1u32 << 3) | (1u32 << 20)).to_le_bytes());
        b.extend([0u8; 16]);
        let got = deq(GgmlType::Q5_0, &b);
        for (i, v) in got.iter().enumerate() {
            let want = if i == 3 || i == 20 { 0.0 } else { -16.0 };
            assert_eq!(*v, want, "index {i}");
        }
    }

    #[test]
    fn get_scale_min_k4_unpacks_what_the_packer_packs() {
        let mut rng = Rng(11);
        for _ in 0..200 {
            let sc: [u8; 8] = std::array::from_fn(|_| rng.below(64) as u8);
            let mn: [u8; 8] = std::array::from_fn(|_| rng.below(64) as u8);
            let packed = pack::pack_scale_min_k4(&sc, &mn);
            for j in 0..8 {
                assert_eq!(get_scale_min_k4(j, &packed), (sc[j], mn[j]), "pair {j}");
            }
        }
        // A hand-checked case: pair 5's scale is 0b11_0101 = 53, min 0b10_1010 = 42.
        let mut sc = [0u8; 8];
        let mut mn = [0u8; 8];
        sc[5] = 53;
        mn[5] = 42;
        let p = pack::pack_scale_min_k4(&sc, &mn);
        assert_eq!(p[9], 0x05 | (0x0A << 4)); // low nibbles of pair 5 in byte 9
        assert_eq!(p[1] >> 6, 0b11); // top bits of the scale in byte 1
        assert_eq!(p[5] >> 6, 0b10); // top bits of the min in byte 5
    }

    #[test]
    fn q4_k_and_q5_k_blocks() {
        let mut rng = Rng(3);
        for _ in 0..10 {
            let d = 0.01 + rng.below(100) as f32 / 1000.0;
            let dmin = 0.005 + rng.below(100) as f32 / 2000.0;
            let sc: [u8; 8] = std::array::from_fn(|_| rng.below(64) as u8);
            let mn: [u8; 8] = std::array::from_fn(|_| rng.below(64) as u8);
            let q4: Vec<u8> = (0..256).map(|_| rng.below(16) as u8).collect();
            let q5: Vec<u8> = (0..256).map(|_| rng.below(32) as u8).collect();
            // Expected: x[i] = d * sc[i/32] * q[i] - dmin * mn[i/32], computed with the fp16-
            // rounded super-scales that the block stores.
            let dh = f16::from_f32(d).to_f32();
            let mh = f16::from_f32(dmin).to_f32();
            let want = |q: &[u8]| -> Vec<f32> {
                (0..256).map(|i| dh * sc[i / 32] as f32 * q[i] as f32 - mh * mn[i / 32] as f32).collect()
            };
            let b4 = pack::pack_q4_k(d, dmin, &sc, &mn, &q4);
            assert_eq!(b4.len(), 144);
            assert_close(&deq(GgmlType::Q4_K, &b4), &want(&q4), 1e-6);
            let b5 = pack::pack_q5_k(d, dmin, &sc, &mn, &q5);
            assert_eq!(b5.len(), 176);
            assert_close(&deq(GgmlType::Q5_K, &b5), &want(&q5), 1e-6);
        }
    }

    #[test]
    fn q6_k_block() {
        let mut rng = Rng(5);
        for _ in 0..10 {
            let d = 0.002 + rng.below(100) as f32 / 10000.0;
            let sc: [i8; 16] = std::array::from_fn(|_| (rng.below(256) as i64 - 128) as i8);
            let q: Vec<i8> = (0..256).map(|_| (rng.below(64) as i64 - 32) as i8).collect();
            let dh = f16::from_f32(d).to_f32();
            let want: Vec<f32> = (0..256).map(|i| dh * sc[i / 16] as f32 * q[i] as f32).collect();
            let b = pack::pack_q6_k(d, &sc, &q);
            assert_eq!(b.len(), 210);
            assert_close(&deq(GgmlType::Q6_K, &b), &want, 1e-6);
        }
    }

    #[test]
    fn q2_k_and_q3_k_blocks() {
        let mut rng = Rng(9);
        for _ in 0..10 {
            let d = 0.01 + rng.below(100) as f32 / 1000.0;
            let dmin = 0.003 + rng.below(100) as f32 / 3000.0;
            let dh = f16::from_f32(d).to_f32();
            let mh = f16::from_f32(dmin).to_f32();
            // Q2_K: 4-bit scales and mins per 16 values, 2-bit quants.
            let sc: [u8; 16] = std::array::from_fn(|_| rng.below(16) as u8);
            let mn: [u8; 16] = std::array::from_fn(|_| rng.below(16) as u8);
            let q: Vec<u8> = (0..256).map(|_| rng.below(4) as u8).collect();
            let want: Vec<f32> =
                (0..256).map(|i| dh * sc[i / 16] as f32 * q[i] as f32 - mh * mn[i / 16] as f32).collect();
            let b = pack::pack_q2_k(d, dmin, &sc, &mn, &q);
            assert_eq!(b.len(), 84);
            assert_close(&deq(GgmlType::Q2_K, &b), &want, 1e-6);
            // Q3_K: signed 6-bit scales (-32..31) per 16 values, quants in -4..3.
            let sc3: [i8; 16] = std::array::from_fn(|_| (rng.below(64) as i64 - 32) as i8);
            let q3: Vec<i8> = (0..256).map(|_| (rng.below(8) as i64 - 4) as i8).collect();
            let want3: Vec<f32> = (0..256).map(|i| dh * sc3[i / 16] as f32 * q3[i] as f32).collect();
            let b3 = pack::pack_q3_k(d, &sc3, &q3);
            assert_eq!(b3.len(), 110);
            assert_close(&deq(GgmlType::Q3_K, &b3), &want3, 1e-6);
        }
    }

    #[test]
    fn q8_k_block() {
        let mut b = 0.25f32.to_le_bytes().to_vec();
        b.extend((0..256i32).map(|i| (i - 128) as i8 as u8));
        b.extend([0u8; 32]);
        let want: Vec<f32> = (0..256).map(|i| (i as f32 - 128.0) * 0.25).collect();
        assert_eq!(deq(GgmlType::Q8_K, &b), want);
    }

    #[test]
    fn iq4_nl_and_iq4_xs_blocks() {
        let mut b = f16::from_f32(0.5).to_bits().to_le_bytes().to_vec();
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let got = deq(GgmlType::IQ4_NL, &b);
        for j in 0..16 {
            assert_eq!(got[j], 0.5 * KVALUES_IQ4NL[j] as f32);
            assert_eq!(got[j + 16], 0.5 * KVALUES_IQ4NL[15 - j] as f32);
        }
        // IQ4_XS: sub-block i gets 6-bit scale 32 + i (so multiplier i), levels index = j % 16.
        let mut b = f16::from_f32(1.0).to_bits().to_le_bytes().to_vec();
        let mut scales_h = 0u16;
        let mut scales_l = [0u8; 4];
        for i in 0..8 {
            let s = 32 + i as u8;
            scales_l[i / 2] |= (s & 0x0F) << (4 * (i % 2));
            scales_h |= u16::from(s >> 4) << (2 * i);
        }
        b.extend(scales_h.to_le_bytes());
        b.extend(scales_l);
        for _ in 0..8 {
            b.extend((0..16u8).map(|j| j | (j << 4)));
        }
        let got = deq(GgmlType::IQ4_XS, &b);
        for (k, v) in got.iter().enumerate() {
            let (i, j) = (k / 32, k % 16);
            assert_eq!(*v, i as f32 * KVALUES_IQ4NL[j] as f32, "index {k}");
        }
    }

    #[test]
    fn length_and_support_errors() {
        let mut out = [0f32; 32];
        assert!(matches!(dequantize(GgmlType::Q4_0, &[0; 17], &mut out), Err(QuantError::Length { .. })));
        assert!(matches!(dequantize(GgmlType::Q4_0, &[0; 36], &mut out), Err(QuantError::Length { .. })));
        let mut out = [0f32; 256];
        assert_eq!(dequantize(GgmlType::IQ2_XXS, &[0; 66], &mut out), Err(QuantError::Unsupported(GgmlType::IQ2_XXS)));
    }

    #[test]
    fn parallel_matches_serial() {
        let mut rng = Rng(13);
        let x: Vec<f32> = (0..(1 << 19) + 64).map(|_| rng.f32()).collect();
        let b = pack::quantize_q8_0(&x);
        let mut a = vec![0f32; x.len()];
        let mut p = vec![0f32; x.len()];
        dequantize(GgmlType::Q8_0, &b, &mut a).unwrap();
        dequantize_parallel(GgmlType::Q8_0, &b, &mut p, 3).unwrap();
        assert_eq!(a, p);
    }

    /// Golden values computed once with gguf-py's numpy dequantizers (`gguf.quants`) on the
    /// pseudo-random blocks of `pack::golden_block`: a check against an independent
    /// implementation that needs no Python at test time.
    #[test]
    fn golden_values_from_gguf_py() {
        for &(ty, sum, sum_sq, first) in pack::GOLDEN {
            let b = pack::golden_block(ty);
            let got = deq(ty, &b);
            let s: f64 = got.iter().map(|&v| f64::from(v)).sum();
            let s2: f64 = got.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            assert!((s - sum).abs() <= 1e-4 * (1.0 + sum.abs()), "{ty}: sum {s} vs {sum}");
            assert!((s2 - sum_sq).abs() <= 1e-4 * (1.0 + sum_sq.abs()), "{ty}: sum sq {s2} vs {sum_sq}");
            for (i, (g, w)) in got.iter().zip(first).enumerate() {
                assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{ty}[{i}]: {g} vs {w}");
            }
        }
    }
}
