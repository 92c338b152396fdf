//! The matmul kernel: `out[M,N] = a[M,K] · wᵀ (+ bias)` over packed weights.
//!
//! Each task owns a block of `cols_per_task` output columns (weight rows) and computes them for
//! all M rows, so one call reads every weight byte once. Inside a task the work is cut into
//! tiles of up to [`WIDE_ROW_BLOCK`] rows of `a` × [`COL_BLOCK`] weight rows: a tile walks K once,
//! loading each activation vector once for all its weight rows and dequantizing each weight
//! vector once for all its activation rows, with every (row, column) pair accumulating into its
//! own f32 vector registers. At batch 1 (decode) a tile is 1 × 4: four weight streams and eight
//! independent accumulators, which is enough to keep loads in flight at memory bandwidth; at
//! M ≥ 4 (prefill) tiles are 6 × 4 (then 4 × 4) and the task's weights (`cols_per_task` rows)
//! are re-read from cache, not memory, for each group of rows. Over K > 2048 a group of rows walks
//! K in blocks of about 768, every tile of the task in turn within a block, parking the tiles'
//! accumulators on the stack in between ([`KBlocks`]).
//!
//! For f32 weights on the CPU the planner stores each group of 4 weight rows interleaved, a cache
//! line of each row in turn ([`crate::pack::interleave`]), so a 4-column tile reads a single
//! sequential stream: from a page-aligned matrix this machine reads one stream 7–12% faster than
//! four rows side by side (SmolLM2 f32 decode: 26–27 → 28.5–30 tok/s on one thread).
//!
//! Every column's summation order depends only on its index, N, K and M — never on how tasks are
//! split over threads.

use super::decode::Decoder;
use super::int8;
use super::ir::{add, load_prefix, mul_add, prefetch};
use super::layout::RowLayout;
use crate::error::Result;
use crate::kernels::builder::{llvm_err, KernelCx};
use crate::kernels::spec::WeightFormat;
use inkwell::values::{BasicValueEnum, IntValue, PointerValue, VectorValue};
use inkwell::IntPredicate;

/// Rows of `a` per tile (both ROW_BLOCK and COL_BLOCK must be powers of two).
pub const ROW_BLOCK: u32 = 4;
/// Rows of `a` per tile in the main part of a prefill on AVX-512: 6 × 4 tiles keep 24
/// accumulators, 4 weight vectors and one activation vector in its 32 registers and load 10
/// vectors per 24 FMAs instead of 8 per 16 (f32, M = 64 in `benches/gemv.rs`: 121–131 instead of
/// 113 GFLOP/s; 7 and 8 rows spill, 105 and 89). Narrower targets keep 4-row tiles.
const WIDE_ROW_BLOCK: u32 = 6;
/// Weight rows (output columns) per tile.
pub const COL_BLOCK: u32 = 4;
/// How far ahead of its loads a tile prefetches weights, in bytes (rounded up to whole tiles):
/// DRAM latency at a core's full bandwidth is only ~1.5 KB (~100 ns × ~15 GB/s), but the data
/// must also wait in L2 while the core is busy dequantizing; 4–64 KiB all measured within noise
/// of each other, and 16 KiB stays far inside L2.
const PREFETCH_AHEAD: i64 = 16384;
/// How far ahead an interleaved tile, one sequential stream, prefetches: as a tuned sequential
/// read does (1–2 KiB measured best here; 16 KiB lost 12%).
const PREFETCH_AHEAD_SEQUENTIAL: i64 = 2048;
/// Prefill tiles over K longer than this walk K in blocks ([`KBlocks`]), so that a block of
/// activation rows and the task's weights for it stay in L1 while every tile of the task passes
/// over them (a 6-row block of f32 activations at K = 11008 is 264 KB). In `benches/gemv.rs` at
/// M = 128: f32 at K = 11008 +4–15% (84–86 → 89–97 GFLOP/s), K = 4096 and bf16 within noise, and
/// no gain at K = 1536 (SmolLM2's down projection), hence the threshold.
const K_BLOCK_FROM: usize = 2048;
/// The K block blocked tiles aim for, in elements: 6 activation rows × 768 f32 are 18 KB.
const K_BLOCK: usize = 768;
/// The largest stack buffer (bytes) blocked tiles park their accumulators in between K blocks.
const ACC_BUFFER_MAX_BYTES: usize = 64 * 1024;
/// Largest stack panel (bytes) a quantized task dequantizes its weights into for prefill.
const PANEL_MAX_BYTES: usize = 256 * 1024;

/// The matmul spec's fields.
pub struct MatmulShape {
    pub format: WeightFormat,
    pub n: usize,
    pub k: usize,
    pub bias: bool,
    pub cols_per_task: usize,
    /// `matmul_i8`: prefill through int8 activations ([`super::int8`]), bufs[4] = the quantized rows.
    pub int8: bool,
    /// w's rows are [`crate::pack::interleave`]d by this many elements (0: plain rows).
    pub interleave: usize,
}

