//! Elementwise math the compiler vectorises: `exp`, `erfc`, GELU, its
//! slope and the SiLU gate, written branch-free (selects, no calls into
//! libm) so that a loop over a slice becomes SIMD code, and compiled twice
//! through dwt-core's dispatch (portable and AVX2, picked at run time).
//! Without FMA both copies round alike: results are bit-identical across
//! instruction sets, and, being elementwise, across thread counts.
//!
//! Accuracy, checked against f64 references in the tests below:
//! - `exp`: Cody–Waite reduction `x = k·ln2 + r`, Taylor to `r⁷`
//!   (truncation below 5e-9 on `|r| ≤ ln2/2`); within 2 ulp, with
//!   gradual underflow and overflow to `inf`;
//! - `erfc` for `z ≥ 0`: the Chebyshev fit of Numerical Recipes (Press et
//!   al., §6.2, `erfcc`), fractional error below 1.2e-7 everywhere, so
//!   `Φ(x)` keeps its relative accuracy deep in the lower tail, where
//!   `1 + erf` cancels.
//!
//! candle's `gelu_erf` calls libm's scalar `erff` per element: 17× slower
//! than torch's vectorised GELU on the MiniLM shapes (docs/PERFORMANCE.md).

use std::f32::consts::{FRAC_1_SQRT_2, LOG2_E};

/// `ln 2` split for Cody–Waite: `LN2_HI` has 8 trailing zero bits, so
/// `k · LN2_HI` is exact for the `|k| ≤ 150` that occur.
const LN2_HI: f32 = 0.693_145_75;
/// `ln 2 − LN2_HI`, from the f64 value (`LN_2 − LN2_HI` in f32 would carry
/// `LN_2`'s own rounding, 2e-9, times `k`).
const LN2_LO: f32 = 1.428_606_8e-6;
/// `1.5 · 2²³`: adding and subtracting it rounds to the nearest integer,
/// and the sum's low mantissa bits are that integer.
const ROUND: f32 = 12_582_912.0;
/// `1/√(2π)`.
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// `eˣ`.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // Above 88.8 the result overflows to inf, below -104 it rounds to 0;
    // a NaN stays NaN through the clamp and propagates.
    let xc = x.clamp(-104.0, 88.8);
    let shifted = xc * LOG2_E + ROUND;
    let k = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let kf = shifted - ROUND;
    let r = (xc - kf * LN2_HI) - kf * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2ᵏ as two factors, each a normal number for k in [-150, 128].
    let half = k >> 1;
    let lo = f32::from_bits((half.wrapping_add(127) as u32) << 23);
    let hi = f32::from_bits((k.wrapping_sub(half).wrapping_add(127) as u32) << 23);
    p * lo * hi
}

/// `erfc(z)` for `z ≥ 0` (Numerical Recipes' `erfcc`, its published
/// coefficients).
#[inline(always)]
#[allow(clippy::excessive_precision)]
fn erfc_nonneg(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    t * exp(poly)
}

/// The standard normal CDF `Φ(x) = ½·erfc(−x/√2)`.
#[inline(always)]
fn normal_cdf(x: f32) -> f32 {
    let half_tail = 0.5 * erfc_nonneg(x.abs() * FRAC_1_SQRT_2);
    if x < 0.0 { half_tail } else { 1.0 - half_tail }
}

/// GELU, erf form: `x·Φ(x)`.
#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    x * normal_cdf(x)
}

/// GELU's derivative `Φ(x) + x·φ(x)`.
#[inline(always)]
pub(crate) fn gelu_slope(x: f32) -> f32 {
    normal_cdf(x) + x * (INV_SQRT_2PI * exp(-0.5 * x * x))
}

/// The logistic `σ(x) = 1/(1 + e⁻ˣ)`.
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `g · gelu'(x)`.
#[inline(always)]
fn gelu_backward(x: f32, g: f32) -> f32 {
    g * gelu_slope(x)
}

/// `silu(a) · b`.
#[inline(always)]
fn swiglu(a: f32, b: f32) -> f32 {
    a * sigmoid(a) * b
}

/// `g · silu'(a)`.
#[inline(always)]
fn silu_backward(a: f32, g: f32) -> f32 {
    let s = sigmoid(a);
    g * (s * (1.0 + a * (1.0 - s)))
}

/// The elementwise kernels, over the shorter of their slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// `y = gelu(a)`.
    Gelu,
    /// `y = b · gelu'(a)` (`b` the incoming gradient).
    GeluBackward,
    /// `y = silu(a) · b`.
    SwiGlu,
    /// `y = b · σ(a)(1 + a(1 − σ(a)))`: SiLU's slope times `b`.
    SiluBackward,
}

