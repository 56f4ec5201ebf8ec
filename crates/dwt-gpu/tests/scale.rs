//! Many matrices in one submission, and matrices larger than one storage
//! binding (4096×11008 f32 is 180 MB; lavapipe binds at most 128 MiB).
#![allow(clippy::unwrap_used)]

mod common;
#[path = "../benches/support/mod.rs"]
mod support;

use common::{TOL, matrix, rel_err, values};
use dwt_core::{Level, Mode, Wavelet, wavedec2, waverec2, waverec2_adjoint};
use dwt_gpu::{Crop, Location, Orientation, SeparableBasis, SparsePlan};
use ndarray::{Array2, s};
use support::{coefficient, locations as level1_locations, scatter};

/// The dense CPU reference of a (possibly cropped) level-1 reconstruction.
fn reference(w: &Wavelet, mode: Mode, shape: (usize, usize), locs: &[Location], c: &[f32], crop: Crop) -> Array2<f64> {
    let full = waverec2(&scatter::<f64>(w, mode, shape, 1, locs, c), w, mode).unwrap();
    full.slice(s![
        crop.origin.0..crop.origin.0 + crop.shape.0,
        crop.origin.1..crop.origin.1 + crop.shape.1
    ])
    .to_owned()
}

device_test! {
    /// 24 layers of several shapes and wavelets: merges, ΔWs and gradients
    /// all recorded into one batch and submitted once.
    fn one_submission_for_a_whole_model(ctx) {
        let shapes = [(96, 96), (37, 91), (128, 64), (64, 200), (11, 10), (250, 33)];
        let names = ["db1", "db2", "sym3", "coif1"];
        let mut layers = Vec::new();
        for k in 0..24 {
            let shape = shapes[k % shapes.len()];
            let w = Wavelet::new(names[k % names.len()]).unwrap();
            let mode = if k % 2 == 0 { Mode::Zero } else { Mode::Periodization };
            let coeff_shape = wavedec2(Array2::<f64>::zeros(shape).view(), &w, mode, Some(1)).unwrap().approx().dim();
            let locs = level1_locations(coeff_shape, 20 + k, k as u64);
            let c = values(100 + k as u64, locs.len());
            let full = waverec2(&wavedec2(Array2::<f64>::zeros(shape).view(), &w, mode, Some(1)).unwrap(), &w, mode).unwrap().dim();
            let crop = Crop { origin: (0, 0), shape: full };
            let want = reference(&w, mode, shape, &locs, &c, crop);
            let plan = SparsePlan::new(ctx, &SeparableBasis::wavedec2(&w, mode, shape, Level::Exactly(1), None, &locs).unwrap()).unwrap();
            let base = matrix(200 + k as u64, full);
            let wbuf = ctx.upload(base.view()).unwrap();
            let dbuf = ctx.zeros(full).unwrap();
            ctx.fill(&dbuf, f32::NAN).unwrap();
            let cbuf = ctx.upload_vec(&c).unwrap();
            let g = matrix(300 + k as u64, full);
            let gbuf = ctx.upload(g.view()).unwrap();
            let grad = ctx.upload_vec(&vec![f32::NAN; c.len()]).unwrap();
            let adj = waverec2_adjoint(g.mapv(f64::from).view(), &wavedec2(Array2::<f64>::zeros(shape).view(), &w, mode, Some(1)).unwrap(), &w, mode).unwrap();
            let want_grad: Vec<f64> = locs.iter().map(|l| coefficient(&adj, 1, l) * 0.5).collect();
            layers.push((plan, base, wbuf, dbuf, cbuf, gbuf, grad, want, want_grad));
        }
        let mut batch = ctx.batch();
        for (plan, _, wbuf, dbuf, cbuf, gbuf, grad, ..) in &layers {
            batch.merge(plan, cbuf, 0.5, wbuf, Orientation::Normal).unwrap();
            batch.delta(plan, cbuf, 0.5, dbuf, Orientation::Normal).unwrap();
            batch.grad(plan, gbuf, 0.5, grad, Orientation::Normal).unwrap();
        }
        assert_eq!(batch.len(), 72);
        batch.submit().unwrap();
        for (k, (_, base, wbuf, dbuf, _, _, grad, want, want_grad)) in layers.iter().enumerate() {
            let merged = base.mapv(f64::from) + want * 0.5;
            let e = rel_err(ctx.download(wbuf).unwrap().view(), merged.view());
            assert!(e < TOL, "layer {k} merge: {e:e}");
            let e = rel_err(ctx.download(dbuf).unwrap().view(), (want * 0.5).view());
            assert!(e < TOL, "layer {k} delta: {e:e}");
            let got = Array2::from_shape_vec((1, want_grad.len()), ctx.download_vec(grad).unwrap()).unwrap();
            let e = rel_err(got.view(), Array2::from_shape_vec((1, want_grad.len()), want_grad.clone()).unwrap().view());
            assert!(e < TOL, "layer {k} grad: {e:e}");
        }
    }
}