/// Emits the matmul kernel `name`.
pub fn emit(cx: &KernelCx<'_>, name: &str, shape: &MatmulShape) -> Result<()> {
    let &MatmulShape { format, n, k, bias, cols_per_task, int8, interleave } = shape;
    let err = |why: &str| llvm_err(format!("{name}: matmul {} n={n} k={k}: {why}", format.name()));
    let fail = |why: String| Err(err(&why));
    if cols_per_task == 0 {
        return fail("cols_per_task must be at least 1".to_string());
    }
    if !k.is_multiple_of(format.block()) {
        return fail(format!("K must be a multiple of the {}-element block", format.block()));
    }
    let too_big = |x: usize| i64::try_from(x).is_err();
    if too_big(n.saturating_mul(k).saturating_mul(4)) || too_big(cols_per_task) {
        return fail("sizes overflow i64 offsets".to_string());
    }
    let dec = Decoder::new(cx, format)?;
    let layout = RowLayout::new(format, k, dec.unit_elems() as usize, interleave).map_err(|why| err(&why))?;
    let group = crate::pack::ROW_GROUP;
    if layout.interleaved() && (int8 || cx.gpu || !n.is_multiple_of(group) || !cols_per_task.is_multiple_of(group)) {
        return fail(format!(
            "rows interleaved by {interleave} are for the CPU f32-activation kernel, with N and cols_per_task \
             multiples of {group}"
        ));
    }
    let kf = cx.begin_kernel(name);
    let m = cx.dim(&kf, 0)?;
    let gemm = Gemm {
        cx,
        dec,
        layout,
        n: n as i64,
        k: k as i64,
        row_bytes: format.row_bytes(k) as i64,
        a: cx.buf(&kf, 0)?,
        w: cx.buf(&kf, 1)?,
        w_first_row: None,
        bias: if bias { Some(cx.buf(&kf, 2)?) } else { None },
        out: cx.buf(&kf, 3)?,
        k_block_buffer: None,
    };
    if int8 {
        if !matches!(format, WeightFormat::Q8_0 | WeightFormat::Q4_0) || cx.lanes != 16 || cx.gpu {
            return fail("matmul_i8 needs Q8_0/Q4_0 weights and 16-lane (AVX-512) CPU vectors".to_string());
        }
        if cols_per_task != int8::COLS || int8::panel_bytes(k) > PANEL_MAX_BYTES {
            return fail(format!("matmul_i8 needs cols_per_task = {} and K ≤ {}", int8::COLS, int8_max_k()));
        }
        let i8k = int8::Int8 {
            cx,
            format,
            n: n as i64,
            k: k as i64,
            row_bytes: gemm.row_bytes,
            w: gemm.w,
            bias: gemm.bias,
            out: gemm.out,
            a_q: cx.buf(&kf, 4)?,
        };
        let panel = stack_panel(cx, int8::panel_bytes(k))?;
        by_rows(
            cx,
            m,
            || cx.for_range(kf.begin, kf.end, 1, |t| i8k.task(t, m, panel)),
            || cx.for_range(kf.begin, kf.end, 1, |t| gemm.task(t, m, cols_per_task as i64)),
        )?;
        return cx.finish();
    }
    let gemm = Gemm { k_block_buffer: k_block_buffer(cx, k, cols_per_task)?, ..gemm };
    // Prefill over quantized weights: every tile of 4 rows would dequantize the task's weights
    // again (32 times for a 128-token prompt), so a task first dequantizes its column panel into
    // f32 on the stack once and runs the f32 tiles over it. Decoding (M < 4) reads the packed
    // weights directly: there each weight is used once and bytes are what matter.
    let panel_bytes = cols_per_task * k * 4;
    if gemm.dec.quantized() && panel_bytes <= PANEL_MAX_BYTES {
        let panel = stack_panel(cx, panel_bytes)?;
        by_rows(
            cx,
            m,
            || cx.for_range(kf.begin, kf.end, 1, |t| gemm.panel_task(t, m, cols_per_task as i64, panel)),
            || cx.for_range(kf.begin, kf.end, 1, |t| gemm.task(t, m, cols_per_task as i64)),
        )?;
    } else {
        cx.for_range(kf.begin, kf.end, 1, |t| gemm.task(t, m, cols_per_task as i64))?;
    }
    cx.finish()
}

/// The largest K `matmul_i8` takes: its task's panel must fit [`PANEL_MAX_BYTES`] of stack.
pub fn int8_max_k() -> usize {
    PANEL_MAX_BYTES / int8::panel_bytes(32) * 32
}

