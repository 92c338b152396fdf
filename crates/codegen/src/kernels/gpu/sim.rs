//! A SIMT simulator for GPU kernels, so their logic is tested on machines without a GPU.
//!
//! The kernels are emitted exactly as for the GPU ([`super::compile_ptx`]) except for the few
//! operations that need the hardware — `threadIdx`/`blockIdx`, warp shuffles, block barriers,
//! `lg2/ex2.approx` — which call back into this module (or libm), and compiled for the host. A
//! launch runs its blocks one after another, each block's threads as real OS threads: a shuffle
//! is a warp-wide exchange through 32 slots between two barriers, a block barrier is a barrier of
//! the block's threads, and a kernel's static shared memory (an ordinary global here) is the
//! running block's. Threads that diverge around a shuffle or a barrier — a bug on a GPU too —
//! time out with a panic instead of hanging the test.
//!
//! What it does not model: timing, memory coalescing, the GPU's memory model beyond what the
//! barriers order (kernels synchronize only through barriers and shuffles), and PTX-level details
//! such as register limits (`ptxas` checks those).

use super::{Arity, Launch};
use crate::error::{CodegenError, Result};
use crate::kernels::builder::KernelCx;
use crate::kernels::spec::KernelSpec;
use crate::target::host_machine;
use inkwell::context::Context;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long a thread waits at a barrier or shuffle before the simulation is declared deadlocked.
const DEADLOCK: Duration = Duration::from_secs(20);

/// A reusable barrier that panics instead of waiting forever.
struct SimBarrier {
    threads: usize,
    state: Mutex<(usize, u64)>,
    cv: Condvar,
}

impl SimBarrier {
    fn new(threads: usize) -> SimBarrier {
        SimBarrier { threads, state: Mutex::new((0, 0)), cv: Condvar::new() }
    }

    fn wait(&self, what: &str) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let generation = s.1;
        s.0 += 1;
        if s.0 == self.threads {
            *s = (0, generation + 1);
            self.cv.notify_all();
            return;
        }
        while s.1 == generation {
            let (next, timeout) = self.cv.wait_timeout(s, DEADLOCK).unwrap_or_else(|e| e.into_inner());
            s = next;
            if timeout.timed_out() && s.1 == generation {
                panic!("simulated kernel deadlocked at a {what}: {} of {} threads arrived", s.0, self.threads);
            }
        }
    }
}

struct Warp {
    slots: [AtomicU32; 32],
    /// Each lane's mma fragments: a0..a3, b0, b1, c0..c3 (f32 bits).
    mma: [[AtomicU32; 10]; 32],
    barrier: SimBarrier,
}

struct Block {
    barrier: SimBarrier,
    warps: Vec<Warp>,
}

struct ThreadCtx {
    tid: u32,
    block: u32,
    sync: Arc<Block>,
}

thread_local! {
    static CTX: RefCell<Option<ThreadCtx>> = const { RefCell::new(None) };
}

fn with_ctx<R>(f: impl FnOnce(&ThreadCtx) -> R) -> R {
    CTX.with(|c| f(c.borrow().as_ref().expect("a simulated kernel thread")))
}

extern "C" fn hook_thread() -> i32 {
    with_ctx(|c| c.tid as i32)
}

extern "C" fn hook_block() -> i32 {
    with_ctx(|c| c.block as i32)
}

/// Every lane publishes `v`, then reads lane `pick(lane)`'s.
fn exchange(v: f32, pick: impl FnOnce(usize) -> usize) -> f32 {
    with_ctx(|c| {
        let lane = c.tid as usize % 32;
        let warp = &c.sync.warps[c.tid as usize / 32];
        warp.slots[lane].store(v.to_bits(), Ordering::SeqCst);
        warp.barrier.wait("shuffle");
        let src = pick(lane);
        let r = f32::from_bits(warp.slots[src % 32].load(Ordering::SeqCst));
        // Nobody overwrites a slot before every lane has read.
        warp.barrier.wait("shuffle");
        r
    })
}

extern "C" fn hook_shuffle_xor(v: f32, mask: i32) -> f32 {
    exchange(v, |lane| lane ^ mask as usize)
}

extern "C" fn hook_shuffle_idx(v: f32, src: i32) -> f32 {
    exchange(v, |_| src as usize)
}

/// `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32` over the warp's fragments (layouts in
/// `gpu/mma.rs`): every lane publishes its fragments, then computes its own four results.
extern "C" fn hook_mma(a0: i32, a1: i32, a2: i32, a3: i32, b0: i32, b1: i32, c: *mut f32) {
    with_ctx(|ctx| {
        let lane = ctx.tid as usize % 32;
        let warp = &ctx.sync.warps[ctx.tid as usize / 32];
        // SAFETY: the kernel passes its 4-float stack slot.
        let cin = unsafe { std::slice::from_raw_parts_mut(c, 4) };
        let words = [a0 as u32, a1 as u32, a2 as u32, a3 as u32, b0 as u32, b1 as u32]
            .into_iter()
            .chain(cin.iter().map(|x| x.to_bits()));
        for (slot, w) in warp.mma[lane].iter().zip(words) {
            slot.store(w, Ordering::SeqCst);
        }
        warp.barrier.wait("mma");
        let word = |l: usize, i: usize| warp.mma[l][i].load(Ordering::SeqCst);
        let bf16 = |w: u32, high: bool| f32::from_bits(if high { w & 0xffff_0000 } else { w << 16 });
        // A[row][k] and B[k][col] from the lanes holding them.
        let a = |row: usize, k: usize| {
            let (g, hi_row) = (row % 8, row >= 8);
            let (pair, hi_k) = ((k % 8) / 2, k >= 8);
            let reg = (hi_row as usize) + 2 * (hi_k as usize);
            bf16(word(4 * g + pair, reg), k % 2 == 1)
        };
        let b = |k: usize, col: usize| {
            let (pair, reg) = ((k % 8) / 2, (k >= 8) as usize);
            bf16(word(4 * col + pair, 4 + reg), k % 2 == 1)
        };
        let (g, pair) = (lane / 4, lane % 4);
        let mut d = [0f32; 4];
        for (i, out) in d.iter_mut().enumerate() {
            let row = g + 8 * (i / 2);
            let col = 2 * pair + i % 2;
            let mut acc = cin[i];
            for k in 0..16 {
                acc += a(row, k) * b(k, col);
            }
            *out = acc;
        }
        warp.barrier.wait("mma");
        cin.copy_from_slice(&d);
    })
}

