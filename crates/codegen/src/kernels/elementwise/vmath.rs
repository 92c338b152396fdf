//! Vector math for kernels, on f32 vectors of any width (a width of 1 serves row tails).
//!
//! `exp`, `tanh` and the functions built on them (`sigmoid`, `silu`, `gelu_tanh`) are polynomials
//! here, because LLVM's `llvm.exp`/`llvm.tanh` on a vector become one libm call per lane. Functions
//! without a vector form (`log`, `pow`, the error function) call libm lane by lane.
//!
//! Accuracy against the correctly rounded value (what the interpreter gets by computing in f64):
//! (measured on dense sweeps by `tests/kernels_elementwise.rs`, which holds them to these bounds):
//! - [`VecOps::exp`]: Cephes `expf` (range reduction by ln 2 in two parts, degree-6 polynomial),
//!   ≤ 1.2e-7 relative (about 1 ulp) over the whole f32 range, subnormal results included; +inf
//!   above 88.72, 0 below -103.97, NaN stays NaN.
//! - [`VecOps::tanh`]: Cephes `tanhf`, an odd polynomial below |x| = 0.625 and `1 − 2/(e^{2|x|}+1)`
//!   above, ≤ 1.2e-7 relative.
//! - [`VecOps::sigmoid`]: `1/(1+e^{-|x|})`, or `e^{-|x|}/(1+e^{-|x|})` for x < 0 so the result
//!   keeps its relative accuracy where it is tiny (≤ 2e-7 relative); `silu` is `x · sigmoid(x)`
//!   (≤ 2.5e-7).
//! - [`VecOps::gelu_tanh`]: `x/2·(1 + tanh u) = x · sigmoid(2u)`, which has no cancellation for
//!   negative x; the f32 rounding of `2u` costs about `|2u| · 6e-8` relative, so ≤ 1.1e-6 for
//!   x ≥ -4 (where |gelu| ≥ 1e-6) and ≤ 2e-7 for x ≥ 0.
//! - [`VecOps::gelu_erf`]: `x/2 · erfc(−x/√2)` with libm's `erfcf`, again free of the cancellation
//!   `1 + erf` has for negative x; ≤ 8e-7 relative for x ≥ -4, for the same reason.

use crate::error::Result;
use crate::kernels::builder::{llvm_err, KernelCx};
use inkwell::types::{BasicTypeEnum, VectorType};
use inkwell::values::{BasicValue, FloatValue, VectorValue};
use inkwell::FloatPredicate;

/// Vector operations on the builder's position; values are `<w x float>` (masks `<w x i1>`).
pub struct VecOps<'a, 'ctx> {
    pub cx: &'a KernelCx<'ctx>,
}

type V<'ctx> = VectorValue<'ctx>;

/// Cephes' split of ln 2: `C1` has 9 significant bits, so `n · C1` is exact for |n| ≤ 2^15.
const LN2_C1: f32 = 0.693_359_4; // 355/512 exactly
const LN2_C2: f32 = -2.121_944_4e-4;
/// Cephes `expf` polynomial for `(e^r − 1 − r) / r²` on |r| ≤ ln2/2, highest degree first.
const EXP_P: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];
/// Inputs are clamped here: `e^89` overflows and `e^-104` underflows to 0 in f32, and the clamped
/// exponent n ∈ [-150, 128] splits into two halves that are normal f32 powers of two.
const EXP_LO: f32 = -104.0;
const EXP_HI: f32 = 89.0;
/// 1.5 · 2^23: adding then subtracting it rounds |v| < 2^22 to the nearest integer (ties to even)
/// in plain f32 arithmetic, without `llvm.rint` (a libm call per lane before SSE4.1).
const ROUND_MAGIC: f32 = 12_582_912.0;
/// Cephes `tanhf` odd polynomial for |x| < 0.625: `tanh x = x + x·z·P(z)`, z = x², highest first.
const TANH_P: [f32; 5] = [-5.704_988_7e-3, 2.063_909e-2, -5.373_971_6e-2, 1.333_144_2e-1, -3.333_328e-1];
const TANH_SMALL: f32 = 0.625;
/// `2·√(2/π)` and `2·√(2/π)·0.044715`: gelu_tanh's `2u = x·(G1 + G3·x²)`.
const GELU_G1: f64 = 1.595_769_121_605_730_7;
const GELU_G3: f64 = GELU_G1 * 0.044715;

impl<'a, 'ctx> VecOps<'a, 'ctx> {
    pub fn new(cx: &'a KernelCx<'ctx>) -> VecOps<'a, 'ctx> {
        VecOps { cx }
    }