/// A 64-byte aligned stack buffer of `bytes`, allocated in the kernel's entry block.
fn stack_panel<'ctx>(cx: &KernelCx<'ctx>, bytes: usize) -> Result<PointerValue<'ctx>> {
    let ty = cx.context.i8_type().array_type(bytes as u32);
    let panel = cx.builder.build_alloca(ty, "panel").map_err(llvm_err)?;
    panel.as_instruction().ok_or_else(|| llvm_err("an alloca"))?.set_alignment(64).map_err(llvm_err)?;
    Ok(panel)
}

/// The stack buffer prefill tiles park their accumulators in between K blocks ([`KBlocks`]), for
/// a matmul over `k` whose tiles walk K in blocks: not for K up to [`K_BLOCK_FROM`], on GPUs, or
/// when the task is too wide for [`ACC_BUFFER_MAX_BYTES`].
fn k_block_buffer<'ctx>(cx: &KernelCx<'ctx>, k: usize, cols_per_task: usize) -> Result<Option<PointerValue<'ctx>>> {
    let bytes = cols_per_task * WIDE_ROW_BLOCK as usize * MAX_SETS as usize * cx.lanes as usize * 4;
    if cx.gpu || k <= K_BLOCK_FROM || bytes > ACC_BUFFER_MAX_BYTES {
        return Ok(None);
    }
    stack_panel(cx, bytes).map(Some)
}

/// `prefill()` when M ≥ [`ROW_BLOCK`], else `decode()`.
fn by_rows<'ctx>(
    cx: &KernelCx<'ctx>,
    m: IntValue<'ctx>,
    prefill: impl FnOnce() -> Result<()>,
    decode: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let wide = cx.icmp(IntPredicate::SGE, m, cx.c64(i64::from(ROW_BLOCK)))?;
    let f = cx.builder.get_insert_block().and_then(|bb| bb.get_parent()).expect("inside the kernel");
    let (then, other, done) = (
        cx.context.append_basic_block(f, "prefill"),
        cx.context.append_basic_block(f, "decode"),
        cx.context.append_basic_block(f, "done"),
    );
    cx.builder.build_conditional_branch(wide, then, other).map_err(llvm_err)?;
    cx.builder.position_at_end(then);
    prefill()?;
    cx.builder.build_unconditional_branch(done).map_err(llvm_err)?;
    cx.builder.position_at_end(other);
    decode()?;
    cx.builder.build_unconditional_branch(done).map_err(llvm_err)?;
    cx.builder.position_at_end(done);
    Ok(())
}

struct Gemm<'a, 'ctx> {
    cx: &'a KernelCx<'ctx>,
    dec: Decoder<'a, 'ctx>,
    /// Where w's rows and their units are.
    layout: RowLayout,
    n: i64,
    k: i64,
    row_bytes: i64,
    a: PointerValue<'ctx>,
    w: PointerValue<'ctx>,
    /// When `w` is a task's dequantized panel: the output column its first row holds.
    w_first_row: Option<IntValue<'ctx>>,
    bias: Option<PointerValue<'ctx>>,
    out: PointerValue<'ctx>,
    /// Where prefill tiles park their accumulators between K blocks, when they walk K in blocks.
    k_block_buffer: Option<PointerValue<'ctx>>,
}

/// Prefill tiles over a long K: each group of rows walks K one block at a time, every tile of the
/// task in turn within a block, and the tiles' accumulators wait in a stack buffer between blocks.
/// Each accumulator lane still adds its products in K order, so results are bit for bit those of
/// unblocked tiles.
#[derive(Clone, Copy)]
struct KBlocks<'ctx> {
    /// Units (of the tiles' decoder) per block, a multiple of every tile's units per loop
    /// iteration.
    units: i64,
    /// Blocks in all (the last may be shorter).
    count: i64,
    /// The accumulators: one vector per (column of the task, row of the tile, set).
    buffer: PointerValue<'ctx>,
}

/// The most accumulator sets a tile has ([`Gemm::tile_at`]).
const MAX_SETS: u32 = 4;

/// The tile being emitted: its size, how many accumulators each pair has, and its rows of `a` and `w`.
struct Tile<'ctx> {
    rows: u32,
    cols: u32,
    /// Independent accumulators per (row, column) pair: consecutive vectors along K rotate over
    /// them so that FMA latency never limits a tile with few pairs.
    sets: u32,
    a_rows: Vec<PointerValue<'ctx>>,
    w_rows: Vec<PointerValue<'ctx>>,
}

impl<'ctx> Tile<'ctx> {
    fn acc(&self, set: u32, col: u32, row: u32) -> usize {
        ((set * self.cols + col) * self.rows + row) as usize
    }
}

