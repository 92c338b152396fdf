//! The slow tier: expert weights read from the artifact's weight file by one I/O thread.
//!
//! Reads use `O_DIRECT` (aligned offsets, lengths and buffers) so they come from the disk, not from
//! a page cache that would silently hold the whole model in RAM; where the file system refuses
//! `O_DIRECT` they fall back to buffered reads followed by `POSIX_FADV_DONTNEED`. Jobs are tickets:
//! demand loads go to the front of the queue, prefetches to the back, and a queued job whose slot
//! was given to another expert is cancelled. One thread keeps jobs for the same slot in order.

use crate::aligned::AlignedBuf;
use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Alignment of offsets, lengths and buffers for `O_DIRECT` (the largest logical block size in
/// common use).
pub const IO_ALIGN: usize = 4096;

/// One contiguous read: `len` bytes at `file_offset` into the destination at `dst_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Read {
    pub file_offset: u64,
    pub len: usize,
    pub dst_offset: usize,
}

/// A destination pointer the I/O thread may write (the slot is not read until its ticket is done).
#[derive(Clone, Copy)]
struct Dst(*mut u8);
// SAFETY: the main thread hands the slot memory to the I/O thread for the job's duration and only
// reads it after `wait` returns for that ticket.
unsafe impl Send for Dst {}

struct Job {
    ticket: u64,
    dst: Dst,
    /// Pieces of at most [`CHUNK`] bytes; `next` is the first not yet read.
    reads: Vec<Read>,
    next: usize,
    urgent: bool,
}

/// The I/O thread reads a job this much at a time and looks at the queue in between, so a demand
/// load waits for at most one chunk of a prefetch, not a whole expert.
pub const CHUNK: usize = 1 << 20;

fn chunked(reads: Vec<Read>) -> Vec<Read> {
    let mut out = Vec::with_capacity(reads.len());
    for r in reads {
        let mut at = 0;
        while at < r.len {
            let len = CHUNK.min(r.len - at);
            out.push(Read { file_offset: r.file_offset + at as u64, len, dst_offset: r.dst_offset + at });
            at += len;
        }
    }
    out
}

impl State {
    /// Queues a job: urgent ones first, each class in order.
    fn enqueue(&mut self, job: Job) {
        if job.urgent {
            self.queue.push_front(job);
        } else {
            self.queue.push_back(job);
        }
    }

    /// Puts back a job that has pieces left, ahead of every job it outranks.
    fn requeue(&mut self, job: Job) {
        if job.urgent {
            self.queue.push_front(job);
        } else {
            let at = self.queue.iter().position(|j| !j.urgent).unwrap_or(self.queue.len());
            self.queue.insert(at, job);
        }
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    done: HashSet<u64>,
    /// Jobs cancelled while the I/O thread was reading one of their chunks: it drops them instead
    /// of putting them back (their slot now belongs to a later job, which must not be
    /// overwritten by the rest of this one).
    cancelled: HashSet<u64>,
    failed: Option<(u64, String)>,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    finished: Condvar,
}

/// The I/O thread and its queue.
pub struct Loader {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    next_ticket: u64,
    direct: bool,
}

fn open(path: &Path, direct: bool) -> std::io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o.open(path)
}

impl Loader {
    /// Opens `path` for the I/O thread (with `O_DIRECT` if asked and possible).
    pub fn new(path: &Path, direct: bool) -> std::io::Result<Loader> {
        let (file, direct) = match direct.then(|| open(path, true)) {
            Some(Ok(f)) if probe_direct(&f) => (f, true),
            _ => (open(path, false)?, false),
        };
        let shared = Arc::new(Shared { state: Mutex::default(), work: Condvar::new(), finished: Condvar::new() });
        let worker = shared.clone();
        let path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("kiln-expert-io".into())
            .spawn(move || io_thread(&worker, &file, direct, &path))?;
        Ok(Loader { shared, thread: Some(thread), next_ticket: 1, direct })
    }

    /// Whether reads bypass the page cache.
    pub fn direct(&self) -> bool {
        self.direct
    }