impl Kernel {
    /// Apply the kernel to `a` (and `b`, for two-input kernels; ignored
    /// otherwise) into `y`.
    pub(crate) fn run(self, a: &[f32], b: &[f32], y: &mut [f32]) {
        // One loop per kernel with a direct call, so that the scalar
        // function inlines into the loop and the loop vectorises.
        macro_rules! each {
            ($f:ident($x:ident)) => {
                dwt_core::__dispatch!(for (y, &$x) in y.iter_mut().zip(a) {
                    *y = $f($x);
                })
            };
            ($f:ident($x:ident, $g:ident)) => {
                dwt_core::__dispatch!(for ((y, &$x), &$g) in y.iter_mut().zip(a).zip(b) {
                    *y = $f($x, $g);
                })
            };
        }
        match self {
            Kernel::Gelu => each!(gelu(x)),
            Kernel::GeluBackward => each!(gelu_backward(x, g)),
            Kernel::SwiGlu => each!(swiglu(x, g)),
            Kernel::SiluBackward => each!(silu_backward(x, g)),
        }
    }

    /// Whether the kernel reads `b`.
    pub(crate) fn binary(self) -> bool {
        matches!(self, Kernel::GeluBackward | Kernel::SwiGlu | Kernel::SiluBackward)
    }
}

/// GELU in place, with the bits of [`Kernel::Gelu`].
pub(crate) fn gelu_in_place(h: &mut [f32]) {
    dwt_core::__dispatch!(for h in h.iter_mut() {
        *h = gelu(*h);
    })
}

/// GELU in place, and its slope beside it: `slope[i] = gelu'(h[i])`, then
/// `h[i] = gelu(h[i])`, over the shorter of the two. Each value has the bits
/// of [`Kernel::Gelu`] and of [`Kernel::GeluBackward`] with a gradient of 1;
/// `Φ(x)` is computed once for both.
pub(crate) fn gelu_with_slope(h: &mut [f32], slope: &mut [f32]) {
    dwt_core::__dispatch!(for (h, s) in h.iter_mut().zip(slope.iter_mut()) {
        let x = *h;
        *s = gelu_slope(x);
        *h = gelu(x);
    })
}

/// `Σ f(a_i, b_i)` in eight interleaved lanes, then the lanes and the tail
/// in order: a fixed order that vectorises, so the same bits on every ISA.
#[inline(always)]
fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let ((ca, ta), (cb, tb)) = (a.as_chunks::<8>(), b.as_chunks::<8>());
    let mut acc = [0f32; 8];
    for (x, y) in ca.iter().zip(cb) {
        for l in 0..8 {
            acc[l] += f(x[l], y[l]);
        }
    }
    let tail = ta.iter().zip(tb).fold(0f32, |s, (&x, &y)| s + f(x, y));
    acc.iter().sum::<f32>() + tail
}

/// A LayerNorm row's mean and `1/σ` (the biased variance, as torch's).
#[inline(always)]
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let h = x.len() as f32;
    let mean = lane_sum(x, x, |v, _| v) / h;
    let var = lane_sum(x, x, |v, _| (v - mean) * (v - mean)) / h;
    (mean, 1.0 / (var + eps).sqrt())
}

/// LayerNorm of each row of `w.len()` values of `x` into `y`:
/// `(x − μ)/σ · w + b`.
pub(crate) fn layer_norm_rows(x: &[f32], w: &[f32], b: &[f32], eps: f32, y: &mut [f32]) {
    let h = w.len().max(1);
    dwt_core::__dispatch!(for (y, x) in y.chunks_exact_mut(h).zip(x.chunks_exact(h)) {
        let (mean, rstd) = row_stats(x, eps);
        for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
            *y = (x - mean) * rstd * w + b;
        }
    })
}

/// Two scratch rows of a LayerNorm's width for [`layer_norm_rows_backward`].
pub(crate) struct NormScratch {
    xhat: Vec<f32>,
    gw: Vec<f32>,
}

impl NormScratch {
    pub(crate) fn new(h: usize) -> Self {
        NormScratch {
            xhat: vec![0f32; h],
            gw: vec![0f32; h],
        }
    }
}

