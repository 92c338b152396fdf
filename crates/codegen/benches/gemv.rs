//! GEMV (batch-1 matmul) throughput on SmolLM2-like shapes, one thread, every weight format,
//! compared with a STREAM-style read of a large buffer.
//!
//! `cargo bench -p kiln-codegen --bench gemv`
//!
//! Decoding streams every weight from memory once per token, so the number that matters is GB/s
//! of weight bytes read. "cold" calls rotate over copies of the weights spanning more memory than
//! the last-level cache (as a model's layers do); "hot" calls repeat on one copy (cache-resident
//! when it fits), which shows the kernel's compute ceiling. Times are the best of several
//! passes, to see past other processes on a shared machine.

use kiln_codegen::kernels::matmul::COLS_PER_TASK;
use kiln_codegen::kernels::{compile_kernels, KernelSpec, WeightFormat};
use kiln_codegen::pack::pack;
use std::time::{Duration, Instant};

type KernelFnPtr = unsafe extern "C" fn(*const i64, *const *mut u8, i64, i64);

/// Bytes the cold runs spread their weight copies over: well past the last-level cache.
const COLD_BYTES: usize = 2 << 30;
const PASSES: usize = 5;
/// Each timed pass runs at least this long.
const PASS_TIME: Duration = Duration::from_millis(60);

const SHAPES: [(usize, usize); 3] = [(1536, 576), (576, 1536), (49152, 576)];
const FORMATS: [WeightFormat; 5] =
    [WeightFormat::F32, WeightFormat::Bf16, WeightFormat::F16, WeightFormat::Q8_0, WeightFormat::Q4_0];

fn main() {
    let target = kiln_codegen::host_machine().expect("host target");
    println!("host: {} ({})", target.cpu, kiln_codegen::kernels::target_lanes(&target) * 32);
    let mut arena = vec![0u8; COLD_BYTES];
    let stream = stream_read(&mut arena);
    println!("STREAM-style read of {} MiB: {stream:.1} GB/s (best of {PASSES})\n", COLD_BYTES >> 20);

    let kernels: Vec<(String, KernelSpec)> = FORMATS
        .iter()
        .flat_map(|&format| SHAPES.iter().map(move |&(n, k)| (format, n, k)))
        .map(|(format, n, k)| {
            let spec = KernelSpec::Matmul { format, n, k, bias: false, cols_per_task: COLS_PER_TASK };
            (format!("gemv_{}_{n}_{k}", format.name()), spec)
        })
        .collect();
    let lib = Library::compile(&kernels);

    println!(
        "{:<6} {:>6} {:>5} {:>9} | {:>9} {:>7} {:>7} | {:>9} {:>7}",
        "format", "N", "K", "weight MB", "cold µs", "GB/s", "% read", "hot µs", "GB/s"
    );
    for (name, spec) in &kernels {
        let KernelSpec::Matmul { format, n, k, .. } = *spec else { unreachable!() };
        let f = lib.get(name);
        let bytes = format.row_bytes(k) * n;
        let weights = pack(format, n, k, &pseudo_random(n * k)).expect("pack");
        let copies = (COLD_BYTES / bytes).max(1);
        for c in 0..copies {
            arena[c * bytes..(c + 1) * bytes].copy_from_slice(&weights);
        }
        let mut a = pseudo_random(k);
        let mut out = vec![0.0f32; n];
        let tasks = n.div_ceil(COLS_PER_TASK) as i64;
        let mut call = |copy: usize| {
            let bufs = [a.as_mut_ptr() as *mut u8, arena[copy * bytes..].as_mut_ptr(), std::ptr::null_mut(), out.as_mut_ptr() as *mut u8];
            // SAFETY: a [1, K], w [N, K] packed, out [1, N]: the Matmul contract for dims [1].
            unsafe { f([1i64].as_ptr(), bufs.as_ptr(), 0, tasks) };
        };
        let cold = best_time_per_call(|i| call(i % copies));
        let hot = best_time_per_call(|_| call(0));
        let gbs = |t: f64| bytes as f64 / t / 1e9;
        println!(
            "{:<6} {:>6} {:>5} {:>9.2} | {:>9.1} {:>7.1} {:>6.0}% | {:>9.1} {:>7.1}",
            format.name(),
            n,
            k,
            bytes as f64 / 1e6,
            cold * 1e6,
            gbs(cold),
            100.0 * gbs(cold) / stream,
            hot * 1e6,
            gbs(hot)
        );
    }
}

/// Best (smallest) seconds per call over [`PASSES`] passes; `run(i)` makes call number i.
fn best_time_per_call(mut run: impl FnMut(usize)) -> f64 {
    for i in 0..8 {
        run(i); // warm up: page in, train predictors
    }
    let mut best = f64::INFINITY;
    let mut i = 0;
    for _ in 0..PASSES {
        let start = Instant::now();
        let mut calls = 0;
        while start.elapsed() < PASS_TIME {
            run(i);
            i += 1;
            calls += 1;
        }
        best = best.min(start.elapsed().as_secs_f64() / calls as f64);
    }
    best
}

/// GB/s of a read-only pass summing `buf` with wide vector loads and independent accumulators.
fn stream_read(buf: &mut [u8]) -> f64 {
    let floats: Vec<f32> = pseudo_random(buf.len() / 4);
    for (chunk, x) in buf.chunks_exact_mut(4).zip(&floats) {
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    drop(floats);
    let mut best = f64::INFINITY;
    let mut sink = 0.0;
    for _ in 0..PASSES {
        let start = Instant::now();
        sink += sum_bytes_as_f32(buf);
        best = best.min(start.elapsed().as_secs_f64());
    }
    std::hint::black_box(sink);
    buf.len() as f64 / best / 1e9
}

fn sum_bytes_as_f32(buf: &[u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { sum_avx512(buf) };
    }
    // Eight independent lanes the compiler keeps in vector registers.
    let mut acc = [0.0f32; 8];
    for chunk in buf.chunks_exact(32) {
        for (a, b) in acc.iter_mut().zip(chunk.chunks_exact(4)) {
            *a += f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sum_avx512(buf: &[u8]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); 8];
    let p = buf.as_ptr() as *const f32;
    let blocks = buf.len() / (64 * 8);
    for b in 0..blocks {
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: block b's eight 64-byte vectors lie inside buf.
            *a = _mm512_add_ps(*a, unsafe { _mm512_loadu_ps(p.add((b * 8 + j) * 16)) });
        }
    }
    acc.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
}

/// Values in [-1, 1) from a fixed xorshift sequence.
fn pseudo_random(n: usize) -> Vec<f32> {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// The benchmark kernels, compiled for the host and loaded.
struct Library {
    lib: libloading::Library,
    dir: std::path::PathBuf,
}

impl Library {
    fn compile(kernels: &[(String, KernelSpec)]) -> Library {
        let target = kiln_codegen::host_machine().expect("host target");
        let object = compile_kernels(kernels, &target).expect("compile kernels");
        let dir = std::env::temp_dir().join(format!("kiln-gemv-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let so = dir.join("gemv.so");
        kiln_codegen::link::link_shared(&object, &so).expect("link");
        // SAFETY: our freshly linked kernels, with no initializers.
        let lib = unsafe { libloading::Library::new(&so) }.expect("load kernels");
        Library { lib, dir }
    }

    fn get(&self, name: &str) -> KernelFnPtr {
        // SAFETY: every kernel has the ABI signature.
        unsafe { *self.lib.get::<KernelFnPtr>(name.as_bytes()).expect("kernel symbol") }
    }
}

impl Drop for Library {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
