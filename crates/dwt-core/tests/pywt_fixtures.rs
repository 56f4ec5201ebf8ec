//! dwt-core against real PyWavelets: every case in
//! `tests/fixtures/pywt.safetensors` (made by `scripts/make_pywt_fixtures.py`)
//! is replayed and must agree to 1e-12 relative (f64) or 1e-5 (f32).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Fixture, array, max_abs, rel_err};
use dwt_core::{
    Coeffs1, Coeffs2, Level, Mode, Plan, Real, Wavelet, array_to_coeffs, coeffs_to_array, dwt_axis, dwt_coeff_len,
    dwt_max_level, idwt, idwt_axis, idwt2, wavedec_axis, wavedec2_axes, waverec, waverec2,
};
use ndarray::{ArrayD, Axis, IxDyn};
use safetensors::SafeTensors;
use serde_json::Value;

#[test]
fn every_filter_bank_is_bit_identical_to_pywavelets() {
    let fx = Fixture::load();
    let st = fx.tensors();
    let names: BTreeSet<String> = fx
        .json("wavelets")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let ours: BTreeSet<String> = Wavelet::names().collect();
    assert_eq!(
        ours, names,
        "Wavelet::names() must list exactly PyWavelets' discrete wavelets"
    );
    assert_eq!(names.len(), 106);
    for name in &names {
        let w = Wavelet::new(name).unwrap();
        for (label, ours) in ["dec_lo", "dec_hi", "rec_lo", "rec_hi"].iter().zip(w.filter_bank()) {
            let theirs = array::<f64>(&st, &format!("filters.{name}.{label}"));
            assert_eq!(ours.len(), theirs.len(), "{name} {label} length");
            for (i, (a, b)) in ours.iter().zip(theirs.iter()).enumerate() {
                assert!(a == b, "{name} {label}[{i}]: {a:e} != PyWavelets {b:e}");
            }
        }
    }
}

#[test]
fn length_formulas_match_pywavelets() {
    let fx = Fixture::load();
    for row in fx.json("max_level").as_array().unwrap() {
        let r: Vec<usize> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(dwt_max_level(r[0], r[1]), r[2], "dwt_max_level({}, {})", r[0], r[1]);
    }
    for row in fx.json("coeff_len").as_array().unwrap() {
        let r = row.as_array().unwrap();
        let (n, l) = (r[0].as_u64().unwrap() as usize, r[1].as_u64().unwrap() as usize);
        let mode: Mode = r[2].as_str().unwrap().parse().unwrap();
        assert_eq!(
            dwt_coeff_len(n, l, mode),
            r[3].as_u64().unwrap() as usize,
            "dwt_coeff_len({n}, {l}, {mode})"
        );
    }
}

struct Case<'a> {
    worst: std::cell::Cell<f64>,
    id: &'a str,
    v: &'a Value,
    st: &'a SafeTensors<'a>,
    w: Wavelet,
    mode: Mode,
    tol: f64,
}

impl Case<'_> {
    fn get<T: Real>(&self, key: &str) -> ArrayD<T> {
        array(self.st, &format!("{}.{key}", self.id))
    }
    fn has(&self, key: &str) -> bool {
        self.st.tensor(&format!("{}.{key}", self.id)).is_ok()
    }
    fn check<T: Real>(&self, what: &str, got: &ArrayD<T>, key: &str) -> Result<(), String> {
        // The input's magnitude: `x` for analysis cases, the coefficients otherwise.
        let input = ["x", "a", "d", "h", "v"]
            .iter()
            .filter(|k| self.has(k))
            .map(|k| max_abs(&self.get::<T>(k)))
            .fold(0.0, f64::max);
        let err = rel_err(got, &self.get::<T>(key), input).map_err(|e| format!("{what}: {e}"))?;
        self.worst.set(self.worst.get().max(err / self.tol));
        if err > self.tol {
            return Err(format!("{what}: relative error {err:.3e} > {:.0e}", self.tol));
        }
        Ok(())
    }
    fn level(&self) -> Option<usize> {
        self.v["level"].as_u64().map(|l| l as usize)
    }
    fn deep(&self) -> bool {
        self.v["deep"].as_bool().unwrap_or(false)
    }
    fn axes(&self) -> Vec<usize> {
        match self.v.get("axes") {
            Some(a) => a
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect(),
            None => vec![self.v["axis"].as_u64().unwrap() as usize],
        }
    }
    fn levels(&self) -> usize {
        self.v["levels"].as_u64().unwrap() as usize
    }
}

