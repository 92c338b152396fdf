//! Matmul and embedding kernels against an f64 reference on the dequantized weights
//! (`unpack(pack(w))`, so quantization error is excluded and only f32 accumulation order is
//! left), for every weight format, several shapes, with and without bias, and with the tasks
//! split several ways; plus `pack`/`unpack` round trips and llama.cpp block layouts.

use half::{bf16, f16};
use kiln_codegen::kernels::matmul::COLS_PER_TASK;
use kiln_codegen::kernels::testing::{build, build_with_lanes, ptr, TestLib};
use kiln_codegen::kernels::{KernelCx, KernelSpec, WeightFormat};
use kiln_codegen::pack::{deinterleave, interleave, pack, unpack};
use kiln_ir::interp::testing::SplitMix64;

const FORMATS: [WeightFormat; 5] =
    [WeightFormat::F32, WeightFormat::Bf16, WeightFormat::F16, WeightFormat::Q8_0, WeightFormat::Q4_0];

/// `out = a · wᵀ + bias` in f64, and `Σ |a·w|` per output (the scale rounding errors are relative to).
fn reference(a: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, n: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0.0; m * n];
    let mut mag = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut g) = (0.0f64, 0.0f64);
            for x in 0..k {
                let p = f64::from(a[i * k + x]) * f64::from(w[j * k + x]);
                s += p;
                g += p.abs();
            }
            let b = bias.map_or(0.0, |b| f64::from(b[j]));
            out[i * n + j] = s + b;
            mag[i * n + j] = g + b.abs();
        }
    }
    (out, mag)
}

/// A kernel library with the host's vector width, or a chosen one.
fn build_lib(kernels: &[(&str, KernelSpec)], lanes: Option<u32>) -> TestLib {
    match lanes {
        None => build(kernels).unwrap(),
        Some(lanes) => build_with_lanes(kernels, lanes).unwrap(),
    }
}

/// One matmul kernel to check: its spec's fields, the rows to run it on, and a data seed.
#[derive(Clone, Copy, Debug)]
struct Case {
    format: WeightFormat,
    m: usize,
    n: usize,
    k: usize,
    bias: bool,
    cols_per_task: usize,
    seed: u64,
    /// Rows interleaved by this many elements (0: plain rows).
    interleave: usize,
}

impl Case {
    fn spec(&self) -> KernelSpec {
        let Case { format, n, k, bias, cols_per_task, interleave, .. } = *self;
        KernelSpec::Matmul { format, n, k, bias, cols_per_task, interleave }
    }
}

/// Compiles one matmul kernel (at `lanes`, or the host's vector width) and checks it.
fn check_matmul_lanes(case: Case, lanes: Option<u32>) {
    let lib = build_lib(&[("mm", case.spec())], lanes);
    check_matmul_in(&lib, "mm", case);
}

fn check_matmul(format: WeightFormat, m: usize, n: usize, k: usize, bias: bool, cols_per_task: usize, seed: u64) {
    check_matmul_lanes(Case { format, m, n, k, bias, cols_per_task, seed, interleave: 0 }, None);
}

/// A case's inputs: activations, packed (and perhaps interleaved) weights, the weights as the
/// kernel sees them (unpacked), and a bias.
struct Inputs {
    a: Vec<f32>,
    packed: Vec<u8>,
    w: Vec<f32>,
    bias: Vec<f32>,
}

fn inputs(case: &Case) -> Inputs {
    let Case { format, m, n, k, seed, interleave: chunk, .. } = *case;
    let mut rng = SplitMix64::new(seed);
    let a = rng.vec(m * k, -1.0, 1.0);
    let mut packed = pack(format, n, k, &rng.vec(n * k, -1.0, 1.0)).unwrap();
    let w = unpack(format, n, k, &packed).unwrap();
    if chunk != 0 {
        packed = interleave(format, n, k, chunk, &packed).unwrap();
    }
    Inputs { a, packed, w, bias: rng.vec(n, -1.0, 1.0) }
}

