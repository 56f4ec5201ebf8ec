//! Synthesis atoms against the dense inverse transform of a unit coefficient.
#![allow(clippy::unwrap_used)]

use dwt_core::{AtomBasis, Band, Level, Mode, Plan1, Wavelet, dwt_max_level, waverec};
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

#[test]
fn level_zero_and_out_of_range_index_are_errors() {
    let w = Wavelet::new("db2").unwrap();
    assert!(AtomBasis::new(&w, Mode::Zero, 10, 0).is_err());
    assert!(AtomBasis::new(&w, Mode::Zero, 0, 1).is_err());
    let b = AtomBasis::new(&w, Mode::Zero, 10, 1).unwrap();
    assert!(b.atom(1, Band::Detail, b.coeff_len(1)).is_err());
    assert!(b.atom(2, Band::Detail, 0).is_err());
}
