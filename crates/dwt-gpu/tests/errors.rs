//! Bad input gets typed errors, never a panic, a hang or an out-of-bounds
//! access; NaN propagates exactly as on the CPU.
#![allow(clippy::unwrap_used)]

mod common;

use common::matrix;
use dwt_core::{Level, Mode, Wavelet, wavedec2, waverec2};
use dwt_gpu::{Crop, Dwt2, Error, Location, Orientation, SeparableBasis, SparsePlan, Subband};
use ndarray::Array2;

fn loc(level: usize, band: Subband, row: usize, col: usize) -> Location {
    Location { level, band, row, col }
}

device_test! {
    fn transform_plans_refuse_what_dwt_core_refuses(ctx) {
        let w = Wavelet::new("db4").unwrap();
        assert!(matches!(Dwt2::new(ctx, &w, Mode::Smooth, (64, 64), 1), Err(Error::UnsupportedMode(Mode::Smooth))));
        assert!(matches!(Dwt2::new(ctx, &w, Mode::Zero, (64, 64), 4), Err(Error::Dwt(dwt_core::Error::LevelTooDeep { .. }))));
        assert!(matches!(Dwt2::new(ctx, &w, Mode::Zero, (0, 64), 1), Err(Error::Dwt(_))));
        assert!(matches!(Dwt2::new(ctx, &w, Mode::Zero, (64, 64), 0), Err(Error::Dwt(_))));
        let plan = Dwt2::new(ctx, &w, Mode::Zero, (64, 64), 2).unwrap();
        assert!(matches!(plan.forward(Array2::zeros((64, 63)).view()), Err(Error::ShapeMismatch { .. })));
    }
}

device_test! {
    fn sparse_inputs_are_checked(ctx) {
        let w = Wavelet::new("db2").unwrap();
        let m = Mode::Zero;
        let basis = |locs: &[Location], crop| SeparableBasis::<f32>::wavedec2(&w, m, (40, 30), Level::Exactly(2), crop, locs);
        for bad in [
            loc(1, Subband::Approx, 0, 0),     // the approximation lives at the coarsest level only
            loc(3, Subband::Diagonal, 0, 0),   // deeper than the decomposition
            loc(0, Subband::Diagonal, 0, 0),
            loc(1, Subband::Horizontal, 21, 0), // level 1 bands have 21 rows
            loc(2, Subband::Vertical, 0, 99),
        ] {
            assert!(matches!(basis(&[bad], None), Err(dwt_core::Error::OutOfRange { .. })), "{bad:?}");
        }
        let crop = Crop { origin: (5, 5), shape: (40, 30) };
        assert!(matches!(basis(&[], Some(crop)), Err(dwt_core::Error::OutOfRange { .. })));
        assert!(matches!(SeparableBasis::<f32>::wavedec2(&w, m, (40, 30), Level::Exactly(9), None, &[]), Err(dwt_core::Error::LevelTooDeep { .. })));

        let mut b = SeparableBasis::<f32>::new((8, 8));
        assert!(matches!(b.add_row_factor(&[(6, &[1.0, 2.0, 3.0])]), Err(dwt_core::Error::OutOfRange { .. })));
        assert!(matches!(b.add_col_factor(&[(usize::MAX, &[1.0])]), Err(dwt_core::Error::OutOfRange { .. })));
        assert!(matches!(b.push(0, 0), Err(dwt_core::Error::OutOfRange { .. })));
        assert!(matches!(SparsePlan::new(ctx, &SeparableBasis::<f32>::new((0, 3))), Err(Error::ShapeMismatch { .. })));

        let plan = SparsePlan::new(ctx, &basis(&[loc(2, Subband::Approx, 1, 1), loc(1, Subband::Diagonal, 3, 4)], None).unwrap()).unwrap();
        let (rows, cols) = plan.shape();
        let good_c = ctx.upload_vec(&[1.0, 2.0]).unwrap();
        let bad_c = ctx.upload_vec(&[1.0]).unwrap();
        let wmat = ctx.zeros((rows, cols)).unwrap();
        let wrong = ctx.zeros((cols, rows)).unwrap();
        let mut batch = ctx.batch();
        assert!(matches!(batch.merge(&plan, &bad_c, 1.0, &wmat, Orientation::Normal), Err(Error::ShapeMismatch { .. })));
        assert!(matches!(batch.merge(&plan, &good_c, 1.0, &wrong, Orientation::Normal), Err(Error::ShapeMismatch { .. })));
        assert!(matches!(batch.delta(&plan, &good_c, 1.0, &wmat, Orientation::Transposed), Err(Error::ShapeMismatch { .. })));
        assert!(matches!(batch.grad(&plan, &wrong, 1.0, &good_c, Orientation::Normal), Err(Error::ShapeMismatch { .. })));
        let gy = ctx.zeros((4, rows)).unwrap();
        let x = ctx.zeros((5, cols)).unwrap();
        assert!(matches!(batch.grad_factors(&plan, &gy, &x, 1.0, &good_c), Err(Error::ShapeMismatch { .. })));
        assert!(batch.is_empty(), "a refused operation records nothing");
        assert!(matches!(ctx.write(&wmat, Array2::zeros((2, 2)).view()), Err(Error::ShapeMismatch { .. })));
    }
}