/// Kernel `name` of `lib` (compiled from `case.spec()`) on `inputs`, its tasks split `splits` ways.
fn call_matmul(lib: &TestLib, name: &str, case: &Case, inputs: &Inputs, splits: i64) -> Vec<f32> {
    let Case { m, n, bias, cols_per_task, .. } = *case;
    let (mut a, mut w, mut b) = (inputs.a.clone(), inputs.packed.clone(), inputs.bias.clone());
    // NaN canaries: a skipped output stays NaN and fails the comparison.
    let mut out = vec![f32::NAN; m * n];
    let b_ptr = if bias { ptr(&mut b) } else { std::ptr::null_mut() };
    let tasks = n.div_ceil(cols_per_task) as i64;
    // SAFETY: buffers match the Matmul contract for dims [m].
    unsafe { lib.call(name, &[m as i64], &[ptr(&mut a), ptr(&mut w), b_ptr, ptr(&mut out)], tasks, splits) };
    out
}

/// Runs kernel `name` of `lib` (compiled from `case.spec()`) for every task split and checks it
/// against the reference.
fn check_matmul_in(lib: &TestLib, name: &str, case: Case) {
    let Case { m, n, k, bias, .. } = case;
    let data = inputs(&case);
    let (want, mag) = reference(&data.a, &data.w, bias.then_some(&data.bias[..]), m, n, k);
    for splits in [1, 3, 7] {
        let out = call_matmul(lib, name, &case, &data, splits);
        for (idx, (&got, (&want, &mag))) in out.iter().zip(want.iter().zip(&mag)).enumerate() {
            let err = (f64::from(got) - want).abs();
            // f32 accumulation: each partial product is rounded at most ~log2(K) + 8 times with
            // unit roundoff 6e-8, so the error is far below 1e-5 of the magnitude sum.
            assert!(
                err <= 1e-5 * mag.max(1e-30),
                "{name} {case:?} splits={splits}: out[{}][{}] = {got}, want {want} (|err| {err:e}, scale {mag:e})",
                idx / n,
                idx % n
            );
        }
    }
}

/// Prefill over K > 2048 walks K in blocks, parking the tiles' accumulators between blocks: the
/// results match the reference and are bit for bit those of unblocked tiles (a task too wide for
/// the accumulator buffer is not blocked), for every format, whole and partial last blocks, a K
/// tail, every row-block shape and the AVX2/SSE widths. Quantized prefill runs f32 tiles over
/// its dequantized panel, so its unblocked twin is the f32 kernel on the dequantized weights.
#[test]
fn long_k_prefill_in_blocks_is_bit_identical_to_one_walk() {
    for lanes in [None, Some(8), Some(4)] {
        for (f, format) in FORMATS.into_iter().enumerate() {
            let ks: &[usize] = if format.block() == 1 { &[2064, 3073] } else { &[2080, 3072] };
            for &k in ks {
                let seed = 900 + 10 * f as u64 + k as u64;
                let blocked = Case { format, m: 13, n: 23, k, bias: true, cols_per_task: 16, seed, interleave: 0 };
                let quantized = format.block() > 1;
                let whole_format = if quantized { WeightFormat::F32 } else { format };
                let whole = Case { format: whole_format, cols_per_task: 200, ..blocked };
                let lib = build_lib(&[("blocked", blocked.spec()), ("whole", whole.spec())], lanes);
                for m in [4, 6, 9, 13] {
                    let (blocked, whole) = (Case { m, ..blocked }, Case { m, ..whole });
                    check_matmul_in(&lib, "blocked", blocked);
                    let data = inputs(&blocked);
                    let dequantized =
                        Inputs { packed: pack(whole_format, 23, k, &data.w).unwrap(), ..inputs(&blocked) };
                    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
                    assert_eq!(
                        bits(call_matmul(&lib, "blocked", &blocked, &data, 3)),
                        bits(call_matmul(&lib, "whole", &whole, if quantized { &dequantized } else { &data }, 1)),
                        "{} K={k} M={m} lanes={lanes:?}",
                        format.name()
                    );
                }
            }
        }
    }
}