impl<'a, 'ctx> Gemm<'a, 'ctx> {
    /// The columns of task `t`: `[t · cols_per_task, min((t + 1) · cols_per_task, N))`.
    fn columns(&self, t: IntValue<'ctx>, cols_per_task: i64) -> Result<(IntValue<'ctx>, IntValue<'ctx>)> {
        let (cx, b) = (self.cx, &self.cx.builder);
        let c0 = mul_add(cx, t, cols_per_task, 0)?;
        let c_end = mul_add(cx, t, cols_per_task, cols_per_task)?;
        let n = cx.c64(self.n);
        let clipped = cx.icmp(IntPredicate::SLT, c_end, n)?;
        let c1 = b.build_select(clipped, c_end, n, "c1").map_err(llvm_err)?.into_int_value();
        Ok((c0, c1))
    }

    /// Task `t` through a dequantized panel: its weight rows are decoded once into `panel` (f32,
    /// `cols_per_task × K`), then an f32 [`Gemm`] over the panel does all rows.
    fn panel_task(
        &self,
        t: IntValue<'ctx>,
        m: IntValue<'ctx>,
        cols_per_task: i64,
        panel: PointerValue<'ctx>,
    ) -> Result<()> {
        let (cx, dec) = (self.cx, &self.dec);
        let (c0, c1) = self.columns(t, cols_per_task)?;
        let units = self.k / i64::from(dec.unit_elems());
        cx.for_range(c0, c1, 1, |c| {
            let src = self.layout.row(cx, self.w, c)?;
            let local = cx.builder.build_int_sub(c, c0, "lc").map_err(llvm_err)?;
            let dst = cx.gep(cx.f32().into(), panel, mul_add(cx, local, self.k, 0)?)?;
            cx.for_range(cx.c64(0), cx.c64(units), 1, |u| {
                let vecs = dec.unit(self.layout.unit(cx, src, u)?)?;
                let at = mul_add(cx, u, i64::from(dec.unit_elems()), 0)?;
                for (v, vec) in vecs.into_iter().enumerate() {
                    cx.store_vf32(dst, add(cx, at, cx.c64(v as i64 * i64::from(dec.lanes())))?, vec)?;
                }
                Ok(())
            })
        })?;
        let f32_gemm = Gemm {
            cx,
            dec: Decoder::new(cx, WeightFormat::F32)?,
            layout: RowLayout::new(WeightFormat::F32, self.k as usize, dec.lanes() as usize, 0).map_err(llvm_err)?,
            n: self.n,
            k: self.k,
            row_bytes: 4 * self.k,
            a: self.a,
            w: panel,
            w_first_row: Some(c0),
            bias: self.bias,
            out: self.out,
            k_block_buffer: self.k_block_buffer,
        };
        f32_gemm.rows(m, c0, c1)
    }

    /// Task `t`: its columns for all rows.
    fn task(&self, t: IntValue<'ctx>, m: IntValue<'ctx>, cols_per_task: i64) -> Result<()> {
        let (c0, c1) = self.columns(t, cols_per_task)?;
        self.rows(m, c0, c1)
    }

    /// Columns `c0..c1` for all M rows: blocks of [`WIDE_ROW_BLOCK`] rows, then of [`ROW_BLOCK`]
    /// rows, then single rows.
    fn rows(&self, m: IntValue<'ctx>, c0: IntValue<'ctx>, c1: IntValue<'ctx>) -> Result<()> {
        let (cx, b) = (self.cx, &self.cx.builder);
        // 6-row tiles need AVX-512's 32 vector registers; with 16 (AVX2) they would spill, and the
        // "wide" blocks are 4-row ones.
        let wide_rows = if cx.lanes >= 16 && !cx.gpu { WIDE_ROW_BLOCK } else { ROW_BLOCK };
        let wide = i64::from(wide_rows);
        // Wide blocks, leaving 0, 1, 4 or 5 rows (not 2 or 3: a 6-row block gives them back and
        // 8 or 9 rows become two 4-row blocks and at most one single row).
        let rem = b.build_int_unsigned_rem(m, cx.c64(wide), "rem").map_err(llvm_err)?;
        let short = b
            .build_and(
                cx.icmp(IntPredicate::UGE, rem, cx.c64(2))?,
                cx.icmp(IntPredicate::ULE, rem, cx.c64(3))?,
                "short",
            )
            .map_err(llvm_err)?;
        let short = b.build_and(short, cx.icmp(IntPredicate::SGE, m, cx.c64(wide))?, "short6").map_err(llvm_err)?;
        let back = b.build_select(short, cx.c64(wide), cx.c64(0), "back").map_err(llvm_err)?.into_int_value();
        let m_big = b.build_int_sub(b.build_int_sub(m, rem, "m6").map_err(llvm_err)?, back, "mb").map_err(llvm_err)?;
        cx.for_range(cx.c64(0), m_big, wide, |i| self.sweep(i, wide_rows, c0, c1))?;
        let rest = b.build_int_sub(m, m_big, "rest").map_err(llvm_err)?;
        let rest4 = b.build_and(rest, cx.c64(!(i64::from(ROW_BLOCK) - 1)), "r4").map_err(llvm_err)?;
        let m_main = b.build_int_add(m_big, rest4, "m4").map_err(llvm_err)?;
        cx.for_range(m_big, m_main, i64::from(ROW_BLOCK), |i| self.sweep(i, ROW_BLOCK, c0, c1))?;
        cx.for_range(m_main, m, 1, |i| self.sweep(i, 1, c0, c1))
    }

