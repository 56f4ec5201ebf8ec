//! Inputs shared by the criterion benches and xtask's `gpu_bench` harness
//! (`xtask/harness`).
#![allow(dead_code)]

use dwt_gpu::{Location, Subband};
use ndarray::Array2;

/// Deterministic values in [-1, 1).
pub fn data(shape: (usize, usize), seed: u64) -> Array2<f32> {
    let mut g = wft_test_support::XorShift::new(seed | 1);
    Array2::from_shape_simple_fn(shape, || g.next_signed())
}

/// `n` level-1 locations spread over the four bands of `coeff`-shaped bands.
pub fn locations(coeff: (usize, usize), n: usize, seed: u64) -> Vec<Location> {
    let v = data((1, 3 * n), seed);
    let pick = |x: f32, m: usize| (((x + 1.0) / 2.0 * m as f32) as usize).min(m - 1);
    let bands = [
        Subband::Approx,
        Subband::Horizontal,
        Subband::Vertical,
        Subband::Diagonal,
    ];
    (0..n)
        .map(|k| Location {
            level: 1,
            band: bands[pick(v[[0, 3 * k]], 4)],
            row: pick(v[[0, 3 * k + 1]], coeff.0),
            col: pick(v[[0, 3 * k + 2]], coeff.1),
        })
        .collect()
}

/// The `level`-deep `wavedec2` coefficients of a zero `shape` signal, with
/// `c[k]` added at `locs[k]`: the dense form of a sparse coefficient set,
/// for dwt-core's `waverec2` (the CPU reference and baseline).
pub fn scatter<T: dwt_core::Real>(
    w: &dwt_core::Wavelet,
    mode: dwt_core::Mode,
    shape: (usize, usize),
    level: usize,
    locs: &[Location],
    c: &[f32],
) -> dwt_core::Coeffs2<T> {
    let zeros = Array2::<T>::zeros(shape);
    let mut z = dwt_core::wavedec2(zeros.view(), w, mode, Some(level)).expect("a valid decomposition");
    for (l, &v) in locs.iter().zip(c) {
        let band = match l.band {
            Subband::Approx => z.approx_mut(),
            b => &mut z.details_mut()[level - l.level][b as usize - 1],
        };
        band[[l.row, l.col]] += T::from_f64(f64::from(v));
    }
    z
}

/// The coefficient at `loc` of a `level`-deep decomposition.
pub fn coefficient<T: dwt_core::Real>(c: &dwt_core::Coeffs2<T>, level: usize, loc: &Location) -> T {
    match loc.band {
        Subband::Approx => c.approx()[[loc.row, loc.col]],
        b => c.details()[level - loc.level][b as usize - 1][[loc.row, loc.col]],
    }
}