extern "C" fn hook_barrier() {
    with_ctx(|c| c.sync.barrier.wait("block barrier"))
}

/// A library of simulated GPU kernels; its files are removed on drop.
pub struct SimLib {
    lib: libloading::Library,
    dir: PathBuf,
    launches: HashMap<String, Launch>,
    _hooks: Box<[usize; 6]>,
}

impl Drop for SimLib {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Emits `kernels` as GPU kernels for the simulator and loads them.
pub fn build(kernels: &[(&str, KernelSpec, Arity)]) -> Result<SimLib> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let err = |path: &std::path::Path, e: &dyn std::fmt::Display| CodegenError::Artifact {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let context = Context::create();
    let cx = KernelCx::new_gpu_sim(&context, "kiln_sim_kernels");
    let mut launches = HashMap::new();
    for (name, spec, arity) in kernels {
        launches.insert(name.to_string(), super::emit_gpu_kernel(&cx, name, spec, *arity)?);
    }
    let target = host_machine()?;
    crate::emit::optimize(&cx.module, &target, crate::emit::DEFAULT_PIPELINE)?;
    let object = crate::emit::emit_object(&cx.module, &target)?;
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("kiln-gpu-sim-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| err(&dir, &e))?;
    let so = dir.join("kernels.so");
    crate::link::link_shared(&object, &so)?;
    // SAFETY: our freshly linked library, no initializers.
    let lib = unsafe { libloading::Library::new(&so) }.map_err(|e| err(&so, &e))?;
    let hooks = Box::new([
        hook_thread as *const () as usize,
        hook_block as *const () as usize,
        hook_shuffle_xor as *const () as usize,
        hook_shuffle_idx as *const () as usize,
        hook_barrier as *const () as usize,
        hook_mma as *const () as usize,
    ]);
    {
        // SAFETY: the module defines the pointer-sized global `kiln_sim_hooks` whenever a kernel
        // uses a hook; it is set once, before any kernel runs, to a table that outlives the library.
        unsafe {
            if let Ok(global) = lib.get::<*mut *const usize>(super::entry::SIM_HOOKS.as_bytes()) {
                **global = hooks.as_ptr();
            }
        }
    }
    Ok(SimLib { lib, dir, launches, _hooks: hooks })
}

impl SimLib {
    /// The launch geometry `name` was emitted with.
    pub fn launch(&self, name: &str) -> Launch {
        self.launches[name]
    }

    /// Runs kernel `name` for `tasks` tasks: its grid's blocks in turn, each block's threads at
    /// once.
    ///
    /// # Safety
    /// `bufs` must point to buffers of the sizes the kernel's contract implies for `dims`.
    pub unsafe fn run(&self, name: &str, tasks: i64, dims: &[i64], bufs: &[*mut u8]) {
        type SimFn = unsafe extern "C" fn(*const i64);
        let f: libloading::Symbol<SimFn> = self.lib.get(format!("{name}__sim").as_bytes()).expect("simulated kernel");
        let f: SimFn = *f;
        let launch = self.launches[name];
        let mut params = vec![tasks];
        params.extend_from_slice(dims);
        params.extend(bufs.iter().map(|&p| p as i64));
        let threads = launch.block as usize;
        for block in 0..launch.grid(tasks) {
            let warps = threads.div_ceil(32);
            let sync = Arc::new(Block {
                barrier: SimBarrier::new(threads),
                warps: (0..warps)
                    .map(|w| Warp {
                        slots: std::array::from_fn(|_| AtomicU32::new(0)),
                        mma: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU32::new(0))),
                        barrier: SimBarrier::new((threads - 32 * w).min(32)),
                    })
                    .collect(),
            });
            std::thread::scope(|s| {
                for tid in 0..threads {
                    let (sync, params) = (sync.clone(), &params);
                    std::thread::Builder::new()
                        .stack_size(256 << 10)
                        .spawn_scoped(s, move || {
                            CTX.with(|c| *c.borrow_mut() = Some(ThreadCtx { tid: tid as u32, block, sync }));
                            // SAFETY: the caller vouches for the buffers; the kernel reads its
                            // parameters from `params`, which outlives the scope.
                            unsafe { f(params.as_ptr()) };
                        })
                        .expect("spawning a simulated GPU thread");
                }
            });
        }
    }
}
