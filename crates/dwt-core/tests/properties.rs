//! The laws every transform must obey, on random shapes, wavelets, modes and
//! levels (proptest): perfect reconstruction, energy preservation,
//! the adjoint identity, linearity, axis handling, thread- and
//! scratch-independence.
#![allow(clippy::unwrap_used)]

mod common;

use dwt_core::{
    Coeffs1, Coeffs2, Family, Level, Mode, Plan1, Plan2, Wavelet, dwt_max_level, dwt2, idwt, idwt_adjoint, idwt2,
    idwt2_adjoint, wavedec, wavedec2, waverec, waverec_adjoint, waverec2, waverec2_adjoint,
};
use ndarray::{Array1, Array2, Array3, Axis, s};
use proptest::prelude::*;
use proptest::test_runner::TestRng;

fn names() -> Vec<String> {
    Wavelet::names().collect()
}

/// Wavelets with perfect reconstruction (everything but the FIR-approximated
/// discrete Meyer, whose reconstruction error is ~7e-3 in PyWavelets too).
fn pr_wavelet() -> impl Strategy<Value = Wavelet> {
    prop::sample::select(names())
        .prop_map(|n| Wavelet::new(&n).unwrap())
        .prop_filter("dmey is not perfectly reconstructing", |w| {
            w.family() != Family::DiscreteMeyer
        })
}

fn mode() -> impl Strategy<Value = Mode> {
    prop::sample::select(Mode::ALL.to_vec())
}

fn randn1(rng: &mut TestRng, n: usize) -> Array1<f64> {
    Array1::from_shape_fn(n, |_| rng.random_range(-1.0..1.0))
}
fn randn2(rng: &mut TestRng, shape: (usize, usize)) -> Array2<f64> {
    Array2::from_shape_fn(shape, |_| rng.random_range(-1.0..1.0))
}

fn max_abs<'a>(it: impl IntoIterator<Item = &'a f64>) -> f64 {
    it.into_iter().fold(0.0, |m, v| m.max(v.abs()))
}

fn dot1(a: &Coeffs1<f64>, b: &Coeffs1<f64>) -> f64 {
    a.approx().dot(b.approx()) + a.details().iter().zip(b.details()).map(|(x, y)| x.dot(y)).sum::<f64>()
}
fn dot2(a: &Coeffs2<f64>, b: &Coeffs2<f64>) -> f64 {
    let mut acc = (a.approx() * b.approx()).sum();
    for (x, y) in a.details().iter().zip(b.details()) {
        for k in 0..3 {
            acc += (&x[k] * &y[k]).sum();
        }
    }
    acc
}
fn energy1(c: &Coeffs1<f64>) -> f64 {
    dot1(c, c)
}
fn energy2(c: &Coeffs2<f64>) -> f64 {
    dot2(c, c)
}

fn random_coeffs2(rng: &mut TestRng, like: &Coeffs2<f64>) -> Coeffs2<f64> {
    let approx = randn2(rng, like.approx().dim());
    let details = like
        .details()
        .iter()
        .map(|l| l.clone().map(|a| randn2(rng, a.dim())))
        .collect();
    Coeffs2::from_parts(approx, details, [Axis(0), Axis(1)])
}
fn random_coeffs1(rng: &mut TestRng, like: &Coeffs1<f64>) -> Coeffs1<f64> {
    let approx = randn1(rng, like.approx().len());
    let details = like.details().iter().map(|d| randn1(rng, d.len())).collect();
    Coeffs1::from_parts(approx, details, Axis(0))
}

/// How far a scaling filter is from orthonormal: `max_m |Σ h[k]h[k+2m] − δ_m|`.
/// PyWavelets' own tables reach 1.4e-11 (sym20), and a transform built on
/// them preserves energy only to that level.
fn orthonormality_defect(w: &Wavelet) -> f64 {
    let h = w.rec_lo();
    (0..h.len() / 2)
        .map(|m| {
            let s: f64 = h.iter().zip(&h[2 * m..]).map(|(a, b)| a * b).sum();
            (s - if m == 0 { 1.0 } else { 0.0 }).abs()
        })
        .fold(0.0, f64::max)
}