#[test]
fn matmul_matches_reference_for_every_format_and_shape() {
    // One library per format holding every (N, K, bias) kernel; M is a run-time size.
    let mut seed = 1;
    for format in FORMATS {
        let mut cases = Vec::new();
        for k in [32, 64, 96, 576] {
            for n in [1, 7, 64, 100] {
                for bias in [false, true] {
                    cases.push((
                        format!("mm_{n}_{k}_{bias}"),
                        Case { format, m: 0, n, k, bias, cols_per_task: COLS_PER_TASK, seed: 0, interleave: 0 },
                    ));
                }
            }
        }
        let specs: Vec<(&str, KernelSpec)> = cases.iter().map(|(name, case)| (name.as_str(), case.spec())).collect();
        let lib = build_lib(&specs, None);
        for (name, case) in &cases {
            for m in [1, 3, 17] {
                seed += 1;
                check_matmul_in(&lib, name, Case { m, seed, ..*case });
            }
        }
    }
}

#[test]
fn matmul_row_blocks_cover_every_row_count() {
    // Blocks of 6 rows (AVX-512), then 4, then single rows, for every remainder (M = 8 and 9 take
    // two 4-row blocks instead of 6 + singles); plain, interleaved and quantized-panel weights.
    for m in 1..=14 {
        let seed = 500 + m as u64;
        check_matmul(WeightFormat::Bf16, m, 12, 48, true, 8, seed);
        check_matmul(WeightFormat::Q8_0, m, 8, 64, false, 4, seed);
        let woven =
            Case { format: WeightFormat::F32, m, n: 8, k: 64, bias: false, cols_per_task: 8, seed, interleave: 16 };
        check_matmul_lanes(woven, None);
        // AVX2 width: 4-row tiles only (6-row ones would spill its 16 registers).
        check_matmul_lanes(Case { format: WeightFormat::F16, interleave: 0, ..woven }, Some(8));
    }
}

#[test]
fn matmul_handles_k_tails_for_unquantized_formats() {
    // K not a multiple of 16 (AVX-512), 8 (AVX2) or 4: masked tail loads.
    for format in [WeightFormat::F32, WeightFormat::Bf16, WeightFormat::F16] {
        for k in [1, 5, 17, 35, 100] {
            check_matmul(format, 5, 9, k, true, 4, 100 + k as u64);
        }
    }
}

#[test]
fn matmul_column_block_sizes_do_not_change_results() {
    // Tasks that are not multiples of the 4-column tile, one column per task, and one task for all.
    for cpt in [1, 3, 5, 6, 200] {
        check_matmul(WeightFormat::Q4_0, 6, 23, 64, true, cpt, 7 + cpt as u64);
        check_matmul(WeightFormat::Bf16, 2, 23, 40, false, cpt, 9 + cpt as u64);
    }
}

#[test]
fn narrower_vector_units_give_the_same_results() {
    // The AVX2 and SSE code paths (8 and 4 lanes: Q4_0 without the 16-entry table lookup).
    for lanes in [8, 4] {
        for (i, format) in FORMATS.into_iter().enumerate() {
            let seed = 300 + 10 * i as u64;
            let case = Case { format, m: 1, n: 7, k: 96, bias: true, cols_per_task: 4, seed, interleave: 0 };
            check_matmul_lanes(case, Some(lanes));
            check_matmul_lanes(
                Case { m: 6, n: 9, k: 64, bias: false, cols_per_task: 16, seed: seed + 1, ..case },
                Some(lanes),
            );
            if format.block() == 1 {
                check_matmul_lanes(Case { m: 5, n: 6, k: 13, cols_per_task: 2, seed: seed + 2, ..case }, Some(lanes));
            }
        }
    }
}

#[test]
fn matmul_reads_interleaved_rows() {
    // Every unquantized format at the host's width and the AVX2/SSE widths, in chunks of one
    // vector and of several (a cache line of bf16 is two AVX-512 vectors); decode (M = 1, 3) and
    // prefill tiles (M ≥ 4), one task and several per call.
    let host = kiln_codegen::kernels::target_lanes(&kiln_codegen::host_machine().unwrap()) as usize;
    let mut seed = 700;
    for (lanes, width) in [(None, host), (Some(8), 8), (Some(4), 4)] {
        for format in [WeightFormat::F32, WeightFormat::Bf16, WeightFormat::F16] {
            for chunk in [width, 2 * width, 4 * width] {
                for (n, k, cols_per_task) in [(4, 16usize, 4), (100, 64, 16), (64, 576, 16), (12, 32, 8)] {
                    if !k.is_multiple_of(chunk) {
                        continue;
                    }
                    for (m, bias) in [(1, true), (3, false), (9, true)] {
                        seed += 1;
                        let case = Case { format, m, n, k, bias, cols_per_task, seed, interleave: chunk };
                        check_matmul_lanes(case, lanes);
                    }
                }
            }
        }
    }
}

