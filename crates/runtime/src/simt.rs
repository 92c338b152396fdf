//! SIMT simulation: runs GPU kernels compiled for the host (`kiln compile --target cuda-sim`, and
//! the code generator's kernel tests) with CUDA's execution model, so their logic is checked on
//! machines without a GPU.
//!
//! Such kernels are the CUDA kernels exactly, except that the operations needing the hardware —
//! `threadIdx`/`blockIdx`, warp shuffles, `bar.sync`, `mma.sync` — call the hooks here through a
//! table whose address the loader stores in the library's global `kiln_sim_hooks`
//! ([`hook_table`]). Each entry `{symbol}__sim(const i64* params)` takes the CUDA parameters (tasks,
//! dims, buffer addresses) as one array. A launch ([`launch`]) runs its blocks one after another,
//! each block's threads as real OS threads: a shuffle is a warp-wide exchange through 32 slots
//! between two barriers, `bar.sync` a barrier of the block's threads, `mma.sync` gathers the warp's
//! fragments and computes the tile from the PTX ISA's fragment layout, and a kernel's static shared
//! memory (an ordinary global on the host) is the running block's. Threads that diverge around a
//! shuffle or barrier — a bug on a GPU too — panic after a timeout instead of hanging.
//!
//! Not modelled: timing, memory coalescing, the memory model beyond what barriers order, register
//! limits (`ptxas` checks those). Slow (a thread per GPU thread): for tests and debugging.

use crate::artifact::manifest::Launch;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

/// The global a simulated kernel library reads its hook table from.
pub const HOOKS_GLOBAL: &str = "kiln_sim_hooks";

/// A simulated kernel entry: `{symbol}__sim(params)`.
pub type SimFn = unsafe extern "C" fn(*const i64);

/// How long a thread waits at a barrier or shuffle before the simulation is declared deadlocked.
const DEADLOCK: Duration = Duration::from_secs(20);

/// A reusable barrier that panics instead of waiting forever. Waiters yield the CPU rather than
/// sleep: a simulated warp reaches a barrier every few instructions, and sleeping and waking
/// dozens of OS threads each time costs far more than letting the laggards run.
struct SimBarrier {
    threads: usize,
    arrived: AtomicUsize,
    generation: AtomicU64,
}

impl SimBarrier {
    fn new(threads: usize) -> SimBarrier {
        SimBarrier { threads, arrived: AtomicUsize::new(0), generation: AtomicU64::new(0) }
    }

