//! Running a compiled CUDA artifact (`kernels.ptx`) on an NVIDIA GPU: [`CudaModel`] runs the same
//! program as [`crate::cpu::CpuModel`], with the same semantics, on one device.
//!
//! Everything lives on the device: activation buffers allocated once at their upper bounds, the
//! weights uploaded once at load, the KV cache. The host keeps only the symbols (token count,
//! data-dependent counts, cache lengths), which become kernel parameters. Work goes through one
//! non-default stream; the host waits only where it must read a value back (a step that binds a
//! symbol, the logits). One-token calls of dense models are replayed as a CUDA graph
//! (the `graph` module) to remove the per-kernel launch overhead.
//!
//! Nothing here calls the driver before [`crate::device::cuda_available`] has checked that
//! `libcuda.so` exists: cudarc panics on any driver call without it.

mod compat;
mod context;
mod driver;
mod graph;
mod kv;
mod launch;
mod memory;
mod module;
mod params;
mod timing;

use std::collections::HashMap;
use std::path::Path;

use cudarc::driver::sys::CUfunction;

use crate::artifact::manifest::{BufArg, ElemType, Launch, NamedBuffer, Storage, Symbol};
use crate::artifact::{Artifact, Manifest};
use crate::cpu::KernelProfile;
use crate::error::{Result, RuntimeError};
use context::Gpu;
use driver::cuda_err;
use graph::DecodeGraph;
use kv::KvSlot;
use launch::KernelCall;
use memory::{i32_bytes, read_bytes, write_bytes, DeviceBuffer};
use module::Module;
use timing::Timer;

fn exec_err(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Execution(msg.into())
}

/// A compiled artifact loaded onto one GPU.
pub struct CudaModel {
    art: Artifact,
    /// The loaded kernel of each manifest kernel, by index.
    funcs: Vec<CUfunction>,
    launches: Vec<Launch>,
    /// Owners of the activation and weight memory (None for aliases); only `bases` is read.
    _owned: Vec<Option<DeviceBuffer>>,
    /// Split-K scratch memory (see [`Launch`]), and its address (0 when no kernel takes it).
    _scratch: Option<DeviceBuffer>,
    scratch_addr: u64,
    /// Each buffer's device address (0 for aliases, resolved per call by [`params::buffer_addr`]).
    bases: Vec<u64>,
    caches: HashMap<usize, KvSlot>,
    symbols: Vec<i64>,
    /// Each symbol's upper bound, which the buffers were sized for.
    maxima: Vec<i64>,
    position: usize,
    tokens_input: usize,
    positions_input: usize,
    logits_output: usize,
    weight_bytes: usize,
    /// Whether a (non-speculative) step binds a symbol: its value is read back mid-call, which a
    /// graph replay cannot do.
    has_binds: bool,
    /// Graph replay of one-token calls wanted ([`CudaModel::set_graphs`]).
    graphs: bool,
    /// A graph call failed once: plain launches from then on.
    graph_broken: bool,
    graph: Option<DecodeGraph>,
    profile: Option<Vec<KernelProfile>>,
    timer: Option<Timer>,
    /// The launches of the call in progress, kept to reuse their allocation.
    calls: Vec<KernelCall>,
    /// Owner of the kernels in `funcs` (unloaded after the graph that uses them).
    _module: Module,
    /// Last: everything above lives in its context and is freed before it is released.
    gpu: Gpu,
}