    /// Rows `i..i + rows` for the columns `c0..c1`: full tiles, then single columns; K in blocks
    /// when the matmul has them and these rows are a prefill group.
    fn sweep(&self, i: IntValue<'ctx>, rows: u32, c0: IntValue<'ctx>, c1: IntValue<'ctx>) -> Result<()> {
        match self.k_blocks() {
            Some(blocks) if rows >= ROW_BLOCK => self.sweep_blocked(blocks, i, rows, c0, c1),
            _ => self.each_tile(c0, c1, |j, cols| {
                let tile = self.tile_at(i, rows, j, cols)?;
                let units = self.k / i64::from(self.dec.unit_elems());
                let accs = self.accumulate(&tile, self.cx.c64(0), units, self.zeros(&tile))?;
                self.finish(&tile, i, j, units, accs)
            }),
        }
    }

    /// `f(j, cols)` for the tiles of columns `c0..c1`: [`COL_BLOCK`] wide, then single columns.
    fn each_tile(
        &self,
        c0: IntValue<'ctx>,
        c1: IntValue<'ctx>,
        mut f: impl FnMut(IntValue<'ctx>, u32) -> Result<()>,
    ) -> Result<()> {
        let (cx, b) = (self.cx, &self.cx.builder);
        let width = b.build_int_sub(c1, c0, "w").map_err(llvm_err)?;
        let full = b.build_and(width, cx.c64(!(i64::from(COL_BLOCK) - 1)), "w4").map_err(llvm_err)?;
        let main = add(cx, c0, full)?;
        cx.for_range(c0, main, i64::from(COL_BLOCK), |j| f(j, COL_BLOCK))?;
        cx.for_range(main, c1, 1, |j| f(j, 1))
    }

    /// How this matmul's prefill tiles split K, in units of its decoder (whose unit the blocks must
    /// be whole iterations of), if they do.
    fn k_blocks(&self) -> Option<KBlocks<'ctx>> {
        let buffer = self.k_block_buffer?;
        // Tiles loop over up to 4 units per iteration (enough for a cache line of q4_0, or a set
        // each): blocks of whole iterations keep every accumulator set on the vectors it has
        // unblocked.
        let (k, unit) = (self.k as usize, self.dec.unit_elems() as usize);
        let units = k / unit;
        let per_block = units.div_ceil(k.div_ceil(K_BLOCK)).next_multiple_of(4);
        let count = units.div_ceil(per_block);
        (count >= 2).then_some(KBlocks { units: per_block as i64, count: count as i64, buffer })
    }

