//! Reading `weights.safetensors`: the file is memory-mapped once and tensors are byte ranges of it.

use crate::error::{Result, RuntimeError};
use memmap2::Mmap;
use std::collections::HashMap;
use std::path::Path;

pub struct WeightFile {
    path: std::path::PathBuf,
    map: Weights,
    /// Byte range of each tensor within the map.
    tensors: HashMap<String, (usize, usize)>,
}

/// Where the weight bytes live: the mapped file, or a private copy ([`WeightFile::make_resident`]).
enum Weights {
    File(Mmap),
    Copy(memmap2::MmapMut),
}

impl std::ops::Deref for Weights {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Weights::File(m) => m,
            Weights::Copy(m) => m,
        }
    }
}

fn bad(path: &Path, msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Artifact(format!("{}: {}", path.display(), msg.into()))
}

impl WeightFile {
    pub fn open(path: &Path) -> Result<WeightFile> {
        let file = std::fs::File::open(path).map_err(|e| bad(path, e.to_string()))?;
        // SAFETY: the artifact is not modified while it runs (documented); a concurrent writer
        // would be the user's error, as with any mmapped model file.
        let map = Weights::File(unsafe { Mmap::map(&file) }.map_err(|e| bad(path, e.to_string()))?);
        if map.len() < 8 {
            return Err(bad(path, "too short for a safetensors header"));
        }
        let n = u64::from_le_bytes(map[..8].try_into().expect("8 bytes")) as usize;
        let header = map.get(8..8usize.saturating_add(n)).ok_or_else(|| bad(path, "header runs past the end"))?;
        let v: serde_json::Value =
            serde_json::from_slice(header).map_err(|e| bad(path, format!("header is not JSON: {e}")))?;
        let obj = v.as_object().ok_or_else(|| bad(path, "header is not an object"))?;
        let base = 8 + n;
        let mut tensors = HashMap::new();
        for (name, t) in obj {
            if name == "__metadata__" {
                continue;
            }
            let off = t["data_offsets"]
                .as_array()
                .filter(|a| a.len() == 2)
                .ok_or_else(|| bad(path, format!("tensor '{name}' has no data_offsets")))?;
            let (b, e) = (off[0].as_u64().unwrap_or(u64::MAX) as usize, off[1].as_u64().unwrap_or(0) as usize);
            if b > e || base + e > map.len() {
                return Err(bad(path, format!("tensor '{name}' lies outside the file")));
            }
            tensors.insert(name.clone(), (base + b, base + e));
        }
        Ok(WeightFile { path: path.to_path_buf(), map, tensors })
    }

    /// Reads the whole file into anonymous memory on transparent huge pages and serves the
    /// tensors from there (raw pointers to them taken before are invalidated).
    ///
    /// Decoding streams every weight once per token, and how fast one core can do that depends on
    /// the pages: Linux maps a file's page cache with 4 KiB pages unless it happened to build 2 MiB
    /// folios — for a freshly written file, such as an artifact compiled a moment ago, only a part
    /// of it (112–237 of SmolLM2's 538 MB in `FilePmdMapped`) — and
    /// 4 KiB pages cost a TLB miss every 64 cache lines. Measured on SmolLM2 f32, one thread:
    /// 18–22 tok/s from a just-compiled artifact's mapping, 26 from the copy (and from a mapping
    /// whose page cache Linux had built from 2 MiB folios). The copy costs load time (zeroing
    /// huge pages: 1.1–1.8 s for 538 MB on the development VM, 0.5 s with 4 KiB pages). The file
    /// is read with `pread`, so its page cache never counts towards the process's memory.
    pub fn make_resident(&mut self) -> Result<()> {
        if matches!(self.map, Weights::Copy(_)) {
            return Ok(());
        }
        let path = self.path.clone();
        let mut copy = crate::pages::huge_page_map(self.map.len()).map_err(|e| bad(&path, e.to_string()))?;
        let file = std::fs::File::open(&path).map_err(|e| bad(&path, e.to_string()))?;
        const CHUNK: usize = 64 << 20;
        for (i, chunk) in copy[..self.map.len()].chunks_mut(CHUNK).enumerate() {
            read_exact_at(&file, chunk, (i * CHUNK) as u64).map_err(|e| bad(&path, e.to_string()))?;
        }
        self.map = Weights::Copy(copy);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A tensor's byte range in the file.
    pub fn range(&self, name: &str) -> Option<(u64, u64)> {
        self.tensors.get(name).map(|&(b, e)| (b as u64, e as u64))
    }

    /// A tensor's bytes.
    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.tensors.get(name).map(|&(b, e)| &self.map[b..e])
    }
}

#[cfg(unix)]
fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(buf)
}