/// The reconstruction error a correct transform may show: round-off, plus
/// the filter table's own orthonormality defect amplified by each level (the
/// smooth extension adds samples up to ~filter length times the edge slope).
/// PyWavelets 1.8 itself reconstructs sym20 / smooth / n=156 / level 2 with
/// errors up to 1.42e-10 over 2000 random signals, with the same tables.
fn reconstruction_tolerance(w: &Wavelet, level: usize) -> f64 {
    let defect = if w.is_orthogonal() {
        orthonormality_defect(w)
    } else {
        0.0
    };
    1e-10 + 32.0 * (level as f64 + 1.0) * defect
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn perfect_reconstruction_1d(w in pr_wavelet(), mode in mode(), n in 2usize..160, lvl in 0usize..5, seed: u64) {
        let mut rng = TestRng::from_seed(Default::default(), &seed.to_le_bytes().repeat(4));
        let x = randn1(&mut rng, n);
        let level = lvl.min(dwt_max_level(n, w.filter_len()));
        let c = wavedec(x.view(), &w, mode, Some(level)).unwrap();
        let y = waverec(&c, &w, mode).unwrap();
        prop_assert!(y.len() == n || y.len() == n + 1);
        let err = max_abs(&(&y.slice(s![..n]) - &x));
        let tol = reconstruction_tolerance(&w, level);
        prop_assert!(err < tol, "{} {mode} n={n} level={level}: error {err:e} (tolerance {tol:e})", w.name());
    }

    #[test]
    fn perfect_reconstruction_2d(w in pr_wavelet(), mode in mode(), r in 2usize..40, c in 2usize..40, lvl in 0usize..4, seed: u64) {
        let mut rng = TestRng::from_seed(Default::default(), &seed.to_le_bytes().repeat(4));
        let x = randn2(&mut rng, (r, c));
        let level = lvl.min(dwt_max_level(r.min(c), w.filter_len()));
        let co = wavedec2(x.view(), &w, mode, Some(level)).unwrap();
        let y = waverec2(&co, &w, mode).unwrap();
        let err = max_abs(&(&y.slice(s![..r, ..c]) - &x));
        let tol = reconstruction_tolerance(&w, level);
        prop_assert!(err < tol, "{} {mode} {r}x{c} level={level}: error {err:e} (tolerance {tol:e})", w.name());
    }

    /// Orthogonal wavelets in periodization mode are orthogonal transforms
    /// (for sizes divisible by 2^level, where no padding sample is added), to
    /// within the filter table's own orthonormality defect.
    #[test]
    fn periodization_preserves_energy(w in pr_wavelet(), level in 1usize..4, k0 in 1usize..10, k1 in 1usize..10, seed: u64) {
        prop_assume!(w.is_orthogonal());
        let mut rng = TestRng::from_seed(Default::default(), &seed.to_le_bytes().repeat(4));
        let (r, c) = (k0 << level, k1 << level);
        let x = randn2(&mut rng, (r, c));
        let plan = Plan2::<f64>::new((r, c), &w, Mode::Periodization, Level::Unchecked(level)).unwrap();
        let mut co = plan.coeffs_zeros();
        plan.forward(x.view(), &mut co, &mut vec![0.0; plan.scratch_len()]).unwrap();
        let tol = 1e-13 + 4.0 * level as f64 * orthonormality_defect(&w);
        let ex = (&x * &x).sum();
        prop_assert!((energy2(&co) - ex).abs() <= tol * ex, "2-D {}: {} vs {ex}", w.name(), energy2(&co));
        let x1 = randn1(&mut rng, r);
        let plan = Plan1::<f64>::new(r, &w, Mode::Periodization, Level::Unchecked(level)).unwrap();
        let mut c1 = plan.coeffs_zeros();
        plan.forward(x1.view(), &mut c1, &mut vec![0.0; plan.scratch_len()]).unwrap();
        let ex = x1.dot(&x1);
        prop_assert!((energy1(&c1) - ex).abs() <= tol * ex, "1-D {}: {} vs {ex}", w.name(), energy1(&c1));
    }

    /// `<waverec2(c), y> = <c, waverec2_adjoint(y)>` for every wavelet (dmey
    /// included: the adjoint is exact whatever the filters) and mode, with
    /// the approximation optionally one sample larger than the details
    /// (PyWavelets crops it).
    #[test]
    fn adjoint_identity_2d(name in prop::sample::select(names()), mode in mode(), r in 2usize..36, c in 2usize..36,
                           lvl in 1usize..4, grow in 0usize..3, seed: u64) {
        let w = Wavelet::new(&name).unwrap();
        let mut rng = TestRng::from_seed(Default::default(), &seed.to_le_bytes().repeat(4));
        let level = lvl.min(dwt_max_level(r.min(c), w.filter_len()).max(1));
        let plan = Plan2::<f64>::new((r, c), &w, mode, Level::Unchecked(level)).unwrap();
        let like = plan.coeffs_zeros();
        let mut co = random_coeffs2(&mut rng, &like);
        if grow > 0 {
            let (a0, a1) = co.approx().dim();
            let bigger = if grow == 1 { (a0 + 1, a1) } else { (a0, a1 + 1) };
            *co.approx_mut() = randn2(&mut rng, bigger);
        }
        let synth = waverec2(&co, &w, mode).unwrap();
        let y = randn2(&mut rng, synth.dim());
        let adj = waverec2_adjoint(y.view(), &co, &w, mode).unwrap();
        let (lhs, rhs) = ((&synth * &y).sum(), dot2(&co, &adj));
        let scale = energy2(&co).sqrt() * (&y * &y).sum().sqrt();
        prop_assert!((lhs - rhs).abs() <= 1e-10 * scale, "{name} {mode}: {lhs} vs {rhs}");
    }

    #[test]
    fn adjoint_identity_1d(name in prop::sample::select(names()), mode in mode(), n in 2usize..200, lvl in 1usize..5, seed: u64) {
        let w = Wavelet::new(&name).unwrap();
        let mut rng = TestRng::from_seed(Default::default(), &seed.to_le_bytes().repeat(4));
        let level = lvl.min(dwt_max_level(n, w.filter_len()).max(1));
        let plan = Plan1::<f64>::new(n, &w, mode, Level::Unchecked(level)).unwrap();
        let co = random_coeffs1(&mut rng, &plan.coeffs_zeros());
        let synth = waverec(&co, &w, mode).unwrap();
        let y = randn1(&mut rng, synth.len());
        let adj = waverec_adjoint(y.view(), &co, &w, mode).unwrap();
        let (lhs, rhs) = (synth.dot(&y), dot1(&co, &adj));
        prop_assert!((lhs - rhs).abs() <= 1e-10 * energy1(&co).sqrt() * y.dot(&y).sqrt(), "{name} {mode}: {lhs} vs {rhs}");
        // The single-level free functions agree with the identity too.
        let (a, d) = (randn1(&mut rng, n.div_ceil(2) + w.filter_len()), randn1(&mut rng, n.div_ceil(2) + w.filter_len()));
        let s = idwt(a.view(), d.view(), &w, mode).unwrap();
        let y = randn1(&mut rng, s.len());
        let (aa, dd) = idwt_adjoint(y.view(), &w, mode).unwrap();
        let (lhs, rhs) = (s.dot(&y), a.dot(&aa) + d.dot(&dd));
        prop_assert!((lhs - rhs).abs() <= 1e-10 * (a.dot(&a) + d.dot(&d)).sqrt() * y.dot(&y).sqrt());
    }

    #[test]
    fn single_level_2d_adjoint(name in prop::sample::select(names()), mode in mode(), m0 in 1usize..20, m1 in 1usize..20, seed: u64) {
        let w = Wavelet::new(&name).unwrap();
        let half = w.filter_len() / 2;
        let (m0, m1) = if mode == Mode::Periodization { (m0, m1) } else { (m0 + half, m1 + half) };
        let mut rng = TestRng::from_seed(Default::default(), &seed.to_le_bytes().repeat(4));
        let bands: Vec<Array2<f64>> = (0..4).map(|_| randn2(&mut rng, (m0, m1))).collect();
        let s = idwt2(bands[0].view(), [bands[1].view(), bands[2].view(), bands[3].view()], &w, mode).unwrap();
        let y = randn2(&mut rng, s.dim());
        let (a, [h, v, d]) = idwt2_adjoint(y.view(), &w, mode).unwrap();
        let rhs: f64 = [a, h, v, d].iter().zip(&bands).map(|(p, q)| (p * q).sum()).sum();
        let norm: f64 = bands.iter().map(|b| (b * b).sum()).sum::<f64>().sqrt();
        prop_assert!(((&s * &y).sum() - rhs).abs() <= 1e-10 * norm * (&y * &y).sum().sqrt());
    }

    #[test]
    fn transforms_are_linear(name in prop::sample::select(names()), mode in mode(), r in 2usize..30, c in 2usize..30,
                             alpha in -3.0f64..3.0, beta in -3.0f64..3.0, seed: u64) {
        let w = Wavelet::new(&name).unwrap();
        let mut rng = TestRng::from_seed(Default::default(), &seed.to_le_bytes().repeat(4));
        let (x, y) = (randn2(&mut rng, (r, c)), randn2(&mut rng, (r, c)));
        let level = dwt_max_level(r.min(c), w.filter_len()).min(2);
        let f = |v: &Array2<f64>| wavedec2(v.view(), &w, mode, Some(level)).unwrap();
        let (fx, fy, fxy) = (f(&x), f(&y), f(&(&x * alpha + &y * beta)));
        let combo = |a: &Array2<f64>, b: &Array2<f64>| a * alpha + b * beta;
        let mut err = max_abs(&(fxy.approx() - combo(fx.approx(), fy.approx())));
        for ((l, lx), ly) in fxy.details().iter().zip(fx.details()).zip(fy.details()) {
            for k in 0..3 {
                err = err.max(max_abs(&(&l[k] - combo(&lx[k], &ly[k]))));
            }
        }
        prop_assert!(err < 1e-10, "forward: {err:e}");
        let (rx, ry) = (waverec2(&fx, &w, mode).unwrap(), waverec2(&fy, &w, mode).unwrap());
        let sum = Coeffs2::from_parts(
            combo(fx.approx(), fy.approx()),
            fx.details().iter().zip(fy.details()).map(|(a, b)| [0, 1, 2].map(|k| combo(&a[k], &b[k]))).collect(),
            [Axis(0), Axis(1)],
        );
        let err = max_abs(&(waverec2(&sum, &w, mode).unwrap() - combo(&rx, &ry)));
        prop_assert!(err < 1e-10, "inverse: {err:e}");
    }

    /// A transform over axes of a 3-D array equals the 2-D transform of each
    /// slice, whatever the axis order.
    #[test]
    fn nd_axes_match_slices(name in prop::sample::select(names()), mode in mode(), d0 in 2usize..9, d1 in 2usize..9, d2 in 2usize..9,
                            which in 0usize..6, seed: u64) {
        let w = Wavelet::new(&name).unwrap();
        let mut rng = TestRng::from_seed(Default::default(), &seed.to_le_bytes().repeat(4));
        let x = Array3::from_shape_fn((d0, d1, d2), |_| rng.random_range(-1.0..1.0));
        let axes = [[0, 1], [0, 2], [1, 2], [1, 0], [2, 0], [2, 1]][which];
        let other = 3 - axes[0] - axes[1];
        let flip = axes[0] > axes[1];
        let plan = dwt_core::Plan2::<f64, ndarray::Ix3>::with_axes((d0, d1, d2), &[Axis(axes[0]), Axis(axes[1])], &w, mode, Level::Unchecked(1)).unwrap();
        let mut nd = plan.coeffs_zeros();
        plan.forward(x.view(), &mut nd, &mut vec![0.0; plan.scratch_len()]).unwrap();
        for i in 0..x.len_of(Axis(other)) {
            let slice = x.index_axis(Axis(other), i);
            // The slice's axes in transform order.
            let slice = if flip { slice.reversed_axes() } else { slice };
            let p2 = Plan2::<f64>::new(slice.dim(), &w, mode, Level::Unchecked(1)).unwrap();
            let mut c2 = p2.coeffs_zeros();
            p2.forward(slice, &mut c2, &mut vec![0.0; p2.scratch_len()]).unwrap();
            let pick = |a: &ndarray::Array3<f64>| {
                let v = a.index_axis(Axis(other), i);
                if flip { v.reversed_axes().to_owned() } else { v.to_owned() }
            };
            prop_assert!(max_abs(&(pick(nd.approx()) - c2.approx())) < 1e-12);
            for k in 0..3 {
                prop_assert!(max_abs(&(pick(&nd.details()[0][k]) - &c2.details()[0][k])) < 1e-12);
            }
        }
    }

    /// Scratch contents never leak into results: a scratch buffer full of NaN
    /// gives the same coefficients as a clean one.
    #[test]
    fn poisoned_scratch_is_never_read(name in prop::sample::select(names()), mode in mode(), r in 2usize..30, c in 2usize..30, seed: u64) {
        let w = Wavelet::new(&name).unwrap();
        let mut rng = TestRng::from_seed(Default::default(), &seed.to_le_bytes().repeat(4));
        let x = randn2(&mut rng, (r, c));
        let level = dwt_max_level(r.min(c), w.filter_len()).clamp(1, 3);
        let plan = Plan2::<f64>::new((r, c), &w, mode, Level::Unchecked(level)).unwrap();
        let mut clean = plan.coeffs_zeros();
        plan.forward(x.view(), &mut clean, &mut vec![0.0; plan.scratch_len()]).unwrap();
        let mut poisoned = plan.coeffs_zeros().clone();
        poisoned.approx_mut().fill(f64::NAN);
        let mut scratch = vec![f64::NAN; plan.scratch_len()];
        plan.forward(x.view(), &mut poisoned, &mut scratch).unwrap();
        prop_assert_eq!(&poisoned, &clean);
        let mut y = Array2::from_elem(plan.reconstruction_dim(), f64::NAN);
        scratch.fill(f64::NAN);
        plan.inverse(&clean, y.view_mut(), &mut scratch).unwrap();
        prop_assert!(y.iter().all(|v| v.is_finite()));
        let mut adj = plan.coeffs_zeros();
        scratch.fill(f64::NAN);
        plan.inverse_adjoint(y.view(), &mut adj, &mut scratch).unwrap();
        prop_assert!(adj.approx().iter().all(|v| v.is_finite()));
    }
}