fn run<T: Real>(c: &Case<'_>) -> Result<(), String> {
    let e = |err: dwt_core::Error| err.to_string();
    match c.v["op"].as_str().unwrap() {
        "dwt" => {
            let axis = Axis(c.axes()[0]);
            let (a, d) = dwt_axis(c.get::<T>("x").view(), &c.w, c.mode, axis).map_err(e)?;
            c.check("cA", &a, "a")?;
            c.check("cD", &d, "d")?;
            let rec = idwt_axis(c.get::<T>("a").view(), c.get::<T>("d").view(), &c.w, c.mode, axis).map_err(e)?;
            c.check("idwt", &rec, "rec")
        }
        "idwt" => {
            let (a, d) = (c.get::<T>("a"), c.get::<T>("d"));
            let y = idwt(
                a.view().into_dimensionality().unwrap(),
                d.view().into_dimensionality().unwrap(),
                &c.w,
                c.mode,
            )
            .map_err(e)?;
            c.check("idwt", &y.into_dyn(), "y")
        }
        "wavedec" => {
            let x = c.get::<T>("x");
            let axis = Axis(c.axes()[0]);
            let got: Coeffs1<T, IxDyn> = if c.deep() {
                let level = Level::Unchecked(c.level().unwrap());
                let plan = Plan::with_axes(x.raw_dim(), &[axis], &c.w, c.mode, level).map_err(e)?;
                let mut out = plan.coeffs_zeros();
                plan.forward(x.view(), &mut out, &mut vec![T::zero(); plan.scratch_len()])
                    .map_err(e)?;
                out
            } else {
                wavedec_axis(x.view(), &c.w, c.mode, c.level(), axis).map_err(e)?
            };
            if got.levels() != c.levels() {
                return Err(format!("{} levels, PyWavelets made {}", got.levels(), c.levels()));
            }
            c.check("cA", got.approx(), "a")?;
            for (i, d) in got.details().iter().enumerate() {
                c.check(&format!("cD[{i}]"), d, &format!("d{i}"))?;
            }
            let theirs = Coeffs1::from_parts(
                c.get::<T>("a"),
                (0..c.levels()).map(|i| c.get::<T>(&format!("d{i}"))).collect(),
                axis,
            );
            c.check("waverec", &waverec(&theirs, &c.w, c.mode).map_err(e)?, "rec")
        }
        "wavedec2" => {
            let x = c.get::<T>("x");
            let ax = c.axes();
            let axes = [Axis(ax[0]), Axis(ax[1])];
            let got: Coeffs2<T, IxDyn> = if c.deep() {
                let level = Level::Unchecked(c.level().unwrap());
                let plan = Plan::with_axes(x.raw_dim(), &axes, &c.w, c.mode, level).map_err(e)?;
                let mut out = plan.coeffs_zeros();
                plan.forward(x.view(), &mut out, &mut vec![T::zero(); plan.scratch_len()])
                    .map_err(e)?;
                out
            } else {
                wavedec2_axes(x.view(), &c.w, c.mode, c.level(), axes).map_err(e)?
            };
            if got.levels() != c.levels() {
                return Err(format!("{} levels, PyWavelets made {}", got.levels(), c.levels()));
            }
            c.check("cA", got.approx(), "a")?;
            for (i, lvl) in got.details().iter().enumerate() {
                for (band, key) in lvl.iter().zip(["h", "v", "d"]) {
                    c.check(&format!("c{}[{i}]", key.to_uppercase()), band, &format!("d{i}.{key}"))?;
                }
            }
            let theirs = Coeffs2::from_parts(
                c.get::<T>("a"),
                (0..c.levels())
                    .map(|i| ["h", "v", "d"].map(|k| c.get::<T>(&format!("d{i}.{k}"))))
                    .collect(),
                axes,
            );
            c.check("waverec2", &waverec2(&theirs, &c.w, c.mode).map_err(e)?, "rec")?;
            if c.has("packed") {
                let (packed, slices) = coeffs_to_array(&theirs).map_err(e)?;
                c.check("coeffs_to_array", &packed, "packed")?;
                let back: Coeffs2<T, IxDyn> = array_to_coeffs(packed.view(), &slices).map_err(e)?;
                if back != theirs {
                    return Err("array_to_coeffs(coeffs_to_array(c)) != c".into());
                }
            }
            Ok(())
        }
        "idwt2" => {
            let g = |k| c.get::<T>(k).into_dimensionality::<ndarray::Ix2>().unwrap();
            let (a, h, v, d) = (g("a"), g("h"), g("v"), g("d"));
            let y = idwt2(a.view(), [h.view(), v.view(), d.view()], &c.w, c.mode).map_err(e)?;
            c.check("idwt2", &y.into_dyn(), "y")
        }
        op => Err(format!("unknown op {op}")),
    }
}

