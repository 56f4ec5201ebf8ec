//! Every kernel against dwt-core on the CPU (f64 references), on whichever
//! adapter the environment selects. Outputs are poisoned with NaN first, so
//! an element the GPU forgot fails the comparison.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "../benches/support/mod.rs"]
mod support;

use common::{TOL, matrix, rel_err, values};
use dwt_core::{Coeffs2, Level, Mode, Wavelet, wavedec2, waverec2, waverec2_adjoint};
use dwt_gpu::{Crop, Dwt2, Error, Location, Orientation, SeparableBasis, SparsePlan, Subband};
use ndarray::{Array2, s};
use proptest::prelude::*;
use support::{coefficient, scatter};

const WAVELETS: [&str; 10] = [
    "haar", "db2", "db3", "db4", "db8", "sym3", "sym5", "coif1", "bior2.2", "rbio3.1",
];
const GPU_MODES: [Mode; 6] = [
    Mode::Zero,
    Mode::Constant,
    Mode::Symmetric,
    Mode::Reflect,
    Mode::Periodic,
    Mode::Periodization,
];

fn f64s(a: &Array2<f32>) -> Array2<f64> {
    a.mapv(f64::from)
}

fn coeffs_f32(c: &Coeffs2<f64>) -> Coeffs2<f32> {
    let details = c
        .details()
        .iter()
        .map(|d| d.clone().map(|b| b.mapv(|v| v as f32)))
        .collect();
    Coeffs2::from_parts(c.approx().mapv(|v| v as f32), details, c.axes())
}

