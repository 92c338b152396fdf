//! GEMV (batch-1 matmul) throughput on SmolLM2-like shapes, one thread, every weight format,
//! compared with a STREAM-style read of a large buffer.
//!
//! `cargo bench -p kiln-codegen --bench gemv` (`KILN_BENCH_FORMATS=f32,q4_0` for some formats only;
//! `KILN_BENCH_OFFSET=192` to start the weights 192 bytes into a page instead of on a page;
//! `KILN_BENCH_ONLY=prefill` for the prefill tiles only, `KILN_BENCH_ROWS=128` for their M,
//! `KILN_BENCH_COLS=8,16` to compare tasks of that many columns in alternating rounds)
//!
//! f32 matrices run twice: in plain rows, and interleaved as CPU artifacts store them ("f32+i").
//!
//! Decoding streams every weight from memory once per token, so the number that matters is GB/s
//! of weight bytes read. "cold" calls rotate over copies of the weights spanning more memory than
//! the last-level cache (as a model's layers do); "hot" calls repeat on one copy (cache-resident
//! when it fits), which shows the kernel's compute ceiling. Times are the best of several
//! passes, to see past other processes on a shared machine.

use kiln_codegen::kernels::matmul::COLS_PER_TASK;
use kiln_codegen::kernels::{compile_kernels, KernelSpec, WeightFormat};
use kiln_codegen::pack::pack;
use kiln_runtime::aligned::AlignedBuf;
use std::time::{Duration, Instant};

type KernelFnPtr = unsafe extern "C" fn(*const i64, *const *mut u8, i64, i64);

/// Bytes the cold runs spread their weight copies over: well past the last-level cache.
const COLD_BYTES: usize = 2 << 30;
/// Measurements per number; the best is reported.
const ROUNDS: usize = 5;
/// Each timed pass runs at least this long.
const PASS_TIME: Duration = Duration::from_millis(50);

const SHAPES: [(usize, usize); 5] = [(1536, 576), (576, 1536), (49152, 576), (576, 576), (192, 576)];
/// Prompt-processing matmuls, for a look at the M > 1 tiles: SmolLM2's up and down projections,
/// and Llama-7B-sized K (4096, 11008), where tiles walk K in blocks.
const PREFILL_SHAPES: [(usize, usize); 4] = [(1536, 576), (576, 1536), (1024, 4096), (512, 11008)];
const PREFILL_ROWS: usize = 64;
const FORMATS: [WeightFormat; 5] =
    [WeightFormat::F32, WeightFormat::Bf16, WeightFormat::F16, WeightFormat::Q8_0, WeightFormat::Q4_0];

