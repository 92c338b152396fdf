//! `quantize_rows` against a reference quantizer (bit-exact), and `matmul_i8` against an f64
//! reference on the same int8 activations and dequantized weights: the integer dot products are
//! exact, so only f32 accumulation order is left. Decoding (M < 4) must be the exact f32 matmul.

use kiln_codegen::kernels::matmul::{q8_row_bytes, INT8_COLS_PER_TASK};
use kiln_codegen::kernels::testing::{build, ptr};
use kiln_codegen::kernels::{KernelSpec, WeightFormat};
use kiln_codegen::pack::{pack, unpack};
use kiln_ir::interp::testing::SplitMix64;

/// llama.cpp's activation quantizer with an f32 scale and ties to even: one row's bytes in
/// `quantize_rows`' layout.
fn quantize_row(x: &[f32]) -> Vec<u8> {
    let k = x.len();
    let mut q = Vec::with_capacity(q8_row_bytes(k));
    let (mut scales, mut sums) = (Vec::new(), Vec::new());
    for block in x.chunks(32) {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for &v in block {
            let qv = (v * id).round_ties_even() as i8;
            sum += i32::from(qv);
            q.push(qv as u8);
        }
        scales.extend_from_slice(&d.to_le_bytes());
        sums.extend_from_slice(&sum.to_le_bytes());
    }
    q.extend(scales);
    q.extend(sums);
    q
}

/// The values a quantized row stands for: `d · q`.
fn dequantize_row(row: &[u8], k: usize) -> Vec<f32> {
    (0..k)
        .map(|i| {
            let at = k + 4 * (i / 32);
            let d = f32::from_le_bytes(row[at..at + 4].try_into().unwrap());
            d * f32::from(row[i] as i8)
        })
        .collect()
}

fn host_has_vnni() -> bool {
    let host = kiln_codegen::host_target().unwrap();
    host.has_feature("avx512vnni") && host.has_feature("avx512f")
}

#[test]
fn quantize_rows_matches_the_reference_bit_for_bit() {
    let k = 96;
    let lib = build(&[("q", KernelSpec::QuantizeRows { k })]).unwrap();
    let mut rng = SplitMix64::new(7);
    for rows in [4usize, 9] {
        let mut x = rng.vec(rows * k, -3.0, 3.0);
        // Edge cases: an all-zero block, a block whose largest magnitude is negative, ties.
        x[32..64].fill(0.0);
        x[64] = -5.0;
        x[65] = 5.0 * 63.5 / 127.0;
        let mut out = vec![0xAAu8; rows * q8_row_bytes(k)];
        for splits in [1, 3] {
            // SAFETY: buffers match the QuantizeRows contract for dims [rows].
            unsafe { lib.call("q", &[rows as i64], &[ptr(&mut x.clone()), ptr(&mut out)], rows as i64, splits) };
            let want: Vec<u8> = x.chunks(k).flat_map(quantize_row).collect();
            assert_eq!(out, want, "rows={rows} splits={splits}");
        }
    }
    // Fewer than 4 rows: matmul_i8 decodes in f32 and does not read them, so nothing is written.
    let mut out = vec![0xAAu8; 3 * q8_row_bytes(k)];
    // SAFETY: as above.
    unsafe { lib.call("q", &[3], &[ptr(&mut rng.vec(3 * k, -1.0, 1.0)), ptr(&mut out)], 3, 1) };
    assert!(out.iter().all(|&b| b == 0xAA));
}

