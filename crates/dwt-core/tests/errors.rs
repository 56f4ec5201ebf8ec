//! Bad input gets a typed error, never a panic; NaN flows through.
#![allow(clippy::unwrap_used)]

use dwt_core::{
    Coeffs2, Error, Level, Mode, Plan2, Wavelet, dwt, dwt_axis, dwt2, idwt, idwt_adjoint, idwt2, wavedec, wavedec2,
    wavedec2_axes, waverec2,
};
use ndarray::{Array1, Array2, Array3, Axis, array};

#[test]
fn unknown_wavelet_names_are_typed_errors_listing_the_families() {
    for bad in [
        "",
        "db0",
        "db39",
        "db01",
        "sym1",
        "sym21",
        "coif0",
        "coif18",
        "bior1.2",
        "rbio9.9",
        "haar2",
        "DB2",
        "morl",
        "db 2",
        "db-1",
        "db99999999999999999999",
    ] {
        let err = Wavelet::new(bad).unwrap_err();
        assert_eq!(err, Error::UnknownWavelet { name: bad.to_owned() }, "{bad:?}");
        let msg = err.to_string();
        for family in ["haar", "db1-db38", "sym2-sym20", "coif1-coif17", "bior", "rbio", "dmey"] {
            assert!(msg.contains(family), "message for {bad:?} should list {family}: {msg}");
        }
    }
    assert!(bad_parse::<Wavelet>("db39"));
}

fn bad_parse<T: std::str::FromStr>(s: &str) -> bool {
    s.parse::<T>().is_err()
}

#[test]
fn unknown_mode_strings_are_typed_errors() {
    for bad in ["", "per", "sym", "zpd", "Symmetric", "periodisation", "symmetric "] {
        let err = bad.parse::<Mode>().unwrap_err();
        assert_eq!(err, Error::UnknownMode { name: bad.to_owned() });
        assert!(err.to_string().contains("periodization"));
    }
    for m in Mode::ALL {
        assert_eq!(m.name().parse::<Mode>().unwrap(), m);
    }
}

#[test]
fn empty_inputs_are_rejected() {
    let w = Wavelet::new("db2").unwrap();
    let e = Array1::<f64>::zeros(0);
    assert_eq!(
        dwt(e.view(), &w, Mode::Symmetric).unwrap_err(),
        Error::Empty { what: "input" }
    );
    assert!(matches!(
        wavedec(e.view(), &w, Mode::Zero, None),
        Err(Error::Empty { .. })
    ));
    let e2 = Array2::<f64>::zeros((0, 5));
    assert!(matches!(
        wavedec2(e2.view(), &w, Mode::Zero, None),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        idwt(e.view(), e.view(), &w, Mode::Zero),
        Err(Error::Empty { .. })
    ));
}

#[test]
fn too_deep_levels_are_rejected_with_the_limit() {
    let w = Wavelet::new("db4").unwrap();
    let x = Array2::<f64>::zeros((100, 30));
    let err = wavedec2(x.view(), &w, Mode::Symmetric, Some(3)).unwrap_err();
    assert_eq!(
        err,
        Error::LevelTooDeep {
            level: 3,
            max_level: 2,
            len: 30,
            filter_len: 8
        }
    );
    assert!(err.to_string().contains("dwt_max_level is 2"));
    // PyWavelets' permissive behaviour is available explicitly.
    let plan = Plan2::<f64>::new((100, 30), &w, Mode::Symmetric, Level::Unchecked(3)).unwrap();
    assert_eq!(plan.levels(), 3);
    // `None` means the deepest allowed level.
    assert_eq!(wavedec2(x.view(), &w, Mode::Symmetric, None).unwrap().levels(), 2);
}

#[test]
fn reflecting_modes_need_two_samples() {
    let w = Wavelet::new("haar").unwrap();
    let x = array![1.0];
    for mode in [Mode::Reflect, Mode::Antireflect] {
        assert_eq!(
            dwt(x.view(), &w, mode).unwrap_err(),
            Error::TooShortForMode { mode, len: 1 }
        );
    }
    // A deep unchecked level that shrinks an axis to one sample is caught too.
    let x = Array1::<f64>::zeros(2);
    let err = dwt_core::Plan1::<f64>::new(2, &w, Mode::Reflect, Level::Unchecked(3)).unwrap_err();
    assert_eq!(
        err,
        Error::TooShortForMode {
            mode: Mode::Reflect,
            len: 1
        }
    );
    assert!(dwt(x.view(), &w, Mode::Reflect).is_ok());
}