#[test]
fn interleaved_specs_the_kernels_cannot_read_are_rejected() {
    let host = kiln_codegen::kernels::target_lanes(&kiln_codegen::host_machine().unwrap()) as usize;
    let bad = [
        (WeightFormat::Q8_0, 8, 64, 16, host),    // quantized rows are never interleaved
        (WeightFormat::F32, 6, 64, 16, host),     // N not whole groups of 4 rows
        (WeightFormat::F32, 8, 40, 16, 16),       // K not whole chunks
        (WeightFormat::F32, 8, 64, 6, host),      // tasks splitting a group
        (WeightFormat::F32, 8, 96, 16, 3 * host), // chunks of 3 vectors
        (WeightFormat::F32, 8, 64, 16, host / 2), // chunks of half a vector
    ];
    for (format, n, k, cols_per_task, interleave) in bad {
        let spec = KernelSpec::Matmul { format, n, k, bias: false, cols_per_task, interleave };
        let err = build(&[("mm", spec)]).err().expect("a kernel that cannot read the layout must be refused");
        assert!(err.to_string().contains("interleaved"), "{err}");
    }
    let spec = KernelSpec::Embedding { format: WeightFormat::F32, vocab: 37, dim: 64, interleave: host };
    assert!(build(&[("emb", spec)]).is_err(), "37 rows are not whole groups");
}

#[test]
fn matmul_with_zero_rows_writes_nothing() {
    let spec =
        KernelSpec::Matmul { format: WeightFormat::F16, n: 8, k: 32, bias: false, cols_per_task: 4, interleave: 0 };
    let lib = build(&[("mm", spec)]).unwrap();
    let mut w = pack(WeightFormat::F16, 8, 32, &[1.0; 256]).unwrap();
    let mut sentinel = [7.0f32; 4];
    // SAFETY: M = 0: no activation or output element is touched.
    unsafe { lib.call("mm", &[0], &[ptr(&mut sentinel), ptr(&mut w), std::ptr::null_mut(), ptr(&mut sentinel)], 2, 2) };
    assert_eq!(sentinel, [7.0; 4]);
}

#[test]
fn matmul_rejects_bad_specs() {
    for (format, k, cpt) in [(WeightFormat::Q8_0, 48, 16), (WeightFormat::Q4_0, 33, 16), (WeightFormat::F32, 32, 0)] {
        let spec = KernelSpec::Matmul { format, n: 4, k, bias: false, cols_per_task: cpt, interleave: 0 };
        let err = build(&[("mm", spec)]).err().expect("a bad spec must be rejected");
        assert!(err.to_string().contains("mm"), "{err}");
    }
    let spec = KernelSpec::Embedding { format: WeightFormat::Q4_0, vocab: 4, dim: 40, interleave: 0 };
    assert!(build(&[("emb", spec)]).is_err());
}

#[test]
fn embedding_matches_unpacked_rows_and_zeros_bad_ids() {
    let mut seed = 50;
    // The host's vector width on several sizes; the AVX2/SSE paths on a block and a tail.
    let cases: [(Option<u32>, Vec<usize>); 3] =
        [(None, vec![32, 64, 576, 35]), (Some(8), vec![64, 35]), (Some(4), vec![64, 35])];
    for format in FORMATS {
        for (lanes, dims) in &cases {
            for &dim in dims {
                if dim.is_multiple_of(format.block()) {
                    seed += 1;
                    check_embedding(format, *lanes, 37, dim, 0, seed);
                }
            }
        }
    }
}