/// LayerNorm's backward over the rows of `x` and their gradients `g`:
/// `∂x = (ĝ − mean(ĝ) − x̂·mean(ĝ ⊙ x̂))/σ` with `ĝ = g ⊙ w`; with
/// `params = (∂w, ∂b)`, adds each row's `g ⊙ x̂` and `g` into them.
pub(crate) fn layer_norm_rows_backward(
    x: &[f32],
    w: &[f32],
    g: &[f32],
    eps: f32,
    dx: &mut [f32],
    scratch: &mut NormScratch,
    mut params: Option<(&mut [f32], &mut [f32])>,
) {
    let h = w.len().max(1);
    let NormScratch { xhat, gw } = scratch;
    let (xhat, gw) = (&mut xhat[..w.len()], &mut gw[..w.len()]);
    dwt_core::__dispatch!(
        for ((dx, x), g) in dx.chunks_exact_mut(h).zip(x.chunks_exact(h)).zip(g.chunks_exact(h)) {
            let (mean, rstd) = row_stats(x, eps);
            for (((xh, gw), &x), (&g, &w)) in xhat.iter_mut().zip(gw.iter_mut()).zip(x).zip(g.iter().zip(w)) {
                *xh = (x - mean) * rstd;
                *gw = g * w;
            }
            let n = h as f32;
            let mean_g = lane_sum(gw, gw, |v, _| v) / n;
            let mean_gx = lane_sum(gw, xhat, |a, b| a * b) / n;
            for ((dx, &gw), &xh) in dx.iter_mut().zip(gw.iter()).zip(xhat.iter()) {
                *dx = (gw - mean_g - xh * mean_gx) * rstd;
            }
            if let Some((dw, db)) = params.as_mut() {
                for (((dw, db), &g), &xh) in dw.iter_mut().zip(db.iter_mut()).zip(g).zip(xhat.iter()) {
                    *dw += g * xh;
                    *db += g;
                }
            }
        }
    )
}

/// `row[i] = exp(row[i] − max)`, returning the sum, for softmax rows.
pub(crate) fn exp_shifted_sum(row: &mut [f32], max: f32) -> f32 {
    dwt_core::__dispatch!(exp_shifted_sum_body(row, max))
}

/// A softmax row's numerators in place: `row[i] = exp(row[i] − m)` for the
/// row's largest value `m`, returning `m` and the sum.
pub(crate) fn exp_from_max(row: &mut [f32]) -> (f32, f32) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    (max, exp_shifted_sum(row, max))
}

#[inline(always)]
fn exp_shifted_sum_body(row: &mut [f32], max: f32) -> f32 {
    // Eight partial sums, so that the loop vectorises without reassociating
    // a single running sum (the order is fixed by the code, not the ISA).
    let mut acc = [0f32; 8];
    let mut chunks = row.chunks_exact_mut(8);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c.iter_mut()) {
            *v = exp(*v - max);
            *a += *v;
        }
    }
    let mut sum = 0f32;
    for v in chunks.into_remainder() {
        *v = exp(*v - max);
        sum += *v;
    }
    acc.iter().sum::<f32>() + sum
}

#[cfg(test)]
mod tests {
    use super::{
        Kernel, NormScratch, exp, gelu, gelu_in_place, gelu_slope, gelu_with_slope, layer_norm_rows,
        layer_norm_rows_backward, normal_cdf,
    };

    /// Units in the last place (of `b` rounded to f32) between `a` and the
    /// f64 value `b`.
    fn ulps(a: f32, b: f64) -> f64 {
        let bits = (b as f32).abs().max(f32::MIN_POSITIVE).to_bits() & 0x7f80_0000;
        let ulp = f64::from(f32::from_bits(bits)) * f64::from(f32::EPSILON);
        (f64::from(a) - b).abs() / ulp
    }

    /// A dense sweep of `[lo, hi]`.
    fn sweep(lo: f32, hi: f32, n: usize) -> impl Iterator<Item = f32> {
        (0..=n).map(move |i| lo + (hi - lo) * i as f32 / n as f32)
    }