    /// Queues a job filling `dst` (which must stay valid and unread until [`Loader::wait`] returns
    /// for the ticket, and be aligned to [`IO_ALIGN`]); `urgent` jobs go first.
    pub fn submit(&mut self, dst: *mut u8, reads: Vec<Read>, urgent: bool) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let job = Job { ticket, dst: Dst(dst), reads: chunked(reads), next: 0, urgent };
        self.shared.state.lock().expect("loader lock").enqueue(job);
        self.shared.work.notify_one();
        ticket
    }

    /// Moves a queued job to the front (a prefetch that became a demand). No effect once started.
    pub fn expedite(&mut self, ticket: u64) {
        let mut s = self.shared.state.lock().expect("loader lock");
        if let Some(i) = s.queue.iter().position(|j| j.ticket == ticket) {
            let mut job = s.queue.remove(i).expect("present");
            job.urgent = true;
            s.queue.push_front(job);
        }
    }

    /// Drops a job: at once if it is queued, after the chunk being read if it is running. Any
    /// later job for the same memory runs after that chunk.
    pub fn cancel(&mut self, ticket: u64) {
        let mut s = self.shared.state.lock().expect("loader lock");
        match s.queue.iter().position(|j| j.ticket == ticket) {
            Some(i) => {
                s.queue.remove(i);
            }
            None => {
                if !s.done.remove(&ticket) {
                    s.cancelled.insert(ticket);
                }
            }
        }
    }

    /// Waits until the job is done; an I/O error of any job is reported here.
    pub fn wait(&mut self, ticket: u64) -> Result<(), String> {
        let mut s = self.shared.state.lock().expect("loader lock");
        loop {
            if let Some((t, msg)) = &s.failed {
                return Err(format!("reading experts (job {t}): {msg}"));
            }
            if s.done.remove(&ticket) {
                return Ok(());
            }
            s = self.shared.finished.wait(s).expect("loader lock");
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shared.state.lock() {
            s.shutdown = true;
            s.queue.clear();
        }
        self.shared.work.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether an aligned `O_DIRECT` read works on this file (tmpfs and some overlays refuse).
fn probe_direct(f: &File) -> bool {
    let mut buf = io_buffer(IO_ALIGN);
    f.read_at(buf.as_mut_slice(), 0).is_ok()
}

fn io_thread(shared: &Shared, file: &File, direct: bool, path: &Path) {
    loop {
        let mut job = {
            let mut s = shared.state.lock().expect("loader lock");
            loop {
                if s.shutdown {
                    return;
                }
                if let Some(j) = s.queue.pop_front() {
                    break j;
                }
                s = shared.work.wait(s).expect("loader lock");
            }
        };
        let result = read_fully(file, job.dst, &job.reads[job.next], direct);
        job.next += 1;
        let mut s = shared.state.lock().expect("loader lock");
        if s.cancelled.remove(&job.ticket) {
            continue;
        }
        match result {
            Ok(()) if job.next < job.reads.len() => {
                s.requeue(job);
                continue;
            }
            Ok(()) => {
                s.done.insert(job.ticket);
            }
            Err(e) => s.failed = Some((job.ticket, format!("{}: {e}", path.display()))),
        }
        drop(s);
        shared.finished.notify_all();
    }
}

fn read_fully(file: &File, dst: Dst, r: &Read, direct: bool) -> std::io::Result<()> {
    // SAFETY: the slot holds dst_offset + len bytes (the cache sized it from the same reads).
    let buf = unsafe { std::slice::from_raw_parts_mut(dst.0.add(r.dst_offset), r.len) };
    let mut done = 0;
    while done < r.len {
        let n = file.read_at(&mut buf[done..], r.file_offset + done as u64)?;
        if n == 0 {
            // The aligned read ran past the end of the file: the tail is padding.
            break;
        }
        done += n;
    }
    if !direct {
        // Keep the slow tier slow: drop what this read put in the page cache.
        // SAFETY: plain syscall on an open descriptor.
        unsafe {
            libc::posix_fadvise(
                std::os::fd::AsRawFd::as_raw_fd(file),
                r.file_offset as libc::off_t,
                r.len as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            );
        }
    }
    Ok(())
}

/// `len` zeroed bytes rounded up to whole [`IO_ALIGN`] blocks and aligned to one, for `O_DIRECT`
/// reads. Aborts like any allocation when memory runs out.
pub fn io_buffer(len: usize) -> AlignedBuf {
    let len = len.max(1).next_multiple_of(IO_ALIGN);
    AlignedBuf::zeroed(len, IO_ALIGN).unwrap_or_else(|| {
        std::alloc::handle_alloc_error(std::alloc::Layout::from_size_align(len, IO_ALIGN).expect("valid layout"))
    })
}

/// The aligned reads that bring byte ranges `[start, end)` of the file into one buffer, and where
/// each range lands in it. Ranges closer than `merge_gap` share a read.
pub fn plan_reads(ranges: &[(u64, u64)], merge_gap: u64) -> (Vec<Read>, Vec<usize>, usize) {
    let a = IO_ALIGN as u64;
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&i| ranges[i].0);
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for &i in &order {
        let (s, e) = ranges[i];
        let (s, e) = (s / a * a, e.div_ceil(a) * a);
        match spans.last_mut() {
            Some(last) if s <= last.1 + merge_gap => last.1 = last.1.max(e),
            _ => spans.push((s, e)),
        }
    }
    let mut reads = Vec::new();
    let mut at = 0usize;
    for &(s, e) in &spans {
        reads.push(Read { file_offset: s, len: (e - s) as usize, dst_offset: at });
        at += (e - s) as usize;
    }
    let places = ranges
        .iter()
        .map(|&(s, _)| {
            let r = reads.iter().find(|r| r.file_offset <= s && s < r.file_offset + r.len as u64).expect("covered");
            r.dst_offset + (s - r.file_offset) as usize
        })
        .collect();
    (reads, places, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_aligned_merged_and_cover_every_range() {
        let ranges = [(5000, 9000), (9100, 20000), (100_000, 100_064)];
        let (reads, places, total) = plan_reads(&ranges, 0);
        assert_eq!(reads.len(), 2);
        for r in &reads {
            assert_eq!(r.file_offset % 4096, 0);
            assert_eq!(r.len % 4096, 0);
        }
        assert_eq!(reads[0], Read { file_offset: 4096, len: 20480 - 4096, dst_offset: 0 });
        assert_eq!(places[0], 5000 - 4096);
        assert_eq!(places[1], 9100 - 4096);
        assert_eq!(places[2], reads[1].dst_offset + (100_000 - 98_304));
        assert_eq!(total, reads.iter().map(|r| r.len).sum::<usize>());
    }

    #[test]
    fn a_cancelled_job_never_writes_after_the_job_that_replaced_it() {
        let dir = std::env::temp_dir().join(format!("kiln-loader-cancel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("data.bin");
        let len = 4 * CHUNK;
        let data: Vec<u8> = (0..2 * len).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let mut loader = Loader::new(&path, true).unwrap();
        let slot = io_buffer(len);
        for round in 0..20 {
            // A long prefetch into the slot, then the slot given to another range.
            let old = loader.submit(slot.as_ptr(), vec![Read { file_offset: 0, len, dst_offset: 0 }], false);
            if round % 2 == 1 {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            loader.cancel(old);
            let new = loader.submit(slot.as_ptr(), vec![Read { file_offset: len as u64, len, dst_offset: 0 }], true);
            loader.wait(new).unwrap();
            // Anything left of the old job would run before this one.
            let mut probe = io_buffer(IO_ALIGN);
            let flush =
                loader.submit(probe.as_ptr(), vec![Read { file_offset: 0, len: IO_ALIGN, dst_offset: 0 }], false);
            loader.wait(flush).unwrap();
            // SAFETY: no job targets the slot any more.
            let got = unsafe { std::slice::from_raw_parts(slot.as_ptr(), len) };
            assert!(got == &data[len..], "round {round}: the cancelled job overwrote the slot");
            assert_eq!(&probe.as_mut_slice()[..16], &data[..16]);
        }
        drop(loader);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn loader_reads_the_file_in_priority_order() {
        let dir = std::env::temp_dir().join(format!("kiln-loader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("data.bin");
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let mut loader = Loader::new(&path, true).unwrap();
        let (reads, places, total) = plan_reads(&[(1000, 9000), (30_000, 39_999)], 0);
        let mut a = io_buffer(total);
        let mut b = io_buffer(total);
        let ta = loader.submit(a.as_ptr(), reads.clone(), false);
        let tb = loader.submit(b.as_ptr(), reads.clone(), true);
        loader.wait(tb).unwrap();
        loader.wait(ta).unwrap();
        for buf in [&mut a, &mut b] {
            let s = buf.as_mut_slice();
            assert_eq!(&s[places[0]..places[0] + 8000], &data[1000..9000]);
            assert_eq!(&s[places[1]..places[1] + 9999], &data[30_000..39_999]);
        }
        drop(loader);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
