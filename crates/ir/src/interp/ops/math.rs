//! Scalar functions, computed in f64.

use std::f64::consts::PI;

/// The error function, to about 1e-15 absolute error.
///
/// |x| < 3: the everywhere-convergent series with positive terms (Abramowitz & Stegun 7.1.6)
/// `erf x = 2/√π · e^(-x²) · Σ_n 2ⁿ x^(2n+1) / (1·3·…·(2n+1))`, which has no cancellation;
/// |x| ≥ 3: `1 - erfc x` with the continued fraction (A&S 7.1.14)
/// `erfc x = e^(-x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))`.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let r = if a < 3.0 {
        let x2 = 2.0 * a * a;
        let (mut term, mut sum) = (a, a);
        let mut n = 0.0;
        while term > 1e-17 * sum {
            n += 1.0;
            term *= x2 / (2.0 * n + 1.0);
            sum += term;
        }
        2.0 / PI.sqrt() * (-a * a).exp() * sum
    } else {
        1.0 - erfc_cf(a)
    };
    r.copysign(x)
}

/// erfc for x ≥ 3 by the continued fraction, evaluated from the tail.
fn erfc_cf(x: f64) -> f64 {
    if x > 27.0 {
        return 0.0; // below f64's smallest subnormal
    }
    let mut f = x;
    for n in (1..=80).rev() {
        f = x + (n as f64 / 2.0) / f;
    }
    (-x * x).exp() / PI.sqrt() / f
}

pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

pub fn silu(x: f64) -> f64 {
    x * sigmoid(x)
}

/// GELU, exact: `x/2 · (1 + erf(x/√2))`.
pub fn gelu_erf(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

/// GELU, tanh approximation: `x/2 · (1 + tanh(√(2/π)(x + 0.044715x³)))`.
pub fn gelu_tanh(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_reference_values() {
        // Reference values from mpmath.
        let cases = [
            (0.0, 0.0),
            (1e-3, 0.0011283787909692363),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (2.9, 0.9999589021219005),
            (3.0, 0.9999779095030014),
            (3.5, 0.9999992569016276),
            (5.0, 0.9999999999984626),
            (-1.5, -0.9661051464753108),
        ];
        for (x, want) in cases {
            assert!((erf(x) - want).abs() < 1e-14, "erf({x}) = {} want {want}", erf(x));
        }
        // erfc itself, where the continued fraction takes over.
        assert!((erfc_cf(3.0) / 2.209049699858544e-05 - 1.0).abs() < 1e-12);
        assert!((erfc_cf(4.0) / 1.541725790028002e-08 - 1.0).abs() < 1e-12);
        assert_eq!(erf(40.0), 1.0);
        assert_eq!(erf(f64::INFINITY), 1.0);
        assert_eq!(erf(f64::NEG_INFINITY), -1.0);
        assert!(erf(f64::NAN).is_nan());
    }

    #[test]
    fn gelus() {
        assert!((gelu_erf(1.0) - 0.8413447460685429).abs() < 1e-14);
        assert!((gelu_erf(-1.0) - -0.15865525393145707).abs() < 1e-14);
        assert!((gelu_tanh(1.0) - 0.8411919906082768).abs() < 1e-14);
        assert!((silu(1.0) - 0.7310585786300049).abs() < 1e-15);
    }
}