impl CudaModel {
    /// Loads and checks the artifact in `dir` onto GPU `ordinal`: JIT-loads `kernels.ptx`,
    /// allocates the buffers and KV cache, and uploads the weights.
    ///
    /// Errors (never panics): [`RuntimeError::NoCudaDriver`] / [`RuntimeError::NoCudaDevice`]
    /// without a driver or GPU, [`RuntimeError::Artifact`] for a CPU artifact, an SM the GPU cannot
    /// run, a kernel without launch geometry or missing from the PTX, [`RuntimeError::Cuda`] for
    /// PTX the driver rejects (with its JIT log) or a failing allocation.
    pub fn load(dir: &Path, ordinal: usize) -> Result<CudaModel> {
        // First, before any driver call (see the module docs).
        let info = crate::device::cuda_available()?;
        let dev = info.devices.get(ordinal).ok_or_else(|| RuntimeError::Cuda {
            call: "cuDeviceGet",
            message: format!(
                "there is no GPU {ordinal}: the driver sees {} ({})",
                info.devices.len(),
                info.devices.iter().map(|d| format!("{}: {}", d.ordinal, d.name)).collect::<Vec<_>>().join(", ")
            ),
        })?;
        let art = Artifact::open(dir)?;
        let m = &art.manifest;
        compat::check_cuda(dir, m)?;
        let ptx_path = dir.join("kernels.ptx");
        compat::check_sm(&ptx_path, m, &compat::GpuDesc { ordinal, name: &dev.name, sm: dev.sm() })?;
        let launches = compat::launches(dir, m)?;
        if let Some((i, s)) = m.steps.iter().enumerate().find(|(_, s)| s.kernel >= m.kernels.len()) {
            return Err(RuntimeError::Artifact(format!(
                "{}: step {i} ('{}') calls kernel {}, but there are {}",
                dir.join("manifest.json").display(),
                s.label,
                s.kernel,
                m.kernels.len()
            )));
        }
        let ptx = std::fs::read(&ptx_path)
            .map_err(|e| RuntimeError::Artifact(format!("{}: cannot read: {e}", ptx_path.display())))?;
        let name = dev.name.clone();
        driver::no_panic("loading the model", move || Self::load_on(art, launches, &ptx, &ptx_path, ordinal, &name))
    }