fn main() {
    let target = kiln_codegen::host_machine().expect("host target");
    let lanes = kiln_codegen::kernels::target_lanes(&target);
    println!("host: {} ({}-bit vectors), one thread", target.cpu, lanes * 32);
    // On transparent huge pages, as the runtime's memory-mapped weights are (the page cache maps
    // large folios with 2 MiB pages): 4 KiB pages cost a TLB miss every 64 lines and would make
    // the reads, not the kernels, the bottleneck.
    let mut map = kiln_runtime::pages::huge_page_map(COLD_BYTES).expect("a 2 GiB anonymous map");
    let arena: &mut [u8] = &mut map;
    fill_f32(arena);
    let (plain, prefetched) = (stream_read(arena, false), stream_read(arena, true));
    println!(
        "read of {} MiB: {plain:.1} GB/s plain loads, {prefetched:.1} GB/s with software prefetch (best of {ROUNDS})",
        COLD_BYTES >> 20
    );
    println!("'% read' compares each cold GEMV with the better read, measured in turns with it.\n");

    let wanted = std::env::var("KILN_BENCH_FORMATS").ok();
    let formats: Vec<WeightFormat> =
        FORMATS.into_iter().filter(|f| wanted.as_deref().is_none_or(|w| w.split(',').any(|x| x == f.name()))).collect();
    // Unquantized formats twice: plain rows, and rows interleaved for the vector width as the
    // planner stores them for CPU artifacts ("f32+i" rows).
    let mut kernels: Vec<(String, KernelSpec)> = formats
        .iter()
        .flat_map(|&format| SHAPES.iter().map(move |&(n, k)| (format, n, k)))
        .flat_map(|(format, n, k)| {
            let woven = kiln_codegen::pack::interleave_for(format, n, k, lanes as usize);
            let layouts = if woven == 0 { vec![0] } else { vec![0, woven] };
            layouts.into_iter().map(move |interleave| {
                let spec = KernelSpec::Matmul { format, n, k, bias: false, cols_per_task: COLS_PER_TASK, interleave };
                (format!("gemv_{}_{n}_{k}_{interleave}", format.name()), spec)
            })
        })
        .collect();
    if std::env::var("KILN_BENCH_ONLY").is_ok_and(|v| v == "prefill") {
        kernels.clear();
    }
    let task_cols: Vec<usize> = std::env::var("KILN_BENCH_COLS")
        .map(|v| v.split(',').map(|c| c.parse().expect("KILN_BENCH_COLS: numbers")).collect())
        .unwrap_or_else(|_| vec![COLS_PER_TASK]);
    for &format in &formats {
        for (n, k) in PREFILL_SHAPES {
            let woven = kiln_codegen::pack::interleave_for(format, n, k, lanes as usize);
            for interleave in if woven == 0 { vec![0] } else { vec![0, woven] } {
                for &cols_per_task in &task_cols {
                    let spec = KernelSpec::Matmul { format, n, k, bias: false, cols_per_task, interleave };
                    kernels.push((format!("prefill_{}_{n}_{k}_{interleave}_{cols_per_task}", format.name()), spec));
                }
            }
        }
    }
    let lib = Library::compile(&kernels);

    println!(
        "{:<6} {:>6} {:>5} {:>9} | {:>9} {:>7} {:>7} | {:>9} {:>7}",
        "format", "N", "K", "weight MB", "cold µs", "GB/s", "% read", "hot µs", "GB/s"
    );
    for (name, spec) in kernels.iter().filter(|(name, _)| name.starts_with("gemv_")) {
        let KernelSpec::Matmul { format, n, k, interleave, .. } = *spec else { unreachable!() };
        let f = lib.get(name);
        let bytes = format.row_bytes(k) * n;
        let mut weights = pack(format, n, k, &pseudo_random(n * k)).expect("pack");
        if interleave != 0 {
            weights = kiln_codegen::pack::interleave(format, n, k, interleave, &weights).expect("interleave");
        }
        let label = format!("{}{}", format.name(), if interleave != 0 { "+i" } else { "" });
        let off = page_offset();
        // Each copy starts `off` bytes into a page, as an artifact's matrices start on one.
        let stride = bytes.next_multiple_of(4096);
        let copies = ((COLD_BYTES - off - bytes) / stride + 1).max(1);
        for c in 0..copies {
            arena[off + c * stride..off + c * stride + bytes].copy_from_slice(&weights);
        }
        let mut a = pseudo_random(k);
        let mut out = vec![0.0f32; n];
        let tasks = n.div_ceil(COLS_PER_TASK) as i64;
        let w = arena.as_mut_ptr();
        let mut call = |copy: usize| {
            // SAFETY: copy < copies, so the weights lie inside the arena.
            let bufs = [
                a.as_mut_ptr() as *mut u8,
                unsafe { w.add(off + copy * stride) },
                std::ptr::null_mut(),
                out.as_mut_ptr() as *mut u8,
            ];
            // SAFETY: a [1, K], w [N, K] packed, out [1, N]: the Matmul contract for dims [1].
            unsafe { f([1i64].as_ptr(), bufs.as_ptr(), 0, tasks) };
        };
        // Turns of (read, cold GEMV) so both see the same machine load; the best of each.
        let (mut read, mut cold) = (0.0f64, f64::INFINITY);
        for _ in 0..ROUNDS {
            read = read.max(stream_read(arena, true).max(stream_read(arena, false)));
            cold = cold.min(time_per_call(|i| call(i % copies)));
        }
        let hot = (0..ROUNDS).map(|_| time_per_call(|_| call(0))).fold(f64::INFINITY, f64::min);
        let gbs = |t: f64| bytes as f64 / t / 1e9;
        println!(
            "{:<6} {:>6} {:>5} {:>9.2} | {:>9.1} {:>7.1} {:>6.0}% | {:>9.1} {:>7.1}",
            label,
            n,
            k,
            bytes as f64 / 1e6,
            cold * 1e6,
            gbs(cold),
            100.0 * gbs(cold) / read,
            hot * 1e6,
            gbs(hot)
        );
    }

    let m = std::env::var("KILN_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(PREFILL_ROWS);
    println!("\nprefill (M = {m}, weights in cache): 6×4 register tiles on AVX-512, else 4×4");
    println!("{:<6} {:>6} {:>5} {:>5} {:>9} {:>8}", "format", "N", "K", "cols", "µs", "GFLOP/s");
    struct Case {
        label: String,
        f: KernelFnPtr,
        spec: (usize, usize, usize),
        // The buffers the call's pointers point into: aligned as the runtime's (page-aligned
        // activations; `malloc`'s blocks start 16 bytes into a page, which splits every vector
        // load of `a` over two cache lines).
        _data: [AlignedBuf; 3],
        bufs: [*mut u8; 4],
        best: f64,
    }
    let mut cases: Vec<Case> = kernels
        .iter()
        .filter(|(name, _)| name.starts_with("prefill_"))
        .map(|(name, spec)| {
            let KernelSpec::Matmul { format, n, k, interleave, cols_per_task, .. } = *spec else { unreachable!() };
            let mut w = pack(format, n, k, &pseudo_random(n * k)).expect("pack");
            if interleave != 0 {
                w = kiln_codegen::pack::interleave(format, n, k, interleave, &w).expect("interleave");
            }
            let a: Vec<u8> = pseudo_random(m * k).iter().flat_map(|x| x.to_le_bytes()).collect();
            let data = [aligned_copy(&a), aligned_copy(&w), AlignedBuf::zeroed(m * n * 4, 4096).expect("out")];
            let bufs = [data[0].as_ptr(), data[1].as_ptr(), std::ptr::null_mut(), data[2].as_ptr()];
            let label = format!("{}{}", format.name(), if interleave != 0 { "+i" } else { "" });
            Case { label, f: lib.get(name), spec: (n, k, cols_per_task), _data: data, bufs, best: f64::INFINITY }
        })
        .collect();
    // Rounds over every case in turn, so that variants see the same machine state.
    for _ in 0..ROUNDS {
        for case in &mut cases {
            let (n, _, cols) = case.spec;
            let (f, bufs, tasks) = (case.f, case.bufs, n.div_ceil(cols) as i64);
            // SAFETY: a [M, K], w [N, K] packed, out [M, N]: the Matmul contract for dims [M].
            let t = time_per_call(|_| unsafe { f([m as i64].as_ptr(), bufs.as_ptr(), 0, tasks) });
            case.best = case.best.min(t);
        }
    }
    for case in &cases {
        let (n, k, cols) = case.spec;
        let flops = 2.0 * (m * n * k) as f64;
        println!(
            "{:<6} {:>6} {:>5} {:>5} {:>9.1} {:>8.1}",
            case.label,
            n,
            k,
            cols,
            case.best * 1e6,
            flops / case.best / 1e9
        );
    }
}

/// `bytes` in a page-aligned block.
fn aligned_copy(bytes: &[u8]) -> AlignedBuf {
    let mut s = AlignedBuf::zeroed(bytes.len(), 4096).expect("memory");
    s.as_mut_slice().copy_from_slice(bytes);
    s
}

/// Where in a page the weight copies start: `KILN_BENCH_OFFSET` bytes (default 0, page-aligned as
/// artifacts store matrices): the interleaved f32 layout reads far slower from most offsets.
fn page_offset() -> usize {
    std::env::var("KILN_BENCH_OFFSET").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Seconds per call over one timed pass of at least [`PASS_TIME`]; `run(i)` makes call number i.
fn time_per_call(mut run: impl FnMut(usize)) -> f64 {
    for i in 0..4 {
        run(i); // warm up: page in, train predictors
    }
    let start = Instant::now();
    let mut calls = 0;
    while start.elapsed() < PASS_TIME {
        run(calls);
        calls += 1;
    }
    start.elapsed().as_secs_f64() / calls as f64
}

fn fill_f32(buf: &mut [u8]) {
    let values = pseudo_random(buf.len() / 4);
    for (chunk, x) in buf.chunks_exact_mut(4).zip(values) {
        chunk.copy_from_slice(&x.to_le_bytes());
    }
}

/// GB/s of one read-only pass summing `buf` as f32 with wide loads and independent accumulators,
/// optionally prefetching ahead in software as the kernels do.
fn stream_read(buf: &[u8], prefetch: bool) -> f64 {
    let start = Instant::now();
    std::hint::black_box(sum_bytes_as_f32(buf, prefetch));
    buf.len() as f64 / start.elapsed().as_secs_f64() / 1e9
}

fn sum_bytes_as_f32(buf: &[u8], prefetch: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { sum_avx512(buf, prefetch) };
    }
    let _ = prefetch;
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
unsafe fn sum_avx512(buf: &[u8], prefetch: bool) -> f32 {
    use std::arch::x86_64::*;
    const AHEAD: usize = 2048;
    let mut acc = [_mm512_setzero_ps(); 8];
    let p = buf.as_ptr();
    let blocks = buf.len() / 512;
    for b in 0..blocks {
        if prefetch {
            for line in 0..8 {
                // Past the end is fine: prefetches never fault.
                _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(b * 512 + line * 64 + AHEAD) as *const i8);
            }
        }
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: block b's eight 64-byte vectors lie inside buf.
            *a = _mm512_add_ps(*a, unsafe { _mm512_loadu_ps(p.add(b * 512 + j * 64) as *const f32) });
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