#[test]
fn embedding_reads_interleaved_rows() {
    // A table tied to the output projection is stored as that matmul reads it.
    let host = kiln_codegen::kernels::target_lanes(&kiln_codegen::host_machine().unwrap()) as usize;
    let mut seed = 90;
    for format in [WeightFormat::F32, WeightFormat::Bf16, WeightFormat::F16] {
        for (lanes, width) in [(None, host), (Some(8), 8), (Some(4), 4)] {
            for dim in [32, 64, 576] {
                for chunk in [width, 2 * width] {
                    seed += 1;
                    check_embedding(format, lanes, 40, dim, chunk, seed);
                }
            }
        }
    }
}

/// Looks up ids in and out of range in a `[vocab, dim]` table (rows interleaved by `chunk`
/// elements unless 0), checking every row against the unpacked table.
fn check_embedding(format: WeightFormat, lanes: Option<u32>, vocab: usize, dim: usize, chunk: usize, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let mut table = pack(format, vocab, dim, &rng.vec(vocab * dim, -1.0, 1.0)).unwrap();
    let rows = unpack(format, vocab, dim, &table).unwrap();
    if chunk != 0 {
        table = interleave(format, vocab, dim, chunk, &table).unwrap();
    }
    let spec = KernelSpec::Embedding { format, vocab, dim, interleave: chunk };
    let lib = build_lib(&[("emb", spec)], lanes);
    let mut ids: Vec<i32> = vec![0, 36, 5, -1, vocab as i32, 5, i32::MAX, i32::MIN, 12, vocab as i32 - 1];
    for splits in [1, 3, 7] {
        let mut out = vec![f32::NAN; ids.len() * dim];
        // SAFETY: buffers match the Embedding contract for dims [ids.len()].
        unsafe {
            lib.call(
                "emb",
                &[ids.len() as i64],
                &[ptr(&mut table), ptr(&mut ids), ptr(&mut out)],
                ids.len() as i64,
                splits,
            )
        };
        for (r, &id) in ids.iter().enumerate() {
            let got = &out[r * dim..(r + 1) * dim];
            let ok = (0..vocab as i64).contains(&i64::from(id));
            let want: Vec<f32> =
                if ok { rows[id as usize * dim..(id as usize + 1) * dim].to_vec() } else { vec![0.0; dim] };
            assert_eq!(got, &want[..], "{} lanes={lanes:?} dim={dim} id={id} splits={splits}", format.name());
        }
    }
}

#[test]
fn interleaving_moves_each_chunk_and_undoes() {
    let (rows, k, chunk) = (8, 12, 4);
    let data: Vec<f32> = (0..rows * k).map(|i| i as f32).collect();
    let plain = pack(WeightFormat::F32, rows, k, &data).unwrap();
    let woven = interleave(WeightFormat::F32, rows, k, chunk, &plain).unwrap();
    let values = unpack(WeightFormat::F32, rows, k, &woven).unwrap();
    // Element e of row r at (r − r % 4)·k + (e / chunk)·4·chunk + (r % 4)·chunk + e % chunk.
    for r in 0..rows {
        for e in 0..k {
            let at = (r - r % 4) * k + (e / chunk) * 4 * chunk + (r % 4) * chunk + e % chunk;
            assert_eq!(values[at], data[r * k + e], "row {r} element {e}");
        }
    }
    assert_eq!(deinterleave(WeightFormat::F32, rows, k, chunk, &woven).unwrap(), plain);
    let halves = pack(WeightFormat::Bf16, rows, k, &data).unwrap();
    let back = interleave(WeightFormat::Bf16, rows, k, chunk, &halves).unwrap();
    assert_eq!(deinterleave(WeightFormat::Bf16, rows, k, chunk, &back).unwrap(), halves);
    // Shapes the layout does not cover are errors, not garbage.
    assert!(interleave(WeightFormat::F32, 6, k, chunk, &pack(WeightFormat::F32, 6, k, &data[..72]).unwrap()).is_err());
    assert!(interleave(WeightFormat::F32, rows, k, 5, &plain).is_err());
    assert!(interleave(WeightFormat::F32, rows, k, chunk, &plain[4..]).is_err());
    let q = pack(WeightFormat::Q8_0, 4, 32, &[0.5; 128]).unwrap();
    assert!(interleave(WeightFormat::Q8_0, 4, 32, 32, &q).is_err());
}