device_test! {
    /// A 4096×11008 layer with a PEFT-style centre crop: ΔW, merge and the
    /// gradient, stored normally and transposed. Where the device binds
    /// less than the matrix, the kernels run over blocks of rows.
    fn matrices_beyond_one_binding(ctx) {
        let shape = (4096, 11008);
        let (padded, crop) = ((4098, 11010), Crop { origin: (1, 1), shape });
        let w = Wavelet::new("db2").unwrap();
        let mode = Mode::Zero;
        let coeff_shape = (2050, 5506);
        let locs = level1_locations(coeff_shape, 1000, 11);
        let c = values(12, locs.len());
        let want = reference(&w, mode, padded, &locs, &c, crop);
        let plan = SparsePlan::new(ctx, &SeparableBasis::wavedec2(&w, mode, padded, Level::Exactly(1), Some(crop), &locs).unwrap()).unwrap();
        let cbuf = ctx.upload_vec(&c).unwrap();
        let g = matrix(13, shape);
        let adj = {
            let mut gp = Array2::<f64>::zeros(padded);
            gp.slice_mut(s![1..4097, 1..11009]).assign(&g.mapv(f64::from));
            waverec2_adjoint(gp.view(), &wavedec2(Array2::<f64>::zeros(padded).view(), &w, mode, Some(1)).unwrap(), &w, mode).unwrap()
        };
        let want_grad: Vec<f64> = locs.iter().map(|l| coefficient(&adj, 1, l) * 2.0).collect();
        let want_grad = Array2::from_shape_vec((1, locs.len()), want_grad).unwrap();
        for orient in [Orientation::Normal, Orientation::Transposed] {
            let t = orient == Orientation::Transposed;
            let stored = |a: &Array2<f32>| if t { a.t().as_standard_layout().to_owned() } else { a.clone() };
            let back = |a: Array2<f32>| if t { a.t().to_owned() } else { a };
            let base = matrix(14, shape);
            let wbuf = ctx.upload(stored(&base).view()).unwrap();
            ctx.batch().merge(&plan, &cbuf, 2.0, &wbuf, orient).unwrap().submit().unwrap();
            let e = rel_err(back(ctx.download(&wbuf).unwrap()).view(), (base.mapv(f64::from) + &want * 2.0).view());
            assert!(e < TOL, "{orient:?} merge: {e:e}");
            ctx.fill(&wbuf, f32::NAN).unwrap();
            ctx.batch().delta(&plan, &cbuf, 2.0, &wbuf, orient).unwrap().submit().unwrap();
            let e = rel_err(back(ctx.download(&wbuf).unwrap()).view(), (&want * 2.0).view());
            assert!(e < TOL, "{orient:?} delta: {e:e}");
            ctx.write(&wbuf, stored(&g).view()).unwrap();
            let grad = ctx.upload_vec(&vec![f32::NAN; locs.len()]).unwrap();
            ctx.batch().grad(&plan, &wbuf, 2.0, &grad, orient).unwrap().submit().unwrap();
            let got = Array2::from_shape_vec((1, locs.len()), ctx.download_vec(&grad).unwrap()).unwrap();
            let e = rel_err(got.view(), want_grad.view());
            assert!(e < TOL, "{orient:?} grad: {e:e}");
        }
    }
}