    /// [`Gemm::sweep`] one K block at a time ([`KBlocks`]): the first block starts from zero, the
    /// others from the accumulators the previous block parked, and the last one stores the sums.
    fn sweep_blocked(
        &self,
        blocks: KBlocks<'ctx>,
        i: IntValue<'ctx>,
        rows: u32,
        c0: IntValue<'ctx>,
        c1: IntValue<'ctx>,
    ) -> Result<()> {
        let cx = self.cx;
        let units = self.k / i64::from(self.dec.unit_elems());
        let last = (blocks.count - 1) * blocks.units;
        let block = |u0: IntValue<'ctx>, n: i64, first: bool, last: bool| {
            self.each_tile(c0, c1, |j, cols| {
                let tile = self.tile_at(i, rows, j, cols)?;
                let local = cx.builder.build_int_sub(j, c0, "tj").map_err(llvm_err)?;
                let init = if first { self.zeros(&tile) } else { self.parked(&tile, blocks, local, None)? };
                let accs = self.accumulate(&tile, u0, n, init)?;
                if last {
                    self.finish(&tile, i, j, units, accs)
                } else {
                    self.parked(&tile, blocks, local, Some(&accs)).map(|_| ())
                }
            })
        };
        block(cx.c64(0), blocks.units, true, false)?;
        if blocks.count > 2 {
            cx.for_range(cx.c64(1), cx.c64(blocks.count - 1), 1, |b| {
                block(mul_add(cx, b, blocks.units, 0)?, blocks.units, false, false)
            })?;
        }
        block(cx.c64(last), units - last, false, true)
    }

    /// Loads a tile's parked accumulators (`save` None) or parks `save`: the vectors of the task's
    /// columns `local..` in the K-block buffer, one slot per (column, row, set).
    fn parked(
        &self,
        tile: &Tile<'ctx>,
        blocks: KBlocks<'ctx>,
        local: IntValue<'ctx>,
        save: Option<&[VectorValue<'ctx>]>,
    ) -> Result<Vec<VectorValue<'ctx>>> {
        let cx = self.cx;
        let lanes = i64::from(self.dec.lanes());
        let mut loaded = Vec::new();
        for set in 0..tile.sets {
            for c in 0..tile.cols {
                for r in 0..tile.rows {
                    let column = add(cx, local, cx.c64(c.into()))?;
                    let slot = i64::from(r * MAX_SETS + set);
                    let at = mul_add(cx, column, i64::from(WIDE_ROW_BLOCK * MAX_SETS) * lanes, slot * lanes)?;
                    match save {
                        Some(accs) => cx.store_vf32(blocks.buffer, at, accs[tile.acc(set, c, r)])?,
                        None => loaded.push(cx.load_vf32(blocks.buffer, at, self.dec.lanes())?),
                    }
                }
            }
        }
        Ok(loaded)
    }

    /// The rows of `a` and `w` of the tile at rows `i..i + rows` and weight rows `j..j + cols`.
    fn tile_at(&self, i: IntValue<'ctx>, rows: u32, j: IntValue<'ctx>, cols: u32) -> Result<Tile<'ctx>> {
        let cx = self.cx;
        let a_rows = (0..rows)
            .map(|r| cx.gep(cx.f32().into(), self.a, mul_add(cx, add(cx, i, cx.c64(r.into()))?, self.k, 0)?))
            .collect::<Result<Vec<_>>>()?;
        let first = match self.w_first_row {
            Some(c0) => cx.builder.build_int_sub(j, c0, "pj").map_err(llvm_err)?,
            None => j,
        };
        let w_rows = (0..cols)
            .map(|c| self.layout.row(cx, self.w, add(cx, first, cx.c64(c.into()))?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tile { rows, cols, sets: (8 / (rows * cols)).clamp(1, MAX_SETS), a_rows, w_rows })
    }

    /// A tile's accumulators, zero.
    fn zeros(&self, tile: &Tile<'ctx>) -> Vec<VectorValue<'ctx>> {
        vec![self.cx.vf32(self.dec.lanes()).const_zero(); (tile.sets * tile.cols * tile.rows) as usize]
    }

    /// Adds units `u0..u0 + n` of every pair of the tile to `accs`. `u0` must be a multiple of the
    /// units per loop iteration (4 or fewer), so that each unit's vectors go to the same
    /// accumulator set wherever the walk over K starts.
    fn accumulate(
        &self,
        tile: &Tile<'ctx>,
        u0: IntValue<'ctx>,
        n: i64,
        accs: Vec<VectorValue<'ctx>>,
    ) -> Result<Vec<VectorValue<'ctx>>> {
        let (cx, dec) = (self.cx, &self.dec);
        // Units per loop iteration: enough to give each accumulator set one vector, and to cover a
        // cache line of each weight row (one round of prefetches per iteration).
        // (And whole interleaved chunks, which the prefetch's position assumes.)
        let per_iter =
            i64::from((tile.sets / dec.vecs_per_unit()).max(1)).max((64 + dec.unit_bytes() - 1) / dec.unit_bytes());
        let upc = self.layout.units_per_chunk();
        let per_iter = (per_iter + upc - 1) / upc * upc;
        let looped = n / per_iter * per_iter;
        let init: Vec<BasicValueEnum<'ctx>> = accs.into_iter().map(BasicValueEnum::from).collect();
        let end = add(cx, u0, cx.c64(looped))?;
        let accs = cx.for_range_acc(u0, end, per_iter, &init, |u, cur| {
            let mut accs: Vec<VectorValue<'ctx>> = cur.iter().map(|v| v.into_vector_value()).collect();
            // A panel is already in cache (and prefetching past it would leave the allocation).
            if self.w_first_row.is_none() {
                self.prefetch_next_tile(tile, u, per_iter)?;
            }
            for s in 0..per_iter {
                let first_vec = s as u32 * dec.vecs_per_unit();
                self.unit(tile, add(cx, u, cx.c64(s))?, first_vec, &mut accs)?;
            }
            Ok(accs.into_iter().map(BasicValueEnum::from).collect())
        })?;
        let mut accs: Vec<VectorValue<'ctx>> = accs.iter().map(|v| v.into_vector_value()).collect();
        for r in looped..n {
            let first_vec = (r - looped) as u32 * dec.vecs_per_unit();
            self.unit(tile, add(cx, u0, cx.c64(r))?, first_vec, &mut accs)?;
        }
        Ok(accs)
    }

    /// The end of a tile's walk over K: the elements past the last whole unit, then the sums.
    fn finish(
        &self,
        tile: &Tile<'ctx>,
        i: IntValue<'ctx>,
        j: IntValue<'ctx>,
        units: i64,
        mut accs: Vec<VectorValue<'ctx>>,
    ) -> Result<()> {
        let rest = (self.k % i64::from(self.dec.unit_elems())) as u32;
        if rest > 0 {
            self.tail(tile, units, rest, &mut accs)?;
        }
        self.store(tile, i, j, &accs)
    }

    /// Prefetches what a later tile will read where this loop iteration reads now: the following
    /// tiles' weight rows come right after this tile's, so `t` tiles ahead is `t · cols` rows
    /// further on, with `t` the fewest tiles spanning [`PREFETCH_AHEAD`] bytes. Rows of a few
    /// hundred bytes (K = 576 in Q8_0 is 612) are too short for the hardware prefetchers to lock
    /// on: without this, batch-1 quantized GEMVs ran at 55–65% of read bandwidth instead of 85%.
    ///
    /// An interleaved tile of [`COL_BLOCK`] rows reads one sequential stream: decoding prefetches
    /// it [`PREFETCH_AHEAD_SEQUENTIAL`] ahead, like a plain read.
    fn prefetch_next_tile(&self, tile: &Tile<'ctx>, u: IntValue<'ctx>, units: i64) -> Result<()> {
        let cx = self.cx;
        let tile_bytes = i64::from(tile.cols) * self.row_bytes;
        let tiles_ahead = tile_bytes * ((PREFETCH_AHEAD + tile_bytes - 1) / tile_bytes).max(1);
        if self.layout.interleaved() && tile.cols == COL_BLOCK {
            // One stream, `u · stride` bytes into the tile. Decoding reads it once: a short
            // distance, as a sequential read. Prefill tiles re-read a tile for every group of
            // rows, from cache after the first: whole tiles ahead, so the next tiles arrive while
            // this one is worked on.
            let stride = self.layout.unit_stride();
            let ahead = if tile.rows == 1 { PREFETCH_AHEAD_SEQUENTIAL } else { tiles_ahead };
            for line in 0..(units * stride + 63) / 64 {
                prefetch(cx, tile.w_rows[0], mul_add(cx, u, stride, ahead + 64 * line)?)?;
            }
            return Ok(());
        }
        let bytes = units * self.dec.unit_bytes();
        for &row in &tile.w_rows {
            for line in 0..(bytes + 63) / 64 {
                prefetch(cx, row, mul_add(cx, u, self.dec.unit_bytes(), tiles_ahead + 64 * line)?)?;
            }
        }
        Ok(())
    }

    /// Accumulates unit `u` (K elements `u · unit_elems ..`) of every pair of the tile.
    fn unit(&self, tile: &Tile<'ctx>, u: IntValue<'ctx>, first_vec: u32, accs: &mut [VectorValue<'ctx>]) -> Result<()> {
        let (cx, dec) = (self.cx, &self.dec);
        if tile.rows == 1 && dec.factors() {
            return self.unit_factored(tile, u, first_vec, accs);
        }
        let w = tile.w_rows.iter().map(|&row| dec.unit(self.layout.unit(cx, row, u)?)).collect::<Result<Vec<_>>>()?;
        let unit_start = mul_add(cx, u, i64::from(dec.unit_elems()), 0)?;
        for v in 0..dec.vecs_per_unit() {
            let elem = add(cx, unit_start, cx.c64(i64::from(v * dec.lanes())))?;
            let a = tile.a_rows.iter().map(|&row| cx.load_vf32(row, elem, dec.lanes())).collect::<Result<Vec<_>>>()?;
            let set = (first_vec + v) % tile.sets;
            self.fma_all(tile, set, &w.iter().map(|wc| wc[v as usize]).collect::<Vec<_>>(), &a, accs)?;
        }
        Ok(())
    }

    /// [`Gemm::unit`] for one row of `a` and a format with a per-block scale to factor out:
    /// `acc += d · Σ_v q_v · a_v` applies `d` once per block and column instead of once per weight
    /// vector (8% faster on Q8_0 at batch 1, where nothing else shares the dequantized weights).
    fn unit_factored(
        &self,
        tile: &Tile<'ctx>,
        u: IntValue<'ctx>,
        first_vec: u32,
        accs: &mut [VectorValue<'ctx>],
    ) -> Result<()> {
        let (cx, dec) = (self.cx, &self.dec);
        let unit_start = mul_add(cx, u, i64::from(dec.unit_elems()), 0)?;
        let a = (0..dec.vecs_per_unit())
            .map(|v| {
                cx.load_vf32(tile.a_rows[0], add(cx, unit_start, cx.c64(i64::from(v * dec.lanes())))?, dec.lanes())
            })
            .collect::<Result<Vec<_>>>()?;
        let set = (first_vec / dec.vecs_per_unit()) % tile.sets;
        for (c, &row) in tile.w_rows.iter().enumerate() {
            let (d, q) = dec.factored(self.layout.unit(cx, row, u)?)?;
            let mut dot = cx.builder.build_float_mul(q[0], a[0], "dot").map_err(llvm_err)?;
            for (&qv, &av) in q.iter().zip(&a).skip(1) {
                dot = cx.fma(qv, av, dot)?.into_vector_value();
            }
            let idx = tile.acc(set, c as u32, 0);
            accs[idx] = cx.fma(dot, d, accs[idx])?.into_vector_value();
        }
        Ok(())
    }

    /// The last `rest` (< lanes) elements of K, for unquantized formats: masked loads that read
    /// nothing past the rows.
    fn tail(&self, tile: &Tile<'ctx>, units: i64, rest: u32, accs: &mut [VectorValue<'ctx>]) -> Result<()> {
        let (cx, dec) = (self.cx, &self.dec);
        let w = tile
            .w_rows
            .iter()
            .map(|&row| dec.prefix(self.layout.unit(cx, row, cx.c64(units))?, rest))
            .collect::<Result<Vec<_>>>()?;
        let a_off = cx.c64(units * i64::from(dec.unit_elems()));
        let a = tile
            .a_rows
            .iter()
            .map(|&row| load_prefix(cx, cx.vf32(dec.lanes()), cx.gep(cx.f32().into(), row, a_off)?, rest, 4))
            .collect::<Result<Vec<_>>>()?;
        self.fma_all(tile, 0, &w, &a, accs)
    }

    /// `acc[set][c][r] += w[c] · a[r]` for every pair.
    fn fma_all(
        &self,
        tile: &Tile<'ctx>,
        set: u32,
        w: &[VectorValue<'ctx>],
        a: &[VectorValue<'ctx>],
        accs: &mut [VectorValue<'ctx>],
    ) -> Result<()> {
        for (r, &av) in a.iter().enumerate() {
            for (c, &wv) in w.iter().enumerate() {
                let idx = tile.acc(set, c as u32, r as u32);
                accs[idx] = self.cx.fma(wv, av, accs[idx])?.into_vector_value();
            }
        }
        Ok(())
    }

    /// Sums each pair's accumulators (a fixed tree over the sets, then across lanes), adds the
    /// bias and stores `out[i + r, j + c]`.
    fn store(&self, tile: &Tile<'ctx>, i: IntValue<'ctx>, j: IntValue<'ctx>, accs: &[VectorValue<'ctx>]) -> Result<()> {
        let (cx, b) = (self.cx, &self.cx.builder);
        // Row-major over the tile: pair (r, c) at r · cols + c.
        let pairs = (0..tile.rows)
            .flat_map(|r| (0..tile.cols).map(move |c| (r, c)))
            // A pair's sets pairwise: set s with set s + half, until one vector is left.
            .map(|(r, c)| cx.pairwise_sum((0..tile.sets).map(|s| accs[tile.acc(s, c, r)]).collect()))
            .collect::<Result<Vec<_>>>()?;
        let out_at =
            |r: u32| -> Result<IntValue<'ctx>> { add(cx, mul_add(cx, add(cx, i, cx.c64(r.into()))?, self.n, 0)?, j) };
        if cx.gpu || cx.lanes < COL_BLOCK {
            for (p, &v) in pairs.iter().enumerate() {
                let (r, c) = (p as u32 / tile.cols, p as u32 % tile.cols);
                let col = add(cx, j, cx.c64(c.into()))?;
                let mut sum = cx.hsum(v)?;
                if let Some(bias) = self.bias {
                    sum = b.build_float_add(sum, cx.load_f32(bias, col)?, "bias").map_err(llvm_err)?;
                }
                cx.store_f32(self.out, add(cx, out_at(r)?, cx.c64(c.into()))?, sum)?;
            }
            return Ok(());
        }
        // The sums of up to a vector's width of pairs at once (`KernelCx::lane_sums`, the same
        // values as one horizontal sum per pair in far fewer shuffles: 24 separate sums cost a
        // 6 × 4 tile over K = 576 about a fifth of its FMA-port time), then a row's `cols` sums
        // are stored together.
        let cols = tile.cols as usize;
        let bias = match self.bias {
            Some(p) => Some(cx.load_vf32(p, j, tile.cols)?),
            None => None,
        };
        let mut first = 0;
        while first < pairs.len() {
            // Whole rows (cols is a power of two dividing the group) in a power-of-two group.
            let group = 1 << (pairs.len() - first).min(cx.lanes as usize).ilog2();
            let sums = cx.lane_sums(&pairs[first..first + group])?;
            for row in 0..group / cols {
                let idx: Vec<_> = (0..cols).map(|c| cx.i32().const_int((row * cols + c) as u64, false)).collect();
                let mut v = b
                    .build_shuffle_vector(sums, sums, inkwell::types::VectorType::const_vector(&idx), "row")
                    .map_err(llvm_err)?;
                if let Some(bias) = bias {
                    v = b.build_float_add(v, bias, "bias").map_err(llvm_err)?;
                }
                cx.store_vf32(self.out, out_at(((first / cols) + row) as u32)?, v)?;
            }
            first += group;
        }
        Ok(())
    }
}