/// Forward and inverse of one case against dwt-core; returns the relative errors.
fn check_dense(ctx: &dwt_gpu::Context, name: &str, mode: Mode, shape: (usize, usize), level: usize, seed: u64) {
    let w = Wavelet::new(name).unwrap();
    let x = matrix(seed, shape);
    let cpu = wavedec2(f64s(&x).view(), &w, mode, Some(level));
    let plan = Dwt2::new(ctx, &w, mode, shape, level);
    let (cpu, plan) = match (cpu, plan) {
        (Ok(c), Ok(p)) => (c, p),
        (Err(_), Err(Error::Dwt(_))) => return,
        (c, p) => panic!("dwt-core and dwt-gpu disagree on {name} {mode} {shape:?} level {level}: {c:?} / {p:?}"),
    };
    plan.poison(f32::NAN);
    let gpu = plan.forward(x.view()).unwrap();
    assert_eq!(gpu.levels(), cpu.levels());
    let worst = std::iter::once((gpu.approx().clone(), cpu.approx().clone()))
        .chain(
            gpu.details()
                .iter()
                .zip(cpu.details())
                .flat_map(|(g, c)| (0..3).map(move |b| (g[b].clone(), c[b].clone()))),
        )
        .map(|(g, c)| rel_err(g.view(), c.view()))
        .fold(0.0, f64::max);
    assert!(
        worst < TOL,
        "forward {name} {mode} {shape:?} L{level}: rel err {worst:e}"
    );

    // Inverse of random coefficients with the same shapes.
    let mut k = 0;
    let mut rnd = |a: &Array2<f64>| {
        k += 1;
        matrix(seed ^ (k << 32), a.dim()).mapv(f64::from)
    };
    let approx = rnd(cpu.approx());
    let details = cpu.details().iter().map(|[h, v, d]| [rnd(h), rnd(v), rnd(d)]).collect();
    let c = Coeffs2::from_parts(approx, details, cpu.axes());
    let want = waverec2(&c, &w, mode).unwrap();
    plan.poison(f32::NAN);
    let got = plan.inverse(&coeffs_f32(&c)).unwrap();
    assert_eq!(got.dim(), plan.output_shape());
    let e = rel_err(got.view(), want.view());
    assert!(e < TOL, "inverse {name} {mode} {shape:?} L{level}: rel err {e:e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random shapes (tiny, odd, non-square), wavelets, modes and levels.
    #[test]
    fn dense_transforms_match_dwt_core(
        rows in 1usize..80, cols in 1usize..80, wi in 0..WAVELETS.len(), mi in 0..GPU_MODES.len(),
        level in 1usize..5, seed in any::<u64>(),
    ) {
        let Some(ctx) = common::device("dense_transforms_match_dwt_core") else { return Ok(()) };
        check_dense(ctx, WAVELETS[wi], GPU_MODES[mi], (rows, cols), level, seed);
    }
}

device_test! {
    /// Large transforms: 2048×2048, and 4096×11008 (180 MB, beyond
    /// lavapipe's 128 MiB binding: the input and output go in row blocks).
    fn dense_transforms_large(ctx) {
        check_dense(ctx, "db4", Mode::Periodization, (2048, 2048), 3, 7);
        check_dense(ctx, "sym5", Mode::Zero, (2049, 1500), 2, 8);
        check_dense(ctx, "db2", Mode::Zero, (4096, 11008), 2, 9);
    }
}

device_test! {
    /// `inverse_into` accumulates `scale · waverec2` into a matrix already on the device.
    fn inverse_into_accumulates(ctx) {
        let w = Wavelet::new("db3").unwrap();
        let plan = Dwt2::new(ctx, &w, Mode::Symmetric, (45, 30), 2).unwrap();
        let c = wavedec2(f64s(&matrix(3, (45, 30))).view(), &w, Mode::Symmetric, Some(2)).unwrap();
        let base = matrix(4, plan.output_shape());
        let out = ctx.upload(base.view()).unwrap();
        let flat = ctx.upload_vec(&plan.flatten(&coeffs_f32(&c)).unwrap()).unwrap();
        plan.inverse_into(&flat, &out, 0.25, true).unwrap();
        let want = f64s(&base) + waverec2(&c, &w, Mode::Symmetric).unwrap() * 0.25;
        let e = rel_err(ctx.download(&out).unwrap().view(), want.view());
        assert!(e < TOL, "{e:e}");
        // Wrong shapes are refused, not read out of bounds.
        let small = ctx.zeros((3, 3)).unwrap();
        assert!(matches!(plan.inverse_into(&flat, &small, 1.0, false), Err(Error::ShapeMismatch { .. })));
        assert!(matches!(plan.inverse(&coeffs_f32(&wavedec2(f64s(&matrix(3, (44, 30))).view(), &w, Mode::Symmetric, Some(2)).unwrap())), Err(Error::ShapeMismatch { .. })));
    }
}

/// Random locations of a `level`-deep decomposition of `shape`.
fn random_locations(
    shape: (usize, usize),
    level: usize,
    w: &Wavelet,
    mode: Mode,
    n: usize,
    seed: u64,
) -> Vec<Location> {
    let bases = [
        dwt_core::AtomBasis::new(w, mode, shape.0, level).unwrap(),
        dwt_core::AtomBasis::new(w, mode, shape.1, level).unwrap(),
    ];
    let v = values(seed, 4 * n);
    let pick = |x: f32, m: usize| (((x + 1.0) / 2.0 * m as f32) as usize).min(m - 1);
    (0..n)
        .map(|k| {
            let lv = 1 + pick(v[4 * k], level);
            let band = [
                Subband::Horizontal,
                Subband::Vertical,
                Subband::Diagonal,
                Subband::Approx,
            ][pick(v[4 * k + 1], if lv == level { 4 } else { 3 })];
            Location {
                level: lv,
                band,
                row: pick(v[4 * k + 2], bases[0].coeff_len(lv)),
                col: pick(v[4 * k + 3], bases[1].coeff_len(lv)),
            }
        })
        .collect()
}

/// A gradient's componentwise error, `max_k |got_k − want_k| / m_k` with
/// `m_k = |α| Σ |atom_k| ∘ |G|`: the sum of the magnitudes of coefficient
/// k's terms, which bounds every partial sum of its f32 accumulation. An
/// error relative to `max |want|` has no bound when one coefficient's terms
/// cancel (n = 1 and a sum near 0 failed CI at 1.4e-5 on llvmpipe). Every
/// coefficient must be written: the buffer is poisoned with NaN first.
fn grad_err(got: &[f32], want: &[f64], atoms_abs: &[Array2<f64>], g_abs: &Array2<f64>, alpha: f32) -> f64 {
    assert_eq!(
        (got.len(), want.len()),
        (atoms_abs.len(), atoms_abs.len()),
        "one gradient per location"
    );
    got.iter()
        .zip(want)
        .zip(atoms_abs)
        .map(|((&g, &r), a)| {
            assert!(
                g.is_finite(),
                "unwritten or non-finite gradient {g} where the reference is {r}"
            );
            let m = f64::from(alpha.abs()) * (a * g_abs).sum();
            (f64::from(g) - r).abs() / m.max(1e-30)
        })
        .fold(0.0, f64::max)
}

fn all_modes() -> impl Strategy<Value = Mode> {
    prop::sample::select(Mode::ALL.to_vec())
}

/// One case of the sparse kernels' check.
#[derive(Clone, Copy, Debug)]
struct SparseCase {
    rows: usize,
    cols: usize,
    wavelet: usize,
    mode: Mode,
    level: usize,
    n: usize,
    crop: bool,
    transposed: bool,
    seed: u64,
}

/// ΔW, merge, unmerge and both gradients of one case against dense dwt-core
/// (waverec2 of the scattered coefficients, and waverec2_adjoint).
fn check_sparse(ctx: &dwt_gpu::Context, case: SparseCase) -> Result<(), TestCaseError> {
    let SparseCase {
        rows,
        cols,
        wavelet: wi,
        mode,
        level,
        n,
        crop,
        transposed,
        seed,
    } = case;
    let w = Wavelet::new(WAVELETS[wi]).unwrap();
    let level = level.min(w.max_level(rows.min(cols)).max(1));
    prop_assume!(wavedec2(Array2::<f64>::zeros((rows, cols)).view(), &w, mode, Some(level)).is_ok());
    let locs = random_locations((rows, cols), level, &w, mode, n, seed);
    let c = values(seed ^ 1, n);
    let dense = waverec2(&scatter::<f64>(&w, mode, (rows, cols), level, &locs, &c), &w, mode).unwrap();
    let full = dense.dim();
    let win = if crop {
        Crop {
            origin: (full.0 / 3, full.1 / 4),
            shape: (full.0 - full.0 / 3 - full.0 / 5, full.1 - full.1 / 4),
        }
    } else {
        Crop {
            origin: (0, 0),
            shape: full,
        }
    };
    // The crop window of the full ΔW (all of it without a crop).
    let window = s![
        win.origin.0..win.origin.0 + win.shape.0,
        win.origin.1..win.origin.1 + win.shape.1
    ];
    let want = dense.slice(window).to_owned();
    let basis = SeparableBasis::wavedec2(
        &w,
        mode,
        (rows, cols),
        Level::Exactly(level),
        crop.then_some(win),
        &locs,
    )
    .unwrap();
    let plan = SparsePlan::new(ctx, &basis).unwrap();
    let alpha = 0.75f32;
    let orient = if transposed {
        Orientation::Transposed
    } else {
        Orientation::Normal
    };
    let stored = |a: &Array2<f64>| if transposed { a.t().to_owned() } else { a.clone() };
    let unstored = |a: Array2<f32>| if transposed { a.t().to_owned() } else { a };
    let coeffs = ctx.upload_vec(&c).unwrap();

    // ΔW into a poisoned buffer.
    let out = ctx
        .zeros(if transposed {
            (win.shape.1, win.shape.0)
        } else {
            win.shape
        })
        .unwrap();
    ctx.fill(&out, f32::NAN).unwrap();
    ctx.batch()
        .delta(&plan, &coeffs, alpha, &out, orient)
        .unwrap()
        .submit()
        .unwrap();
    let e = rel_err(
        unstored(ctx.download(&out).unwrap()).view(),
        (&want * f64::from(alpha)).view(),
    );
    prop_assert!(e < TOL, "delta rel err {e:e}");

    // Merge, then unmerge.
    let base = matrix(seed ^ 2, out.shape());
    ctx.write(&out, base.view()).unwrap();
    ctx.batch()
        .merge(&plan, &coeffs, alpha, &out, orient)
        .unwrap()
        .submit()
        .unwrap();
    let merged = f64s(&base) + stored(&want) * f64::from(alpha);
    let e = rel_err(ctx.download(&out).unwrap().view(), merged.view());
    prop_assert!(e < TOL, "merge rel err {e:e}");
    ctx.batch()
        .unmerge(&plan, &coeffs, alpha, &out, orient)
        .unwrap()
        .submit()
        .unwrap();
    let e = rel_err(ctx.download(&out).unwrap().view(), f64s(&base).view());
    prop_assert!(e < TOL, "unmerge rel err {e:e}");

    // Gradient from a dense G: α · Sᵀ(waverec2_adjoint(pad(G))).
    let g = matrix(seed ^ 3, win.shape);
    let mut padded = Array2::<f64>::zeros(full);
    padded.slice_mut(window).assign(&f64s(&g));
    let like = scatter::<f64>(&w, mode, (rows, cols), level, &[], &[]);
    let adj = waverec2_adjoint(padded.view(), &like, &w, mode).unwrap();
    let want_grad: Vec<f64> = locs
        .iter()
        .map(|l| f64::from(alpha) * coefficient(&adj, level, l))
        .collect();
    let gbuf = ctx.upload(if transposed { g.t() } else { g.view() }).unwrap();
    let grad = ctx.upload_vec(&vec![f32::NAN; n]).unwrap();
    ctx.batch()
        .grad(&plan, &gbuf, alpha, &grad, orient)
        .unwrap()
        .submit()
        .unwrap();
    let atoms: Vec<Array2<f64>> = locs
        .iter()
        .map(|l| {
            let atom = waverec2(
                &scatter::<f64>(&w, mode, (rows, cols), level, std::slice::from_ref(l), &[1.0]),
                &w,
                mode,
            )
            .unwrap();
            atom.slice(window).mapv(f64::abs)
        })
        .collect();
    let e = grad_err(
        &ctx.download_vec(&grad).unwrap(),
        &want_grad,
        &atoms,
        &f64s(&g).mapv(f64::abs),
        alpha,
    );
    prop_assert!(e < TOL, "grad err {e:e}");

    // The same gradient from the factors of G = gyᵀ·x.
    let batch = 1 + (seed % 7) as usize;
    let gy = matrix(seed ^ 4, (batch, win.shape.0));
    let x = matrix(seed ^ 5, (batch, win.shape.1));
    let gfull = f64s(&gy).t().dot(&f64s(&x));
    padded.slice_mut(window).assign(&gfull);
    let adj = waverec2_adjoint(padded.view(), &like, &w, mode).unwrap();
    let want_f: Vec<f64> = locs
        .iter()
        .map(|l| f64::from(alpha) * coefficient(&adj, level, l))
        .collect();
    let (gyb, xb) = (ctx.upload(gy.view()).unwrap(), ctx.upload(x.view()).unwrap());
    ctx.batch()
        .grad_factors(&plan, &gyb, &xb, alpha, &grad)
        .unwrap()
        .submit()
        .unwrap();
    let gabs = f64s(&gy).mapv(f64::abs).t().dot(&f64s(&x).mapv(f64::abs));
    let e = grad_err(&ctx.download_vec(&grad).unwrap(), &want_f, &atoms, &gabs, alpha);
    prop_assert!(e < TOL, "grad_factors err {e:e}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// ΔW, merge, unmerge and both gradients against dense dwt-core, with
    /// and without a crop, in normal and transposed storage. The sparse
    /// path takes every mode: its atoms are computed on the host.
    #[test]
    fn sparse_kernels_match_dense_dwt_core(
        rows in 2usize..70, cols in 2usize..70, wavelet in 0..WAVELETS.len(), mode in all_modes(),
        level in 1usize..4, n in 0usize..40, crop in any::<bool>(), transposed in any::<bool>(), seed in any::<u64>(),
    ) {
        let Some(ctx) = common::device("sparse_kernels_match_dense_dwt_core") else { return Ok(()) };
        check_sparse(ctx, SparseCase { rows, cols, wavelet, mode, level, n, crop, transposed, seed })?;
    }
}

device_test! {
    /// The case that failed CI (stop 26): one coefficient whose gradient
    /// terms cancel, so its error against `max |want|` was 1.4e-5 on
    /// llvmpipe; against its terms' magnitudes it is f32 rounding.
    fn sparse_gradient_with_cancelling_terms(ctx) {
        let case = SparseCase {
            rows: 59, cols: 37, wavelet: 4, mode: Mode::Zero, level: 1, n: 1,
            crop: false, transposed: false, seed: 9_756_052_438_099_290_539,
        };
        check_sparse(ctx, case).unwrap();
    }
}

device_test! {
    /// Factors that span the whole matrix (LoRA's, FourierFT's) go to the
    /// global piece list; mixed with small wrapped atoms, ΔW, merge and the
    /// gradient are still exact sums of outer products.
    fn generic_separable_bases(ctx) {
        let (rows, cols) = (100, 130);
        let mut basis = SeparableBasis::new((rows, cols));
        let mut want = Array2::<f64>::zeros((rows, cols));
        let c = values(9, 6);
        for (k, &ck) in c.iter().enumerate() {
            let u: Vec<f32> = values(10 + k as u64, rows);
            let v: Vec<f32> = values(20 + k as u64, cols);
            // Coefficients 0..3 span everything; 3..6 are small, two runs each
            // (a wrapped atom), overlapping.
            type Runs<'a> = Vec<(usize, &'a [f32])>;
            let (ur, vr): (Runs<'_>, Runs<'_>) = if k < 3 {
                (vec![(0, &u[..])], vec![(0, &v[..])])
            } else {
                (vec![(0, &u[..3]), (rows - 2, &u[3..5])], vec![(7 * k, &v[..9]), (cols - 1, &v[9..10])])
            };
            let (r, cc) = (basis.add_row_factor(&ur).unwrap(), basis.add_col_factor(&vr).unwrap());
            basis.push(r, cc).unwrap();
            for &(rs, rv) in &ur {
                for &(cs, cv) in &vr {
                    for (i, &a) in rv.iter().enumerate() {
                        for (j, &b) in cv.iter().enumerate() {
                            want[[rs + i, cs + j]] += f64::from(ck) * f64::from(a) * f64::from(b);
                        }
                    }
                }
            }
        }
        let plan = SparsePlan::new(ctx, &basis).unwrap();
        assert_eq!(plan.touched_fraction(), 1.0);
        let got = plan.delta(&c, 1.5).unwrap();
        let e = rel_err(got.view(), (&want * 1.5).view());
        assert!(e < TOL, "{e:e}");
        let g = matrix(5, (rows, cols));
        let grad = plan.grad(g.view(), 1.0).unwrap();
        // ∂/∂c_k <G, ΔW> = <G, u_k ⊗ v_k>: check against ΔW of unit vectors.
        for k in 0..6 {
            let mut e_k = vec![0.0; 6];
            e_k[k] = 1.0;
            let atom = plan.delta(&e_k, 1.0).unwrap();
            let dot: f64 = atom.iter().zip(&g).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
            assert!((f64::from(grad[k]) - dot).abs() <= 1e-5 * dot.abs().max(1.0), "coefficient {k}: {} vs {dot}", grad[k]);
        }
    }
}

device_test! {
    /// The async API (context, submission, readback) gives the same bytes as
    /// the blocking one.
    fn async_api_matches_blocking(ctx) {
        let w = Wavelet::new("db2").unwrap();
        let locs = random_locations((40, 36), 2, &w, Mode::Zero, 25, 3);
        let plan = SparsePlan::new(ctx, &SeparableBasis::wavedec2(&w, Mode::Zero, (40, 36), Level::Exactly(2), None, &locs).unwrap()).unwrap();
        let c = ctx.upload_vec(&values(4, 25)).unwrap();
        let (a, b) = (ctx.zeros(plan.shape()).unwrap(), ctx.zeros(plan.shape()).unwrap());
        ctx.batch().merge(&plan, &c, 0.3, &a, Orientation::Normal).unwrap().submit().unwrap();
        let fresh = pollster::block_on(dwt_gpu::Context::new_async()).unwrap();
        assert!(!fresh.describe().is_empty());
        let got = pollster::block_on(async {
            ctx.batch().merge(&plan, &c, 0.3, &b, Orientation::Normal)?.submit_async().await?;
            ctx.download_async(&b).await
        })
        .unwrap();
        assert_eq!(got, ctx.download(&a).unwrap());
    }
}
