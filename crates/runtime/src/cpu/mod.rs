//! Running a compiled artifact on the CPU: buffers planned by the compiler, the KV cache, kernel
//! calls from `kernels.so` split over a thread pool.

pub mod pool;

use crate::aligned::AlignedBuf;
use crate::artifact::manifest::{BufArg, ElemType, Storage, Symbol};
use crate::artifact::Artifact;
use crate::error::{Result, RuntimeError};
use crate::offload::{ExpertCache, OffloadConfig, Trace};
use pool::{KernelFn, Pool};
use std::collections::HashMap;
use std::path::Path;

/// One KV-cache slot: keys and values `[capacity, kv_heads, head_dim]`, positions `[capacity]`.
struct KvStore {
    /// Owners of the memory `ptrs` point into.
    _keys: AlignedBuf,
    _values: AlignedBuf,
    positions: Vec<i32>,
    /// Pointers to the three arrays, taken once (kernels write through them; the arrays are never
    /// resized).
    ptrs: [*mut u8; 3],
    len: usize,
    scratch: bool,
    /// The symbol holding `len` for the program, if any step reads it.
    len_symbol: Option<usize>,
}

/// A kernel of `kernels.so`: native CPU code, or (`kiln compile --target cuda-sim`) a CUDA kernel
/// compiled for the SIMT simulator, launched with its geometry.
#[derive(Clone, Copy)]
enum Kernel {
    Native(KernelFn),
    Simulated(crate::simt::SimFn, crate::artifact::manifest::Launch),
}

/// `bytes` of zeroed scratch memory for `what`, aligned for vector loads
/// ([`crate::aligned::alignment_for`]), or an error naming it.
fn scratch(bytes: usize, what: &str) -> Result<AlignedBuf> {
    AlignedBuf::zeroed(bytes, crate::aligned::alignment_for(bytes))
        .ok_or_else(|| RuntimeError::Execution(format!("cannot allocate {bytes} bytes of memory for {what}")))
}

/// Where a buffer's memory is.
enum Memory {
    /// Owned scratch memory (page- or line-aligned), allocated once at load and never resized
    /// (kernels write through its pointer).
    Owned(AlignedBuf),
    /// Bytes of the memory-mapped weight file.
    Weight(*const u8),
    /// Another buffer's memory plus an element offset (evaluated per call).
    Alias(usize),
    /// An offloaded expert's weights: bytes at an offset of the expert's slot in the fast tier
    /// (resident whenever a step that reads it runs).
    Expert { layer: usize, expert: usize, offset: usize },
}

/// What the executor does around a step when experts are offloaded.
#[derive(Clone, Copy, Debug, Default)]
struct StepRole {
    /// Reads these offloaded weights: (layer, expert).
    expert: Option<(usize, usize)>,
    /// The last step reading that expert's weights.
    releases: bool,
    /// Writes this MoE layer's router choice.
    selects: Option<usize>,
    /// Finishes this MoE layer's speculative guess.
    guesses: Option<usize>,
    /// Part of a speculative router copy.
    speculative: bool,
}

/// Expert offloading state of a model.
struct Offload {
    cache: ExpertCache,
    roles: Vec<StepRole>,
}

/// Time and calls per kernel family, when profiling.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct KernelProfile {
    pub kind: String,
    pub calls: u64,
    pub secs: f64,
}

pub struct CpuModel {
    art: Artifact,
    kernels: Vec<Kernel>,
    memory: Vec<Memory>,
    caches: HashMap<usize, KvStore>,
    pool: Pool,
    symbols: Vec<i64>,
    position: usize,
    tokens_input: usize,
    positions_input: usize,
    logits_output: usize,
    profile: Option<Vec<KernelProfile>>,
    offload: Option<Offload>,
    /// Plays the GPU threads of `--target cuda-sim` kernels.
    simulator: Option<crate::simt::Simulator>,
    /// Zeroed scratch memory for simulated split-K kernels (sized for the largest call).
    sim_scratch: Vec<u64>,
}

fn exec_err(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Execution(msg.into())
}

impl CpuModel {
    /// Loads and checks the artifact in `dir`; `threads` workers (including the caller).
    pub fn load(dir: &Path, threads: usize) -> Result<CpuModel> {
        CpuModel::load_with(dir, threads, None)
    }

    /// [`CpuModel::load`], with the MoE experts offloaded to the slow tier when `offload` is given.
    pub fn load_with(dir: &Path, threads: usize, offload: Option<&OffloadConfig>) -> Result<CpuModel> {
        CpuModel::load_inner(dir, threads, offload, false)
    }

