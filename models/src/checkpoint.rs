//! A Hugging Face model folder: `config.json` plus `model.safetensors` or shards listed in
//! `model.safetensors.index.json`. Files are memory-mapped; tensors are converted to f32 only when
//! asked for, one at a time. Every header offset is checked against the file size.

use crate::arch::parse_config;
use crate::config::read_json;
use crate::error::{ModelError, Result};
use crate::lower::{lower, LowerOptions};
use crate::spec::DecoderSpec;
use kiln_ir::{Graph, OpKind};
use memmap2::Mmap;
use safetensors::Dtype;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

struct Shard {
    path: PathBuf,
    mmap: Mmap,
    data_start: usize,
}

#[derive(Clone, Debug)]
pub struct TensorMeta {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    shard: usize,
    start: usize,
    end: usize,
}

pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: serde_json::Value,
    pub spec: DecoderSpec,
    shards: Vec<Shard>,
    tensors: HashMap<String, TensorMeta>,
}

impl Checkpoint {
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        if !dir.is_dir() {
            return Err(ModelError::config(dir, "not a model folder (expected config.json and *.safetensors)"));
        }
        let config_path = dir.join("config.json");
        let config = read_json(&config_path)?;
        let spec = parse_config(&config_path, &config)?;
        let files = shard_files(dir)?;
        let mut shards = Vec::new();
        let mut tensors = HashMap::new();
        for path in files {
            let (shard, metas) = open_shard(&path, shards.len())?;
            for (name, meta) in metas {
                tensors.insert(name, meta);
            }
            shards.push(shard);
        }
        tracing::info!(dir = %dir.display(), tensors = tensors.len(), shards = shards.len(), "opened checkpoint");
        Ok(Checkpoint { dir: dir.to_path_buf(), config, spec, shards, tensors })
    }

    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(|s| s.as_str())
    }

    pub fn meta(&self, name: &str) -> Option<&TensorMeta> {
        self.tensors.get(name)
    }

    fn shard_path(&self, name: &str) -> PathBuf {
        match self.tensors.get(name) {
            Some(m) => self.shards[m.shard].path.clone(),
            None => self.dir.clone(),
        }
    }

    fn tensor_err(&self, name: &str, msg: impl Into<String>) -> ModelError {
        ModelError::Tensor { file: self.shard_path(name), tensor: name.to_string(), msg: msg.into() }
    }

    /// A tensor converted to f32, with its shape.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let meta = self.tensors.get(name).ok_or_else(|| self.tensor_err(name, "tensor not found in the checkpoint"))?;
        let shard = &self.shards[meta.shard];
        let bytes = &shard.mmap[shard.data_start + meta.start..shard.data_start + meta.end];
        let data = to_f32(meta.dtype, bytes).map_err(|m| self.tensor_err(name, m))?;
        Ok((meta.shape.clone(), data))
    }

    /// The decode-step graph for this model.
    pub fn graph(&self, opts: &LowerOptions) -> Result<Graph> {
        let name = self.dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "model".into());
        let name: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect();
        Ok(lower(&self.spec, &name, opts)?)
    }

    /// Checks that every param of `graph` exists here with the declared shape and a float dtype, so
    /// problems surface before any compute, naming the tensor.
    pub fn check_graph(&self, graph: &Graph) -> Result<()> {
        self.check_graph_with(graph, &Default::default())
    }

    /// [`Checkpoint::check_graph`] where params named in `derived` (tensors passes made) are
    /// checked by the interpreter instead.
    pub fn check_graph_with(&self, graph: &Graph, derived: &kiln_ir::interp::DerivedWeights) -> Result<()> {
        for n in graph.node_ids() {
            let node = graph.node(n);
            if node.op != OpKind::Param {
                continue;
            }
            let name = node.attrs.str("name").unwrap_or_default();
            if derived.contains_key(name) {
                continue;
            }
            let meta =
                self.tensors.get(name).ok_or_else(|| self.tensor_err(name, "tensor not found in the checkpoint"))?;
            let want = node.ty.shape.eval(&|_| None).map_err(|e| self.tensor_err(name, e))?;
            if meta.shape != want {
                return Err(self.tensor_err(
                    name,
                    format!("shape {:?} does not match the config, which implies {want:?}", meta.shape),
                ));
            }
            if !matches!(meta.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                return Err(self
                    .tensor_err(name, format!("dtype {:?} is not supported (expected F32, F16 or BF16)", meta.dtype)));
            }
        }
        Ok(())
    }
}