    fn wait(&self, what: &str) {
        let generation = self.generation.load(Ordering::SeqCst);
        if self.arrived.fetch_add(1, Ordering::SeqCst) + 1 == self.threads {
            self.arrived.store(0, Ordering::SeqCst);
            self.generation.store(generation + 1, Ordering::SeqCst);
            return;
        }
        let since = std::time::Instant::now();
        let mut spins = 0u32;
        while self.generation.load(Ordering::SeqCst) == generation {
            spins += 1;
            if spins.is_multiple_of(64) {
                std::thread::yield_now();
                if spins.is_multiple_of(65536) && since.elapsed() > DEADLOCK {
                    panic!(
                        "simulated kernel deadlocked at a {what}: {} of {} threads arrived",
                        self.arrived.load(Ordering::SeqCst),
                        self.threads
                    );
                }
            } else {
                std::hint::spin_loop();
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

/// The hook table, by the index of the codegen's `gpu::entry::Hook`: thread, block, shuffle xor,
/// shuffle idx, barrier, mma.
pub fn hook_table() -> &'static [usize; 6] {
    static TABLE: OnceLock<[usize; 6]> = OnceLock::new();
    TABLE.get_or_init(|| {
        [
            hook_thread as *const () as usize,
            hook_block as *const () as usize,
            hook_shuffle_xor as *const () as usize,
            hook_shuffle_idx as *const () as usize,
            hook_barrier as *const () as usize,
            hook_mma as *const () as usize,
        ]
    })
}

/// Points a loaded simulated-kernel library at the hook table (a library without hooks — no
/// kernel uses them — is left alone).
///
/// # Safety
/// `lib` must be a library of simulated kernels, whose `kiln_sim_hooks` is a pointer-sized global.
pub unsafe fn install_hooks(lib: &libloading::Library) {
    if let Ok(global) = lib.get::<*mut *const usize>(HOOKS_GLOBAL.as_bytes()) {
        **global = hook_table().as_ptr();
    }
}

/// What the workers run for one block.
#[derive(Clone)]
struct Job {
    f: SimFn,
    /// `tasks`, dims, buffer addresses; owned by the launching thread, which waits for the block.
    params: *const i64,
    block: u32,
    /// The block's threads `first .. first + threads` (the whole block, or one warp of it).
    first: usize,
    threads: usize,
    sync: Arc<Block>,
}

struct PoolState {
    generation: u64,
    job: Option<Job>,
    /// Participants of the current block that have finished.
    finished: usize,
    /// The first panic of a simulated thread in this block.
    panic: Option<String>,
    quit: bool,
}

// SAFETY: `params` is only read by the workers while the launching thread waits for them.
unsafe impl Send for PoolState {}

struct PoolShared {
    state: Mutex<PoolState>,
    start: Condvar,
    done: Condvar,
}

/// Persistent threads that play GPU threads (spawning hundreds of threads per block would
/// dominate a simulated model's run time).
struct Pool {
    shared: Arc<PoolShared>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Pool {
    fn new(threads: usize) -> Pool {
        let shared = Arc::new(PoolShared {
            state: Mutex::new(PoolState { generation: 0, job: None, finished: 0, panic: None, quit: false }),
            start: Condvar::new(),
            done: Condvar::new(),
        });
        let workers = (0..threads)
            .map(|tid| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("simt-{tid}"))
                    .stack_size(256 << 10)
                    .spawn(move || worker(tid, &shared))
                    .expect("spawning a simulated GPU thread")
            })
            .collect();
        Pool { shared, workers }
    }

    /// Runs `job` on its threads and waits for them.
    fn run(&self, job: Job) {
        let count = job.threads;
        assert!(count <= self.workers.len(), "{count} threads at once in a pool of {}", self.workers.len());
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.job = Some(job);
        st.finished = 0;
        st.generation += 1;
        self.shared.start.notify_all();
        while st.finished < count {
            st = self.shared.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.job = None;
        if let Some(p) = st.panic.take() {
            drop(st);
            panic!("simulated GPU thread panicked: {p}");
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).quit = true;
        self.shared.start.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Runs simulated kernels: one warp's worth of threads for kernels whose warps are independent,
/// and a block's worth for kernels that synchronize their block. Owned by whoever runs them.
pub struct Simulator {
    warp: Pool,
    block: Option<Pool>,
}

impl Simulator {
    /// A simulator for kernels that synchronize blocks of up to `max_sync_block` threads (0 when
    /// none do).
    pub fn new(max_sync_block: usize) -> Simulator {
        Simulator { warp: Pool::new(32), block: (max_sync_block > 32).then(|| Pool::new(max_sync_block)) }
    }

    /// Runs simulated kernel `f` for `tasks` tasks with `launch`'s geometry; `params` are the
    /// CUDA parameters after `tasks` (dims, then buffer addresses). Blocks run one after another;
    /// a block's warps run together when the kernel synchronizes its block, else one after
    /// another (fewer threads competing for the CPU, and such a kernel's warps cannot tell).
    ///
    /// # Safety
    /// `f` must be a simulated kernel whose library has its hooks installed, and the buffers must
    /// be sized for the dims as the kernel's contract says.
    pub unsafe fn launch(&self, f: SimFn, launch: Launch, tasks: i64, params: &[i64]) {
        let threads = launch.block as usize;
        let (pool, together) = match &self.block {
            Some(p) if launch.block_sync && threads > 32 => (p, threads),
            _ if launch.block_sync && threads > 32 => {
                panic!("a block-synchronizing kernel of {threads} threads in a simulator without block pool")
            }
            _ => (&self.warp, threads.min(32)),
        };
        let mut all = Vec::with_capacity(1 + params.len());
        all.push(tasks);
        all.extend_from_slice(params);
        for block in 0..launch.grid(tasks) {
            let sync = Arc::new(Block {
                barrier: SimBarrier::new(threads),
                warps: (0..threads.div_ceil(32))
                    .map(|w| Warp {
                        slots: std::array::from_fn(|_| AtomicU32::new(0)),
                        mma: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU32::new(0))),
                        barrier: SimBarrier::new((threads - 32 * w).min(32)),
                    })
                    .collect(),
            });
            for first in (0..threads).step_by(together) {
                let count = together.min(threads - first);
                pool.run(Job { f, params: all.as_ptr(), block, first, threads: count, sync: sync.clone() });
            }
        }
    }
}

fn worker(tid: usize, shared: &PoolShared) {
    let mut seen = 0;
    loop {
        let job = {
            let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if st.quit {
                    return;
                }
                if st.generation != seen {
                    seen = st.generation;
                    match &st.job {
                        Some(j) if tid < j.threads => break j.clone(),
                        _ => continue,
                    }
                }
                st = shared.start.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        };
        let thread = (job.first + tid) as u32;
        CTX.with(|c| *c.borrow_mut() = Some(ThreadCtx { tid: thread, block: job.block, sync: job.sync.clone() }));
        // SAFETY: the launcher vouches for the kernel and its buffers and waits for this block.
        let outcome = std::panic::catch_unwind(|| unsafe { (job.f)(job.params) });
        CTX.with(|c| *c.borrow_mut() = None);
        let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(p) = outcome {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            st.panic.get_or_insert(msg);
        }
        st.finished += 1;
        if st.finished == job.threads {
            shared.done.notify_all();
        }
    }
}