#[test]
fn mismatched_coefficients_are_rejected() {
    let w = Wavelet::new("db2").unwrap();
    let (a, d) = (Array1::<f64>::zeros(5), Array1::<f64>::zeros(6));
    assert!(matches!(
        idwt(a.view(), d.view(), &w, Mode::Symmetric),
        Err(Error::ShapeMismatch { .. })
    ));
    // Too short to reconstruct with this filter (PyWavelets refuses too).
    let one = Array1::<f64>::zeros(1);
    assert!(matches!(
        idwt(one.view(), one.view(), &w, Mode::Zero),
        Err(Error::InvalidCoeffLength { .. })
    ));
    // Approximation two samples larger than the details.
    let c: Coeffs2<f64> = Coeffs2::from_parts(
        Array2::zeros((7, 5)),
        vec![[Array2::zeros((5, 5)), Array2::zeros((5, 5)), Array2::zeros((5, 5))]],
        [Axis(0), Axis(1)],
    );
    assert!(matches!(
        waverec2(&c, &w, Mode::Symmetric),
        Err(Error::ShapeMismatch { .. })
    ));
    // Subbands of one level that differ.
    let c: Coeffs2<f64> = Coeffs2::from_parts(
        Array2::zeros((5, 5)),
        vec![[Array2::zeros((5, 5)), Array2::zeros((5, 4)), Array2::zeros((5, 5))]],
        [Axis(0), Axis(1)],
    );
    assert!(matches!(
        waverec2(&c, &w, Mode::Symmetric),
        Err(Error::ShapeMismatch { .. })
    ));
    let (a, h) = (Array2::<f64>::zeros((4, 4)), Array2::<f64>::zeros((4, 3)));
    assert!(matches!(
        idwt2(a.view(), [h.view(), a.view(), a.view()], &w, Mode::Zero),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn bad_axes_are_rejected() {
    let w = Wavelet::new("haar").unwrap();
    let x = Array3::<f64>::zeros((4, 4, 4));
    assert_eq!(
        dwt_axis(x.view(), &w, Mode::Zero, Axis(3)).unwrap_err(),
        Error::AxisOutOfRange { axis: 3, ndim: 3 }
    );
    assert_eq!(
        wavedec2_axes(x.view(), &w, Mode::Zero, None, [Axis(1), Axis(1)]).unwrap_err(),
        Error::RepeatedAxis { axes: vec![1, 1] }
    );
    let one_d = Array1::<f64>::zeros(8);
    assert!(matches!(
        Plan2::<f64, ndarray::Ix1>::new(one_d.raw_dim(), &w, Mode::Zero, Level::Max),
        Err(Error::AxisOutOfRange { .. })
    ));
}

#[test]
fn plan_misuse_is_reported() {
    let w = Wavelet::new("sym4").unwrap();
    let plan = Plan2::<f64>::new((32, 32), &w, Mode::Periodization, Level::Exactly(2)).unwrap();
    let x = Array2::<f64>::zeros((32, 32));
    let mut c = plan.coeffs_zeros();
    let mut small = vec![0.0; plan.scratch_len() - 1];
    assert_eq!(
        plan.forward(x.view(), &mut c, &mut small).unwrap_err(),
        Error::ScratchTooSmall {
            needed: plan.scratch_len(),
            got: plan.scratch_len() - 1
        }
    );
    let mut scratch = vec![0.0; plan.scratch_len()];
    let wrong = Array2::<f64>::zeros((32, 31));
    assert!(matches!(
        plan.forward(wrong.view(), &mut c, &mut scratch),
        Err(Error::ShapeMismatch { .. })
    ));
    // Coefficients from another plan.
    let other = Plan2::<f64>::new((32, 32), &w, Mode::Periodization, Level::Exactly(1)).unwrap();
    let mut c1 = other.coeffs_zeros();
    assert!(matches!(
        plan.forward(x.view(), &mut c1, &mut scratch),
        Err(Error::LevelCountMismatch { expected: 2, found: 1 })
    ));
    // A transposed (non-contiguous) output array.
    c.details_mut()[0][1] = Array2::zeros((8, 8)).reversed_axes();
    assert!(matches!(
        plan.forward(x.view(), &mut c, &mut scratch),
        Err(Error::NonContiguous { .. })
    ));
    // The inverse-only plan refuses the forward transform.
    let inv = Plan2::from_coeffs(&plan.coeffs_zeros(), &w, Mode::Periodization).unwrap();
    assert_eq!(
        inv.forward(x.view(), &mut plan.coeffs_zeros(), &mut scratch)
            .unwrap_err(),
        Error::NoSignalShape
    );
    // Adjoint inputs must be synthesis lengths.
    assert!(matches!(
        idwt_adjoint(Array1::<f64>::zeros(7).view(), &w, Mode::Zero),
        Err(Error::NotASynthesisLength { len: 7, .. })
    ));
}

#[test]
fn invalid_custom_filters_are_rejected() {
    assert!(matches!(
        Wavelet::orthogonal("x", &[]),
        Err(Error::InvalidFilter { .. })
    ));
    assert!(matches!(
        Wavelet::orthogonal("x", &[1.0, 2.0, 3.0]),
        Err(Error::InvalidFilter { .. })
    ));
    assert!(matches!(
        Wavelet::orthogonal("x", &[1.0, f64::NAN]),
        Err(Error::InvalidFilter { .. })
    ));
    assert!(matches!(
        Wavelet::biorthogonal("x", &[1.0, 1.0], &[1.0, 1.0, 0.0, 0.0]),
        Err(Error::InvalidFilter { .. })
    ));
    let h = Wavelet::new("db3").unwrap().rec_lo().to_vec();
    let custom = Wavelet::orthogonal("mine", &h).unwrap();
    assert_eq!(custom.filter_bank(), Wavelet::new("db3").unwrap().filter_bank());
    assert!(custom.is_orthogonal());
}

/// NaN and infinities propagate through the arithmetic as in PyWavelets:
/// only the coefficients whose support covers the bad sample are affected.
#[test]
fn nan_passes_through() {
    let w = Wavelet::new("haar").unwrap();
    let mut x = Array1::<f64>::from_iter((0..16).map(f64::from));
    x[5] = f64::NAN;
    let (a, d) = dwt(x.view(), &w, Mode::Periodization).unwrap();
    for i in 0..8 {
        assert_eq!(a[i].is_nan(), i == 2, "cA[{i}]");
        assert_eq!(d[i].is_nan(), i == 2, "cD[{i}]");
    }
    let mut m = Array2::<f64>::ones((8, 8));
    m[[3, 3]] = f64::INFINITY;
    let (ca, _) = dwt2(m.view(), &w, Mode::Symmetric).unwrap();
    assert!(ca[[1, 1]].is_infinite());
    assert_eq!(ca.iter().filter(|v| !v.is_finite()).count(), 1);
}
