//! PyWavelets' own worked examples, with the numbers PyWavelets publishes
//! (its `tests/test_modes.py` table and the haar 4×4 example of its docs),
//! at the tolerance PyWavelets' test uses for them.
#![allow(clippy::unwrap_used)]
// The tables are PyWavelets' published numbers, digit for digit.
#![allow(clippy::approx_constant)]

use dwt_core::{Mode, Wavelet, dwt, dwt2, idwt, idwt2};
use ndarray::{Array2, array};

fn close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        // PyWavelets' test: rtol=1e-7, atol=1e-8 (its table has 8-9 digits).
        assert!((g - w).abs() <= 1e-8 + 1e-7 * w.abs(), "{what}[{i}]: {g} vs {w}");
    }
}

/// `pywt.dwt([1, 2, 1, 5, -1, 8, 4, 6], 'db2', mode)` for every mode, and the
/// round trip through `idwt`.
#[test]
fn pywt_db2_mode_table() {
    let x = array![1.0, 2.0, 1.0, 5.0, -1.0, 8.0, 4.0, 6.0];
    let w = Wavelet::new("db2").unwrap();
    #[rustfmt::skip]
    let table: [(&str, [f64; 5], [f64; 5]); 8] = [
        ("zero", [-0.03467518, 1.73309178, 3.40612438, 6.32928585, 6.95094948],
                 [-0.12940952, -2.15599552, -5.95034847, -1.21545369, -1.8625013]),
        ("constant", [1.28480404, 1.73309178, 3.40612438, 6.32928585, 7.51935555],
                     [-0.48296291, -2.15599552, -5.95034847, -1.21545369, 0.25881905]),
        ("symmetric", [1.76776695, 1.73309178, 3.40612438, 6.32928585, 7.77817459],
                      [-0.61237244, -2.15599552, -5.95034847, -1.21545369, 1.22474487]),
        ("reflect", [2.12132034, 1.73309178, 3.40612438, 6.32928585, 6.81224877],
                    [-0.70710678, -2.15599552, -5.95034847, -1.21545369, -2.38013939]),
        ("periodic", [6.9162743, 1.73309178, 3.40612438, 6.32928585, 6.9162743],
                     [-1.99191082, -2.15599552, -5.95034847, -1.21545369, -1.99191082]),
        ("smooth", [-0.51763809, 1.73309178, 3.40612438, 6.32928585, 7.45000519],
                   [0.0, -2.15599552, -5.95034847, -1.21545369, 0.0]),
        ("antisymmetric", [-1.83711731, 1.73309178, 3.40612438, 6.32928585, 6.12372436],
                          [0.353553391, -2.15599552, -5.95034847, -1.21545369, -4.94974747]),
        ("antireflect", [0.44828774, 1.73309178, 3.40612438, 6.32928585, 8.22646233],
                        [-0.25881905, -2.15599552, -5.95034847, -1.21545369, 2.89777748]),
    ];
    for (name, ca, cd) in table {
        let mode: Mode = name.parse().unwrap();
        let (a, d) = dwt(x.view(), &w, mode).unwrap();
        close(a.as_slice().unwrap(), &ca, &format!("{name} cA"));
        close(d.as_slice().unwrap(), &cd, &format!("{name} cD"));
        let y = idwt(a.view(), d.view(), &w, mode).unwrap();
        close(y.as_slice().unwrap(), x.as_slice().unwrap(), &format!("{name} idwt"));
    }
    let (a, d) = dwt(x.view(), &w, Mode::Periodization).unwrap();
    close(
        a.as_slice().unwrap(),
        &[4.053172, 3.05257099, 2.85381112, 8.42522221],
        "periodization cA",
    );
    close(
        d.as_slice().unwrap(),
        &[0.18946869, 4.18258152, 4.33737503, 2.60428326],
        "periodization cD",
    );
    let y = idwt(a.view(), d.view(), &w, Mode::Periodization).unwrap();
    close(y.as_slice().unwrap(), x.as_slice().unwrap(), "periodization idwt");
}

/// PyWavelets' default mode is symmetric.
#[test]
fn default_mode_is_symmetric() {
    assert_eq!(Mode::default(), Mode::Symmetric);
}

/// `pywt.dwt2(np.arange(1, 17).reshape(4, 4), 'haar')`:
/// `cA = [[7, 11], [23, 27]]`, `cH = -4`, `cV = -1`, `cD = 0`.
#[test]
fn pywt_haar_4x4_example() {
    let x = Array2::from_shape_fn((4, 4), |(i, j)| (4 * i + j + 1) as f64);
    let w = Wavelet::new("haar").unwrap();
    let (ca, [ch, cv, cd]) = dwt2(x.view(), &w, Mode::Symmetric).unwrap();
    close(ca.as_slice().unwrap(), &[7.0, 11.0, 23.0, 27.0], "cA");
    close(ch.as_slice().unwrap(), &[-4.0; 4], "cH");
    close(cv.as_slice().unwrap(), &[-1.0; 4], "cV");
    close(cd.as_slice().unwrap(), &[0.0; 4], "cD");
    let y = idwt2(ca.view(), [ch.view(), cv.view(), cd.view()], &w, Mode::Symmetric).unwrap();
    close(y.as_slice().unwrap(), x.as_slice().unwrap(), "idwt2");
}

/// REFERENCE.md's shape examples: 64×48, db2, level 3.
#[test]
fn wavedec2_shapes_64x48_db2_level3() {
    let x = Array2::<f64>::zeros((64, 48));
    let w = Wavelet::new("db2").unwrap();
    for (mode, want) in [
        (Mode::Periodization, [(8, 6), (8, 6), (16, 12), (32, 24)]),
        (Mode::Symmetric, [(10, 8), (10, 8), (18, 14), (33, 25)]),
    ] {
        let c = dwt_core::wavedec2(x.view(), &w, mode, Some(3)).unwrap();
        let got: Vec<_> = std::iter::once(c.approx().dim())
            .chain(c.details().iter().map(|d| d[0].dim()))
            .collect();
        assert_eq!(got, want, "{mode}");
    }
}

/// `dwt_max_level`: haar 64 → 6, db2 64 → 4, db4 768 → 6.
#[test]
fn dwt_max_level_examples() {
    assert_eq!(Wavelet::new("haar").unwrap().max_level(64), 6);
    assert_eq!(Wavelet::new("db2").unwrap().max_level(64), 4);
    assert_eq!(Wavelet::new("db4").unwrap().max_level(768), 6);
}