    /// `<w x float>` of `x`.
    pub fn k(&self, x: f32, w: u32) -> V<'ctx> {
        VectorType::const_vector(&vec![self.cx.cf(x); w as usize])
    }

    fn ki32(&self, x: i32, w: u32) -> V<'ctx> {
        VectorType::const_vector(&vec![self.cx.i32().const_int(x as u64, true); w as usize])
    }

    /// Same-shape constant for `like`.
    fn kl(&self, x: f32, like: V<'ctx>) -> V<'ctx> {
        self.k(x, like.get_type().get_size())
    }

    /// `<w x float>` of a run-time scalar.
    pub fn splat(&self, x: FloatValue<'ctx>, w: u32) -> Result<V<'ctx>> {
        self.cx.splat(x, w)
    }

    pub fn add(&self, a: V<'ctx>, b: V<'ctx>) -> Result<V<'ctx>> {
        self.cx.builder.build_float_add(a, b, "add").map_err(llvm_err)
    }

    pub fn sub(&self, a: V<'ctx>, b: V<'ctx>) -> Result<V<'ctx>> {
        self.cx.builder.build_float_sub(a, b, "sub").map_err(llvm_err)
    }

    pub fn mul(&self, a: V<'ctx>, b: V<'ctx>) -> Result<V<'ctx>> {
        self.cx.builder.build_float_mul(a, b, "mul").map_err(llvm_err)
    }

    pub fn div(&self, a: V<'ctx>, b: V<'ctx>) -> Result<V<'ctx>> {
        self.cx.builder.build_float_div(a, b, "div").map_err(llvm_err)
    }

    pub fn neg(&self, a: V<'ctx>) -> Result<V<'ctx>> {
        self.cx.builder.build_float_neg(a, "neg").map_err(llvm_err)
    }

    /// `a·b + c`, rounded once.
    pub fn fma(&self, a: V<'ctx>, b: V<'ctx>, c: V<'ctx>) -> Result<V<'ctx>> {
        Ok(self.cx.fma(a, b, c)?.into_vector_value())
    }

    /// Compares lane by lane: a `<w x i1>` mask.
    pub fn cmp(&self, p: FloatPredicate, a: V<'ctx>, b: V<'ctx>) -> Result<V<'ctx>> {
        self.cx.builder.build_float_compare(p, a, b, "cmp").map_err(llvm_err)
    }

    /// Mask of the NaN lanes.
    pub fn is_nan(&self, a: V<'ctx>) -> Result<V<'ctx>> {
        self.cmp(FloatPredicate::UNO, a, a)
    }

    pub fn select(&self, mask: V<'ctx>, a: V<'ctx>, b: V<'ctx>) -> Result<V<'ctx>> {
        Ok(self.cx.builder.build_select(mask, a, b, "sel").map_err(llvm_err)?.into_vector_value())
    }

    /// A float intrinsic overloaded on the vector type (`llvm.sqrt`, `llvm.fabs`, `llvm.maximum`...).
    pub fn intrinsic(&self, name: &str, args: &[V<'ctx>]) -> Result<V<'ctx>> {
        let ty: BasicTypeEnum<'ctx> = args[0].get_type().into();
        let args: Vec<_> = args.iter().map(|a| a.as_basic_value_enum().into()).collect();
        Ok(self.cx.intrinsic(name, &[ty], &args)?.into_vector_value())
    }

    pub fn abs(&self, a: V<'ctx>) -> Result<V<'ctx>> {
        self.intrinsic("llvm.fabs", &[a])
    }

    pub fn sqrt(&self, a: V<'ctx>) -> Result<V<'ctx>> {
        self.intrinsic("llvm.sqrt", &[a])
    }

    /// NaN-propagating maximum (`llvm.maximum`: NaN if either is, and −0 < +0).
    pub fn maximum(&self, a: V<'ctx>, b: V<'ctx>) -> Result<V<'ctx>> {
        self.intrinsic("llvm.maximum", &[a, b])
    }

    pub fn minimum(&self, a: V<'ctx>, b: V<'ctx>) -> Result<V<'ctx>> {
        self.intrinsic("llvm.minimum", &[a, b])
    }

    /// The magnitude of `a` with the sign of `b`.
    pub fn copysign(&self, a: V<'ctx>, b: V<'ctx>) -> Result<V<'ctx>> {
        self.intrinsic("llvm.copysign", &[a, b])
    }

    /// Calls the libm function `float name(float...)` on each lane: the fallback for functions
    /// without a vector form here.
    pub fn per_lane(&self, name: &str, args: &[V<'ctx>]) -> Result<V<'ctx>> {
        let b = &self.cx.builder;
        let w = args[0].get_type().get_size();
        let mut out = args[0].get_type().get_undef();
        for lane in 0..w {
            let i = self.cx.i32().const_int(lane as u64, false);
            let xs = args
                .iter()
                .map(|a| Ok(b.build_extract_element(*a, i, "lane").map_err(llvm_err)?.into_float_value()))
                .collect::<Result<Vec<_>>>()?;
            let y = self.cx.libm(name, &xs)?;
            out = b.build_insert_element(out, y, i, "lane").map_err(llvm_err)?;
        }
        Ok(out)
    }

    /// `e^x`, Cephes `expf` (see the module docs for its accuracy).
    pub fn exp(&self, x: V<'ctx>) -> Result<V<'ctx>> {
        let b = &self.cx.builder;
        let w = x.get_type().get_size();
        let k = |v: f32| self.k(v, w);
        // NaN lanes compute on 0 (keeping the integer steps below defined) and are put back last.
        let nan = self.is_nan(x)?;
        let xs = self.select(nan, k(0.0), x)?;
        let xs = self.intrinsic("llvm.maxnum", &[xs, k(EXP_LO)])?;
        let xs = self.intrinsic("llvm.minnum", &[xs, k(EXP_HI)])?;
        // x = n·ln2 + r, |r| ≤ ln2/2.
        let t = self.fma(xs, k(std::f32::consts::LOG2_E), k(ROUND_MAGIC))?;
        let n = self.sub(t, k(ROUND_MAGIC))?;
        let neg_n = self.neg(n)?;
        let r = self.fma(neg_n, k(LN2_C1), xs)?;
        let r = self.fma(neg_n, k(LN2_C2), r)?;
        let mut p = k(EXP_P[0]);
        for c in &EXP_P[1..] {
            p = self.fma(p, r, k(*c))?;
        }
        let r2 = self.mul(r, r)?;
        let y = self.add(self.fma(p, r2, r)?, k(1.0))?;
        // Times 2^n as two factors 2^(n/2)·2^(n − n/2): each is a normal f32 even when e^x is
        // subnormal or near overflow, and the second product rounds once.
        let ni = b.build_float_to_signed_int(n, self.cx.i32().vec_type(w), "n").map_err(llvm_err)?;
        let n1 = b.build_right_shift(ni, self.ki32(1, w), true, "n1").map_err(llvm_err)?;
        let n2 = b.build_int_sub(ni, n1, "n2").map_err(llvm_err)?;
        let y = self.mul(y, self.pow2(n1)?)?;
        let y = self.mul(y, self.pow2(n2)?)?;
        self.select(nan, x, y)
    }

    /// `2^n` for integer lanes n ∈ [-126, 127], built from the exponent bits.
    fn pow2(&self, n: V<'ctx>) -> Result<V<'ctx>> {
        let b = &self.cx.builder;
        let w = n.get_type().get_size();
        let biased = b.build_int_add(n, self.ki32(127, w), "e").map_err(llvm_err)?;
        let bits = b.build_left_shift(biased, self.ki32(23, w), "bits").map_err(llvm_err)?;
        Ok(b.build_bit_cast(bits, self.cx.vf32(w), "pow2").map_err(llvm_err)?.into_vector_value())
    }

    /// `tanh x`, Cephes `tanhf`.
    pub fn tanh(&self, x: V<'ctx>) -> Result<V<'ctx>> {
        let a = self.abs(x)?;
        let z = self.mul(x, x)?;
        let mut p = self.kl(TANH_P[0], x);
        for c in &TANH_P[1..] {
            p = self.fma(p, z, self.kl(*c, x))?;
        }
        let small = self.fma(self.mul(p, z)?, x, x)?;
        // 1 − 2/(e^{2|x|} + 1): no cancellation above 0.625; +inf lanes give 1, NaN stays NaN.
        let e = self.exp(self.add(a, a)?)?;
        let big = self.sub(self.kl(1.0, x), self.div(self.kl(2.0, x), self.add(e, self.kl(1.0, x))?)?)?;
        let big = self.copysign(big, x)?;
        let is_small = self.cmp(FloatPredicate::OLT, a, self.kl(TANH_SMALL, x))?;
        self.select(is_small, small, big)
    }

    /// `1 / (1 + e^{-x})`, written so that no lane overflows or cancels.
    pub fn sigmoid(&self, x: V<'ctx>) -> Result<V<'ctx>> {
        let e = self.exp(self.neg(self.abs(x)?)?)?;
        let nonneg = self.cmp(FloatPredicate::OGE, x, self.kl(0.0, x))?;
        let num = self.select(nonneg, self.kl(1.0, x), e)?;
        self.div(num, self.add(self.kl(1.0, x), e)?)
    }

    /// `x · sigmoid(x)`.
    pub fn silu(&self, x: V<'ctx>) -> Result<V<'ctx>> {
        self.mul(x, self.sigmoid(x)?)
    }

    /// GELU, tanh approximation: `x/2 · (1 + tanh(√(2/π)(x + 0.044715x³)))` as `x · sigmoid(2u)`.
    pub fn gelu_tanh(&self, x: V<'ctx>) -> Result<V<'ctx>> {
        let z = self.mul(x, x)?;
        let inner = self.fma(self.kl(GELU_G3 as f32, x), z, self.kl(GELU_G1 as f32, x))?;
        let two_u = self.mul(x, inner)?;
        self.mul(x, self.sigmoid(two_u)?)
    }

    /// GELU, exact: `x/2 · erfc(−x/√2)` (libm `erfcf` per lane).
    pub fn gelu_erf(&self, x: V<'ctx>) -> Result<V<'ctx>> {
        // −x/√2 with the constant in two parts, so the argument is rounded about once.
        let hi = -std::f64::consts::FRAC_1_SQRT_2 as f32;
        let lo = (-std::f64::consts::FRAC_1_SQRT_2 - hi as f64) as f32;
        let t = self.fma(x, self.kl(hi, x), self.mul(x, self.kl(lo, x))?)?;
        let c = self.per_lane("erfcf", &[t])?;
        self.mul(self.mul(x, self.kl(0.5, x))?, c)
    }
}