    #[test]
    fn exp_is_within_two_ulp_of_f64_and_handles_the_edges() {
        let worst = sweep(-87.0, 88.7, 2_000_000)
            .map(|x| ulps(exp(x), f64::from(x).exp()))
            .fold(0.0, f64::max);
        assert!(worst <= 2.0, "exp off by {worst} ulp");
        // Gradual underflow, overflow and the special values.
        for x in [-90.0f32, -100.0, -103.0] {
            let (got, want) = (f64::from(exp(x)), f64::from(x).exp());
            assert!((got - want).abs() <= 2e-45, "exp({x}) = {got}, not {want}");
        }
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(88.72).is_finite());
    }

    #[test]
    fn gelu_and_its_slope_match_f64_references() {
        let erf = candle_core::cpu::erf::erf_f64;
        let cdf = |x: f64| 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
        // Central range: absolute error relative to |x|.
        let mut worst = (0.0f64, 0.0f64);
        for x in sweep(-10.0, 10.0, 400_000) {
            let v = f64::from(x);
            let g = (f64::from(gelu(x)) - v * cdf(v)).abs() / v.abs().max(1e-30);
            let d = (f64::from(gelu_slope(x))
                - (cdf(v) + v * (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt()))
            .abs();
            worst = (worst.0.max(g), worst.1.max(d));
        }
        assert!(worst.0 < 3e-7, "gelu off by {} (relative to |x|)", worst.0);
        assert!(worst.1 < 3e-7, "gelu slope off by {}", worst.1);
        // The lower tail keeps relative accuracy where 1 + erf cancels (the
        // f64 reference from erfc): within 4e-7·(1 + x²), Φ's own condition
        // number x² times f32's rounding of x, plus the fit's 1.2e-7.
        let erfc = candle_core::cpu::erf::erfc_f64;
        let tail = sweep(-12.0, -0.5, 100_000)
            .map(|x| {
                let want = 0.5 * erfc(-f64::from(x) / std::f64::consts::SQRT_2);
                (f64::from(normal_cdf(x)) - want).abs() / want / (1.0 + f64::from(x * x))
            })
            .fold(0.0, f64::max);
        assert!(tail < 4e-7, "Φ's lower tail off by {tail}·(1 + x²) relative");
        assert_eq!(gelu(f32::INFINITY), f32::INFINITY);
        assert_eq!(gelu(-200.0), 0.0);
        assert!(gelu(f32::NAN).is_nan());
        assert_eq!(gelu(0.0), 0.0);
    }

    /// The AVX2 copy computes what the portable one computes, bit for bit,
    /// on every kernel (odd lengths exercise the vector loops' tails).
    #[test]
    fn instruction_sets_agree_bit_for_bit() {
        let a: Vec<f32> = sweep(-12.0, 12.0, 10_006).collect();
        let b: Vec<f32> = a.iter().map(|v| (v * 1.7).sin()).collect();
        for k in [Kernel::Gelu, Kernel::GeluBackward, Kernel::SwiGlu, Kernel::SiluBackward] {
            let mut fast = vec![0f32; a.len()];
            let mut portable = vec![0f32; a.len()];
            k.run(&a, &b, &mut fast);
            dwt_core::__set_portable_kernels_only(true);
            k.run(&a, &b, &mut portable);
            dwt_core::__set_portable_kernels_only(false);
            let same = fast.iter().zip(&portable).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{k:?} differs between instruction sets");
        }
        // GELU with its slope, against the two kernels and across ISAs.
        let (mut gelu_of, mut slope_of) = (vec![0f32; a.len()], vec![0f32; a.len()]);
        Kernel::Gelu.run(&a, &[], &mut gelu_of);
        Kernel::GeluBackward.run(&a, &vec![1.0; a.len()], &mut slope_of);
        for portable in [false, true] {
            let (mut h, mut s) = (a.clone(), vec![0f32; a.len()]);
            dwt_core::__set_portable_kernels_only(portable);
            gelu_with_slope(&mut h, &mut s);
            dwt_core::__set_portable_kernels_only(false);
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&h),
                bits(&gelu_of),
                "gelu_with_slope's values (portable: {portable})"
            );
            assert_eq!(
                bits(&s),
                bits(&slope_of),
                "gelu_with_slope's slopes (portable: {portable})"
            );
            let mut h = a.clone();
            dwt_core::__set_portable_kernels_only(portable);
            gelu_in_place(&mut h);
            dwt_core::__set_portable_kernels_only(false);
            assert_eq!(bits(&h), bits(&gelu_of), "gelu_in_place (portable: {portable})");
        }
        // LayerNorm forward and backward, rows of a width with a tail past
        // the eight lanes.
        let h = 43;
        let rows = a.len() / h;
        let (x, g) = (&a[..rows * h], &b[..rows * h]);
        let (w, bias): (Vec<f32>, Vec<f32>) = (0..h).map(|i| (1.0 + 0.01 * i as f32, 0.1 * i as f32)).unzip();
        let run = |portable: bool| {
            dwt_core::__set_portable_kernels_only(portable);
            let mut y = vec![0f32; x.len()];
            layer_norm_rows(x, &w, &bias, 1e-6, &mut y);
            let (mut dx, mut dw, mut db) = (vec![0f32; x.len()], vec![0f32; h], vec![0f32; h]);
            let mut scratch = NormScratch::new(h);
            layer_norm_rows_backward(x, &w, g, 1e-6, &mut dx, &mut scratch, Some((&mut dw, &mut db)));
            dwt_core::__set_portable_kernels_only(false);
            [y, dx, dw, db].map(|v| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
        };
        assert_eq!(run(true), run(false), "layer norm differs between instruction sets");
    }
}