/// f32 transforms track the f64 ones to single precision.
#[test]
fn f32_tracks_f64() {
    let mut rng = TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha);
    for name in ["haar", "db4", "sym8", "coif5", "bior3.9", "db38"] {
        let w = Wavelet::new(name).unwrap();
        for mode in Mode::ALL {
            let x = randn2(&mut rng, (45, 38));
            let (a64, _) = dwt2(x.view(), &w, mode).unwrap();
            let (a32, [h, v, d]) = dwt2(x.mapv(|v| v as f32).view(), &w, mode).unwrap();
            let err = max_abs(&(a32.mapv(f64::from) - &a64));
            assert!(err < 1e-5 * max_abs(&a64), "{name} {mode}: {err:e}");
            let y32 = idwt2(a32.view(), [h.view(), v.view(), d.view()], &w, mode).unwrap();
            let err = max_abs(&(y32.slice(s![..45, ..38]).mapv(f64::from) - &x));
            assert!(err < 1e-4, "{name} {mode} reconstruction: {err:e}");
        }
    }
}

/// The rayon path computes exactly what the sequential path computes.
#[test]
fn parallel_and_sequential_agree_bit_for_bit() {
    let mut rng = TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha);
    let x = randn2(&mut rng, (301, 257));
    for (name, mode) in [
        ("db4", Mode::Symmetric),
        ("sym8", Mode::Periodization),
        ("bior2.6", Mode::Smooth),
    ] {
        let w = Wavelet::new(name).unwrap();
        let mut plan = Plan2::<f64>::new(x.dim(), &w, mode, Level::Exactly(3)).unwrap();
        plan.set_parallel(true);
        let par = common::plan_round_trip(&plan, &x);
        plan.set_parallel(false);
        let seq = common::plan_round_trip(&plan, &x);
        assert!(par == seq, "{name} {mode}: parallel and sequential results differ");
    }
}

/// The case that once failed CI (sym20, smooth, n=156, level 2): the error is
/// the filter table's, as in PyWavelets, and stays inside the tolerance over
/// many signals.
#[test]
fn sym20_smooth_reconstruction_matches_pywavelets_accuracy() {
    let w = Wavelet::new("sym20").unwrap();
    let tol = reconstruction_tolerance(&w, 2);
    let mut worst = 0.0_f64;
    for seed in 0..500_u64 {
        let mut rng = TestRng::from_seed(Default::default(), &seed.to_le_bytes().repeat(4));
        let x = randn1(&mut rng, 156);
        let c = wavedec(x.view(), &w, Mode::Smooth, Some(2)).unwrap();
        let y = waverec(&c, &w, Mode::Smooth).unwrap();
        worst = worst.max(max_abs(&(&y.slice(s![..156]) - &x)));
    }
    assert!(worst < tol, "worst error {worst:e}, tolerance {tol:e}");
}