device_test! {
    /// A matrix beyond the device's binding limit is refused up front.
    fn oversized_matrices_are_refused(ctx) {
        let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("max binding: {} bytes\n", ctx.max_binding_bytes()));
        assert!(matches!(ctx.zeros((1 << 20, 1 << 20)), Err(Error::TooLarge { .. })));
        assert!(matches!(ctx.zeros((usize::MAX, 2)), Err(Error::TooLarge { .. })));
    }
}

device_test! {
    /// NaN coefficients poison exactly the elements they poison on the CPU
    /// (dense waverec2 of the scattered coefficients), and nothing hangs.
    /// (An infinite coefficient is placed at level 1: deeper, the CPU's
    /// cascade can meet ∞ − ∞ = NaN inside one atom, where the precomputed
    /// atom gives ±∞.)
    fn nan_coefficients_propagate_like_the_cpu(ctx) {
        for (name, mode) in [("db2", Mode::Zero), ("db3", Mode::Periodization), ("sym4", Mode::Symmetric)] {
            let w = Wavelet::new(name).unwrap();
            let locs = [loc(2, Subband::Approx, 2, 3), loc(1, Subband::Vertical, 10, 4), loc(1, Subband::Diagonal, 5, 5)];
            let c = [f32::NAN, 1.0, f32::INFINITY];
            let plan = SparsePlan::new(ctx, &SeparableBasis::wavedec2(&w, mode, (33, 28), Level::Exactly(2), None, &locs).unwrap()).unwrap();
            let got = plan.delta(&c, 1.0).unwrap();
            let mut z = wavedec2(Array2::<f64>::zeros((33, 28)).view(), &w, mode, Some(2)).unwrap();
            z.approx_mut()[[2, 3]] = f64::NAN;
            z.details_mut()[1][1][[10, 4]] = 1.0;
            z.details_mut()[1][2][[5, 5]] = f64::INFINITY;
            let want = waverec2(&z, &w, mode).unwrap();
            for (g, r) in got.iter().zip(&want) {
                assert_eq!(g.is_nan(), r.is_nan(), "{name} {mode}: gpu {g}, cpu {r}");
                assert_eq!(g.is_infinite(), r.is_infinite(), "{name} {mode}: gpu {g}, cpu {r}");
            }
            // The dense transforms too.
            let plan = Dwt2::new(ctx, &w, mode, (33, 28), 2).unwrap();
            let mut x = matrix(1, (33, 28));
            x[[7, 9]] = f32::NAN;
            let got = plan.forward(x.view()).unwrap();
            let want = wavedec2(x.mapv(f64::from).view(), &w, mode, Some(2)).unwrap();
            for (g, r) in got.approx().iter().zip(want.approx()) {
                assert_eq!(g.is_nan(), r.is_nan(), "{name} {mode} forward: gpu {g}, cpu {r}");
            }
        }
    }
}