    /// [`CpuModel::load`] with the weights copied onto transparent huge pages instead of served
    /// from the file's mapping (`WeightFile::make_resident`): slower to load
    /// (about 1–2 s per GB on the development VM), faster to decode when the file's page cache is
    /// on 4 KiB pages.
    pub fn load_on_huge_pages(dir: &Path, threads: usize) -> Result<CpuModel> {
        CpuModel::load_inner(dir, threads, None, true)
    }

    fn load_inner(dir: &Path, threads: usize, offload: Option<&OffloadConfig>, huge_pages: bool) -> Result<CpuModel> {
        let mut art = Artifact::open(dir)?;
        if huge_pages {
            art.weights.make_resident()?;
        }
        let m = &art.manifest;
        let Some(library) = art.library.as_ref() else {
            return Err(RuntimeError::Artifact(format!(
                "{}: compiled for CUDA ({}); run it on a GPU with a CUDA-enabled kiln, or recompile with --target cpu",
                dir.display(),
                m.target.cpu
            )));
        };
        let missing = |symbol: &str, e: libloading::Error| {
            RuntimeError::Artifact(format!("{}: kernels.so lacks kernel '{symbol}': {e}", dir.display()))
        };
        let mut kernels = Vec::with_capacity(m.kernels.len());
        for k in &m.kernels {
            kernels.push(match k.launch {
                // SAFETY: the symbol is a kernel with the documented ABI (the manifest says so,
                // and its checksum matched).
                None => Kernel::Native(
                    *unsafe { library.get::<KernelFn>(k.symbol.as_bytes()) }.map_err(|e| missing(&k.symbol, e))?,
                ),
                Some(launch) => {
                    let symbol = format!("{}__sim", k.symbol);
                    // SAFETY: as above, for the simulator's entry of a CUDA kernel.
                    let f = *unsafe { library.get::<crate::simt::SimFn>(symbol.as_bytes()) }
                        .map_err(|e| missing(&symbol, e))?;
                    Kernel::Simulated(f, launch)
                }
            });
        }
        let simulator = kernels
            .iter()
            .filter_map(|k| match k {
                Kernel::Simulated(_, l) => Some(if l.block_sync { l.block as usize } else { 0 }),
                Kernel::Native(_) => None,
            })
            .max()
            .map(|threads| {
                // SAFETY: a `--target cuda-sim` library: its hook global is pointer-sized.
                unsafe { crate::simt::install_hooks(library) };
                crate::simt::Simulator::new(threads)
            });
        // Upper bounds of every symbol, to size scratch buffers once.
        let maxima: Vec<i64> = m
            .symbols
            .iter()
            .map(|s| match s {
                Symbol::Tokens { .. } | Symbol::Dynamic { .. } => m.max_tokens as i64,
                Symbol::CacheLen { .. } => m.max_context as i64,
            })
            .collect();
        let mut memory = Vec::with_capacity(m.buffers.len());
        for (i, b) in m.buffers.iter().enumerate() {
            memory.push(match &b.storage {
                Storage::Activation => {
                    let bytes = b.elems.eval(&maxima).max(1) as usize * b.elem.size();
                    Memory::Owned(scratch(bytes, &format!("buffer {i}"))?)
                }
                Storage::Weight { tensor } => {
                    let bytes = art.weights.bytes(tensor).ok_or_else(|| {
                        RuntimeError::Artifact(format!(
                            "{}: weights lack tensor '{tensor}' (buffer {i})",
                            dir.display()
                        ))
                    })?;
                    let want = b.elems.eval(&[]) as usize * b.elem.size();
                    if bytes.len() != want {
                        return Err(RuntimeError::Artifact(format!(
                            "{}: weight '{tensor}' has {} bytes, the plan expects {want}",
                            dir.display(),
                            bytes.len()
                        )));
                    }
                    Memory::Weight(bytes.as_ptr())
                }
                Storage::Alias { of, .. } => Memory::Alias(*of),
            });
        }
        let mut caches = HashMap::new();
        for s in &m.kv_slots {
            let n = m.max_context * s.kv_heads * s.head_dim;
            let what = format!("KV cache slot {}", s.slot);
            let (keys, values) = (scratch(n * 4, &what)?, scratch(n * 4, &what)?);
            let mut positions = vec![0i32; m.max_context];
            let ptrs = [keys.as_ptr(), values.as_ptr(), positions.as_mut_ptr() as *mut u8];
            let len_symbol = m.symbols.iter().position(|sym| *sym == Symbol::CacheLen { slot: s.slot });
            caches.insert(
                s.slot,
                KvStore { _keys: keys, _values: values, positions, ptrs, len: 0, scratch: s.scratch, len_symbol },
            );
        }
        let find = |list: &[crate::artifact::manifest::NamedBuffer], name: &str| {
            list.iter()
                .find(|b| b.name == name)
                .map(|b| b.buffer)
                .ok_or_else(|| RuntimeError::Artifact(format!("{}: the program has no '{name}'", dir.display())))
        };
        let tokens_input = find(&m.inputs, "tokens")?;
        let positions_input = find(&m.inputs, "positions")?;
        let logits_output = find(&m.outputs, "logits")?;
        let symbols = vec![0; m.symbols.len()];
        let sim_scratch_bytes = m
            .steps
            .iter()
            .filter_map(|st| m.kernels[st.kernel].launch.map(|l| l.scratch_bytes(st.tasks.eval(&maxima))))
            .max()
            .unwrap_or(0);
        let sim_scratch = vec![0u64; sim_scratch_bytes.div_ceil(8)];
        let offload = match offload {
            Some(cfg) => Some(Self::offload(&art, cfg, &mut memory)?),
            None => None,
        };
        Ok(CpuModel {
            kernels,
            memory,
            caches,
            pool: Pool::new(threads),
            symbols,
            position: 0,
            tokens_input,
            positions_input,
            logits_output,
            profile: None,
            offload,
            simulator,
            sim_scratch,
            art,
        })
    }