#[test]
fn unquantized_round_trips() {
    let mut rng = SplitMix64::new(3);
    let data: Vec<f32> = rng.vec(4 * 40, -1.0, 1.0).into_iter().map(|x| x * 1000.0).collect();
    let f32s = unpack(WeightFormat::F32, 4, 40, &pack(WeightFormat::F32, 4, 40, &data).unwrap()).unwrap();
    assert_eq!(f32s, data);
    for (format, eps) in [(WeightFormat::Bf16, 2f32.powi(-8)), (WeightFormat::F16, 2f32.powi(-11))] {
        let back = unpack(format, 4, 40, &pack(format, 4, 40, &data).unwrap()).unwrap();
        for (x, y) in data.iter().zip(&back) {
            // Round to nearest: at most half an ulp, i.e. eps/2 relative... plus the subnormal floor.
            assert!((x - y).abs() <= eps * x.abs() + 1e-7, "{}: {x} -> {y}", format.name());
        }
    }
}

#[test]
fn bf16_and_f16_round_to_nearest_even() {
    // 1 + 2^-8 is halfway between bf16 1 and 1 + 2^-7: ties go to the even mantissa (1).
    // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties go to 1 + 2^-6.
    let x = [1.0 + 2f32.powi(-8), 1.0 + 3.0 * 2f32.powi(-8), 1.0 + 2f32.powi(-8) + 2f32.powi(-20)];
    let b = unpack(WeightFormat::Bf16, 1, 3, &pack(WeightFormat::Bf16, 1, 3, &x).unwrap()).unwrap();
    assert_eq!(b, vec![1.0, 1.0 + 2f32.powi(-6), 1.0 + 2f32.powi(-7)]);
    let x = [1.0 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11)];
    let h = unpack(WeightFormat::F16, 1, 2, &pack(WeightFormat::F16, 1, 2, &x).unwrap()).unwrap();
    assert_eq!(h, vec![1.0, 1.0 + 2f32.powi(-9)]);
    assert_eq!(pack(WeightFormat::Bf16, 1, 1, &[1.0]).unwrap(), bf16::from_f32(1.0).to_le_bytes());
}

#[test]
fn quantized_round_trips_are_within_llama_cpp_error() {
    let mut rng = SplitMix64::new(11);
    let (rows, k) = (8, 96);
    let data = rng.vec(rows * k, -1.0, 1.0);
    // Q8_0 rounds to the nearest of ±127 steps of amax/127: half a step. Q4_0's steps are
    // |d| = amax/8 but its quants run from −8 to 7 in units of d = max/−8, so values of the sign
    // opposite to the largest one saturate at 7 steps: up to a whole step (llama.cpp does the same).
    for (format, steps, max_err) in [(WeightFormat::Q8_0, 127.0f32, 0.5), (WeightFormat::Q4_0, 8.0, 1.0)] {
        let packed = pack(format, rows, k, &data).unwrap();
        assert_eq!(packed.len(), rows * format.row_bytes(k));
        let back = unpack(format, rows, k, &packed).unwrap();
        for (block, got) in data.chunks(32).zip(back.chunks(32)) {
            let amax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
            for (x, y) in block.iter().zip(got) {
                // Plus the f16 rounding of the scale, relative 2^-11 on up to 127 steps.
                let bound = amax / steps * max_err + amax * 2f32.powi(-10);
                assert!((x - y).abs() <= bound, "{}: {x} -> {y} (amax {amax})", format.name());
            }
        }
    }
}

#[test]
fn q8_0_block_layout_matches_llama_cpp() {
    // amax 127 → d = 1.0 (f16 0x3c00); q = round(x / d), half away from zero.
    let mut x = [0.0f32; 32];
    x[0] = 127.0;
    x[1] = -127.0;
    x[2] = 2.5;
    x[3] = -2.5;
    x[4] = 0.49;
    x[31] = -1.0;
    let bytes = pack(WeightFormat::Q8_0, 1, 32, &x).unwrap();
    let mut want = vec![0x00, 0x3c, 127, (-127i8) as u8, 3, (-3i8) as u8, 0];
    want.resize(33, 0);
    want.push((-1i8) as u8);
    assert_eq!(bytes, want);
    assert_eq!(unpack(WeightFormat::Q8_0, 1, 32, &bytes).unwrap()[..4], [127.0, -127.0, 3.0, -3.0]);
    // An all-zero block has d = 0 and all-zero quants.
    assert_eq!(pack(WeightFormat::Q8_0, 1, 32, &[0.0; 32]).unwrap(), vec![0u8; 34]);
}