    /// The driver part of [`CudaModel::load`], after every check that needs no GPU.
    fn load_on(
        art: Artifact,
        launches: Vec<Launch>,
        ptx: &[u8],
        ptx_path: &Path,
        ordinal: usize,
        name: &str,
    ) -> Result<CudaModel> {
        // Locals drop in reverse order on an error, so `gpu` (the context) goes last.
        let gpu = Gpu::open(ordinal, name)?;
        let stream = gpu.stream;
        let module = Module::load_ptx(ptx_path, ptx)?;
        let m = &art.manifest;
        let funcs = m.kernels.iter().map(|k| module.function(ptx_path, &k.symbol)).collect::<Result<Vec<_>>>()?;
        // Upper bounds of every symbol, to size activations once (as the CPU executor does).
        let maxima: Vec<i64> = m
            .symbols
            .iter()
            .map(|s| match s {
                Symbol::Tokens { .. } | Symbol::Dynamic { .. } => m.max_tokens as i64,
                Symbol::CacheLen { .. } => m.max_context as i64,
            })
            .collect();
        let mut owned = Vec::with_capacity(m.buffers.len());
        let mut weight_bytes = 0;
        for (i, b) in m.buffers.iter().enumerate() {
            owned.push(match &b.storage {
                Storage::Activation => {
                    let bytes = b.elems.eval(&maxima).max(1) as usize * b.elem.size();
                    Some(DeviceBuffer::zeroed(bytes, stream, &format!("buffer {i} '{}'", b.name))?)
                }
                Storage::Weight { tensor } => {
                    let bytes = art.weights.bytes(tensor).ok_or_else(|| {
                        RuntimeError::Artifact(format!(
                            "{}: weights lack tensor '{tensor}' (buffer {i})",
                            art.dir.display()
                        ))
                    })?;
                    let want = b.elems.eval(&[]) as usize * b.elem.size();
                    if bytes.len() != want {
                        return Err(RuntimeError::Artifact(format!(
                            "{}: weight '{tensor}' has {} bytes, the plan expects {want}",
                            art.dir.display(),
                            bytes.len()
                        )));
                    }
                    weight_bytes += want;
                    Some(DeviceBuffer::upload(bytes, stream, &format!("weight '{tensor}'"))?)
                }
                Storage::Alias { .. } => None,
            });
        }
        let bases = owned.iter().map(|b| b.as_ref().map_or(0, DeviceBuffer::addr)).collect();
        // Split-K scratch for the largest call of any kernel that takes it (zeroed; the kernels
        // leave their counters zeroed for the next call).
        let scratch_bytes =
            m.steps.iter().map(|st| launches[st.kernel].scratch_bytes(st.tasks.eval(&maxima))).max().unwrap_or(0);
        let scratch = match scratch_bytes {
            0 => None,
            n => Some(DeviceBuffer::zeroed(n, stream, "split-K scratch")?),
        };
        let mut caches = HashMap::new();
        for s in &m.kv_slots {
            caches.insert(s.slot, KvSlot::new(s, m.max_context, &m.symbols, stream)?);
        }
        let find =
            |list: &[NamedBuffer], what: &str| {
                list.iter().find(|b| b.name == what).map(|b| b.buffer).filter(|&b| b < m.buffers.len()).ok_or_else(
                    || RuntimeError::Artifact(format!("{}: the program has no '{what}'", art.dir.display())),
                )
            };
        let tokens_input = find(&m.inputs, "tokens")?;
        let positions_input = find(&m.inputs, "positions")?;
        let logits_output = find(&m.outputs, "logits")?;
        let has_binds = m.steps.iter().any(|s| s.binds.is_some() && s.speculative.is_none());
        gpu.sync("initializing the model's memory")?;
        tracing::debug!(
            gpu = ordinal,
            name,
            weight_bytes,
            kernels = funcs.len(),
            "loaded {} onto the GPU",
            art.dir.display()
        );
        Ok(CudaModel {
            funcs,
            launches,
            scratch_addr: scratch.as_ref().map_or(0, DeviceBuffer::addr),
            _scratch: scratch,
            _owned: owned,
            bases,
            caches,
            symbols: vec![0; m.symbols.len()],
            maxima,
            position: 0,
            tokens_input,
            positions_input,
            logits_output,
            weight_bytes,
            has_binds,
            graphs: true,
            graph_broken: false,
            graph: None,
            profile: None,
            timer: None,
            calls: Vec::new(),
            _module: module,
            gpu,
            art,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.art.manifest
    }

    /// The GPU's name, as the driver reports it.
    pub fn device_name(&self) -> &str {
        &self.gpu.name
    }

    /// Bytes of weights uploaded to the GPU.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// Collects per-kernel-family device times from now on. Every launch is then timed with
    /// events and waited for, and graphs are not used, so calls run slower.
    pub fn enable_profile(&mut self) {
        self.profile = Some(Vec::new());
    }

    pub fn profile(&self) -> Option<&[KernelProfile]> {
        self.profile.as_deref()
    }

    /// Whether one-token calls replay a CUDA graph (on by default; off launches every kernel).
    pub fn set_graphs(&mut self, on: bool) {
        self.graphs = on;
        if !on && self.graph.is_some() {
            // Destroying the graph is a driver call in the model's context.
            if let Err(e) = self.gpu.make_current() {
                tracing::warn!("{e}");
            }
            self.graph = None;
        }
    }

    /// Tokens processed so far.
    pub fn position(&self) -> usize {
        self.position
    }

    pub fn reset(&mut self) {
        for c in self.caches.values_mut() {
            c.len = 0;
        }
        self.position = 0;
    }

    /// Forgets every token at position `len` or later (speculative decoding rolls back this way).
    ///
    /// The cache positions live on the device and are read back; should that fail (the device is
    /// in an error state, which the next call reports), entry `i` is assumed to hold position `i`.
    pub fn truncate(&mut self, len: usize) {
        let current = self.gpu.make_current();
        for (slot, c) in self.caches.iter_mut() {
            if c.len == 0 {
                continue;
            }
            let positions = current
                .as_ref()
                .map_err(|e| e.to_string())
                .and_then(|()| c.read_positions(self.gpu.stream).map_err(|e| e.to_string()));
            c.len = match positions {
                Ok(p) => kv::kept(&p, len),
                Err(e) => {
                    tracing::warn!(slot, "truncating the KV cache without its positions: {e}");
                    c.len.min(len)
                }
            };
        }
        self.position = self.position.min(len);
    }

    /// Device memory bandwidth in bytes/s: the best of `repeats` timed device-to-device copies of
    /// `bytes` bytes, counting bytes read plus bytes written.
    pub fn measure_bandwidth(&self, bytes: usize, repeats: usize) -> Result<f64> {
        self.gpu.make_current()?;
        timing::bandwidth(self.gpu.stream, bytes, repeats)
    }

    /// Feeds tokens at the next positions (in chunks of the artifact's `max_tokens`) and returns
    /// the logits of the last one.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let m = &self.art.manifest;
        crate::artifact::check_feed(m, self.position, tokens)?;
        self.gpu.make_current()?;
        let chunk = m.max_tokens.max(1);
        let mut logits = Vec::new();
        for part in tokens.chunks(chunk) {
            logits = self.call(part)?;
        }
        Ok(logits)
    }

    /// `step N 'label' (kernel symbol)`, for errors.
    fn step_desc(&self, si: usize) -> String {
        let step = &self.art.manifest.steps[si];
        format!("step {si} '{}' (kernel {})", step.label, self.art.manifest.kernels[step.kernel].symbol)
    }

    fn cache(&self, slot: usize) -> Result<&KvSlot> {
        self.caches
            .get(&slot)
            .ok_or_else(|| exec_err(format!("the program uses KV-cache slot {slot}, which it does not declare")))
    }

    /// Buffer `id`'s device address under the current symbols.
    fn addr(&self, id: usize) -> Result<u64> {
        params::buffer_addr(&self.art.manifest.buffers, &self.bases, &self.symbols, id)
    }

    /// A kernel argument's device address.
    fn arg_addr(&self, a: &BufArg) -> Result<u64> {
        Ok(match a {
            BufArg::Buffer { id } => self.addr(*id)?,
            BufArg::CacheKeys { slot } => self.cache(*slot)?.keys.addr(),
            BufArg::CacheValues { slot } => self.cache(*slot)?.values.addr(),
            BufArg::CachePositions { slot } => self.cache(*slot)?.positions.addr(),
            BufArg::Null => 0,
        })
    }

    /// One chunk of at most `max_tokens` tokens.
    fn call(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let t = tokens.len();
        let stream = self.gpu.stream;
        for c in self.caches.values_mut() {
            if c.scratch {
                c.len = 0;
            }
        }
        for (i, s) in self.art.manifest.symbols.iter().enumerate() {
            self.symbols[i] = match s {
                Symbol::Tokens { .. } => t as i64,
                Symbol::Dynamic { .. } => 0,
                Symbol::CacheLen { slot } => self.cache(*slot)?.len as i64,
            };
        }
        let ids = i32_bytes(tokens.iter().map(|&id| id as i32));
        write_bytes(self.addr(self.tokens_input)?, &ids, stream, "writing the tokens input")?;
        let positions = i32_bytes((0..t).map(|i| (self.position + i) as i32));
        write_bytes(self.addr(self.positions_input)?, &positions, stream, "writing the positions input")?;

        let use_graph = t == 1 && self.graphs && !self.graph_broken && !self.has_binds && self.profile.is_none();
        let mut calls = std::mem::take(&mut self.calls);
        calls.clear();
        let result = self.run_steps(use_graph, &mut calls);
        if result.is_ok() && use_graph && !calls.is_empty() {
            if let Err(e) = self.replay(&calls) {
                tracing::warn!("CUDA graph replay failed, launching kernels one by one from now on: {e}");
                self.graph_broken = true;
                self.graph = None;
                for call in calls.iter_mut() {
                    let si = call.step;
                    call.launch(stream).map_err(|e| cuda_err("cuLaunchKernel", self.step_desc(si), e))?;
                }
            }
        }
        self.calls = calls;
        result?;
        self.position += t;
        self.read_logits()
    }

    /// Runs (or, for a graph, collects into `calls`) the program's steps in order, binding
    /// symbols and growing caches as the CPU executor does.
    fn run_steps(&mut self, use_graph: bool, calls: &mut Vec<KernelCall>) -> Result<()> {
        for si in 0..self.art.manifest.steps.len() {
            let step = &self.art.manifest.steps[si];
            // Speculative router copies only feed expert offloading, which CUDA does not do.
            if step.speculative.is_some() {
                continue;
            }
            let (kernel, binds, appends) = (step.kernel, step.binds, step.appends_to);
            let added = step.dims.first().map(|d| d.eval(&self.symbols));
            let tasks = step.tasks.eval(&self.symbols);
            let launch = self.launches[kernel];
            let grid = launch.grid(tasks);
            if grid > 0 {
                let mut values = Vec::with_capacity(1 + step.dims.len() + step.bufs.len());
                params::pack(step, tasks, &self.symbols, |a| self.arg_addr(a), &mut values)?;
                if launch.scratch_per_task > 0 {
                    values.push(self.scratch_addr);
                }
                let mut call = KernelCall {
                    step: si,
                    func: self.funcs[kernel],
                    grid,
                    block: launch.block,
                    shared_bytes: launch.shared_bytes,
                    params: values,
                };
                if use_graph {
                    calls.push(call);
                } else {
                    self.launch_now(&mut call)?;
                }
            }
            if let Some(sym) = binds {
                self.bind(si, sym)?;
            }
            if let Some(slot) = appends {
                let added = added.ok_or_else(|| {
                    exec_err(format!("{} appends to the KV cache but has no dims", self.step_desc(si)))
                })?;
                let capacity = self.art.manifest.max_context;
                let c = self.caches.get_mut(&slot).ok_or_else(|| {
                    exec_err(format!("the program uses KV-cache slot {slot}, which it does not declare"))
                })?;
                c.len += added.max(0) as usize;
                if c.len > capacity {
                    return Err(exec_err(format!("KV-cache slot {slot} overflowed its {capacity} entries")));
                }
                if let Some(i) = c.len_symbol {
                    self.symbols[i] = c.len as i64;
                }
            }
        }
        Ok(())
    }

    /// Launches one kernel now (timing it when profiling).
    fn launch_now(&mut self, call: &mut KernelCall) -> Result<()> {
        let stream = self.gpu.stream;
        let si = call.step;
        if self.profile.is_none() {
            return call.launch(stream).map_err(|e| cuda_err("cuLaunchKernel", self.step_desc(si), e));
        }
        if self.timer.is_none() {
            self.timer = Some(Timer::new()?);
        }
        let desc = self.step_desc(si);
        let timer = self.timer.as_ref().ok_or_else(|| exec_err("no profiling timer"))?;
        timer.start(stream)?;
        call.launch(stream).map_err(|e| cuda_err("cuLaunchKernel", &desc, e))?;
        // Waiting for each kernel also pins a failing kernel to its step.
        let secs = timer.stop(stream, &desc)?;
        let kind = &self.art.manifest.kernels[self.art.manifest.steps[si].kernel].kind;
        if let Some(profile) = self.profile.as_mut() {
            timing::record(profile, kind, secs);
        }
        Ok(())
    }

    /// After step `si`: reads the i64 its kernel wrote to its last buffer and binds `sym` to it.
    fn bind(&mut self, si: usize, sym: usize) -> Result<()> {
        let desc = self.step_desc(si);
        let last = self.art.manifest.steps[si].bufs.last();
        let src = match last {
            Some(a) if *a != BufArg::Null => self.arg_addr(a)?,
            _ => return Err(exec_err(format!("{desc} binds a symbol but has no count buffer"))),
        };
        let mut bytes = [0u8; 8];
        // Synchronous: later steps' sizes depend on it. A failing kernel of this call (or
        // earlier) surfaces here.
        read_bytes(src, &mut bytes, self.gpu.stream, format!("reading the count of {desc}").as_str())?;
        let value = i64::from_ne_bytes(bytes);
        let max = *self
            .maxima
            .get(sym)
            .ok_or_else(|| exec_err(format!("{desc} binds symbol {sym}, which does not exist")))?;
        // Buffers were sized for the upper bound: a larger count would run kernels past them.
        if !(0..=max).contains(&value) {
            return Err(exec_err(format!("{desc} counted {value}, outside 0..={max}")));
        }
        self.symbols[sym] = value;
        Ok(())
    }

    /// Launches `calls` as the decode graph, building or patching it first.
    fn replay(&mut self, calls: &[KernelCall]) -> Result<()> {
        let stream = self.gpu.stream;
        driver::no_panic("cuGraph", || {
            match self.graph.as_mut() {
                Some(g) if g.fits(calls) => {
                    g.update(calls)?;
                }
                _ => {
                    // Another sequence of launches (a step whose grid became 0, say): rebuild.
                    self.graph = None;
                    self.graph = Some(DecodeGraph::build(calls)?);
                    tracing::debug!(nodes = calls.len(), "built the decode graph");
                }
            }
            match &self.graph {
                Some(g) => g.launch(stream),
                None => Err(exec_err("no decode graph")),
            }
        })
    }

    /// The last `vocab` floats of the logits output (waits for the call to finish).
    fn read_logits(&self) -> Result<Vec<f32>> {
        let out = &self.art.manifest.buffers[self.logits_output];
        if out.elem != ElemType::F32 {
            return Err(exec_err("the logits output is not f32"));
        }
        let n = out.elems.eval(&self.symbols).max(0) as usize;
        let take = self.art.manifest.model.vocab_size.min(n);
        let src = self.addr(self.logits_output)? + ((n - take) * 4) as u64;
        let mut bytes = vec![0u8; take * 4];
        let last = self.art.manifest.steps.len().checked_sub(1).map(|s| self.step_desc(s)).unwrap_or_default();
        // Kernel launches are asynchronous: a failing kernel's error surfaces at this wait.
        read_bytes(
            src,
            &mut bytes,
            self.gpu.stream,
            &format!(
                "running the program up to {last} and reading the logits (enable profiling to find a failing step)"
            ),
        )?;
        Ok(bytes.chunks_exact(4).map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]])).collect())
    }
}