    /// Sets up the expert cache and re-points the experts' weight buffers at it.
    fn offload(art: &Artifact, cfg: &OffloadConfig, memory: &mut [Memory]) -> Result<Offload> {
        let m = &art.manifest;
        let range = |b: usize| match &m.buffers.get(b)?.storage {
            Storage::Weight { tensor } => art.weights.range(tensor),
            _ => None,
        };
        let cache = ExpertCache::new(art.weights.path(), &m.moe_layers, &m.buffers, range, cfg)?;
        for (b, mem) in memory.iter_mut().enumerate() {
            if let Some((layer, expert, offset)) = cache.placement(b) {
                *mem = Memory::Expert { layer, expert, offset };
            }
        }
        let mut roles = vec![StepRole::default(); m.steps.len()];
        for (i, step) in m.steps.iter().enumerate() {
            roles[i].speculative = step.speculative.is_some();
            for a in &step.bufs {
                if let BufArg::Buffer { id } = a {
                    if let Some((layer, expert, _)) = cache.placement(*id) {
                        roles[i].expert = Some((layer, expert));
                    }
                }
            }
        }
        for (li, l) in m.moe_layers.iter().enumerate() {
            let bad_step = |s: usize| {
                RuntimeError::Artifact(format!("MoE layer {li} names step {s}, beyond the program's {}", m.steps.len()))
            };
            roles.get_mut(l.select_step).ok_or_else(|| bad_step(l.select_step))?.selects = Some(li);
            if let Some(g) = l.guess_step {
                roles.get_mut(g).ok_or_else(|| bad_step(g))?.guesses = Some(li);
            }
            for e in 0..l.experts.len() {
                if let Some(last) = roles.iter().rposition(|r| r.expert == Some((li, e))) {
                    roles[last].releases = true;
                }
            }
        }
        Ok(Offload { cache, roles })
    }

    /// The offloading counters and events so far (None without offloading).
    pub fn offload_trace(&self) -> Option<Trace> {
        let name = self.art.dir.display().to_string();
        self.offload.as_ref().map(|o| o.cache.trace(&name))
    }

    /// Forgets the offloading counters (the cache's contents stay).
    pub fn reset_offload_stats(&mut self) {
        if let Some(o) = self.offload.as_mut() {
            o.cache.reset_stats();
        }
    }

