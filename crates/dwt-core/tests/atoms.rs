//! Synthesis atoms against the dense inverse transform of a unit coefficient.
#![allow(clippy::unwrap_used)]

use dwt_core::{
    AtomBasis, Band, Level, Location, Mode, Orientation, Plan1, SeparableBasis, Subband, Wavelet, dwt_max_level,
    waverec,
};
use proptest::prelude::*;

fn dense(atom: &dwt_core::Atom) -> Vec<f64> {
    let mut out = vec![0.0; atom.len()];
    atom.for_each(|i, v| out[i] += v);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every atom of every band and level equals `waverec` of the unit
    /// coefficient, in every mode, including sizes shorter than the filter.
    #[test]
    fn atom_is_waverec_of_unit(name in prop::sample::select(Wavelet::names().collect::<Vec<_>>()),
                               mode in prop::sample::select(Mode::ALL.to_vec()),
                               n in 1usize..120, deepest in 1usize..5, pick in 0.0f64..1.0, detail: bool, lvl_pick in 0.0f64..1.0) {
        let w = Wavelet::new(&name).unwrap();
        let deepest = deepest.min(dwt_max_level(n, w.filter_len()).max(1));
        let Ok(basis) = AtomBasis::new(&w, mode, n, deepest) else {
            // Only a level whose inverse has no samples may be refused.
            prop_assert!(Plan1::<f64>::new(n, &w, mode, Level::Unchecked(deepest)).is_err());
            return Ok(());
        };
        // Any level up to the deepest, for either band.
        let level = 1 + ((lvl_pick * deepest as f64) as usize).min(deepest - 1);
        let band = if detail { Band::Detail } else { Band::Approx };
        let plan = Plan1::<f64>::new(n, &w, mode, Level::Unchecked(level)).unwrap();
        let mut c = plan.coeffs_zeros();
        let len = basis.coeff_len(level);
        let k = ((pick * len as f64) as usize).min(len - 1);
        match band {
            Band::Approx => c.approx_mut()[k] = 1.0,
            Band::Detail => c.details_mut()[0][k] = 1.0,
        }
        let want = waverec(&c, &w, mode).unwrap();
        let atom = basis.atom(level, band, k).unwrap();
        prop_assert_eq!(atom.len(), want.len());
        let got = dense(&atom);
        for (i, (a, b)) in got.iter().zip(want.iter()).enumerate() {
            prop_assert!((a - b).abs() <= 1e-12, "{name} {mode} n={n} level={level} {band:?}[{k}] at {i}: {a} vs {b}");
        }
        // The support is no wider than the signal and the segments tile it.
        let seg_len: usize = atom.segments().map(|(_, s)| s.len()).sum();
        prop_assert_eq!(seg_len, atom.values().len());
        prop_assert!(atom.values().len() <= atom.len());
        // Cropping keeps exactly the values inside the window.
        let (lo, crop_len) = (n / 3, (n / 2).max(1).min(atom.len() - n / 3));
        let cropped = dense(&atom.crop(lo, crop_len, mode == Mode::Periodization));
        prop_assert_eq!(&cropped[..], &got[lo..lo + crop_len]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// `touched` covers every element `add_outer` changes, in both
    /// orientations and every mode (periodization's atoms wrap), and nothing
    /// outside the atoms' rectangles.
    #[test]
    fn touched_covers_what_add_outer_writes(name in prop::sample::select(vec!["db1", "db2", "sym3", "coif1", "bior2.2"]),
                                            mode in prop::sample::select(Mode::ALL.to_vec()),
                                            rows in 2usize..24, cols in 2usize..24, n in 1usize..12, seed: u64,
                                            transposed: bool) {
        let w = Wavelet::new(name).unwrap();
        let mut g = seed | 1;
        let mut next = move || { g ^= g << 13; g ^= g >> 7; g ^= g << 17; g };
        let (br, bc) = (dwt_core::dwt_coeff_len(rows, w.filter_len(), mode), dwt_core::dwt_coeff_len(cols, w.filter_len(), mode));
        if br == 0 || bc == 0 || (mode == Mode::Periodization && (rows < 2 || cols < 2)) { return Ok(()) }
        let bands = [Subband::Approx, Subband::Horizontal, Subband::Vertical, Subband::Diagonal];
        let locations: Vec<Location> = (0..n)
            .map(|_| Location { level: 1, band: bands[(next() % 4) as usize], row: (next() as usize) % br, col: (next() as usize) % bc })
            .collect();
        let Ok(basis) = SeparableBasis::<f64>::wavedec2(&w, mode, (rows, cols), Level::Unchecked(1), None, &locations) else {
            return Ok(());
        };
        prop_assume!(basis.len() == n);
        // waverec2's output: the input's shape, or one more for odd sizes.
        let (rows, cols) = basis.shape();
        let orientation = if transposed { Orientation::Transposed } else { Orientation::Normal };
        let touched = basis.touched(orientation);
        prop_assert!(touched.windows(2).all(|p| p[0] < p[1]));
        prop_assert!(touched.last().is_none_or(|&i| i < rows * cols));
        let before: Vec<f64> = (0..rows * cols).map(|_| (next() % 1000) as f64 / 7.0).collect();
        let mut after = before.clone();
        let c: Vec<f64> = (0..n).map(|_| 1.0 + (next() % 100) as f64 / 10.0).collect();
        basis.add_outer(&c, 0.5, &mut after, orientation);
        for (i, (a, b)) in after.iter().zip(&before).enumerate() {
            if a.to_bits() != b.to_bits() {
                prop_assert!(touched.binary_search(&i).is_ok(), "{name} {mode} {rows}x{cols}: {i} changed, not touched");
            }
        }
        let bound: usize = basis.atoms().map(|(r, c)| basis.rows().runs(r).map(|(_, v)| v.len()).sum::<usize>()
            * basis.cols().runs(c).map(|(_, v)| v.len()).sum::<usize>()).sum();
        prop_assert!(touched.len() <= bound);
    }
}

/// On db1 (no zero taps) one atom touches exactly its 2×2 block: the
/// elements a merge changes.
#[test]
fn touched_is_the_haar_block() {
    let w = Wavelet::new("db1").unwrap();
    let loc = Location {
        level: 1,
        band: Subband::Diagonal,
        row: 1,
        col: 2,
    };
    let basis = SeparableBasis::<f64>::wavedec2(&w, Mode::Zero, (4, 6), Level::Exactly(1), None, &[loc]).unwrap();
    // Rows 2–3, columns 4–5 of a 4×6 matrix; transposed, of its 6×4 transpose.
    assert_eq!(basis.touched(Orientation::Normal), vec![16, 17, 22, 23]);
    assert_eq!(basis.touched(Orientation::Transposed), vec![18, 19, 22, 23]);
}

#[test]
fn level_zero_and_out_of_range_index_are_errors() {
    let w = Wavelet::new("db2").unwrap();
    assert!(AtomBasis::new(&w, Mode::Zero, 10, 0).is_err());
    assert!(AtomBasis::new(&w, Mode::Zero, 0, 1).is_err());
    let b = AtomBasis::new(&w, Mode::Zero, 10, 1).unwrap();
    assert!(b.atom(1, Band::Detail, b.coeff_len(1)).is_err());
    assert!(b.atom(2, Band::Detail, 0).is_err());
}
