//! Shared helpers for the integration tests: reading the PyWavelets fixture
//! file and comparing arrays.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;

use dwt_core::Real;
use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors};

pub const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pywt.safetensors");

/// The fixture file, parsed once per test binary.
pub struct Fixture {
    bytes: Vec<u8>,
    meta: serde_json::Value,
}

impl Fixture {
    pub fn load() -> Self {
        let bytes = std::fs::read(FIXTURE).expect("fixture file (run `cargo xtask fixtures` to regenerate)");
        let (_, meta) = SafeTensors::read_metadata(&bytes).expect("fixture header");
        let meta: HashMap<String, String> = meta.metadata().clone().expect("fixture metadata");
        let meta = serde_json::from_str(&meta["fixture"]).expect("metadata json");
        Fixture { bytes, meta }
    }

    /// One entry of the fixture's metadata.
    pub fn json(&self, key: &str) -> serde_json::Value {
        self.meta[key].clone()
    }

    pub fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("fixture tensors")
    }
}

/// Decode a stored tensor as `T` (f32 tensors only decode as f32, f64 as f64).
pub fn array<T: Real>(st: &SafeTensors<'_>, name: &str) -> ArrayD<T> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("tensor {name}: {e}"));
    let data: Vec<T> = match t.dtype() {
        Dtype::F64 => t
            .data()
            .chunks_exact(8)
            .map(|b| T::from_f64(f64::from_le_bytes(b.try_into().unwrap())))
            .collect(),
        Dtype::F32 => t
            .data()
            .chunks_exact(4)
            .map(|b| T::from_f64(f64::from(f32::from_le_bytes(b.try_into().unwrap()))))
            .collect(),
        other => panic!("tensor {name}: unexpected dtype {other:?}"),
    };
    ArrayD::from_shape_vec(IxDyn(t.shape()), data).unwrap()
}

/// Largest magnitude in `a`.
pub fn max_abs<T: Real>(a: &ArrayD<T>) -> f64 {
    a.iter().fold(0.0f64, |m, v| m.max(v.as_f64().abs()))
}

/// Relative error `max|got − want| / max(max|want|, floor)`: relative to the
/// expected output, or to `floor` (the input's magnitude) where the output is
/// itself rounding noise, e.g. the details of a constant signal. Shapes must
/// agree exactly.
pub fn rel_err<T: Real>(got: &ArrayD<T>, want: &ArrayD<T>, floor: f64) -> Result<f64, String> {
    if got.shape() != want.shape() {
        return Err(format!("shape {:?} != expected {:?}", got.shape(), want.shape()));
    }
    let scale = max_abs(want).max(floor);
    let diff = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (a, b)| m.max((a.as_f64() - b.as_f64()).abs()));
    if diff.is_nan() {
        return Err("NaN in the comparison".into());
    }
    Ok(if scale > 0.0 { diff / scale } else { diff })
}

/// Forward, inverse and inverse-adjoint through one 2-D plan: the
/// coefficients of `x`, their reconstruction, and the adjoint applied to
/// that reconstruction. Used to compare execution paths bit for bit.
pub fn plan_round_trip(
    plan: &dwt_core::Plan2<f64>,
    x: &ndarray::Array2<f64>,
) -> (dwt_core::Coeffs2<f64>, ndarray::Array2<f64>, dwt_core::Coeffs2<f64>) {
    let mut scratch = vec![0.0; plan.scratch_len()];
    let mut c = plan.coeffs_zeros();
    plan.forward(x.view(), &mut c, &mut scratch).unwrap();
    let mut y = ndarray::Array2::zeros(plan.reconstruction_dim());
    plan.inverse(&c, y.view_mut(), &mut scratch).unwrap();
    let mut a = plan.coeffs_zeros();
    plan.inverse_adjoint(y.view(), &mut a, &mut scratch).unwrap();
    (c, y, a)
}
