//! A thread pool for kernel calls: the calling thread and `threads − 1` workers each run a
//! contiguous range of a call's tasks, then meet. Calls come every few microseconds while decoding,
//! so workers spin briefly on a generation counter before sleeping on a condition variable.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

pub type KernelFn = unsafe extern "C" fn(*const i64, *const *mut u8, i64, i64);

#[derive(Clone, Copy)]
struct Job {
    f: Option<KernelFn>,
    dims: *const i64,
    bufs: *const *mut u8,
    tasks: i64,
    parts: i64,
}

struct Shared {
    /// Bumped (under the `job` lock) for every call that needs the workers.
    generation: AtomicU64,
    done: AtomicUsize,
    quit: AtomicBool,
    job: Mutex<Job>,
    wake: Condvar,
    /// Workers asleep on `wake` (changed under the `job` lock), so a call notifies only when needed.
    sleepers: AtomicUsize,
}

// SAFETY: the raw pointers in `Job` are only dereferenced by kernels during a call, while the
// caller of `Pool::run` keeps the buffers alive and waits for every worker to finish.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
}

/// Spins before sleeping: long enough to cover the gap between two kernel calls and between two
/// decode steps (sampling, detokenizing), short enough not to burn a core when idle.
const SPINS: u32 = 200_000;

fn range(tasks: i64, parts: i64, i: i64) -> (i64, i64) {
    let per = tasks / parts;
    let extra = tasks % parts;
    let begin = i * per + i.min(extra);
    (begin, begin + per + i64::from(i < extra))
}

impl Pool {
    pub fn new(threads: usize) -> Pool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            quit: AtomicBool::new(false),
            job: Mutex::new(Job { f: None, dims: std::ptr::null(), bufs: std::ptr::null(), tasks: 0, parts: 1 }),
            wake: Condvar::new(),
            sleepers: AtomicUsize::new(0),
        });
        let workers = (1..threads)
            .map(|index| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("kiln-worker-{index}"))
                    .spawn(move || worker(&shared, index as i64))
                    .expect("spawning a worker thread")
            })
            .collect();
        Pool { shared, workers, threads }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` over tasks `0..tasks`, split over the threads (small calls stay on this thread).
    ///
    /// # Safety
    /// `dims` and `bufs` must satisfy the kernel's contract for the whole call.
    pub unsafe fn run(&self, f: KernelFn, dims: &[i64], bufs: &[*mut u8], tasks: i64) {
        let parts = (self.threads as i64).min(tasks);
        if parts <= 1 {
            if tasks > 0 {
                f(dims.as_ptr(), bufs.as_ptr(), 0, tasks);
            }
            return;
        }
        self.shared.done.store(0, Ordering::Release);
        let sleeping = {
            let mut job = self.shared.job.lock().expect("pool lock");
            *job = Job { f: Some(f), dims: dims.as_ptr(), bufs: bufs.as_ptr(), tasks, parts };
            // Bumped under the lock: a worker about to sleep either sees it or is already waiting.
            self.shared.generation.fetch_add(1, Ordering::AcqRel);
            self.shared.sleepers.load(Ordering::Acquire)
        };
        if sleeping > 0 {
            self.shared.wake.notify_all();
        }
        let (b, e) = range(tasks, parts, 0);
        f(dims.as_ptr(), bufs.as_ptr(), b, e);
        // Workers with an index ≥ parts have nothing to do but still check in.
        let others = self.threads - 1;
        while self.shared.done.load(Ordering::Acquire) < others {
            std::hint::spin_loop();
        }
    }
}

fn worker(shared: &Shared, index: i64) {
    let mut seen = 0u64;
    loop {
        let mut spins = 0;
        loop {
            let g = shared.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                break;
            }
            if shared.quit.load(Ordering::Acquire) {
                return;
            }
            spins += 1;
            if spins < SPINS {
                std::hint::spin_loop();
            } else {
                let mut job = shared.job.lock().expect("pool lock");
                shared.sleepers.fetch_add(1, Ordering::AcqRel);
                while shared.generation.load(Ordering::Acquire) == seen && !shared.quit.load(Ordering::Acquire) {
                    job = shared.wake.wait(job).expect("pool lock");
                }
                shared.sleepers.fetch_sub(1, Ordering::AcqRel);
                drop(job);
                spins = 0;
            }
        }
        let job = *shared.job.lock().expect("pool lock");
        if index < job.parts {
            if let Some(f) = job.f {
                let (b, e) = range(job.tasks, job.parts, index);
                // SAFETY: see `Pool::run`: the caller waits for us before releasing the buffers.
                unsafe { f(job.dims, job.bufs, b, e) };
            }
        }
        shared.done.fetch_add(1, Ordering::AcqRel);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        {
            let _job = self.shared.job.lock().expect("pool lock");
            self.shared.quit.store(true, Ordering::Release);
        }
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_tasks_exactly() {
        for tasks in [1, 2, 7, 100] {
            for parts in 1..=4.min(tasks) {
                let mut next = 0;
                for i in 0..parts {
                    let (b, e) = range(tasks, parts, i);
                    assert_eq!(b, next);
                    next = e;
                }
                assert_eq!(next, tasks);
            }
        }
    }

    unsafe extern "C" fn fill(dims: *const i64, bufs: *const *mut u8, b: i64, e: i64) {
        let out = *bufs as *mut i64;
        for i in b..e {
            *out.add(i as usize) = i * *dims;
        }
    }

    #[test]
    fn every_task_runs_once() {
        let pool = Pool::new(3);
        for _ in 0..200 {
            let mut out = vec![-1i64; 37];
            let bufs = [out.as_mut_ptr() as *mut u8];
            unsafe { pool.run(fill, &[2], &bufs, 37) };
            assert!(out.iter().enumerate().all(|(i, &v)| v == 2 * i as i64));
        }
    }
}