#[test]
fn q4_0_block_layout_matches_llama_cpp() {
    // The largest-magnitude value is -8 → d = -8 / -8 = 1.0; q = min(15, trunc(x/d + 8.5)).
    let mut x = [0.0f32; 32];
    x[0] = -8.0; // q 0
    x[1] = 7.0; // q 15
    x[2] = 3.4; // trunc(11.9) = 11
    x[16] = 1.0; // q 9, high nibble of byte 0
    x[17] = -0.5; // trunc(8.0) = 8, high nibble of byte 1
    x[31] = 7.9; // min(15, trunc(16.4)) = 15
    let bytes = pack(WeightFormat::Q4_0, 1, 32, &x).unwrap();
    let mut want = vec![0x00, 0x3c, 0x90, 0x8f, 0x8b];
    want.extend([0x88; 12]);
    want.push(0xf8);
    assert_eq!(bytes, want);
    let back = unpack(WeightFormat::Q4_0, 1, 32, &bytes).unwrap();
    assert_eq!([back[0], back[1], back[2], back[16], back[17], back[31]], [-8.0, 7.0, 3.0, 1.0, 0.0, 7.0]);
    // A positive maximum gives a negative scale: d = 16 / -8 = -2 (f16 0xc000).
    let mut y = [0.0f32; 32];
    y[5] = 16.0;
    let bytes = pack(WeightFormat::Q4_0, 1, 32, &y).unwrap();
    assert_eq!(&bytes[..2], &f16::from_f32(-2.0).to_le_bytes());
    assert_eq!(bytes[2 + 5] & 0x0f, 0, "16 / -2 + 8.5 → 0.5 → 0");
    assert_eq!(unpack(WeightFormat::Q4_0, 1, 32, &bytes).unwrap()[5], 16.0);
}

#[test]
fn pack_rejects_bad_shapes() {
    assert!(pack(WeightFormat::Q8_0, 1, 48, &[0.0; 48]).is_err());
    assert!(pack(WeightFormat::Q4_0, 2, 31, &[0.0; 62]).is_err());
    assert!(pack(WeightFormat::F32, 2, 3, &[0.0; 5]).is_err());
    assert!(unpack(WeightFormat::Q8_0, 2, 32, &[0; 67]).is_err());
    assert!(unpack(WeightFormat::Bf16, 1, 3, &[0; 6]).is_ok());
}

/// The generated inner loops are vectorized FMAs over the widest registers, with no scalar
/// conversions: what makes them stream weights at memory speed.
#[test]
fn inner_loops_are_vector_fmas() {
    let target = kiln_codegen::host_machine().unwrap();
    let lanes = kiln_codegen::kernels::target_lanes(&target);
    let context = kiln_codegen::inkwell::context::Context::create();
    let cx = KernelCx::new(&context, "asm", lanes);
    for format in FORMATS {
        let spec =
            KernelSpec::Matmul { format, n: 1536, k: 576, bias: false, cols_per_task: COLS_PER_TASK, interleave: 0 };
        kiln_codegen::kernels::emit_kernel(&cx, &format!("mm_{}", format.name()), &spec).unwrap();
    }
    kiln_codegen::optimize(&cx.module, &target, kiln_codegen::DEFAULT_PIPELINE).unwrap();
    let asm = kiln_codegen::emit_assembly(&cx.module, &target).unwrap();
    // For looking at the code by hand: KILN_MATMUL_ASM=/tmp/mm.s cargo test ... inner_loops
    if let Ok(path) = std::env::var("KILN_MATMUL_ASM") {
        std::fs::write(path, &asm).unwrap();
    }
    if lanes < 16 || !target.features.contains("+fma") {
        return; // The checks below are for AVX-512 machines, like the CI and bench hosts.
    }
    for format in FORMATS {
        let name = format!("mm_{}:", format.name());
        let body = asm.split(&name).nth(1).expect("function in assembly");
        let body = body.split(".Lfunc_end").next().unwrap_or(body);
        assert!(body.contains("vfmadd") && body.contains("zmm"), "{}: no 512-bit FMAs:\n{body}", format.name());
        for scalar in ["vcvtsi2ss", "vcvtph2ps\t%xmm", "vmulss", "vfmadd231ss"] {
            assert!(!body.contains(scalar), "{}: scalar `{scalar}` in the kernel:\n{body}", format.name());
        }
    }
}