/// Runs quantize_rows + matmul_i8 on random data and checks every output.
fn check(format: WeightFormat, m: usize, n: usize, k: usize, bias: bool, seed: u64) {
    let spec = KernelSpec::MatmulI8 { format, n, k, bias, cols_per_task: INT8_COLS_PER_TASK };
    let lib = build(&[("q", KernelSpec::QuantizeRows { k }), ("mm", spec)]).unwrap();
    let mut rng = SplitMix64::new(seed);
    let a = rng.vec(m * k, -1.0, 1.0);
    let packed = pack(format, n, k, &rng.vec(n * k, -1.0, 1.0)).unwrap();
    let w = unpack(format, n, k, &packed).unwrap();
    let bias_v = rng.vec(n, -1.0, 1.0);
    // Prefill multiplies the int8 activations; decoding the exact ones.
    let a_used: Vec<f32> =
        if m >= 4 { a.chunks(k).flat_map(|row| dequantize_row(&quantize_row(row), k)).collect() } else { a.clone() };
    let tasks = n.div_ceil(INT8_COLS_PER_TASK) as i64;
    for splits in [1, 2, 5] {
        let mut a_q = vec![0u8; m * q8_row_bytes(k)];
        let mut out = vec![f32::NAN; m * n];
        let mut b_buf = bias_v.clone();
        let b_ptr = if bias { ptr(&mut b_buf) } else { std::ptr::null_mut() };
        let mut a_buf = a.clone();
        let mut w_buf = packed.clone();
        // SAFETY: buffers match the QuantizeRows and MatmulI8 contracts for dims [m].
        unsafe {
            lib.call("q", &[m as i64], &[ptr(&mut a_buf), ptr(&mut a_q)], m as i64, splits);
            let bufs = [ptr(&mut a_buf), ptr(&mut w_buf), b_ptr, ptr(&mut out), ptr(&mut a_q)];
            lib.call("mm", &[m as i64], &bufs, tasks, splits);
        }
        for i in 0..m {
            for j in 0..n {
                let (mut want, mut mag) = (0.0f64, 0.0f64);
                for x in 0..k {
                    let p = f64::from(a_used[i * k + x]) * f64::from(w[j * k + x]);
                    want += p;
                    mag += p.abs();
                }
                if bias {
                    want += f64::from(bias_v[j]);
                    mag += f64::from(bias_v[j]).abs();
                }
                let got = out[i * n + j];
                let err = (f64::from(got) - want).abs();
                assert!(
                    err <= 1e-5 * mag.max(1e-30),
                    "{format:?} m={m} n={n} k={k} bias={bias} splits={splits}: out[{i}][{j}] = {got}, want {want}"
                );
            }
        }
    }
}

#[test]
fn matmul_i8_matches_the_reference_on_its_int8_activations() {
    if !host_has_vnni() {
        eprintln!("skipped: this CPU has no AVX512-VNNI");
        return;
    }
    for format in [WeightFormat::Q4_0, WeightFormat::Q8_0] {
        // Rows: decode (1, 3: exact f32), one 4-row tile, 8-row tiles with 4- and 1-row rests.
        for (m, n, k, bias) in [(1, 48, 64, true), (3, 16, 32, false), (4, 16, 32, true), (13, 40, 96, false)] {
            check(format, m, n, k, bias, 11);
        }
        // N not a multiple of 16 (a masked last task), SmolLM2's K.
        check(format, 21, 7, 576, true, 12);
        check(format, 8, 200, 576, false, 13);
    }
}

#[test]
fn matmul_i8_is_refused_where_it_cannot_run() {
    for (format, lanes, cpt) in [(WeightFormat::F16, 16, 16), (WeightFormat::Q4_0, 8, 16), (WeightFormat::Q4_0, 16, 8)]
    {
        let spec = KernelSpec::MatmulI8 { format, n: 16, k: 32, bias: false, cols_per_task: cpt };
        let err = kiln_codegen::kernels::testing::build_with_lanes(&[("mm", spec)], lanes).err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("matmul_i8"), "{format:?} lanes={lanes} cpt={cpt}: {msg}");
    }
}

/// The prefill's inner loop is 512-bit VNNI dot products with broadcast activations.
#[test]
fn matmul_i8_inner_loop_is_vpdpbusd() {
    if !host_has_vnni() {
        return;
    }
    let target = kiln_codegen::host_machine().unwrap();
    let context = kiln_codegen::inkwell::context::Context::create();
    let cx = kiln_codegen::kernels::KernelCx::new(&context, "asm", 16);
    let spec = KernelSpec::MatmulI8 { format: WeightFormat::Q4_0, n: 1536, k: 576, bias: false, cols_per_task: 16 };
    kiln_codegen::kernels::emit_kernel(&cx, "mm_i8", &spec).unwrap();
    kiln_codegen::optimize(&cx.module, &target, kiln_codegen::DEFAULT_PIPELINE).unwrap();
    let asm = kiln_codegen::emit_assembly(&cx.module, &target).unwrap();
    let dots = asm.lines().filter(|l| l.contains("vpdpbusd") && l.contains("zmm")).count();
    // 8 groups × (8 + 4 + 1 rows) per block, unrolled.
    assert!(dots >= 8 * 13, "{dots} 512-bit vpdpbusd:\n{asm}");
    assert!(asm.contains("{1to16}"), "activations are not broadcast from memory:\n{asm}");
}
