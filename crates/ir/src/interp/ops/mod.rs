//! The op implementations, one file per family. Each takes concrete tensors (and resolved
//! attributes) and returns a tensor or a message; the interpreter adds which node it was.

pub mod attention;
pub mod elementwise;
pub mod fused;
pub mod index;
pub mod layout;
pub mod math;
pub mod matmul;
pub mod moe;
pub mod norm;
pub mod reduce;
pub mod rows;

use std::sync::OnceLock;

/// Applies an expression to the data of either kind, keeping the kind:
/// `same_kind!(&x.data, |v| v.iter().rev().copied().collect())`.
macro_rules! same_kind {
    ($data:expr, |$v:ident| $body:expr) => {
        match $data {
            $crate::interp::tensor::TensorData::F32($v) => $crate::interp::tensor::TensorData::F32($body),
            $crate::interp::tensor::TensorData::I64($v) => $crate::interp::tensor::TensorData::I64($body),
        }
    };
}
pub(crate) use same_kind;

fn threads() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(32))
}

/// Below this many multiply-adds in all, work runs on the calling thread.
const PARALLEL_WORK: usize = 1 << 18;

/// Calls `f(i, chunk)` for each `chunk_len`-long chunk `i` of `out`, spreading the chunks over
/// threads (contiguous runs, `std::thread::scope`) when there is enough work: `work_per_chunk` is
/// roughly the multiply-adds per chunk. Each chunk is computed by the same code whatever the split.
pub fn par_chunks(out: &mut [f32], chunk_len: usize, work_per_chunk: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if chunk_len == 0 {
        return;
    }
    let n = out.len() / chunk_len;
    let t = threads().min(n);
    let run = |first: usize, part: &mut [f32]| {
        for (i, c) in part.chunks_mut(chunk_len).enumerate() {
            f(first + i, c);
        }
    };
    if t <= 1 || n.saturating_mul(work_per_chunk.max(1)) < PARALLEL_WORK {
        run(0, out);
        return;
    }
    let per = n.div_ceil(t);
    std::thread::scope(|s| {
        for (i, part) in out.chunks_mut(per * chunk_len).enumerate() {
            let run = &run;
            s.spawn(move || run(i * per, part));
        }
    });
}
