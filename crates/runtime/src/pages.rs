//! Anonymous memory on transparent huge pages, for data streamed once per token: a 4 KiB page
//! costs a TLB miss every 64 cache lines, which on the development VM took a third off what one
//! core can read (see docs/bench.md).

/// A zeroed anonymous map of `len` bytes, advised for transparent huge pages (Linux; a kernel
/// that does not offer them keeps 4 KiB pages, and the advice is all that is lost).
pub fn huge_page_map(len: usize) -> std::io::Result<memmap2::MmapMut> {
    let map = memmap2::MmapMut::map_anon(len.max(1))?;
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage);
    Ok(map)
}
