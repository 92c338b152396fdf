//! Packing f32 weight matrices into the byte layouts the matmul and embedding kernels read
//! ([`WeightFormat`]), and unpacking them back to f32.
//!
//! A packed matrix `[rows, k]` is its rows one after the other, each [`WeightFormat::row_bytes`]
//! long. The quantized formats are bit-compatible with llama.cpp (`quantize_row_q8_0_ref`,
//! `quantize_row_q4_0_ref`, and `block_q8_0` / `block_q4_0`), so GGUF tensors can be copied as they
//! are, and a matrix quantized here gives the bytes llama.cpp would write.
//!
//! [`unpack`] is the exact dequantization the kernels perform (`d · q` is exact in f32: an 11-bit
//! f16 mantissa times an integer of at most 8 bits), which makes it the reference kernels are
//! tested against.

use crate::error::{CodegenError, Result};
use crate::kernels::spec::WeightFormat;
use half::{bf16, f16};

/// Elements per quantization block (Q8_0 and Q4_0).
const QK: usize = 32;

fn shape_error(op: &str, format: WeightFormat, rows: usize, k: usize, message: String) -> CodegenError {
    CodegenError::Plan { node: format!("{op} {} [{rows}, {k}]", format.name()), message }
}

/// Checks K against the format's block and returns the packed size in bytes.
fn packed_len(op: &str, format: WeightFormat, rows: usize, k: usize) -> Result<usize> {
    if !k.is_multiple_of(format.block()) {
        let message = format!("K = {k} is not a multiple of the {}-element block", format.block());
        return Err(shape_error(op, format, rows, k, message));
    }
    rows.checked_mul(k)
        .and_then(|_| rows.checked_mul(format.row_bytes(k)))
        .ok_or_else(|| shape_error(op, format, rows, k, "the matrix is too large to address".to_string()))
}

/// Packs the row-major f32 matrix `data[rows, k]` into `format`.
///
/// bf16 and f16 round to nearest, ties to even. Q8_0 and Q4_0 follow llama.cpp's reference
/// quantizers exactly (including their use of the f32 scale, not the rounded f16 one, when
/// computing the quants); K must be a multiple of 32 for them.
pub fn pack(format: WeightFormat, rows: usize, k: usize, data: &[f32]) -> Result<Vec<u8>> {
    let len = packed_len("pack", format, rows, k)?;
    if data.len() != rows * k {
        let message = format!("expected {} f32 values, got {}", rows * k, data.len());
        return Err(shape_error("pack", format, rows, k, message));
    }
    let mut out = Vec::with_capacity(len);
    match format {
        WeightFormat::F32 => data.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        WeightFormat::Bf16 => data.iter().for_each(|&x| out.extend_from_slice(&bf16::from_f32(x).to_le_bytes())),
        WeightFormat::F16 => data.iter().for_each(|&x| out.extend_from_slice(&f16::from_f32(x).to_le_bytes())),
        // Blocks never straddle rows (K is a multiple of 32), so the matrix is a run of blocks.
        WeightFormat::Q8_0 => data.chunks_exact(QK).for_each(|b| out.extend_from_slice(&quantize_q8_0(b))),
        WeightFormat::Q4_0 => data.chunks_exact(QK).for_each(|b| out.extend_from_slice(&quantize_q4_0(b))),
    }
    debug_assert_eq!(out.len(), len);
    Ok(out)
}

/// Unpacks `bytes` (a `[rows, k]` matrix in `format`) to row-major f32, exactly as the kernels
/// dequantize it.
pub fn unpack(format: WeightFormat, rows: usize, k: usize, bytes: &[u8]) -> Result<Vec<f32>> {
    let len = packed_len("unpack", format, rows, k)?;
    if bytes.len() != len {
        let message = format!("expected {len} bytes, got {}", bytes.len());
        return Err(shape_error("unpack", format, rows, k, message));
    }
    let mut out = Vec::with_capacity(rows * k);
    match format {
        WeightFormat::F32 => {
            out.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        }
        WeightFormat::Bf16 => out.extend(bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())),
        WeightFormat::F16 => out.extend(bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())),
        WeightFormat::Q8_0 => bytes.chunks_exact(34).for_each(|b| {
            let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
            out.extend(b[2..].iter().map(|&q| d * f32::from(q as i8)));
        }),
        WeightFormat::Q4_0 => bytes.chunks_exact(18).for_each(|b| {
            let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
            let qs = &b[2..];
            out.extend(qs.iter().map(|&q| d * f32::from((q & 0x0f) as i8 - 8)));
            out.extend(qs.iter().map(|&q| d * f32::from((q >> 4) as i8 - 8)));
        }),
    }
    Ok(out)
}

/// One `block_q8_0`: `d = amax / 127` as f16, then `q = round(x / d)` (half away from zero).
fn quantize_q8_0(x: &[f32]) -> [u8; 34] {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut block = [0u8; 34];
    block[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for (q, &v) in block[2..].iter_mut().zip(x) {
        // |v · id| ≤ 127 up to rounding, so the cast cannot saturate except for NaN/inf input,
        // where Rust's saturating cast gives a defined value (C's is undefined).
        *q = (v * id).round() as i8 as u8;
    }
    block
}

/// One `block_q4_0`: `d = max / −8` where `max` is the value of largest magnitude (its sign
/// kept, the first such value on ties), then `q = min(15, trunc(x / d + 8.5))`: element j in the
/// low nibble of byte j, element j + 16 in its high nibble.
fn quantize_q4_0(x: &[f32]) -> [u8; 18] {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    // llama.cpp truncates `x/d + 8.5` with an (int8_t) cast; `as i32` truncates the same way for
    // the in-range values and saturates otherwise, and the clamp keeps the nibble in 0..=15.
    let nibble = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
    let mut block = [0u8; 18];
    block[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for j in 0..QK / 2 {
        block[2 + j] = nibble(x[j]) | (nibble(x[j + QK / 2]) << 4);
    }
    block
}