#[test]
fn every_pywavelets_case_agrees() {
    let fx = Fixture::load();
    let st = fx.tensors();
    let cases = fx.json("cases");
    let cases = cases.as_array().unwrap();
    let mut failures = Vec::new();
    let mut ran: BTreeMap<String, usize> = BTreeMap::new();
    let mut wavelets = BTreeSet::new();
    let mut modes = BTreeSet::new();
    let mut worst = 0.0f64;
    for v in cases {
        let id = v["id"].as_str().unwrap();
        let name = v["wavelet"].as_str().unwrap();
        let c = Case {
            worst: std::cell::Cell::new(0.0),
            id,
            v,
            st: &st,
            w: Wavelet::new(name).unwrap(),
            mode: v["mode"].as_str().unwrap().parse().unwrap(),
            tol: if v["dtype"] == "f32" { 1e-5 } else { 1e-12 },
        };
        let result = if v["dtype"] == "f32" {
            run::<f32>(&c)
        } else {
            run::<f64>(&c)
        };
        if let Err(msg) = result {
            failures.push(format!("{id} {} {name} {} {}: {msg}", v["op"], c.mode, v["dtype"]));
        }
        worst = worst.max(c.worst.get());
        *ran.entry(format!(
            "{}/{}",
            v["op"].as_str().unwrap(),
            v["dtype"].as_str().unwrap()
        ))
        .or_default() += 1;
        wavelets.insert(name.to_owned());
        modes.insert(c.mode.name());
    }
    eprintln!(
        "ran {} PyWavelets cases: {ran:?}; worst error {worst:.2e} of the tolerance",
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases disagree with PyWavelets:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // The file must actually exercise what the tests claim.
    assert!(cases.len() > 800, "only {} cases", cases.len());
    assert_eq!(wavelets.len(), 106, "every wavelet must appear in at least one case");
    assert_eq!(modes.len(), 9, "every mode must appear");
    for op in [
        "dwt/f64",
        "idwt/f64",
        "wavedec/f64",
        "wavedec2/f64",
        "idwt2/f64",
        "dwt/f32",
        "wavedec/f32",
        "wavedec2/f32",
    ] {
        assert!(ran.get(op).copied().unwrap_or(0) > 0, "no {op} cases");
    }
}
