//! Packing f32 weight matrices into the byte layouts the matmul and embedding kernels read
//! ([`WeightFormat`]), and unpacking them back to f32.
//!
//! A packed matrix `[rows, k]` is its rows one after the other, each [`WeightFormat::row_bytes`]
//! long. The quantized formats are bit-compatible with llama.cpp (`quantize_row_q8_0_ref`,
//! `quantize_row_q4_0_ref`, and `block_q8_0` / `block_q4_0`), so GGUF tensors can be copied as they
//! are, and a matrix quantized here gives the bytes llama.cpp would write.
//!
//! For CPU matmuls over f32 weights the rows are also [`interleave`]d: each group of
//! [`ROW_GROUP`] rows takes turns a cache line at a time, so the kernels' 4-column tiles read one
//! sequential stream instead of four ([`interleave_for`] says when).
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

/// Rows per interleaved group: the matmul kernels' tile width (`gemm::COL_BLOCK`).
pub const ROW_GROUP: usize = 4;

/// The interleave (elements per chunk, 0 for plain rows) Kiln stores a `[rows, k]` weight in for a
/// CPU with `lanes`-wide vectors (0: a target that takes plain rows, such as a GPU): a 64-byte
/// cache line of each row per chunk (or one vector, if wider), for f32 weights when K is whole
/// chunks and the rows are whole groups.
///
/// Only f32: `benches/gemv.rs` on SmolLM2's shapes reads f32 GEMVs 7–12% faster interleaved, but
/// bf16 and f16 ones 6–9% slower (in chunks of one vector or of a whole line alike), though they
/// are far from compute-bound. Quantized rows stay plain: their 18- or 34-byte blocks are not
/// vectors.
pub fn interleave_for(format: WeightFormat, rows: usize, k: usize, lanes: usize) -> usize {
    if lanes == 0 || format != WeightFormat::F32 {
        return 0;
    }
    let chunk = lanes.max(64 / format.row_bytes(1));
    if k.is_multiple_of(chunk) && rows.is_multiple_of(ROW_GROUP) {
        chunk
    } else {
        0
    }
}

/// Reorders a packed unquantized `[rows, k]` matrix (`rows` a multiple of [`ROW_GROUP`], `k` of
/// `chunk`) so that each group of [`ROW_GROUP`] rows is stored chunk by chunk: elements
/// `c·chunk .. (c+1)·chunk` of the group's first row, then of its second, ... then chunk `c + 1`.
/// Element `e` of row `r` then sits at element offset
/// `(r − r % 4)·k + (e / chunk)·4·chunk + (r % 4)·chunk + e % chunk`.
///
/// Why: a batch-1 matmul tile reads 4 rows side by side. As plain rows that is four streams
/// `row_bytes` apart, which this machine serves at 14.5–15.5 GB/s to an f32 GEMV; interleaved it
/// is one sequential stream, read at 16–17 GB/s when the matrix starts on a page boundary (as the
/// artifact writer puts it) and at about 14 GB/s when it does not (docs/bench.md).
pub fn interleave(format: WeightFormat, rows: usize, k: usize, chunk: usize, bytes: &[u8]) -> Result<Vec<u8>> {
    let plan = interleave_plan("interleave", format, rows, k, chunk, bytes)?;
    let mut out = vec![0u8; bytes.len()];
    for (plain, woven, len) in plan {
        out[woven..woven + len].copy_from_slice(&bytes[plain..plain + len]);
    }
    Ok(out)
}

/// The inverse of [`interleave`]: plain rows again.
pub fn deinterleave(format: WeightFormat, rows: usize, k: usize, chunk: usize, bytes: &[u8]) -> Result<Vec<u8>> {
    let plan = interleave_plan("deinterleave", format, rows, k, chunk, bytes)?;
    let mut out = vec![0u8; bytes.len()];
    for (plain, woven, len) in plan {
        out[plain..plain + len].copy_from_slice(&bytes[woven..woven + len]);
    }
    Ok(out)
}

/// Every chunk's (plain offset, interleaved offset, length) in bytes, after checking the shape.
fn interleave_plan(
    op: &str,
    format: WeightFormat,
    rows: usize,
    k: usize,
    chunk: usize,
    bytes: &[u8],
) -> Result<impl Iterator<Item = (usize, usize, usize)>> {
    let len = packed_len(op, format, rows, k)?;
    let fail = |message: String| Err(shape_error(op, format, rows, k, message));
    if format.block() != 1 {
        return fail("quantized rows are not interleaved".to_string());
    }
    if chunk == 0 || !k.is_multiple_of(chunk) || !rows.is_multiple_of(ROW_GROUP) {
        return fail(format!("needs K a multiple of the {chunk}-element chunk and rows a multiple of {ROW_GROUP}"));
    }
    if bytes.len() != len {
        return fail(format!("expected {len} bytes, got {}", bytes.len()));
    }
    let (row_bytes, chunk_bytes) = (format.row_bytes(k), format.row_bytes(chunk));
    let chunks = k / chunk;
    Ok((0..rows).flat_map(move |r| {
        let group = (r - r % ROW_GROUP) * row_bytes;
        (0..chunks).map(move |c| {
            let woven = group + (c * ROW_GROUP + r % ROW_GROUP) * chunk_bytes;
            (r * row_bytes + c * chunk_bytes, woven, chunk_bytes)
        })
    }))
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
