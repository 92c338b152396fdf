//! Reading `weights.safetensors`: the file is memory-mapped once and tensors are byte ranges of it.

use crate::error::{Result, RuntimeError};
use memmap2::Mmap;
use std::collections::HashMap;
use std::path::Path;

pub struct WeightFile {
    path: std::path::PathBuf,
    map: Mmap,
    /// Byte range of each tensor within the map.
    tensors: HashMap<String, (usize, usize)>,
}

fn bad(path: &Path, msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Artifact(format!("{}: {}", path.display(), msg.into()))
}

impl WeightFile {
    pub fn open(path: &Path) -> Result<WeightFile> {
        let file = std::fs::File::open(path).map_err(|e| bad(path, e.to_string()))?;
        // SAFETY: the artifact is not modified while it runs (documented); a concurrent writer
        // would be the user's error, as with any mmapped model file.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| bad(path, e.to_string()))?;
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