    pub fn manifest(&self) -> &crate::artifact::Manifest {
        &self.art.manifest
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Collects per-kernel-family times from now on.
    pub fn enable_profile(&mut self) {
        self.profile = Some(Vec::new());
    }

    pub fn profile(&self) -> Option<&[KernelProfile]> {
        self.profile.as_deref()
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
    pub fn truncate(&mut self, len: usize) {
        for c in self.caches.values_mut() {
            c.len = c.positions[..c.len].iter().take_while(|&&p| (p as usize) < len).count();
        }
        self.position = self.position.min(len);
    }

    /// Bytes of weights the artifact maps.
    pub fn weight_bytes(&self) -> usize {
        self.art
            .manifest
            .buffers
            .iter()
            .filter(|b| matches!(b.storage, Storage::Weight { .. }))
            .map(|b| b.elems.eval(&[]) as usize * b.elem.size())
            .sum()
    }

    /// Feeds tokens at the next positions (in chunks of the artifact's `max_tokens`) and returns
    /// the logits of the last one.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let m = &self.art.manifest;
        crate::artifact::check_feed(m, self.position, tokens)?;
        let chunk = m.max_tokens.max(1);
        let mut logits = Vec::new();
        for part in tokens.chunks(chunk) {
            logits = self.call(part)?;
        }
        Ok(logits)
    }

    fn ptr(&self, b: usize) -> *mut u8 {
        let spec = &self.art.manifest.buffers[b];
        match &self.memory[b] {
            Memory::Owned(s) => s.as_ptr(),
            Memory::Weight(p) => *p as *mut u8,
            Memory::Alias(of) => {
                let of = *of;
                let Storage::Alias { offset_elems, .. } = &spec.storage else { unreachable!("alias memory") };
                let offset = offset_elems.eval(&self.symbols) as usize * spec.elem.size();
                // SAFETY: the planner sized the aliased buffer to hold this view.
                unsafe { self.ptr(of).add(offset) }
            }
            Memory::Expert { layer, expert, offset } => {
                let o = self.offload.as_ref().expect("expert memory only exists with offloading");
                match o.cache.resident(*layer, *expert) {
                    // SAFETY: the slot holds the expert's whole layout.
                    Some(p) => unsafe { p.add(*offset) },
                    None => std::ptr::null_mut(),
                }
            }
        }
    }

    fn call(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let t = tokens.len();
        for c in self.caches.values_mut() {
            if c.scratch {
                c.len = 0;
            }
        }
        for (i, s) in self.art.manifest.symbols.iter().enumerate() {
            self.symbols[i] = match s {
                Symbol::Tokens { .. } => t as i64,
                Symbol::Dynamic { .. } => 0,
                Symbol::CacheLen { slot } => self.caches[slot].len as i64,
            };
        }
        let tok = self.ptr(self.tokens_input) as *mut i32;
        let pos = self.ptr(self.positions_input) as *mut i32;
        for (i, &id) in tokens.iter().enumerate() {
            // SAFETY: input buffers hold max_tokens i32 and t ≤ max_tokens.
            unsafe {
                *tok.add(i) = id as i32;
                *pos.add(i) = (self.position + i) as i32;
            }
        }
        let nsteps = self.art.manifest.steps.len();
        let mut dims: Vec<i64> = Vec::with_capacity(16);
        let mut bufs: Vec<*mut u8> = Vec::with_capacity(8);
        if let Some(o) = self.offload.as_mut() {
            o.cache.begin_call(t);
        }
        for si in 0..nsteps {
            let role = self.offload.as_ref().map(|o| o.roles[si]).unwrap_or_default();
            if self.before_step(si, role)? {
                continue;
            }
            let step = &self.art.manifest.steps[si];
            dims.clear();
            dims.extend(step.dims.iter().map(|d| d.eval(&self.symbols)));
            let tasks = step.tasks.eval(&self.symbols);
            let (kernel, binds, appends) = (step.kernel, step.binds, step.appends_to);
            bufs.clear();
            for a in &step.bufs {
                bufs.push(match a {
                    BufArg::Buffer { id } => self.ptr(*id),
                    BufArg::CacheKeys { slot } => self.cache_ref(*slot)?.ptrs[0],
                    BufArg::CacheValues { slot } => self.cache_ref(*slot)?.ptrs[1],
                    BufArg::CachePositions { slot } => self.cache_ref(*slot)?.ptrs[2],
                    BufArg::Null => std::ptr::null_mut(),
                });
            }
            let start = self.profile.is_some().then(std::time::Instant::now);
            // SAFETY: buffers were sized by the planner for these dims (upper bounds at load time);
            // cache appends were checked against the capacity in `forward`.
            match self.kernels[kernel] {
                Kernel::Native(f) => unsafe { self.pool.run(f, &dims, &bufs, tasks) },
                Kernel::Simulated(f, launch) => {
                    let mut params: Vec<i64> = dims.iter().copied().chain(bufs.iter().map(|&p| p as i64)).collect();
                    if launch.scratch_per_task > 0 {
                        params.push(self.sim_scratch.as_mut_ptr() as i64);
                    }
                    // SAFETY: as for native kernels; the simulator runs the CUDA kernel's threads.
                    let sim = self.simulator.as_ref().expect("a simulator for simulated kernels");
                    unsafe { sim.launch(f, launch, tasks, &params) }
                }
            }
            if let (Some(start), Some(profile)) = (start, self.profile.as_mut()) {
                let kind = &self.art.manifest.kernels[kernel].kind;
                match profile.iter_mut().find(|p| &p.kind == kind) {
                    Some(p) => {
                        p.calls += 1;
                        p.secs += start.elapsed().as_secs_f64();
                    }
                    None => profile.push(KernelProfile {
                        kind: kind.clone(),
                        calls: 1,
                        secs: start.elapsed().as_secs_f64(),
                    }),
                }
            }
            if let Some(sym) = binds {
                let count = *bufs.last().expect("a count buffer") as *const i64;
                // SAFETY: the kernel wrote its row count there.
                self.symbols[sym] = unsafe { *count };
            }
            if let Some(slot) = appends {
                let added = dims[0] as usize;
                let c = self.cache(slot)?;
                c.len += added;
                if let Some(i) = c.len_symbol {
                    self.symbols[i] = c.len as i64;
                }
            }
            if self.offload.is_some() {
                self.after_step(role, t)?;
            }
        }
        if let Some(o) = self.offload.as_mut() {
            o.cache.end_call();
        }
        self.position += t;
        let out = &self.art.manifest.buffers[self.logits_output];
        if out.elem != ElemType::F32 {
            return Err(exec_err("the logits output is not f32"));
        }
        let n = out.elems.eval(&self.symbols) as usize;
        let p = self.ptr(self.logits_output) as *const f32;
        // SAFETY: the logits buffer holds n floats after the call.
        let all = unsafe { std::slice::from_raw_parts(p, n) };
        let vocab = self.art.manifest.model.vocab_size;
        Ok(all[n.saturating_sub(vocab)..].to_vec())
    }

    /// Expert offloading before step `si`: whether to skip it (a speculative step without
    /// prefetch, an expert no token was routed to); otherwise makes its expert resident.
    fn before_step(&mut self, si: usize, role: StepRole) -> Result<bool> {
        let Some(o) = self.offload.as_mut() else {
            // Speculative router copies only matter to the expert cache.
            return Ok(self.art.manifest.steps[si].speculative.is_some());
        };
        if role.speculative && o.cache.prefetch() == 0 {
            return Ok(true);
        }
        if let Some((layer, expert)) = role.expert {
            let sym = self.art.manifest.moe_layers[layer].experts[expert].rows_symbol;
            if self.symbols[sym] == 0 {
                return Ok(true);
            }
            o.cache.acquire(layer, expert)?;
        }
        Ok(false)
    }

    /// Expert offloading after a step: hands router choices and guesses to the cache.
    fn after_step(&mut self, role: StepRole, t: usize) -> Result<()> {
        let m = &self.art.manifest;
        if let Some(li) = role.selects {
            let l = &m.moe_layers[li];
            let e = l.experts.len();
            // SAFETY: the router step wrote [t, top_k] i32 and its scores [t, experts] f32.
            let (sel, scores) = unsafe {
                (
                    std::slice::from_raw_parts(self.ptr(l.selected) as *const i32, t * l.top_k),
                    std::slice::from_raw_parts(self.ptr(l.scores) as *const f32, t * e),
                )
            };
            self.offload.as_mut().expect("offloading").cache.routed(li, sel, scores)?;
        }
        if let Some(li) = role.guesses {
            let l = &m.moe_layers[li];
            if let Some(g) = l.guess {
                // SAFETY: the speculative steps wrote [t, experts] f32.
                let scores = unsafe { std::slice::from_raw_parts(self.ptr(g) as *const f32, t * l.experts.len()) };
                self.offload.as_mut().expect("offloading").cache.guessed(li, scores);
            }
        }
        if let Some((layer, expert)) = role.expert.filter(|_| role.releases) {
            self.offload.as_mut().expect("offloading").cache.release(layer, expert);
        }
        Ok(())
    }

    fn cache_ref(&self, slot: usize) -> Result<&KvStore> {
        self.caches
            .get(&slot)
            .ok_or_else(|| exec_err(format!("the program uses KV-cache slot {slot}, which it does not declare")))
    }

    fn cache(&mut self, slot: usize) -> Result<&mut KvStore> {
        self.caches
            .get_mut(&slot)
            .ok_or_else(|| exec_err(format!("the program uses KV-cache slot {slot}, which it does not declare")))
    }
}

impl crate::generate::DecodeModel for CpuModel {
    fn forward(&mut self, tokens: &[u32]) -> std::result::Result<Vec<f32>, String> {
        CpuModel::forward(self, tokens).map_err(|e| e.to_string())
    }
}