/// `KernelCx::lane_sums` (the matmul's store, block attention's scores) gives each vector's sum
/// bit for bit as `KernelCx::hsum` does, for every power-of-two count of vectors up to the width,
/// at 4, 8 and 16 lanes, and puts vector i's sum in lane i.
#[test]
fn lane_sums_equal_horizontal_sums_bit_for_bit() {
    use kiln_codegen::kernels::testing::TempLib;
    let target = kiln_codegen::host_machine().unwrap();
    let context = kiln_codegen::inkwell::context::Context::create();
    let cases: Vec<(u32, u32)> =
        [4u32, 8, 16].into_iter().flat_map(|w| (0..=w.ilog2()).map(move |e| (w, 1 << e))).collect();
    for &(width, n) in &cases {
        let cx = KernelCx::new(&context, &format!("sums_{width}_{n}"), width);
        let kf = cx.begin_kernel(&format!("sums_{width}_{n}"));
        let (src, tree, each) = (cx.buf(&kf, 0).unwrap(), cx.buf(&kf, 1).unwrap(), cx.buf(&kf, 2).unwrap());
        let vs: Vec<_> = (0..n).map(|i| cx.load_vf32(src, cx.c64(i64::from(i * width)), width).unwrap()).collect();
        cx.store_vf32(tree, cx.c64(0), cx.lane_sums(&vs).unwrap()).unwrap();
        for (i, &v) in vs.iter().enumerate() {
            cx.store_f32(each, cx.c64(i as i64), cx.hsum(v).unwrap()).unwrap();
        }
        cx.finish().unwrap();
        kiln_codegen::optimize(&cx.module, &target, kiln_codegen::DEFAULT_PIPELINE).unwrap();
        let lib = TempLib::link(&kiln_codegen::emit_object(&cx.module, &target).unwrap(), "lane-sums").unwrap();
        let mut rng = SplitMix64::new(u64::from(width * 100 + n));
        // Magnitudes over many octaves, so that a different pairing would round differently.
        let mut src: Vec<f32> =
            (0..width * n).map(|_| rng.uniform(-1.0, 1.0) * 2f32.powi(rng.below(40) as i32 - 20)).collect();
        let (mut tree, mut each) = (vec![0f32; n as usize], vec![0f32; n as usize]);
        let f: libloading::Symbol<unsafe extern "C" fn(*const i64, *const *mut u8, i64, i64)> =
            unsafe { lib.lib.get(format!("sums_{width}_{n}").as_bytes()) }.unwrap();
        // SAFETY: src holds n vectors of `width` floats; tree and each hold n floats.
        unsafe { f([0i64].as_ptr(), [ptr(&mut src), ptr(&mut tree), ptr(&mut each)].as_ptr(), 0, 1) };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&tree), bits(&each), "{n} vectors of {width} lanes");
        let exact: Vec<f64> = src.chunks(width as usize).map(|c| c.iter().map(|&x| f64::from(x)).sum()).collect();
        for (i, (&got, &want)) in tree.iter().zip(&exact).enumerate() {
            assert!((f64::from(got) - want).abs() <= 1e-5 * want.abs().max(1e-30) + 1e-6, "lane {i}: {got} vs {want}");
        }
    }
    // Anything else is refused, not miscompiled.
    let cx = KernelCx::new(&context, "bad", 8);
    let kf = cx.begin_kernel("bad");
    let v = cx.load_vf32(cx.buf(&kf, 0).unwrap(), cx.c64(0), 8).unwrap();
    assert!(cx.lane_sums(&[v, v, v]).is_err());
    assert!(cx.lane_sums(&[v; 16]).is_err());
    assert!(cx.lane_sums(&[]).is_err());
}