impl Drop for CudaModel {
    fn drop(&mut self) {
        // The fields free device memory, the graph, the events and the module next, in the model's
        // context: make it current on this thread and let queued work finish first.
        if let Err(e) = self.gpu.make_current().and_then(|()| self.gpu.sync("finishing before unloading")) {
            tracing::warn!("{e}");
        }
    }
}

impl crate::generate::DecodeModel for CudaModel {
    fn forward(&mut self, tokens: &[u32]) -> std::result::Result<Vec<f32>, String> {
        CudaModel::forward(self, tokens).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without the NVIDIA driver, loading is a clean error that says so (cudarc
    /// would panic on the first driver call). With a driver, a missing directory is still an
    /// error.
    #[test]
    fn load_without_a_driver_is_an_error_not_a_panic() {
        let dir = std::env::temp_dir().join("kiln-cuda-test-no-such-artifact");
        let result = std::panic::catch_unwind(|| CudaModel::load(&dir, 0).map(|_| ()));
        let err = result.expect("CudaModel::load panicked").expect_err("loaded a missing artifact");
        if !crate::device::cuda_driver_present() {
            assert!(matches!(err, RuntimeError::NoCudaDriver), "{err:?}");
            assert!(err.to_string().contains("driver"), "{err}");
        }
    }
}