/// The safetensors files of a folder: the shards named by the index, or model.safetensors, or
/// every *.safetensors file.
fn shard_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let v = read_json(&index)?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::config(&index, "missing object 'weight_map'"))?;
        let mut files: Vec<String> = Vec::new();
        for (tensor, f) in map {
            let f = f
                .as_str()
                .ok_or_else(|| ModelError::config(&index, format!("weight_map['{tensor}'] must be a file name")))?;
            if !files.iter().any(|x| x == f) {
                files.push(f.to_string());
            }
        }
        files.sort();
        return files
            .into_iter()
            .map(|f| {
                let p = dir.join(&f);
                if p.exists() {
                    Ok(p)
                } else {
                    Err(ModelError::config(&index, format!("shard '{f}' is listed but missing")))
                }
            })
            .collect();
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ModelError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ModelError::config(dir, "no *.safetensors files found"));
    }
    Ok(files)
}

fn open_shard(path: &Path, index: usize) -> Result<(Shard, BTreeMap<String, TensorMeta>)> {
    let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    // SAFETY: the file is opened read-only; Kiln never writes to checkpoints, and a concurrent
    // truncation by another process is outside what any mmap-based loader can defend against.
    let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
    let bad = |msg: String| ModelError::config(path, msg);
    if mmap.len() < 8 {
        return Err(bad(format!("truncated safetensors file ({} bytes, no header)", mmap.len())));
    }
    let header_len = u64::from_le_bytes(mmap[..8].try_into().unwrap());
    let data_start = 8u64.checked_add(header_len).filter(|&e| e <= mmap.len() as u64).ok_or_else(|| {
        bad(format!("header length {header_len} runs past the end of the file ({} bytes)", mmap.len()))
    })? as usize;
    let header: serde_json::Value =
        serde_json::from_slice(&mmap[8..data_start]).map_err(|e| bad(format!("invalid safetensors header: {e}")))?;
    let obj = header.as_object().ok_or_else(|| bad("safetensors header is not a JSON object".into()))?;
    let data_len = mmap.len() - data_start;
    let mut metas = BTreeMap::new();
    for (name, info) in obj {
        if name == "__metadata__" {
            continue;
        }
        let terr = |msg: String| ModelError::Tensor { file: path.to_path_buf(), tensor: name.clone(), msg };
        let dtype_s = info.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| terr("missing dtype".into()))?;
        let dtype: Dtype = serde_json::from_value(serde_json::Value::String(dtype_s.to_string()))
            .map_err(|_| terr(format!("unknown dtype '{dtype_s}'")))?;
        let shape: Vec<usize> = info
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|d| d.as_u64().map(|x| x as usize)).collect())
            .ok_or_else(|| terr("missing or invalid shape".into()))?;
        let offs: Vec<u64> = info
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|d| d.as_u64()).collect())
            .filter(|v: &Vec<u64>| v.len() == 2)
            .ok_or_else(|| terr("missing or invalid data_offsets".into()))?;
        let (start, end) = (offs[0] as usize, offs[1] as usize);
        if start > end || end > data_len {
            return Err(terr(format!(
                "data_offsets [{start}, {end}] run past the end of the data ({data_len} bytes): the file is truncated or corrupt"
            )));
        }
        let numel: usize = shape.iter().product();
        if numel.checked_mul(dtype.size()) != Some(end - start) {
            return Err(terr(format!("{} bytes of data do not hold {dtype:?}{shape:?}", end - start)));
        }
        metas.insert(name.clone(), TensorMeta { dtype, shape, shard: index, start, end });
    }
    Ok((Shard { path: path.to_path_buf(), mmap, data_start }, metas))
}

fn to_f32(dtype: Dtype, bytes: &[u8]) -> std::result::Result<Vec<f32>, String> {
    let words = |n: usize| bytes.chunks_exact(n);
    Ok(match dtype {
        Dtype::F32 => words(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
        Dtype::F16 => words(2).map(|b| half::f16::from_le_bytes(b.try_into().unwrap()).to_f32()).collect(),
        Dtype::BF16 => words(2).map(|b| half::bf16::from_le_bytes(b.try_into().unwrap()).to_f32()).collect(),
        other => return Err(format!("dtype {other:?} is not supported (expected F32, F16 or BF16)")),
    })
}
