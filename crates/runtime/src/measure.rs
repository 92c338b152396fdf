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

/// [`sum_words`] with AVX2 loads and software prefetch, as a tuned STREAM-style read does (the
/// `kiln` binary is built for baseline x86-64, whose SSE2 loads do not saturate memory).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_words_avx2(words: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_si256(); 4];
    let chunks = words.len() / 16;
    let p = words.as_ptr();
    for i in 0..chunks {
        let base = p.add(i * 16);
        _mm_prefetch::<_MM_HINT_T1>(base.add(2048) as *const i8);
        for (j, a) in acc.iter_mut().enumerate() {
            *a = _mm256_add_epi64(*a, _mm256_loadu_si256(base.add(4 * j) as *const __m256i));
        }
    }
    let mut lanes = [0u64; 4];
    let total = _mm256_add_epi64(_mm256_add_epi64(acc[0], acc[1]), _mm256_add_epi64(acc[2], acc[3]));
    _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, total);
    let tail = sum_words(&words[chunks * 16..]);
    lanes.iter().fold(tail, |a, &w| a.wrapping_add(w))
}

/// [`sum_words_avx2`] with 512-bit loads.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sum_words_avx512(words: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_si512(); 4];
    let chunks = words.len() / 32;
    let p = words.as_ptr();
    for i in 0..chunks {
        let base = p.add(i * 32);
        // Every line of the 256 bytes, 2 KiB ahead (the best of 0–8 KiB measured here).
        for j in 0..4 {
            _mm_prefetch::<_MM_HINT_T1>(base.add(256 + 8 * j) as *const i8);
        }
        for (j, a) in acc.iter_mut().enumerate() {
            *a = _mm512_add_epi64(*a, _mm512_loadu_si512(base.add(8 * j) as *const __m512i));
        }
    }
    let total = _mm512_add_epi64(_mm512_add_epi64(acc[0], acc[1]), _mm512_add_epi64(acc[2], acc[3]));
    let tail = sum_words(&words[chunks * 32..]);
    tail.wrapping_add(_mm512_reduce_add_epi64(total) as u64)
}

fn sum_fast(words: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is present (checked above).
        return unsafe { sum_words_avx512(words) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked above).
        return unsafe { sum_words_avx2(words) };
    }
    sum_words(words)
}

/// Read bandwidth in bytes/s over a `bytes`-sized buffer with `threads` threads: the best of
/// `repeat` full passes after one warm-up pass.
pub fn read_bandwidth(bytes: usize, threads: usize, repeat: usize) -> f64 {
    // On huge pages, as the weights are with `--huge-pages` or a page cache of 2 MiB folios:
    // 4 KiB pages would understate the bandwidth by a third.
    let mut map = crate::pages::huge_page_map(bytes).ok();
    let mut fallback = Vec::new();
    let words: &mut [u64] = match map.as_mut() {
        // SAFETY: the map is page-aligned (so u64-aligned), at least `bytes` long, and any bytes
        // are valid u64s.
        Some(m) => unsafe { std::slice::from_raw_parts_mut(m.as_mut_ptr() as *mut u64, bytes / 8) },
        None => {
            fallback.resize(bytes / 8, 0u64);
            &mut fallback
        }
    };
    for (i, w) in words.iter_mut().enumerate() {
        *w = i as u64;
    }
    let words: &[u64] = words;
    let threads = threads.max(1);
    let per = words.len().div_ceil(threads);
    let mut best = f64::MAX;
    for r in 0..=repeat.max(1) {
        let t = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = words.chunks(per).map(|part| s.spawn(move || sum_fast(part))).collect();
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
