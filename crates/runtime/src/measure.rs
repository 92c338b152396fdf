//! Machine measurements for benchmark reports: a STREAM-style memory read bandwidth and the
//! process's peak resident memory.

use std::time::Instant;

/// Sums a slice with independent accumulators, so the loop is bound by memory, not by additions.
fn sum_words(words: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let mut chunks = words.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            acc[i] = acc[i].wrapping_add(c[i]);
        }
    }
    let tail: u64 = chunks.remainder().iter().fold(0u64, |a, &w| a.wrapping_add(w));
    acc.iter().fold(tail, |a, &w| a.wrapping_add(w))
}

/// Read bandwidth in bytes/s over a `bytes`-sized buffer with `threads` threads: the best of
/// `repeat` full passes after one warm-up pass.
pub fn read_bandwidth(bytes: usize, threads: usize, repeat: usize) -> f64 {
    let words: Vec<u64> = (0..bytes / 8).map(|i| i as u64).collect();
    let threads = threads.max(1);
    let per = words.len().div_ceil(threads);
    let mut best = f64::MAX;
    for r in 0..=repeat.max(1) {
        let t = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = words.chunks(per).map(|part| s.spawn(move || sum_words(part))).collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).fold(0u64, |a, b| a.wrapping_add(b))
        });
        std::hint::black_box(total);
        if r > 0 {
            best = best.min(t.elapsed().as_secs_f64());
        }
    }
    (words.len() * 8) as f64 / best
}

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if known.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
